"""Structure-aware per-loss gradients equal the vmapped VJP; row masks and their consumers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mmreg
from mmreg.grads import LossGrads, per_loss_grads, per_loss_grads_over
from mmreg.models import FUSIONS, build_model
from mmreg.train import init_train_state, loss_grads_mask, make_train_step
from mmreg.train.step import model_apply, split_model
from mmreg.train.structured_grads import reach, structured_loss_grads
from mmreg.transforms._common import (
  common_scale,
  gram,
  row_reduce,
  stack_row_masks,
  stack_rows,
)

K = 4


def _batch(shapes, batch=6, seed=0, missing=True):
  rng = np.random.default_rng(seed)
  out = {m: jnp.asarray(rng.normal(size=(batch, *s)), jnp.float32) for m, s in shapes.items()}
  out["label"] = jnp.asarray(rng.integers(0, K, batch), jnp.int32)
  if missing:  # every modality absent for some samples, never all at once
    present = rng.random((batch, len(shapes))) > 0.35
    present[np.arange(batch), np.arange(batch) % len(shapes)] = True
    out["present"] = {m: jnp.asarray(present[:, i]) for i, m in enumerate(shapes)}
  return out


def _reference(model, batch, mask=None, spec=None):
  """(losses, total gradient, stack) from per_loss_grads (or per_loss_grads_over with a mask)."""
  graphdef, params, rest = split_model(model)
  spec = spec or mmreg.classification_losses(model.modalities, unimodal_weight=0.5)

  def loss_fn(p):
    return spec(model_apply(graphdef, p, rest, batch)[0], batch)

  if mask is None:
    ref_losses, ref, _ = jax.jit(lambda p: per_loss_grads(loss_fn, p))(params)
    return ref_losses, ref.weighted_sum(spec.weights), ref
  ref_losses, ref_total, ref, _ = jax.jit(
      lambda p: per_loss_grads_over(loss_fn, p, mask, spec.weights))(params)
  return ref_losses, ref_total, ref


def _check_equal(model, batch, mask=None, pullbacks="auto", spec=None, reference=None):
  """Structured stack == per_loss_grads (or per_loss_grads_over) within 1e-5; every row the
  mask calls zero is exactly zero in the reference. `reference`: `_reference(model, batch,
  mask, spec)` computed once for several calls."""
  graphdef, params, rest = split_model(model)
  spec = spec or mmreg.classification_losses(model.modalities, unimodal_weight=0.5)
  ref_losses, ref_total, ref = reference or _reference(model, batch, mask, spec)
  losses, total, lg, _ = jax.jit(lambda p: structured_loss_grads(
      graphdef, spec, p, rest, batch, mask=mask, pullbacks=pullbacks))(params)
  assert lg.names == ref.names and set(losses) == set(ref_losses)
  for name in losses:
    np.testing.assert_allclose(losses[name], ref_losses[name], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(ref.grads), jax.tree.leaves(lg.grads), strict=True):
    np.testing.assert_allclose(b, a, atol=1e-5)
  for a, b in zip(jax.tree.leaves(ref_total), jax.tree.leaves(total), strict=True):
    np.testing.assert_allclose(b, a, atol=1e-5)
  for leaf, rows in zip(jax.tree.leaves(ref.grads), lg.row_masks(), strict=True):
    for i, keep in enumerate(rows):
      if not keep:
        assert not np.any(np.asarray(leaf[i]))
  return lg


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
@pytest.mark.parametrize("num_modalities", [2, 3])
def test_equals_vmapped_vjp_for_every_fusion(fusion, num_modalities):
  shapes = {f"m{i}": (5 + i,) for i in range(num_modalities)}
  model = mmreg.mlp_classifier({m: s[0] for m, s in shapes.items()}, K, hidden=(8,),
                               feature_dim=6, fusion=fusion)
  lg = _check_equal(model, _batch(shapes))
  # an encoder's leaves: the fused loss and its own unimodal loss, never another's
  labels = jax.tree.leaves(mmreg.param_labels(model))
  for lab, rows in zip(labels, lg.row_masks(), strict=True):
    if lab in shapes:
      assert rows == tuple(n in ("fused", lab) for n in lg.names)
    if lab == "aux_head":
      assert sum(rows) == 1 and not rows[lg.index("fused")]


def test_equals_vmapped_vjp_with_separate_and_vmapped_pullbacks_and_masks():
  shapes = {"a": (7,), "b": (4,), "c": (3,)}
  model = mmreg.mlp_classifier({m: s[0] for m, s in shapes.items()}, K, hidden=(8,),
                               feature_dim=6, fusion="gated")
  batch = _batch(shapes, missing=False)
  labels = mmreg.param_labels(model)
  reference = _reference(model, batch)  # the same program for both pullbacks
  for pullbacks in ("separate", "vmap"):
    _check_equal(model, batch, pullbacks=pullbacks, reference=reference)
  for scope in ("encoders", "fusion_head"):
    lg = _check_equal(model, batch, mask=loss_grads_mask(labels, scope))
    assert lg.covered is not None
  with pytest.raises(ValueError, match="pullbacks='both'"):
    _check_equal(model, batch, pullbacks="both", reference=reference)


def test_equals_vmapped_vjp_with_conv_and_resnet_encoders():
  shapes = {"audio": (9, 7, 1), "visual": (8, 8, 3)}
  cfg = {"encoder": {"audio": "conv2d", "visual": "resnet"}, "width": 4, "blocks": (1, 1),
         "feature_dim": 6, "channels": (4, 6), "fusion": "sum"}
  _check_equal(build_model(cfg, shapes, K, seed=0), _batch(shapes, batch=4))


def test_imputing_shared_space_reaches_every_encoder():
  # missing="impute": the fused loss reads every modality's latent, so every encoder's leaves
  # get the fused row; the static analysis must keep it.
  shapes = {"a": (5,), "b": (6,)}
  model = mmreg.mlp_classifier({m: s[0] for m, s in shapes.items()}, K, hidden=(8,),
                               feature_dim=6, missing="impute")
  _check_equal(model, _batch(shapes))


def test_encoder_rows_match_numpy_backprop():
  # Oracle: NumPy backprop of a one-hidden-layer ReLU encoder into its auxiliary head's mean
  # cross-entropy, ∂L_m/∂W1 = xᵀ[(δ W2ᵀ) ⊙ 1(z1>0)], δ = [(softmax(u) − onehot(y))/B Waᵀ] ⊙
  # 1(z2>0), u = relu(z2) Wa + ba; and the fused concat head's row through the same encoder.
  shapes = {"a": (5,), "b": (3,)}
  model = mmreg.mlp_classifier({"a": 5, "b": 3}, K, hidden=(8,), feature_dim=6)
  graphdef, params, rest = split_model(model)
  spec = mmreg.classification_losses(model.modalities)
  batch = _batch(shapes, missing=False)
  _, _, lg, _ = jax.jit(lambda p: structured_loss_grads(graphdef, spec, p, rest, batch))(params)
  P = jax.tree.map(np.asarray, params)
  x, y = {m: np.asarray(batch[m], np.float64) for m in shapes}, np.asarray(batch["label"])
  enc = {m: P["encoders"][m]["layers"] for m in shapes}

  def forward(m):
    z1 = x[m] @ enc[m][0]["kernel"] + enc[m][0]["bias"]
    z2 = np.maximum(z1, 0) @ enc[m][1]["kernel"] + enc[m][1]["bias"]
    return z1, z2, np.maximum(z2, 0)

  def ce_grad(u):
    e = np.exp(u - u.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True) - np.eye(K)[y]) / len(y)

  h = {m: forward(m)[2] for m in shapes}
  fused_logits = np.concatenate([h["a"], h["b"]], 1) @ P["head"]["kernel"] + P["head"]["bias"]
  head_rows = {"a": slice(0, 6), "b": slice(6, 12)}
  for m in shapes:
    z1, z2, hm = forward(m)
    aux = P["aux_heads"][m]
    for loss, dh in ((m, ce_grad(hm @ aux["kernel"] + aux["bias"]) @ aux["kernel"].T),
                     ("fused", ce_grad(fused_logits) @ P["head"]["kernel"][head_rows[m]].T)):
      d2 = dh * (z2 > 0)
      d1 = (d2 @ enc[m][1]["kernel"].T) * (z1 > 0)
      got = lg.grads["encoders"][m]["layers"]
      np.testing.assert_allclose(got[1]["kernel"][lg.index(loss)], np.maximum(z1, 0).T @ d2,
                                 atol=1e-5)
      np.testing.assert_allclose(got[0]["kernel"][lg.index(loss)], x[m].T @ d1, atol=1e-5)
    other = "b" if m == "a" else "a"
    assert not np.any(np.asarray(lg.grads["encoders"][m]["layers"][0]["kernel"][
        lg.index(other)]))


def test_reach_follows_gradients_not_values():
  def fn(x, y, z):
    zero_grad = jax.lax.stop_gradient(z).sum()
    return (jax.nn.logsumexp(x) + zero_grad, jnp.argmax(y).astype(jnp.float32),
            jax.jit(lambda u, v: u * v)(x.sum(), y.sum()))

  r = reach(fn, jnp.ones(3), jnp.ones(2), jnp.ones(4))
  np.testing.assert_array_equal(r, [[True, False, False], [False, False, False],
                                    [True, True, False]])


def test_train_step_picks_structured_stack_and_trains_like_vmap():
  shapes = {"a": (5,), "b": (6,)}
  model = mmreg.mlp_classifier({m: s[0] for m, s in shapes.items()}, K, hidden=(8,),
                               feature_dim=6)
  spec = mmreg.classification_losses(model.modalities)
  tx = optax.chain(mmreg.pcgrad(), optax.sgd(0.1))
  graphdef, state = init_train_state(model, tx, 0)
  seen = {}

  def spy(impl):
    def update(updates, opt_state, params=None, **extra):
      seen[impl] = extra["loss_grads"].nonzero
      return tx.update(updates, opt_state, params, **extra)
    return optax.GradientTransformationExtraArgs(tx.init, update)

  states = {}
  for impl in ("auto", "vmap"):
    step = make_train_step(graphdef, spec, spy(impl), steps_per_epoch=5, with_loss_grads=True,
                           loss_grads_impl=impl)
    s = jax.tree.map(jnp.copy, state)
    for seed in range(3):
      s, _ = step(s, _batch(shapes, seed=seed))
    states[impl] = s
  assert seen["auto"] is not None and seen["vmap"] is None
  for a, b in zip(jax.tree.leaves(states["auto"].params), jax.tree.leaves(states["vmap"].params),
                  strict=True):
    np.testing.assert_allclose(a, b, atol=1e-5)
  with pytest.raises(ValueError, match="loss_grads_impl='fast'"):
    make_train_step(graphdef, spec, tx, steps_per_epoch=5, loss_grads_impl="fast")


class _Whole(nnx.Module):
  """A model with no encoder split: only __call__."""

  def __init__(self, inner):
    self.inner = inner

  def __call__(self, batch):
    return self.inner(batch)


def test_model_without_split_falls_back_to_vmap():
  shapes = {"a": (5,), "b": (6,)}
  model = _Whole(mmreg.mlp_classifier({"a": 5, "b": 6}, K, hidden=(8,), feature_dim=6))
  spec = mmreg.classification_losses(("a", "b"))
  tx = optax.chain(mmreg.pcgrad(), optax.sgd(0.1))
  graphdef, state = init_train_state(model, tx, 0)
  step = make_train_step(graphdef, spec, tx, steps_per_epoch=5, with_loss_grads=True)
  _, metrics = step(state, _batch(shapes))
  assert np.isfinite(float(metrics["loss/total"]))
  graphdef, params, rest = split_model(model)
  with pytest.raises(TypeError, match=r"lacks \['modalities', 'encode', 'from_features'\]"):
    structured_loss_grads(graphdef, spec, params, rest, _batch(shapes))


def test_row_mask_consumers_skip_zero_rows():
  # two leaves, three losses; leaf "e" has rows (0, 1) only, leaf "h" row 2 only
  rng = np.random.default_rng(0)
  e = rng.normal(size=(3, 4, 2)).astype(np.float32)
  e[2] = 0.0
  h = rng.normal(size=(3, 5)).astype(np.float32)
  h[:2] = 0.0
  lg = LossGrads(grads={"e": jnp.asarray(e), "h": jnp.asarray(h)}, names=("f", "a", "b"),
                 nonzero=((True, True, False), (False, False, True)))
  w = np.array([0.5, 2.0, -1.0], np.float32)
  total = lg.weighted_sum({"f": 0.5, "a": 2.0, "b": -1.0})
  np.testing.assert_allclose(total["e"], np.tensordot(w, e, 1), rtol=1e-6)
  np.testing.assert_allclose(total["h"], np.tensordot(w, h, 1), rtol=1e-6)
  assert stack_rows(lg, ("f", "a"))[1] is None  # leaf h: rows f, a are zero
  np.testing.assert_array_equal(stack_rows(lg, ("b", "f"))[0], e[[2, 0]])
  assert stack_row_masks(lg, ("b", "f")) == [(False, True), (True, False)]
  names = ("b", "f", "a")
  rows, masks = stack_rows(lg, names), stack_row_masks(lg, names)
  flat = np.concatenate([e[[2, 0, 1]].reshape(3, -1), h[[2, 0, 1]]], axis=1).astype(np.float64)
  G, s = gram(rows, masks)
  np.testing.assert_allclose(np.asarray(G) * float(s) ** 2, flat @ flat.T, rtol=1e-5)
  G_plain, s_plain = gram(rows)
  np.testing.assert_allclose(G, G_plain, rtol=1e-6)
  assert float(s) == float(s_plain) == float(common_scale(rows, masks))
  for size in (1e30, 1e-30):  # ‖g‖² would overflow / underflow without s
    rows_far = [r * np.float32(size) for r in rows]
    G_far, s_far = gram(rows_far, masks)
    assert float(s_far) == float(common_scale(rows_far, masks)) != 1.0
    np.testing.assert_allclose(np.asarray(G_far, np.float64) * (float(s_far) / size) ** 2,
                               flat @ flat.T, rtol=1e-5)
  big = LossGrads(grads={"e": jnp.asarray(e * 0 + np.float32(1e30) * (e != 0))},
                  names=("f", "a", "b"), nonzero=((True, True, False),))
  assert float(common_scale(stack_rows(big, ("f",)), stack_row_masks(big, ("f",)))) == 2.0 ** 100


def test_row_reduce_sums_and_peaks_every_group_in_one_pass():
  # oracle: float64 NumPy sums of products and maxima, row by row
  rng = np.random.default_rng(2)
  for shape in ((3,), (3, 5), (3, 9000), (3, 1000, 7), (3, 2, 3, 4)):
    g = rng.normal(size=shape).astype(np.float32)
    pairs = [(0, 0), (0, 2), (2, 2)]
    sums = row_reduce(jnp.asarray(g), pairs, lambda a, b: a * b, jnp.add)
    g64 = g.astype(np.float64)
    want = [np.sum(g64[i] * g64[j]) for i, j in pairs]
    # a long 1-D row (a stacked bias) is summed in one stage: a sequential float32 sum's error
    rtol = 1e-4 if shape == (3, 9000) else 2e-6
    np.testing.assert_allclose(np.asarray(sums, np.float64), want, rtol=rtol, atol=1e-6)
    peaks = row_reduce(jnp.asarray(g), [(1,), (2,)], jnp.abs, jnp.maximum)
    np.testing.assert_array_equal(np.asarray(peaks), np.abs(g[1:]).reshape(2, -1).max(axis=1))
