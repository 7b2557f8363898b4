"""Missing-modality fill in the classifier and the coherence-guided loss recipe."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mmreg
from mmreg.losses import coherence_losses

DIMS = {"a": 3, "b": 4}


def make_model(**kw):
  return mmreg.mlp_classifier(DIMS, 3, hidden=(8,), feature_dim=6, latent_dim=5, seed=0, **kw)


def make_batch(n=6, seed=0, b_missing=(1, 4)):
  rng = np.random.default_rng(seed)
  present_b = np.ones(n, bool)
  present_b[list(b_missing)] = False
  return {"a": jnp.asarray(rng.normal(size=(n, 3)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(n, 4)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, 3, n)),
          "present": {"a": jnp.ones(n, bool), "b": jnp.asarray(present_b)}}


def with_other_b(batch):
  return {**batch, "b": batch["b"] + 100.0}


def dense(layer, x):
  return np.asarray(x) @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...])


def np_unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_default_is_zero_fill_and_all_present_mask_changes_nothing():
  model, batch = make_model(), make_batch(b_missing=())
  out, plain = model(batch), model({k: v for k, v in batch.items() if k != "present"})
  np.testing.assert_allclose(out.logits, plain.logits, rtol=1e-6)
  assert out.shared is None and model.missing == "zero"


@pytest.mark.parametrize("missing", ["zero", "mean", "impute"])
def test_missing_path_ignores_the_absent_input(missing):
  model, batch = make_model(missing=missing), make_batch()
  if missing == "mean":
    model.set_feature_means({"b": jnp.arange(6.0)})
  out, other = model(batch), model(with_other_b(batch))
  np.testing.assert_allclose(out.logits[np.array([1, 4])], other.logits[np.array([1, 4])],
                             rtol=1e-5)
  assert not np.allclose(out.logits[0], other.logits[0])


def test_zero_fill_late_fusion_equals_the_present_modality_alone():
  model, batch = make_model(fusion="late"), make_batch()
  h_a = model.encode("a", batch["a"])
  alone = dense(model.fusion.heads["a"], h_a)
  np.testing.assert_allclose(model(batch).logits[np.array([1, 4])], alone[[1, 4]], rtol=1e-5)


def test_mean_fill_uses_the_set_means():
  model, batch = make_model(missing="mean"), make_batch()
  mean_b = np.linspace(0, 1, 6).astype(np.float32)
  model.set_feature_means({"b": jnp.asarray(mean_b)})
  h_a = np.asarray(model.encode("a", batch["a"]))
  expected = dense(model.head, np.concatenate([h_a, np.tile(mean_b, (6, 1))], 1))
  np.testing.assert_allclose(model(batch).logits[np.array([1, 4])], expected[[1, 4]],
                             rtol=1e-5)
  with pytest.raises(ValueError, match="shape"):
    model.set_feature_means({"b": jnp.zeros(3)})


def test_impute_fill_is_the_imputer_of_the_present_latent():
  model, batch = make_model(missing="impute"), make_batch()
  h_a = np.asarray(model.encode("a", batch["a"]))
  z_a = dense(model.projectors["a"], h_a)
  h_b = dense(model.shared.imputers["b"], np_unit(z_a))
  expected = dense(model.head, np.concatenate([h_a, h_b], 1))
  out = model(batch)
  np.testing.assert_allclose(out.features["b"][np.array([1, 4])], h_b[[1, 4]], rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(out.logits[np.array([1, 4])], expected[[1, 4]], rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(out.shared.transfer_logits["b"],
                             dense(model.aux_heads["b"], out.shared.imputed["b"]), rtol=1e-5,
                             atol=1e-6)


def test_bad_missing_mode_and_labels_of_shared_space():
  with pytest.raises(ValueError, match="missing-modality fill"):
    make_model(missing="drop")
  labels = mmreg.param_labels(make_model(shared_space=True))
  assert set(jax.tree.leaves(labels["shared"])) == {"projector"}


def test_recipe_needs_shared_space_and_a_known_teacher():
  batch = make_batch()
  spec = coherence_losses(("a", "b"))
  with pytest.raises(ValueError, match="shared_space=True"):
    spec(make_model()(batch), batch)
  with pytest.raises(ValueError, match="teacher"):
    coherence_losses(("a", "b"), teacher="c")
  with pytest.raises(ValueError, match="alignment"):
    coherence_losses(("a", "b"), alignment="dot")


@pytest.mark.parametrize("alignment", ["clip", "cosine", "mse", "correlation"])
def test_recipe_terms_are_finite_with_missing_samples(alignment):
  model, batch = make_model(shared_space=True), make_batch()
  spec = coherence_losses(("a", "b"), teacher="b", alignment=alignment,
                          prototype_loss="evidential")
  values = spec(model(batch), batch)
  assert set(values) == {"fused", "a", "b", "align", "prototype", "distill", "impute"}
  assert all(np.isfinite(float(v)) for v in values.values())


def test_distillation_teaches_the_student_not_the_teacher_head():
  model, batch = make_model(shared_space=True), make_batch(b_missing=())
  spec = coherence_losses(("a", "b"), teacher="b")
  params = nnx.state(model, nnx.Param)
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)

  def distill(p):
    return spec.terms["distill"](nnx.merge(graphdef, p, rest)(batch), batch)

  grads = nnx.to_pure_dict(jax.jit(jax.grad(distill))(params))
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads["aux_heads"]["b"]))
  assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads["encoders"]["a"]))
  assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads["shared"]["imputers"]))


def test_recipe_in_the_train_step_lowers_the_loss():
  model = make_model(shared_space=True)
  spec = coherence_losses(("a", "b"), teacher="b")
  tx = optax.adam(1e-2)
  graphdef, state = mmreg.train.init_train_state(model, tx, 0)
  step = mmreg.train.make_train_step(graphdef, spec, tx, steps_per_epoch=1)
  batch = make_batch(n=32, seed=2, b_missing=(0, 5, 9))
  state, first = step(state, batch)
  for _ in range(60):
    state, metrics = step(state, batch)
  assert float(metrics["loss/total"]) < 0.7 * float(first["loss/total"])


def test_recipe_in_a_user_optax_loop():
  model = make_model(shared_space=True)
  spec = coherence_losses(("a", "b"), alignment="cosine")
  optimizer = nnx.Optimizer(model, optax.sgd(0.05), wrt=nnx.Param)
  batch = make_batch(n=16, seed=3)

  def loss_fn(m):
    return spec.total(spec(m(batch), batch))

  @nnx.jit  # as a user's loop would: one compilation, not one per operation
  def train_step(m, opt):
    opt.update(m, nnx.grad(loss_fn)(m))

  loss = nnx.jit(loss_fn)
  before = float(loss(model))
  for _ in range(5):
    train_step(model, optimizer)
  assert float(loss(model)) < before


def test_recipe_from_the_training_loop(tmp_path):
  from mmreg.train.loop import train_and_evaluate
  from tests.conftest import tiny_config

  cfg = tiny_config(epochs=1)
  cfg.model.shared_space = True
  cfg.model.missing = "impute"
  results = train_and_evaluate(
      cfg, tmp_path, progress=False,
      loss_spec_fn=lambda mods, loss_cfg: coherence_losses(mods, teacher="pix", **loss_cfg))
  assert np.isfinite(results["test"]["accuracy"])


def test_imputation_term_counts_only_samples_with_a_source():
  model = make_model(shared_space=True)
  batch = make_batch(n=4, b_missing=())
  batch["present"] = {"a": jnp.array([True, True, False, True]),
                      "b": jnp.array([True, False, True, True])}
  out = model(batch)
  term = mmreg.losses.imputation_term(("a", "b"))(out, batch)
  err = {m: np.mean((np.asarray(out.shared.imputed[m]) - np.asarray(out.features[m])) ** 2, 1)
         for m in ("a", "b")}
  both = np.array([0, 3])  # samples 1 and 2 have one modality: no imputation to check
  np.testing.assert_allclose(term, (err["a"][both].mean() + err["b"][both].mean()) / 2,
                             rtol=1e-5)
