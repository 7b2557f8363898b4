"""Per-loss gradients over a parameter subset and w.r.t. the features; ResNet encoder."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mmreg
from mmreg.data import iterate_batches, load_mfeat
from mmreg.grads import per_loss_grads_over
from mmreg.models import ResNetEncoder, build_model
from mmreg.train import (
    build_method,
    get_method,
    init_train_state,
    loss_grads_mask,
    make_train_step,
    per_loss_feature_grads,
)
from mmreg.train.step import model_apply, split_model

K = 10


@pytest.fixture(scope="module")
def setup():
  splits = load_mfeat(("fou", "mor"))
  model = mmreg.mlp_classifier({"fou": 76, "mor": 6}, K, hidden=(16,), feature_dim=8)
  graphdef, params, rest = split_model(model)
  spec = mmreg.classification_losses(model.modalities, unimodal_weight=0.5)
  batch = next(iterate_batches(splits.train, 32, seed=0, epoch=0))
  return splits, model, graphdef, params, rest, spec, batch


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _ce_grad(logits, labels):
  """∂ mean_b CE(z_b, y_b) / ∂z = (softmax(z) − onehot(y)) / B."""
  z = np.asarray(logits, np.float64)
  return (_softmax(z) - np.eye(K)[labels]) / len(labels)


def test_stack_over_heads_matches_numpy(setup):
  _, model, graphdef, params, rest, spec, batch = setup
  mask = loss_grads_mask(mmreg.param_labels(model), ("head", "aux_head"))

  def loss_fn(p, rest, batch):
    output, _ = model_apply(graphdef, p, rest, batch)
    return spec(output, batch), output

  losses, total, lg, out = per_loss_grads_over(loss_fn, params, mask, spec.weights, rest, batch,
                                               has_aux=True)
  y = np.asarray(batch["label"])
  fused, h = np.asarray(out.fused), {m: np.asarray(out.features[m]) for m in ("fou", "mor")}
  head = lg.grads["head"]["kernel"]
  np.testing.assert_allclose(head[lg.index("fused")], fused.T @ _ce_grad(out.logits, y), atol=1e-6)
  np.testing.assert_allclose(head[lg.index("fou")], 0.0)
  for m in ("fou", "mor"):
    aux = lg.grads["aux_heads"][m]["kernel"]
    np.testing.assert_allclose(aux[lg.index(m)], h[m].T @ _ce_grad(out.modality_logits[m], y),
                               atol=1e-6)
    np.testing.assert_allclose(aux[lg.index("fused")], 0.0)
  # uncovered leaves hold zeros; the total gradient still covers every parameter
  assert not np.any(lg.grads["encoders"]["fou"]["layers"][0]["kernel"])
  expected = jax.grad(lambda p: spec.total(loss_fn(p, rest, batch)[0]))(params)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(total), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)
  assert set(losses) == {"fused", "fou", "mor"}


def test_stack_over_encoders_equals_full_stack_there(setup):
  _, model, graphdef, params, rest, spec, batch = setup
  labels = mmreg.param_labels(model)
  mask = loss_grads_mask(labels, "encoders")

  def loss_fn(p):
    return spec(model_apply(graphdef, p, rest, batch)[0], batch)

  _, full, _ = mmreg.per_loss_grads(loss_fn, params)
  _, _, sub, _ = per_loss_grads_over(loss_fn, params, mask, spec.weights)
  for lab, a, b in zip(jax.tree.leaves(labels), jax.tree.leaves(full.grads),
                       jax.tree.leaves(sub.grads), strict=True):
    np.testing.assert_allclose(b, a if lab in ("fou", "mor") else 0.0, atol=1e-6)


def test_feature_grads_match_numpy(setup):
  _, _, graphdef, params, rest, spec, batch = setup
  losses, grads, fg, features_vjp, (out, _) = per_loss_feature_grads(graphdef, spec, params,
                                                                     rest, batch)
  y = np.asarray(batch["label"])
  W_head = np.asarray(params["head"]["kernel"])
  d = {"fou": 8, "mor": 8}
  offset = {"fou": slice(0, 8), "mor": slice(8, 16)}
  g_fused = _ce_grad(out.logits, y)
  for m in d:
    assert fg.grads[m].shape == (3, 32, d[m])
    np.testing.assert_allclose(fg.grads[m][fg.index("fused")], g_fused @ W_head[offset[m]].T,
                               atol=1e-6)
    W_aux = np.asarray(params["aux_heads"][m]["kernel"])
    np.testing.assert_allclose(fg.grads[m][fg.index(m)],
                               _ce_grad(out.modality_logits[m], y) @ W_aux.T, atol=1e-6)
    other = "mor" if m == "fou" else "fou"
    np.testing.assert_allclose(fg.grads[m][fg.index(other)], 0.0)
  expected = jax.grad(lambda p: spec.total(spec(model_apply(graphdef, p, rest, batch)[0],
                                                batch)))(params)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(grads), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)
  # features_vjp(c) = ∇_θ Σ_m ⟨c_m, h_m(θ)⟩
  c = {m: jnp.ones((32, d[m])) for m in d}
  pulled = features_vjp(c)
  direct = jax.grad(lambda p: sum(jnp.sum(c[m] * v) for m, v in model_apply(
      graphdef, p, rest, batch)[0].features.items()))(params)
  for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(pulled), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-5)
  assert float(losses["fused"]) > 0


def _peak_bytes(model, method, batch, spe=10, **step_options):
  tx = optax.chain(build_method(method, mmreg.param_labels(model), model.modalities),
                   optax.sgd(0.1))
  graphdef, state = init_train_state(model, tx, 0)
  step = make_train_step(graphdef, mmreg.classification_losses(model.modalities), tx,
                         steps_per_epoch=spe, **step_options)
  return step, state, step.lower(state, batch).compile().memory_analysis().temp_size_in_bytes


def test_mmpareto_on_encoder_stack_trains_identically(setup):
  splits, model, *_ = setup
  labels = mmreg.param_labels(model)
  assert get_method("mmpareto").loss_grads_over == "encoders"
  batches = list(iterate_batches(splits.train, 32, seed=0, epoch=0))[:5]
  full_step, state_a, _ = _peak_bytes(model, "mmpareto", batches[0], with_loss_grads=True)
  sub_step, state_b, _ = _peak_bytes(model, "mmpareto", batches[0], with_loss_grads=True,
                                     loss_grads_mask=loss_grads_mask(labels, "encoders"))
  for b in batches:
    state_a, _ = full_step(state_a, b)
    state_b, _ = sub_step(state_b, b)
  for a, b in zip(jax.tree.leaves(state_a.params), jax.tree.leaves(state_b.params), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_stack_over_fusion_head_needs_less_memory(setup):
  splits, *_ = setup
  model = mmreg.mlp_classifier({"fou": 76, "mor": 6}, K, hidden=(256,), feature_dim=64)
  batch = next(iterate_batches(splits.train, 8, seed=0, epoch=0))
  mask = loss_grads_mask(mmreg.param_labels(model), "fusion_head")
  *_, full = _peak_bytes(model, "pcgrad", batch, with_loss_grads=True)
  *_, sub = _peak_bytes(model, "pcgrad", batch, with_loss_grads=True, loss_grads_mask=mask)
  *_, joint = _peak_bytes(model, "joint", batch)
  # the encoders hold ~95% of the parameters: their 3× stack is most of the full step's memory.
  # (The fusion/head stack is small enough that XLA's buffer assignment can put the subset step
  # at or below the joint step's scratch memory, so only the two stack steps are ordered.)
  assert sub < 0.7 * full and joint < 0.7 * full, (joint, sub, full)


def test_loss_grads_mask_scopes_and_errors(setup):
  _, model, *_ = setup
  labels = mmreg.param_labels(model)
  enc = loss_grads_mask(labels, "encoders")
  fh = loss_grads_mask(labels, "fusion_head")
  for lab, e, f in zip(jax.tree.leaves(labels), jax.tree.leaves(enc), jax.tree.leaves(fh),
                       strict=True):
    assert e == (lab in ("fou", "mor")) and f == (lab in ("fusion", "head"))
  assert loss_grads_mask(labels, "all") is None
  with pytest.raises(ValueError, match="unknown per-loss gradient scope 'encoder'"):
    loss_grads_mask(labels, "encoder")
  nothing = jax.tree.map(lambda _: False, labels)
  with pytest.raises(ValueError, match="covers no parameter"):
    per_loss_grads_over(lambda p: {"a": jnp.sum(p["head"]["kernel"])},
                        split_model(model)[1], nothing, {"a": 1.0})
  with pytest.raises(ValueError, match="either"):
    make_train_step(None, mmreg.classification_losses(("fou",)), optax.identity(),
                    steps_per_epoch=1, with_loss_grads=True, with_feature_grads=True)


def test_resnet18_size_and_shapes():
  # torchvision resnet18: 11,689,512 parameters, of which fc = 512·1000 + 1000
  abstract = nnx.eval_shape(lambda: ResNetEncoder(3, 512, rngs=nnx.Rngs(0)))
  convs = sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(
      nnx.state(abstract, nnx.Param)) if "proj" not in jax.tree_util.keystr(path))
  assert convs == 11_689_512 - 513_000
  assert not jax.tree.leaves(nnx.state(abstract, nnx.BatchStat))
  shapes = {"audio": (257, 188, 1), "visual": (224, 224, 3)}
  cfg = {"encoder": "resnet", "width": 4, "blocks": (1, 1), "downsample": 4, "feature_dim": 8}
  model = build_model(cfg, shapes, 6, seed=0)
  rng = np.random.default_rng(0)
  batch = {m: rng.normal(size=(3, *s)).astype(np.float32) for m, s in shapes.items()}
  forward = nnx.jit(lambda model, batch: model(batch))
  out = forward(model, batch)
  assert out.logits.shape == (3, 6) and out.features["audio"].shape == (3, 8)
  # GroupNorm: a sample's features do not depend on the rest of the batch
  alone = forward(model, {m: x[:1] for m, x in batch.items()})
  np.testing.assert_allclose(alone.features["visual"], out.features["visual"][:1], atol=1e-5)
  with pytest.raises(ValueError, match=r"resnet encoder takes \[H, W, C\]"):
    build_model(cfg, {"v": (10,)}, 6, seed=0)
  with pytest.raises(ValueError, match="every stage"):
    ResNetEncoder(3, 8, blocks=(), rngs=nnx.Rngs(0))


def test_mgda_ub_matches_numpy_min_norm_on_features(setup):
  _, model, graphdef, params, rest, spec, batch = setup
  labels = mmreg.param_labels(model)
  _, grads, fg, features_vjp, (out, _) = per_loss_feature_grads(graphdef, spec, params, rest,
                                                                batch)
  tx = mmreg.mgda_ub(loss_names=("fused", "fou"), scale="num_losses")
  new, state = tx.update(grads, tx.init(params), params, feature_grads=fg,
                         features_vjp=features_vjp)
  # NumPy: g_fused, g_fou on the concatenated features; two-loss closed form
  y = np.asarray(batch["label"])
  W_head = np.asarray(params["head"]["kernel"])
  g1 = _ce_grad(out.logits, y) @ W_head.T  # [B, 16] = both modalities' features
  g2 = np.concatenate([_ce_grad(out.modality_logits["fou"], y)
                       @ np.asarray(params["aux_heads"]["fou"]["kernel"]).T,
                       np.zeros((len(y), 8))], axis=1)
  a1 = np.clip(np.sum((g2 - g1) * g2) / np.sum((g1 - g2) ** 2), 0, 1)
  coef = {"fused": 2 * a1 - 1.0, "fou": 2 * (1 - a1) - 1.0}  # change of each loss's weight

  def modified(p):
    losses = spec(model_apply(graphdef, p, rest, batch)[0], batch)
    return spec.total(losses) + sum(c * losses[n] for n, c in coef.items())

  expected = jax.grad(modified)(params)
  for lab, e, t, n in zip(jax.tree.leaves(labels), jax.tree.leaves(expected),
                          jax.tree.leaves(grads), jax.tree.leaves(new), strict=True):
    np.testing.assert_allclose(n, e if lab in ("fou", "mor") else t, atol=1e-5)
  assert float(state.diagnostics["max_weight"]) == pytest.approx(max(a1, 1 - a1), abs=1e-5)
  with pytest.raises(ValueError, match="with_feature_grads=True"):
    tx.update(grads, tx.init(params), params)


def test_mgda_ub_trains_in_the_loop(tmp_path):
  from mmreg.train.loop import train_and_evaluate
  from tests.conftest import tiny_config

  cfg = tiny_config(epochs=1)
  cfg.method.name = "mgda_ub"
  results = train_and_evaluate(cfg, tmp_path / "run", progress=False)
  assert results["test"]["accuracy"] > 0.25  # 10 classes, one epoch: chance is 0.1
