"""PCGrad and MGDA against NumPy oracles transcribed from the reference code, an exact simplex
QP solver (SciPy) and, when installed, torchjd."""

import functools
import itertools

import jax
import numpy as np
import pytest
from balance_toys import SHAPES, add, flat, loss_grads, tree
from scipy.optimize import minimize

import mmreg
from mmreg.transforms.pcgrad import pcgrad_coefficients


def _weighted_total(rows, weights):
  """Σ_k w_k ∇L_k of toy rows `{loss: tree}` (w_k = 1 unless given)."""
  return add(*(jax.tree.map(lambda x, c=c: c * x, t)
               for t, c in ((rows[n], weights.get(n, 1.0)) for n in rows)))


def _vec(t):
  return np.concatenate([flat(t)[p].ravel() for p in sorted(SHAPES)])


def _np_pcgrad(G, orders=None):
  """tianheyu927/PCGrad, PCGrad_tf.py:44-49 (every task k, the task itself included, in stack
  order; its shuffle at :36 discards its result) and :51-65 (sum of the projected gradients).
  A zero g_k is skipped where that code would divide 0/0."""
  L = len(G)
  out = []
  for i in range(L):
    g = G[i].copy()
    for k in (range(L) if orders is None else orders[i]):
      inner = g @ G[k]
      norm2 = G[k] @ G[k]
      if norm2 > 0:
        g = g - min(inner / norm2, 0.0) * G[k]
    out.append(g)
  return np.sum(out, 0)


def _conflicting(rng, n=3, scale=1.0):
  rows = {f"l{i}": tree(rng, scale) for i in range(n)}
  rows["l1"] = add(jax.tree.map(lambda x: -1.5 * x, rows["l0"]), rows["l1"])
  return rows


@functools.cache
def _jitted(name, options):
  tx = getattr(mmreg, name)(**{k: dict(v) if isinstance(v, tuple) else v for k, v in options})
  return tx, jax.jit(tx.update)


def _run(name, rows, **options):
  """One compiled update per method, options and stack shape, shared by the tests."""
  options = tuple(sorted((k, tuple(sorted(v.items())) if isinstance(v, dict) else v)
                         for k, v in options.items()))
  weights = dict(options).get("loss_weights", ())
  tx, update = _jitted(name, options)
  total = _weighted_total(rows, dict(weights))  # the incoming update Σ_k w_k ∇L_k
  return update(total, tx.init(total), loss_grads=loss_grads(rows))


def test_pcgrad_matches_reference_code(rng):
  for scale in (1.0, 1e-30, 1e30):
    rows = _conflicting(rng, 4, scale)
    out, state = _run("pcgrad", rows)
    G = np.stack([_vec(t) for t in rows.values()])
    want = _np_pcgrad(G)
    np.testing.assert_allclose(_vec(out), want, rtol=1e-4, atol=1e-5 * np.max(np.abs(want)))
    assert float(state.diagnostics["conflicts"]) >= 1


def test_pcgrad_random_order_is_some_order_per_loss(rng):
  rows = _conflicting(rng, 3)
  out, _ = _run("pcgrad", rows, random_order=True, seed=3)
  G = np.stack([_vec(t) for t in rows.values()])
  perms = list(itertools.permutations(range(3)))
  candidates = [_np_pcgrad(G, orders) for orders in itertools.product(perms, repeat=3)]
  err = min(np.max(np.abs(_vec(out) - c)) for c in candidates)
  assert err < 1e-4 * np.max(np.abs(G))


def test_pcgrad_weights_and_edge_cases(rng):
  rows = _conflicting(rng, 2)
  w = {"l0": 2.0, "l1": 0.5}
  out, _ = _run("pcgrad", rows, loss_weights=w)
  G = np.stack([2.0 * _vec(rows["l0"]), 0.5 * _vec(rows["l1"])])
  np.testing.assert_allclose(_vec(out), _np_pcgrad(G), rtol=1e-4, atol=1e-5)
  base = tree(rng)
  opposite = {"l0": base, "l1": jax.tree.map(lambda x: -x, base),
              "l2": jax.tree.map(lambda x: 0 * x, base)}
  out, _ = _run("pcgrad", opposite)  # each cancels the other; the zero row is skipped
  np.testing.assert_allclose(_vec(out), 0.0, atol=1e-6)
  collinear = {"l0": base, "l1": jax.tree.map(lambda x: 0.5 * x, base)}
  out, _ = _run("pcgrad", collinear)
  np.testing.assert_allclose(_vec(out), 1.5 * _vec(base), rtol=1e-6)


