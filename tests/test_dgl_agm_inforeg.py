import jax
import jax.numpy as jnp
import numpy as np
import pytest
from balance_toys import (
  SHAPES,
  add,
  block,
  flat,
  flat_labels,
  labels,
  logits_with_confidence,
  loss_grads,
  tree,
)

import mmreg


def test_dgl_routes_losses_to_parameters(rng):
  rows = {"fused": tree(rng), "a": tree(rng), "b": tree(rng)}
  total = add(*rows.values())
  tx = mmreg.dgl(labels(), alpha=1.0, loss_weights={"a": 2.0})
  out, _ = tx.update(total, tx.init(total), loss_grads=loss_grads(rows))
  for path, lab in flat_labels().items():
    want = {"a": 2.0 * flat(rows["a"])[path], "b": flat(rows["b"])[path],
            "fusion": flat(rows["fused"])[path], "head": flat(rows["fused"])[path]}[lab]
    np.testing.assert_allclose(flat(out)[path], want, rtol=1e-6)


def test_dgl_missing_route_loss(rng):
  g = tree(rng)
  tx = mmreg.dgl(labels())
  with pytest.raises(ValueError, match=r"needs the gradients of losses \['b'\]"):
    tx.update(g, tx.init(g), loss_grads=loss_grads({"fused": g, "a": g}))


def _shapley_logits(conf):
  logits, y = logits_with_confidence(conf)
  return logits, y


def test_agm_coefficients_over_two_steps(rng):
  g = tree(rng)
  tx = mmreg.agm(labels(), alpha=0.5, momentum=0.9)
  state = tx.init(g)
  phi1, y = _shapley_logits([0.6, 0.4])
  out, state = tx.update(g, state, shapley_logits=phi1, labels=y)
  for path in SHAPES:  # first step: r̄ = r, k = 1
    np.testing.assert_allclose(flat(out)[path], flat(g)[path], rtol=1e-6)
  phi2, _ = _shapley_logits([0.8, 0.3])
  out, state = tx.update(g, state, shapley_logits=phi2, labels=y)
  r1 = np.array([0.1, -0.1])
  r2 = np.array([0.8, 0.3]) - 0.55
  k = np.exp(0.5 * np.minimum(r1 - r2, 7))
  for path, lab in flat_labels().items():
    factor = {"a": k[0], "b": k[1]}.get(lab, 1.0)
    np.testing.assert_allclose(flat(out)[path], factor * flat(g)[path], rtol=1e-5)
  np.testing.assert_allclose(state.running, 0.9 * r1 + 0.1 * r2, rtol=1e-5)
  k_capped, _ = mmreg.agm_coefficients(jnp.asarray([0.0, 0.0]), jnp.asarray([100.0, 0.0]), 1.0)
  np.testing.assert_allclose(k_capped, [np.exp(7.0), 1.0], rtol=1e-5)


def test_agm_computes_shapley_logits_from_logits_fn(rng):
  g = tree(rng)
  W = {m: jnp.asarray(rng.normal(size=(5, 3)), jnp.float32) for m in "ab"}
  inputs = {m: jnp.asarray(rng.normal(size=(4, 5)), jnp.float32) for m in "ab"}

  def logits_fn(batch):  # additive model: φ_m = x_m W_m exactly
    return sum(jnp.where(batch["present"][m][:, None], batch[m] @ W[m], 0.0) for m in "ab")

  y = jnp.asarray([0, 1, 2, 0])
  tx = mmreg.agm(labels())
  _, s1 = tx.update(g, tx.init(g), logits_fn=logits_fn, inputs=inputs, labels=y)
  phi = {m: inputs[m] @ W[m] for m in "ab"}
  _, s2 = tx.update(g, tx.init(g), shapley_logits=phi, labels=y)
  np.testing.assert_allclose(s1.running, s2.running, rtol=1e-5)
  with pytest.raises(ValueError, match="`logits_fn` extra"):
    tx.update(g, tx.init(g), labels=y)


def test_inforeg_proximal_pull_matches_numpy(rng):
  g, p0, p1 = tree(rng), tree(rng), tree(rng)
  logits, y = logits_with_confidence([0.4, 0.7])
  tx = mmreg.inforeg(labels(), strength=0.3, window=2)
  state = tx.init(p0)
  _, state = tx.update(g, state, p0, epoch=0, modality_logits=logits, labels=y)
  out, state = tx.update(g, state, p1, epoch=0, modality_logits=logits, labels=y)
  beta = 0.3 * np.exp(np.tanh(0.3))
  np.testing.assert_allclose(block(out, "b"), block(g, "b") + beta * (block(p1, "b") -
                                                                     block(p0, "b")), rtol=1e-5)
  np.testing.assert_array_equal(block(out, "a"), block(g, "a"))
  trace = [np.sum(block(g, m) ** 2) for m in "ab"]
  np.testing.assert_allclose(state.diagnostics["trace"], trace, rtol=1e-5)


def test_inforeg_stops_outside_the_window_and_on_ties(rng):
  g, p0 = tree(rng), tree(rng)
  logits, y = logits_with_confidence([0.4, 0.7])
  tx = mmreg.inforeg(labels(), window=1, threshold=0.05)
  state = tx.init(p0)
  # Fisher trace falls every epoch (k < 0): after W + 1 epochs the window closes.
  for epoch, scale in enumerate([4.0, 2.0, 1.0, 0.5]):
    gs = jax.tree.map(lambda x, s=scale: s * x, g)
    p = jax.tree.map(lambda x, e=epoch: x + e, p0)
    out, state = tx.update(gs, state, jax.tree.map(lambda x: x + 0.1, p), epoch=epoch,
                           modality_logits=logits, labels=y)
  assert not bool(np.asarray(state.diagnostics["k"])[1] > 0.05)
  assert float(state.diagnostics["beta"]) == 0.0
  tie, y = logits_with_confidence([0.5, 0.5])
  tx2 = mmreg.inforeg(labels())
  s2 = tx2.init(p0)
  _, s2 = tx2.update(g, s2, p0, epoch=0, modality_logits=tie, labels=y)
  out, s2 = tx2.update(g, s2, jax.tree.map(lambda x: x + 1, p0), epoch=0, modality_logits=tie,
                       labels=y)
  for path in SHAPES:
    np.testing.assert_array_equal(flat(out)[path], flat(g)[path])


def test_inforeg_errors(rng):
  g = tree(rng)
  logits, y = logits_with_confidence([0.4, 0.7])
  tx = mmreg.inforeg(labels())
  with pytest.raises(ValueError, match="`epoch` extra"):
    tx.update(g, tx.init(g), g, modality_logits=logits, labels=y)
  with pytest.raises(ValueError, match="`modality_logits` and `labels`"):
    tx.update(g, tx.init(g), g, epoch=0)
