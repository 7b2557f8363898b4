import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mmreg
from mmreg.data import iterate_batches, load_mfeat
from mmreg.train.step import model_apply, split_model


def test_per_loss_grads_quadratic_by_hand():
  # L_a = ½‖Aθ‖², L_b = c·θ  →  ∂L_a = AᵀAθ, ∂L_b = c
  A = np.array([[1.0, 2.0], [0.0, 3.0]])
  c = np.array([0.5, -1.0])
  theta = {"w": jnp.array([1.0, -2.0])}
  losses, lg, aux = mmreg.per_loss_grads(
      lambda p: {"a": 0.5 * jnp.sum((A @ p["w"]) ** 2), "b": jnp.dot(c, p["w"])}, theta)
  assert aux is None and lg.names == ("a", "b")
  np.testing.assert_allclose(lg["a"]["w"], A.T @ A @ np.array([1.0, -2.0]), rtol=1e-6)
  np.testing.assert_allclose(lg["b"]["w"], c, rtol=1e-6)
  np.testing.assert_allclose(losses["a"], 0.5 * np.sum((A @ np.array([1.0, -2.0])) ** 2))
  total = lg.weighted_sum({"a": 2.0, "b": -1.0})
  np.testing.assert_allclose(total["w"], 2 * A.T @ A @ np.array([1.0, -2.0]) - c, rtol=1e-6)


def test_per_loss_grads_match_separate_backward_passes():
  splits = load_mfeat(("fou", "mor"))
  model = mmreg.mlp_classifier({"fou": 76, "mor": 6}, 10, hidden=(16,), feature_dim=8)
  graphdef, params, rest = split_model(model)
  spec = mmreg.classification_losses(model.modalities, unimodal_weight=0.5)
  batch = next(iterate_batches(splits.train, 32, seed=0, epoch=0))

  def loss_fn(p):
    return spec(model_apply(graphdef, p, rest, batch)[0], batch)

  # Each gradient jitted: one compilation each instead of one per operation.
  _losses, lg, _ = jax.jit(lambda p: mmreg.per_loss_grads(loss_fn, p))(params)
  assert lg.names == ("fused", "fou", "mor")
  separate = jax.jit(lambda p: {n: jax.grad(lambda q, n=n: loss_fn(q)[n])(p) for n in lg.names})(
      params)
  for name in lg.names:
    for a, b in zip(jax.tree.leaves(separate[name]), jax.tree.leaves(lg[name]), strict=True):
      np.testing.assert_allclose(a, b, atol=1e-6)
  total = jax.jit(jax.grad(lambda p: spec.total(loss_fn(p))))(params)
  for a, b in zip(jax.tree.leaves(total), jax.tree.leaves(lg.weighted_sum(spec.weights)),
                  strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)
  # leaves carry a leading loss axis
  for leaf, p in zip(jax.tree.leaves(lg.grads), jax.tree.leaves(params), strict=True):
    assert leaf.shape == (3, *p.shape)


def test_loss_grads_errors():
  _, lg, _ = mmreg.per_loss_grads(lambda p: {"x": p.sum()}, jnp.ones(2))
  with pytest.raises(KeyError, match="not in the per-loss gradient stack"):
    lg["y"]
  with pytest.raises(ValueError, match="needs the gradients of losses"):
    lg.require(["x", "y"], "mmpareto")
  with pytest.raises(ValueError, match="must be a scalar"):
    mmreg.per_loss_grads(lambda p: {"x": p}, jnp.ones(2))