def _qp_min_norm(G):
  """Min-norm point of the hull of the rows of G: SLSQP on the simplex QP, float64."""
  L = len(G)
  K = G @ G.T
  res = minimize(lambda a: a @ K @ a, np.full(L, 1 / L), jac=lambda a: 2 * K @ a,
                 bounds=[(0, 1)] * L, constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1}],
                 method="SLSQP", options={"ftol": 1e-15, "maxiter": 1000})
  return res.x @ G


def _active_set_min_norm(G):
  """Brute force over supports: equality-constrained least norm on each, keep the best
  feasible one (an independent exact solver)."""
  L = len(G)
  best = None
  for r in range(1, L + 1):
    for S in itertools.combinations(range(L), r):
      K = G[list(S)] @ G[list(S)].T
      A = np.block([[K, np.ones((r, 1))], [np.ones((1, r)), np.zeros((1, 1))]])
      sol = np.linalg.lstsq(A, np.r_[np.zeros(r), 1.0], rcond=None)[0][:r]
      if np.all(sol >= -1e-12) and abs(sol.sum() - 1) < 1e-9:
        point = sol @ G[list(S)]
        if best is None or point @ point < best @ best:
          best = point
  return best


@pytest.mark.parametrize("n", [3, 6, 8])
def test_mgda_is_the_exact_min_norm_point(n):
  rng = np.random.default_rng(n)
  rows = {f"l{i}": tree(rng) for i in range(n)}
  rows["l1"] = add(jax.tree.map(lambda x: -0.8 * x, rows["l0"]), rows["l1"])
  out, state = _run("mgda", rows)
  G = np.stack([_vec(t) for t in rows.values()])
  want = _active_set_min_norm(G)
  np.testing.assert_allclose(np.linalg.norm(_qp_min_norm(G)), np.linalg.norm(want), rtol=1e-5)
  # Scale 1: the update IS the min-norm point (unique even when α is not).
  tol = 1e-3 if n > 6 else 2e-5  # above exact_up_to = 6: Frank–Wolfe to the gap tolerance
  np.testing.assert_allclose(_vec(out), want, atol=tol * np.linalg.norm(G, axis=1).max())
  np.testing.assert_allclose(float(state.diagnostics["min_norm"]), np.linalg.norm(want),
                             rtol=tol * 10)
  assert float(state.diagnostics["duality_gap"]) <= 1e-5


