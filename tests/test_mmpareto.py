"""MMPareto against a NumPy transcription of the authors' code (GeWu-Lab/MMPareto_ICML2024)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from balance_toys import SHAPES, add, block, flat, flat_labels, labels, loss_grads, tree

import mmreg


def _np_min_norm_from2(v1v1, v1v2, v2v2):
  """code/min_norm_solvers.py:9-30 (_min_norm_element_from2), weight of the first vector."""
  if v1v2 >= v1v1:
    return 0.999
  if v1v2 >= v2v2:
    return 0.001
  return -1.0 * ((v1v2 - v2v2) / (v1v1 + v2v2 - 2 * v1v2))


def _np_mmpareto(rows, gamma=1.5):
  """code/MMPareto.py:149-206: cosine of the whole-encoder gradients, equal weights when it is
  positive, else the two-task min-norm weights; per tensor 2(k0·g_mm + k1·g_uni), rescaled to
  the norm of the summed gradient of all losses when that is larger, times γ."""
  out = {}
  lab = flat_labels()
  total = {p: sum(flat(t)[p] for t in rows.values()) for p in SHAPES}
  for m in ("a", "b"):
    mm, uni = block(rows["fused"], m), block(rows[m], m)
    cos = mm @ uni / max(np.linalg.norm(mm) * np.linalg.norm(uni), 1e-8)
    k0 = 0.5 if cos > 0 else _np_min_norm_from2(mm @ mm, mm @ uni, uni @ uni)
    for path in SHAPES:
      if lab[path] != m:
        continue
      new = 2 * k0 * flat(rows["fused"])[path] + 2 * (1 - k0) * flat(rows[m])[path]
      diff = np.linalg.norm(total[path]) / np.linalg.norm(new)
      out[path] = diff * new * gamma if diff > 1 else new * gamma
  return out, total


def _check(out, rows, scale=1.0):
  expected, total = _np_mmpareto(rows)
  for path in SHAPES:
    want = expected.get(path, total[path])
    np.testing.assert_allclose(flat(out)[path], want, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("conflict", [False, True])
@pytest.mark.parametrize("scale", [1.0, 1e-30, 1e30])
def test_matches_reference_code(rng, conflict, scale):
  rows = {"fused": tree(rng, scale), "a": tree(rng, scale), "b": tree(rng, scale)}
  sign = -1.0 if conflict else 1.0
  # Make the unimodal gradient of each encoder agree or conflict with the fused one.
  rows["a"] = add(jax.tree.map(lambda x: sign * 3 * x, rows["fused"]), rows["a"])
  rows["b"] = add(jax.tree.map(lambda x: sign * 3 * x, rows["fused"]), rows["b"])
  tx = mmreg.mmpareto(labels())
  total = add(*rows.values())
  out, state = jax.jit(tx.update)(total, tx.init(total), loss_grads=loss_grads(rows))
  _check(out, rows, scale)
  cos = np.asarray(state.diagnostics["cosine"])
  assert np.all(cos < 0) if conflict else np.all(cos > 0)
  w = np.asarray(state.diagnostics["weight_fused"])
  if conflict:
    # The official conflict branch: min-norm weights, not the zeros of BalanceBenchmark's port.
    assert np.all((w > 0) & (w < 1)) and not np.allclose(w, 0.5)
  else:
    np.testing.assert_allclose(w, 0.5)


def test_anti_parallel_block_is_stationary(rng):
  """g_uni = −2 g_mm exactly: the min-norm point is 0, so the encoder gets 0 (the authors'
  rescale would turn round-off into a full-size step); the other encoder is unaffected."""
  rows = {"fused": tree(rng), "a": tree(rng), "b": tree(rng)}
  rows["a"] = jax.tree.map(lambda x: -2.0 * x, rows["fused"])
  tx = mmreg.mmpareto(labels())
  total = add(*rows.values())
  out, state = jax.jit(tx.update)(total, tx.init(total), loss_grads=loss_grads(rows))
  expected, _ = _np_mmpareto(rows)
  for path in SHAPES:
    if flat_labels()[path] == "a":
      assert np.all(np.asarray(flat(out)[path]) == 0)
    elif flat_labels()[path] == "b":
      np.testing.assert_allclose(flat(out)[path], expected[path], rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(state.diagnostics["stationary"], [1.0, 0.0])
  # Slightly off anti-parallel (angle ~1e-2): an ordinary conflict, as in the reference code.
  rows["a"] = add(rows["a"], jax.tree.map(lambda x: 1e-2 * x, tree(rng)))
  total = add(*rows.values())
  out, state = jax.jit(tx.update)(total, tx.init(total), loss_grads=loss_grads(rows))
  _check(out, rows)
  np.testing.assert_array_equal(state.diagnostics["stationary"], [0.0, 0.0])


def test_zero_gradient_takes_the_solvers_end_weight(rng):
  """A zero unimodal gradient (cos = 0, so the conflict branch): g_mm·g_uni = 0 ≥ ‖g_uni‖² = 0,
  and min_norm_solvers.py:22-26 gives g_mm the weight 0.001 (not 0)."""
  rows = {"fused": tree(rng), "a": tree(rng), "b": tree(rng)}
  rows["b"] = jax.tree.map(jnp.zeros_like, rows["b"])
  tx = mmreg.mmpareto(labels())
  total = add(*rows.values())
  out, state = jax.jit(tx.update)(total, tx.init(total), loss_grads=loss_grads(rows))
  _check(out, rows)
  assert float(state.diagnostics["weight_fused"][1]) == pytest.approx(0.001)


def test_output_depends_on_the_stack_only(rng):
  rows = {"fused": tree(rng), "a": tree(rng), "b": tree(rng)}
  tx = mmreg.mmpareto(labels(), check_updates=False)  # the clipped updates below would raise
  total = add(*rows.values())
  ref, _ = jax.jit(tx.update)(total, tx.init(total), loss_grads=loss_grads(rows))
  clipped = jax.tree.map(lambda x: 0.1 * x, total)
  out, _ = jax.jit(tx.update)(clipped, tx.init(total), loss_grads=loss_grads(rows))
  for path in SHAPES:
    if flat_labels()[path] in ("a", "b"):
      np.testing.assert_array_equal(flat(out)[path], flat(ref)[path])
    else:
      np.testing.assert_array_equal(flat(out)[path], flat(clipped)[path])


def test_errors():
  g = tree(np.random.default_rng(0))
  tx = mmreg.mmpareto(labels())
  with pytest.raises(ValueError, match=r"needs the gradients of losses \['b'\]"):
    tx.update(g, tx.init(g), loss_grads=loss_grads({"fused": g, "a": g}))
  with pytest.raises(ValueError, match="needs param_labels"):
    mmreg.mmpareto(None)
