"""Class-centre EMA, SpA-Proj, SpA-SLERP and SpA-Reg against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mmreg
from mmreg.losses import spa_reg_loss
from mmreg.monitors import ClassCentres, init_class_centres, update_class_centres
from mmreg.transforms import project_toward_centres, slerp_rate, slerp_toward_centres

D, K = 6, 4


def _unit(v):
  return v / np.linalg.norm(v)


def _random(seed):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(D, K)), rng.normal(size=(K, D)), rng.normal(size=(D, K)))


def _hand_proj(grad, kernel, centred, variant, gamma=0.6):
  out = grad.copy()
  for c in range(K):
    g, w, m = grad[:, c], _unit(kernel[:, c]), _unit(centred[c])
    d = _unit(m - (m @ w) * w)
    if variant == "conflict_only":
      out[:, c] = g - max(g @ d, 0.0) * d
    else:  # smithgun2005/SpaceAlignmentLongTail SpA_Proj/trainer.py:215-226, gamma = 0.6 (:212)
      g_t = g - (g @ w) * w
      if g_t @ d > 0:
        g_t = g_t - (g_t @ d) * d
      out[:, c] = (1 - gamma) * g_t + gamma * g
  return out


@pytest.mark.parametrize("variant", ["conflict_only", "authors"])
def test_projection_equals_hand_formula(variant):
  for seed in range(5):
    kernel, centred, grad = _random(seed)
    got, conflict = project_toward_centres(jnp.asarray(grad), jnp.asarray(kernel),
                                           jnp.asarray(centred), jnp.ones(K, bool),
                                           variant=variant)
    np.testing.assert_allclose(got, _hand_proj(grad, kernel, centred, variant), atol=1e-5)
    d = [_unit(_unit(centred[c]) - (_unit(centred[c]) @ _unit(kernel[:, c])) * _unit(kernel[:, c]))
         for c in range(K)]
    np.testing.assert_array_equal(conflict, [grad[:, c] @ d[c] > 0 for c in range(K)])


def test_descent_never_turns_weight_away_from_centre():
  lr, moved_away_before = 1e-3, 0
  for seed in range(50):
    kernel, centred, grad = _random(seed)
    new, _ = project_toward_centres(jnp.asarray(grad), jnp.asarray(kernel), jnp.asarray(centred),
                                    jnp.ones(K, bool), variant="conflict_only")
    new = np.asarray(new, np.float64)
    for c in range(K):
      m, w = _unit(centred[c]), kernel[:, c]
      cos = lambda v, m=m: _unit(v) @ m  # noqa: E731
      d = _unit(m - (m @ _unit(w)) * _unit(w))
      assert -new[:, c] @ d >= -1e-5  # the descent direction has no component away from m
      assert cos(w - lr * new[:, c]) >= cos(w) - 1e-5
      moved_away_before += cos(w - lr * grad[:, c]) < cos(w) - 1e-6
  assert moved_away_before > 20  # the raw gradient did turn many weights away


def test_unseen_classes_keep_their_gradient():
  kernel, centred, grad = _random(7)
  seen = jnp.array([True, False, True, False])
  got, _ = project_toward_centres(jnp.asarray(grad), jnp.asarray(kernel), jnp.asarray(centred),
                                  seen)
  np.testing.assert_allclose(got[:, 1], grad[:, 1], rtol=1e-6)
  np.testing.assert_allclose(got[:, 3], grad[:, 3], rtol=1e-6)


def test_class_centre_ema_and_centring():
  rng = np.random.default_rng(0)
  h1, y1 = rng.normal(size=(6, D)), np.array([0, 0, 1, 1, 1, 2])
  h2, y2 = rng.normal(size=(4, D)), np.array([0, 2, 2, 2])
  state, centred = update_class_centres(init_class_centres(K, D), jnp.asarray(h1), y1)
  want = np.zeros((K, D))
  for c in (0, 1, 2):
    want[c] = h1[y1 == c].mean(0)  # first sighting: the batch mean itself
  np.testing.assert_allclose(state.centres, want, rtol=1e-5, atol=1e-6)
  state, centred = update_class_centres(state, jnp.asarray(h2), y2, momentum=0.9)
  for c in (0, 2):
    want[c] = 0.9 * want[c] + 0.1 * h2[y2 == c].mean(0)
  np.testing.assert_allclose(state.centres, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(state.seen, [True, True, True, False])
  mean = want[:3].mean(0)
  np.testing.assert_allclose(centred[:3], want[:3] - mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(centred[3], 0.0)


def _tree(seed):
  rng = np.random.default_rng(seed)
  params = {"enc": {"kernel": rng.normal(size=(3, D))},
            "head": {"kernel": rng.normal(size=(D, K)), "bias": rng.normal(size=(K,))}}
  labels = {"enc": {"kernel": "a"}, "head": {"kernel": "head", "bias": "head"}}
  return jax.tree.map(jnp.asarray, params), labels


def test_spa_proj_transform_projects_only_the_kernel():
  params, labels = _tree(0)
  grads, _ = _tree(1)
  rng = np.random.default_rng(2)
  h, y = rng.normal(size=(16, D)), np.arange(16) % K
  means = np.stack([h[y == c].mean(0) for c in range(K)])
  # The authors' monitor starts at 0 and moves by (1 - 0.9) of each batch mean (trainer.py:37,
  # :47); mmreg's conflict_only variant starts at the first batch mean.
  for variant, centres in (("authors", 0.1 * means), ("conflict_only", means)):
    tx = mmreg.spa_proj(labels, variant=variant)
    new, state = tx.update(grads, tx.init(params), params, penultimate=jnp.asarray(h), labels=y,
                           features={"a": None}, epoch=0)
    centred = centres - centres.mean(0)
    want = _hand_proj(np.asarray(grads["head"]["kernel"]), np.asarray(params["head"]["kernel"]),
                      centred, variant)
    np.testing.assert_allclose(new["head"]["kernel"], want, atol=1e-5)
  np.testing.assert_array_equal(new["head"]["bias"], grads["head"]["bias"])
  np.testing.assert_array_equal(new["enc"]["kernel"], grads["enc"]["kernel"])
  cos = [_unit(params["head"]["kernel"][:, c]) @ _unit(centred[c]) for c in range(K)]
  np.testing.assert_allclose(state.diagnostics["alignment_cosine"], cos, atol=1e-5)
  with pytest.raises(ValueError, match="penultimate"):
    tx.update(grads, state, params, labels=y)
  with pytest.raises(ValueError, match="exactly one 2-D parameter labelled 'head'"):
    mmreg.spa_proj(jax.tree.map(lambda _: "a", labels)).init(params)


def test_spa_proj_in_a_chain_with_jit():
  params, labels = _tree(3)
  tx = optax.chain(mmreg.spa_proj(labels), optax.sgd(0.1))
  state = tx.init(params)
  rng = np.random.default_rng(0)
  h, y = jnp.asarray(rng.normal(size=(8, D))), jnp.arange(8) % K
  update = jax.jit(lambda g, s, p: tx.update(g, s, p, penultimate=h, labels=y, key=None))
  updates, state = update(params, state, params)
  assert np.isfinite(np.asarray(updates["head"]["kernel"])).all()


def test_slerp_preserves_norms_and_reaches_target_at_rate_one():
  kernel, centred, _ = _random(4)
  seen = jnp.ones(K, bool)
  for rate in (0.0, 0.3, 1.0):
    new = np.asarray(slerp_toward_centres(jnp.asarray(kernel), jnp.asarray(centred), seen, rate,
                                          threshold=1.1), np.float64)
    np.testing.assert_allclose(np.linalg.norm(new, axis=0), np.linalg.norm(kernel, axis=0),
                               rtol=1e-5)
    for c in range(K):
      theta = np.arccos(_unit(kernel[:, c]) @ _unit(centred[c]))
      np.testing.assert_allclose(np.arccos(np.clip(_unit(new[:, c]) @ _unit(centred[c]), -1, 1)),
                                 (1 - rate) * theta, atol=2e-3)
      # stays on the great circle through ŵ and m̂
      basis = np.linalg.qr(np.stack([_unit(kernel[:, c]), _unit(centred[c])], 1))[0]
      np.testing.assert_allclose(basis @ basis.T @ new[:, c], new[:, c], atol=1e-5)
  full = np.asarray(slerp_toward_centres(jnp.asarray(kernel), jnp.asarray(centred), seen, 1.0,
                                         threshold=1.1))
  want = np.linalg.norm(kernel, axis=0) * (centred / np.linalg.norm(centred, axis=1,
                                                                    keepdims=True)).T
  np.testing.assert_allclose(full, want, atol=1e-5)


def test_slerp_skips_aligned_and_unseen_classes():
  kernel, centred, _ = _random(5)
  kernel[:, 0] = 2.0 * centred[0] + 0.01 * kernel[:, 0]  # cos ≈ 1 > threshold
  new = slerp_toward_centres(jnp.asarray(kernel), jnp.asarray(centred),
                             jnp.array([True, True, False, True]), 0.5, threshold=0.9)
  np.testing.assert_allclose(new[:, 0], kernel[:, 0], rtol=1e-6)
  np.testing.assert_allclose(new[:, 2], kernel[:, 2], rtol=1e-6)
  assert not np.allclose(new[:, 1], kernel[:, 1])


def test_slerp_rate_schedule_and_hook():
  np.testing.assert_allclose([slerp_rate(e, 10, 0.4) for e in (0, 5, 10, 20)],
                             [0.0, 0.2, 0.4, 0.4], atol=1e-7)
  params, labels = _tree(6)
  tx = optax.chain(mmreg.track_class_centres(labels), optax.sgd(0.1))
  state = tx.init(params)
  rng = np.random.default_rng(1)
  h, y = jnp.asarray(rng.normal(size=(12, D))), jnp.arange(12) % K
  _, state = tx.update(params, state, params, penultimate=h, labels=y)
  centres = mmreg.find_class_centres(state)
  np.testing.assert_allclose(centres.centres[1], np.asarray(h)[1::K].mean(0), rtol=1e-5)
  hook = mmreg.spa_slerp_hook(labels, total_epochs=4, alpha=1.0, threshold=1.1)
  new = hook(params, state, 4)  # end of the ramp: rate α = 1 puts every column on its centre
  centred = np.asarray(centres.centres) - np.asarray(centres.centres).mean(0)
  cos = [_unit(np.asarray(new["head"]["kernel"])[:, c]) @ _unit(centred[c]) for c in range(K)]
  np.testing.assert_allclose(cos, 1.0, atol=1e-5)
  np.testing.assert_array_equal(new["head"]["bias"], params["head"]["bias"])
  np.testing.assert_array_equal(hook(params, state, 0)["head"]["kernel"], params["head"]["kernel"])
  with pytest.raises(ValueError, match="no class centres"):
    mmreg.find_class_centres(optax.sgd(0.1).init(params))


def test_spa_reg_value_and_stop_gradient():
  kernel, _, _ = _random(8)
  rng = np.random.default_rng(9)
  prev = ClassCentres(jnp.asarray(rng.normal(size=(K, D))), jnp.array([True, True, True, False]))
  h, y = rng.normal(size=(10, D)), np.array([0, 1, 1, 3, 3, 0, 1, 3, 0, 1])
  centres = np.asarray(prev.centres).copy()
  for c in (0, 1):
    centres[c] = 0.9 * centres[c] + 0.1 * h[y == c].mean(0)
  centres[3] = h[y == 3].mean(0)  # first sighting of class 3
  centred = centres - centres.mean(0)  # all four classes are seen after this batch
  want = np.mean([1 - _unit(kernel[:, c]) @ _unit(centred[c]) for c in range(K)])
  args = (jnp.asarray(kernel), jnp.asarray(h), jnp.asarray(y), prev)
  np.testing.assert_allclose(spa_reg_loss(*args), want, rtol=1e-5)
  grad_sg = jax.grad(lambda hh: spa_reg_loss(args[0], hh, args[2], prev))(args[1])
  grad_free = jax.grad(lambda hh: spa_reg_loss(args[0], hh, args[2], prev,
                                               stop_gradient=False))(args[1])
  assert float(jnp.abs(grad_sg).max()) == 0.0 and float(jnp.abs(grad_free).max()) > 0.0
  grad_w = jax.grad(spa_reg_loss)(*args)
  stepped = spa_reg_loss(args[0] - 0.05 * grad_w, *args[1:])
  assert float(stepped) < float(spa_reg_loss(*args))