def test_mgda_two_losses_closed_form_and_num_losses_scale(rng):
  rows = _conflicting(rng, 2)
  out, _ = _run("mgda", rows, scale="num_losses")
  g1, g2 = _vec(rows["l0"]), _vec(rows["l1"])
  a1 = np.clip(((g2 - g1) @ g2) / np.sum((g1 - g2) ** 2), 0, 1)
  np.testing.assert_allclose(_vec(out), 2 * (a1 * g1 + (1 - a1) * g2), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_mgda_degenerate_stacks(rng, scale):
  base = tree(rng, scale)  # all three stacks have 3 losses: one compiled update
  same = {"l0": base, "l1": base, "l2": base}
  out, _ = _run("mgda", same)
  np.testing.assert_allclose(_vec(out), _vec(base), rtol=1e-5)
  collinear = {"l0": base, "l1": jax.tree.map(lambda x: 3 * x, base),
               "l2": jax.tree.map(lambda x: -x, base)}
  out, _ = _run("mgda", collinear)  # 0 lies in the hull
  assert np.all(np.isfinite(_vec(out)))
  np.testing.assert_allclose(_vec(out), 0.0, atol=1e-5 * np.max(np.abs(_vec(base))))
  zero = {k: jax.tree.map(lambda x: 0 * x, v) for k, v in same.items()}
  out, _ = _run("mgda", zero)
  assert np.all(_vec(out) == 0)


def test_min_norm_weights_solver_branches():
  rng = np.random.default_rng(7)
  for n in (5, 12):  # exact (≤ 6 losses) and Frank–Wolfe
    V = rng.normal(size=(n, 6))
    alpha, gap = jax.jit(mmreg.min_norm_weights)(V @ V.T)
    alpha = np.asarray(alpha, np.float64)
    assert np.all(alpha >= 0) and abs(alpha.sum() - 1) < 1e-5
    want = _active_set_min_norm(V)
    # f(α) − f* ≤ gap ≤ tolerance · max_i ‖v_i‖² (exact below 7 losses, Frank–Wolfe above)
    top = np.max(np.sum(V * V, 1))
    assert np.sum((alpha @ V) ** 2) <= np.sum(want ** 2) + 2e-6 * top
    assert float(gap) <= 2e-6 * top


def test_torchjd_agrees():
  """torchjd's aggregators (torchjd.aggregation, run with torchjd 0.18.0 / torch 2.13.0):
  MGDA (Frank–Wolfe, `_mgda.py`) and PCGrad (`_pcgrad.py`: per loss i a fresh
  `torch.randperm` of the others). For L ≥ 3 the permutations torchjd draws are replayed from
  the same torch seed into `pcgrad_coefficients`; MGDA's exact min-norm point may only be
  shorter than torchjd's approximate one (its ε = 1e-3 stopping rule)."""
  torch = pytest.importorskip("torch")
  aggregation = pytest.importorskip("torchjd.aggregation")
  rng = np.random.default_rng(11)
  rows = _conflicting(rng, 2)
  G = np.stack([_vec(t) for t in rows.values()])
  matrix = torch.tensor(G, dtype=torch.float64)
  out, _ = _run("mgda", rows)
  np.testing.assert_allclose(_vec(out), aggregation.MGDA()(matrix).numpy(), rtol=1e-3,
                             atol=1e-5)
  out, _ = _run("pcgrad", rows)
  np.testing.assert_allclose(_vec(out), aggregation.PCGrad()(matrix).numpy(), rtol=1e-4,
                             atol=1e-5)
  for L in (3, 4):
    rows = _conflicting(rng, L)
    G = np.stack([_vec(t) for t in rows.values()])
    matrix = torch.tensor(G, dtype=torch.float64)
    torch.manual_seed(L)
    perms = [torch.randperm(L).numpy() for _ in range(L)]
    torch.manual_seed(L)
    want = aggregation.PCGrad()(matrix).numpy()
    # torchjd skips j == i; the authors' loop projects on g_i too, a no-op unless g_i^PC·g_i < 0.
    coefficients = pcgrad_coefficients(
        jax.numpy.asarray(G @ G.T, jax.numpy.float32), jax.numpy.asarray(np.stack(perms)))
    np.testing.assert_allclose(np.asarray(coefficients) @ G, want, rtol=1e-4, atol=1e-5)
    out, _ = _run("mgda", rows)
    reference = aggregation.MGDA()(matrix).numpy()
    assert np.linalg.norm(_vec(out)) <= np.linalg.norm(reference) * (1 + 1e-5)
    np.testing.assert_allclose(np.linalg.norm(_vec(out)), np.linalg.norm(reference), rtol=0.05)


@pytest.mark.parametrize("factory", [mmreg.pcgrad, mmreg.mgda])
def test_stack_errors(rng, factory):
  g = tree(rng)
  with pytest.raises(ValueError, match="`loss_grads` extra"):
    factory().update(g, factory().init(g))
  with pytest.raises(ValueError, match=r"needs the gradients of losses \['z'\]"):
    tx = factory(loss_names=["l0", "z"])
    tx.update(g, tx.init(g), loss_grads=loss_grads({"l0": g, "l1": g}))
  with pytest.raises(ValueError, match="at least 2 losses"):
    tx = factory(loss_names=["l0"])
    tx.update(g, tx.init(g), loss_grads=loss_grads({"l0": g, "l1": g}))
