"""Property tests: every loss has a finite float32 value and finite gradients, and every metric a
finite value in its range (or its documented error), over the seven input families of
`test_nonfinite_properties` in float32 and bfloat16.

Losses are jitted once per function with fixed shapes (value and gradient with respect to every
float input); metrics are NumPy. Every family × dtype pair is an explicit example; hypothesis
adds seeded, derandomized draws.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_nonfinite_properties import CASES, SETTINGS, each_case, family_rows

import mmreg
from mmreg import losses, metrics

B, K, D = 6, 3, 4
LABELS = jnp.asarray(np.arange(B) % K, jnp.int32)
PRESENT = jnp.asarray([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])


def family(family_name: str, dtype, rng: np.random.Generator, *shape: int) -> jax.Array:
  rows = family_rows(family_name, rng, shape[0], int(np.prod(shape[1:], dtype=int)))
  return jnp.asarray(rows.reshape(shape), dtype)


def _agm_split(x):
  output = mmreg.ModelOutput(x["logits"], {"a": x["oa"], "b": x["ob"]}, {}, {}, x["logits"])
  return sum(losses.agm_losses(("a", "b"))(output, {"label": LABELS}).values())


def _etf():
  return mmreg.simplex_etf(K, D, jax.random.key(0))


def _evidential(form):
  return lambda x: losses.evidential_loss(losses.dirichlet_alpha(x["logits"]), LABELS, 0.5,
                                          form=form)


def _spa_reg(x):
  centres = mmreg.monitors.class_centres.init_class_centres(K, D)
  return losses.spa_reg_loss(x["kernel"], x["features"], LABELS, centres, stop_gradient=False)


def _pmr(x):
  protos = {"a": x["pa"], "b": x["pb"]}
  return losses.pmr_loss({"a": x["za"], "b": x["zb"]}, LABELS, protos, ("a", "b"))


# name: (loss of a dict of float inputs, {input: shape})
LOSS_CASES = {
    "cross_entropy": (lambda x: losses.cross_entropy(x["logits"], LABELS), {"logits": (B, K)}),
    "cross_entropy_smoothed": (
        lambda x: losses.cross_entropy(x["logits"], LABELS, label_smoothing=0.1),
        {"logits": (B, K)}),
    "cross_entropy_weighted": (lambda x: losses.cross_entropy(x["logits"], LABELS, PRESENT),
                               {"logits": (B, K)}),
    "true_class_confidence": (lambda x: jnp.sum(losses.true_class_confidence(x["logits"], LABELS)),
                              {"logits": (B, K)}),
    "info_nce": (lambda x: losses.info_nce(x["za"], x["zb"], 0.1), {"za": (B, D), "zb": (B, D)}),
    "info_nce_weighted": (lambda x: losses.info_nce(x["za"], x["zb"], 0.1, weights=PRESENT),
                          {"za": (B, D), "zb": (B, D)}),
    "clip_loss": (lambda x: losses.clip_loss(x["za"], x["zb"], jnp.log(0.07)),
                  {"za": (B, D), "zb": (B, D)}),
    "cosine_coherence": (lambda x: losses.cosine_coherence(x["za"], x["zb"]),
                         {"za": (B, D), "zb": (B, D)}),
    "mse_coherence": (lambda x: losses.mse_coherence(x["za"], x["zb"]),
                      {"za": (B, D), "zb": (B, D)}),
    "correlation_coherence": (lambda x: losses.correlation_coherence(x["za"], x["zb"]),
                              {"za": (B, D), "zb": (B, D)}),
    "prototype_logits": (lambda x: jnp.sum(losses.prototype_logits(x["z"], x["p"])),
                         {"z": (B, D), "p": (K, D)}),
    "prototype_loss": (lambda x: losses.prototype_loss(x["z"], x["p"], LABELS),
                       {"z": (B, D), "p": (K, D)}),
    "evidential_mse": (_evidential("mse"), {"logits": (B, K)}),
    "evidential_log": (_evidential("log"), {"logits": (B, K)}),
    "evidential_digamma": (_evidential("digamma"), {"logits": (B, K)}),
    "evidential_uncertainty": (
        lambda x: jnp.sum(losses.evidential_uncertainty(losses.dirichlet_alpha(x["logits"]))),
        {"logits": (B, K)}),
    "kl_to_uniform_dirichlet": (
        lambda x: jnp.sum(losses.kl_to_uniform_dirichlet(losses.dirichlet_alpha(x["logits"]))),
        {"logits": (B, K)}),
    "distillation_loss": (
        lambda x: losses.distillation_loss(x["s"], x["t"], jnp.linspace(0.0, 1.0, B),
                                           temperature=2.0, weights=PRESENT),
        {"s": (B, K), "t": (B, K)}),
    "agm_score": (lambda x: losses.agm_score(x["logits"], LABELS), {"logits": (B, K)}),
    "agm_losses": (_agm_split, {"logits": (B, K), "oa": (B, K), "ob": (B, K)}),
    "dot_regression_loss": (lambda x: losses.dot_regression_loss(x["h"], LABELS, _etf()),
                            {"h": (B, D)}),
    "dot_regression_loss_raw": (
        lambda x: losses.dot_regression_loss(x["h"], LABELS, _etf(), normalize=False),
        {"h": (B, D)}),
    "spa_reg_loss": (_spa_reg, {"kernel": (D, K), "features": (B, D)}),
    "distance_logits": (lambda x: jnp.sum(losses.distance_logits(x["z"], x["p"])),
                        {"z": (B, D), "p": (K, D)}),
    "pmr_loss": (_pmr, {"za": (B, D), "zb": (B, D), "pa": (K, D), "pb": (K, D)}),
}

# Out of domain by definition: the raw (unnormalised) dot regression squares hᵀm, which exceeds
# float32 for |h| ≳ 1e19. Its value saturates to +inf (never NaN) on those families.
SATURATES = {("dot_regression_loss_raw", "huge"), ("dot_regression_loss_raw", "mixed")}


def test_every_loss_is_covered():
  covered = {name for case in LOSS_CASES for name in losses.__all__ if case.startswith(name)}
  covered |= {"dirichlet_alpha", "evidential_loss", "evidential_probs"}  # evidential_*, identities
  covered |= {"classification_losses", "coherence_losses", "fused_ce", "unimodal_ce",
              "alignment_term", "prototype_term", "imputation_term", "distillation_term",
              "LossSpec"}  # test_loss_spec_terms
  covered |= {"gblending_weights"}  # test_gblending_weights
  helpers = {  # constants, types, factories, initialisers and schedules, not losses
      "ALIGNMENTS", "FUSED", "LossTerm", "check_temperature", "log_temperature_init",
      "class_prototypes", "prototype_init", "update_prototypes", "class_means", "kl_annealing",
      "pmr_coefficients", "pmr_term", "dot_regression", "l2_normalize",
      "cosine_similarity", "cosine_similarity_matrix", "prototype_uncertainty", "agm_loss_name",
      "agm_coefficients"}
  assert set(losses.__all__) - helpers <= covered, set(losses.__all__) - helpers - covered


@functools.cache
def jitted_loss(name: str):
  fn, _ = LOSS_CASES[name]
  return jax.jit(jax.value_and_grad(fn))


def loss_inputs(name: str, family_name: str, dtype: str, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  return {k: family(family_name, dtype, rng, *shape) for k, shape in LOSS_CASES[name][1].items()}


def _finite(x):
  return np.all(np.isfinite(np.asarray(x, np.float32)))


@pytest.mark.parametrize("name", list(LOSS_CASES))
@each_case
def test_loss_finite_with_finite_gradients(name, case, seed):
  family_name, dtype = case
  x = loss_inputs(name, family_name, dtype, seed)
  value, grads = jitted_loss(name)(x)
  assert value.shape == () and value.dtype == jnp.float32, (value.shape, value.dtype)
  for k, g in grads.items():
    assert g.dtype == x[k].dtype and g.shape == x[k].shape, (k, g.dtype, x[k].dtype)
  if (name, family_name) in SATURATES:
    assert not np.isnan(value) and not any(np.isnan(np.asarray(g, np.float32)).any()
                                           for g in grads.values())
    return
  assert _finite(value), f"{name} ({family_name}, {dtype}): value {value}"
  for k, g in grads.items():
    assert _finite(g), f"{name} ({family_name}, {dtype}): gradient w.r.t. {k}"


@jax.jit
def _loss_identities(logits, z):
  alpha = losses.dirichlet_alpha(logits)
  return {
      "cosine": losses.cosine_coherence(z, z),
      "mse": losses.mse_coherence(z, z),
      "ce_zero_weights": losses.cross_entropy(logits, LABELS, jnp.zeros(B)),
      "distill_self": losses.distillation_loss(logits, logits),
      "uncertainty": losses.evidential_uncertainty(alpha),
      "probs": losses.evidential_probs(alpha),
      "kl": losses.kl_to_uniform_dirichlet(alpha),
      "confidence": losses.true_class_confidence(logits, LABELS),
  }


@each_case
def test_loss_identities(case, seed):
  """Identical embeddings are the coherence minimum; all-zero weights give CE 0; KL(q‖q) = 0;
  evidential uncertainty in (0, 1]; KL to the uniform Dirichlet ≥ 0; confidences in [0, 1]."""
  family_name, dtype = case
  rng = np.random.default_rng(seed)
  logits, z = family(family_name, dtype, rng, B, K), family(family_name, dtype, rng, B, D)
  out = jax.tree.map(lambda v: np.asarray(v, np.float64), _loss_identities(logits, z))
  # Rows shorter than ε = 1e-8 (zero, tiny, some mixed rows) have cos = 0 by definition
  # (`l2_normalize` maps them to near-zero vectors), so their coherence is 1; mse_coherence is 0.
  expected_cos = np.mean(np.linalg.norm(np.asarray(z, np.float64), axis=-1) < 1e-8)
  np.testing.assert_allclose(out["cosine"], expected_cos, atol=1e-5)
  np.testing.assert_allclose(out["mse"], 0.0, atol=1e-5)
  assert out["ce_zero_weights"] == 0.0
  np.testing.assert_allclose(out["distill_self"], 0.0, atol=1e-5)
  assert np.all((out["uncertainty"] > 0) & (out["uncertainty"] <= 1))
  assert np.all(out["probs"] >= 0)
  np.testing.assert_allclose(out["probs"].sum(-1), 1.0, rtol=1e-5)
  # KL is a difference of terms of size S·log S (S = Σα, up to ~1e31 for huge logits), so in
  # float32 it is ≥ 0 up to a rounding error relative to that size.
  total = np.sum(np.asarray(losses.dirichlet_alpha(logits), np.float64), axis=-1)
  assert np.all(out["kl"] >= -1e-5 * total * np.log(total)), (out["kl"], total)
  assert np.all((out["confidence"] >= 0) & (out["confidence"] <= 1))


def correlation_reference(a: np.ndarray, b: np.ndarray, lam: float = 5e-3, eps: float = 1e-5):
  """Barlow-Twins loss of the docstring, in float64 NumPy (unweighted)."""
  def standardize(z):
    return (z - z.mean(0)) / np.sqrt(z.var(0) + eps)
  c = standardize(a).T @ standardize(b) / len(a)
  return np.sum((1 - np.diag(c)) ** 2) + lam * (np.sum(c**2) - np.sum(np.diag(c) ** 2))


_correlation = jax.jit(losses.correlation_coherence)


@each_case
def test_correlation_coherence_matches_float64(case, seed):
  """The cross-correlation is scale-free per dimension, so 1e30 latents give the same loss as
  float64 (σ² would overflow float32 without the per-dimension rescaling)."""
  family_name, dtype = case
  rng = np.random.default_rng(seed)
  z_a, z_b = family(family_name, dtype, rng, B, D), family(family_name, dtype, rng, B, D)
  expected = correlation_reference(np.asarray(z_a, np.float64), np.asarray(z_b, np.float64))
  np.testing.assert_allclose(float(_correlation(z_a, z_b)), expected, rtol=1e-4, atol=1e-5)


@functools.cache
def coherence_model():
  model = mmreg.mlp_classifier({"a": 5, "b": 3}, K, hidden=(4,), feature_dim=D, latent_dim=D,
                               shared_space=True)
  rng = np.random.default_rng(0)
  batch = {"a": jnp.asarray(rng.normal(size=(B, 5)), jnp.float32),
           "b": jnp.asarray(rng.normal(size=(B, 3)), jnp.float32), "label": LABELS,
           "present": {"a": PRESENT > 0, "b": jnp.ones(B, bool)}}
  return model(batch), batch


@functools.cache
def jitted_spec_terms(recipe: str):
  """Value and gradient of every LossSpec term w.r.t. the model output's logits, features and
  latents (the model runs once on a fixed batch; the families replace its outputs)."""
  output, batch = coherence_model()
  spec = (losses.classification_losses(("a", "b"), label_smoothing=0.1) if recipe == "cls" else
          losses.coherence_losses(("a", "b"), teacher="a", prototype_loss="evidential"))

  def total(arrays):
    out = output._replace(logits=arrays["logits"], modality_logits=arrays["modality_logits"],
                          features=arrays["features"], latents=arrays["latents"])
    values = spec(out, batch)
    return sum(values.values()), values

  return jax.jit(jax.value_and_grad(total, has_aux=True))


@pytest.mark.parametrize("recipe", ["cls", "coherence"])
@each_case
def test_loss_spec_terms(recipe, case, seed):
  family_name, dtype = case
  rng = np.random.default_rng(seed)
  arrays = {"logits": family(family_name, dtype, rng, B, K),
            "modality_logits": {m: family(family_name, dtype, rng, B, K) for m in "ab"},
            "features": {m: family(family_name, dtype, rng, B, D) for m in "ab"},
            "latents": {m: family(family_name, dtype, rng, B, D) for m in "ab"}}
  (_, values), grads = jitted_spec_terms(recipe)(arrays)
  if family_name in ("huge", "mixed") and "impute" in values:
    # Out of domain by definition: the imputation error ‖h̃ − h‖²/d of 1e30 features exceeds
    # float32; it saturates to +inf, never NaN (h has no gradient there, so grads stay finite).
    assert not np.isnan(np.asarray(values.pop("impute"), np.float32))
  for name, v in values.items():
    assert v.shape == () and _finite(v), f"{recipe} term {name} ({family_name}, {dtype}): {v}"
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert _finite(g), f"{recipe} gradient {jax.tree_util.keystr(path)} ({family_name}, {dtype})"


@given(case=st.sampled_from(CASES), seed=st.integers(0, 2**16))
@SETTINGS
def test_gblending_weights(case, seed):
  family_name, _ = case
  rng = np.random.default_rng(seed)
  v = family_rows(family_name, rng, 4, 3)
  named = [dict(zip(("fused", "a", "b"), row.tolist(), strict=True)) for row in v]
  w = losses.gblending_weights(*named)
  assert set(w) == {"fused", "a", "b"}
  values = np.asarray(list(w.values()))
  assert np.all(np.isfinite(values)) and np.all((values >= 0) & (values <= 1))
  np.testing.assert_allclose(values.sum(), 1.0, rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# Metrics


def _cast(x: jax.Array) -> np.ndarray:
  """Metrics take NumPy; bfloat16 inputs arrive as float32 values (NumPy has no bfloat16 math)."""
  return np.asarray(x, np.float32)


def test_every_metric_is_covered():
  tested = {"accuracy", "macro_f1", "confusion_matrix", "precision_recall", "roc_auc_ovr",
            "roc_auc_per_class", "recall_at_k", "mean_average_precision", "ndcg_at_k",
            "retrieval_metrics", "alignment_statistics", "neural_collapse", "shapley_values",
            "linear_probe_accuracy"}
  helpers = {  # types, accumulators and helpers of the tested metrics
      "ClassStats", "NeuralCollapse", "class_means", "init_class_stats", "update_class_stats",
      "neural_collapse_from_stats", "neural_collapse_batches", "nc4_counts", "modality_subsets",
      "same_label", "shapley_logits", "with_subset",
      # statistics over seeds, host-side, refusing NaN by design (tests/test_stats_npz.py)
      "PairedDifference", "paired_difference", "holm_bonferroni"}
  assert set(metrics.__all__) - helpers <= tested


@each_case
def test_classification_metrics(case, seed):
  family_name, dtype = case
  rng = np.random.default_rng(seed)
  scores = _cast(family(family_name, dtype, rng, 4 * B, K))
  labels = np.arange(4 * B) % K
  predictions = np.argmax(scores, axis=1)
  cm = metrics.confusion_matrix(labels, predictions, K)
  assert cm.sum() == 4 * B and np.all(cm >= 0)
  for value in (metrics.accuracy(labels, predictions), metrics.macro_f1(labels, predictions, K)):
    assert np.isfinite(value) and 0 <= value <= 1
  pr = metrics.precision_recall(labels, predictions, K)
  for v in pr.values():
    assert np.all(np.isfinite(v)) and np.all((np.asarray(v) >= 0) & (np.asarray(v) <= 1))
  auc = metrics.roc_auc_per_class(labels, scores)
  assert np.all(np.isfinite(auc)) and np.all((auc >= 0) & (auc <= 1))
  if family_name == "zero":  # all scores tied: every AUC is exactly ½ (ties count ½)
    np.testing.assert_array_equal(auc, 0.5)
  assert 0 <= metrics.roc_auc_ovr(labels, scores) <= 1


def test_roc_auc_without_negatives_is_a_clear_error():
  with pytest.raises(ValueError, match="undefined"):
    metrics.roc_auc_ovr(np.zeros(4, int), np.zeros((4, 1)))


@each_case
def test_retrieval_metrics(case, seed):
  family_name, dtype = case
  rng = np.random.default_rng(seed)
  sim = _cast(losses.cosine_similarity_matrix(family(family_name, dtype, rng, 2 * B, D),
                                              family(family_name, dtype, rng, 2 * B, D)))
  raw = _cast(family(family_name, dtype, rng, 2 * B, 2 * B))  # raw scores, 1e±30 included
  relevance = metrics.same_label(np.arange(2 * B) % K, np.arange(2 * B) % K)
  for s in (sim, raw):
    for rel in (None, relevance):
      out = metrics.retrieval_metrics(s, rel, ks=(1, 5))
      out["NDCG@3"] = metrics.ndcg_at_k(s, 3, rel)
      out["R@2"] = metrics.recall_at_k(s, 2, rel)
      out["mAP_again"] = metrics.mean_average_precision(s, rel)
      for k, v in out.items():
        assert np.isfinite(v) and 0 <= v <= 1 + 1e-12, (k, v)
  if family_name == "zero":  # all ties: stable order ranks gallery 0 first
    assert metrics.recall_at_k(raw, 1) == 1 / (2 * B)


def test_retrieval_nonfinite_similarity_is_a_clear_error():
  sim = np.eye(3)
  sim[0, 1] = np.inf
  with pytest.raises(ValueError, match="NaN/Inf"):
    metrics.recall_at_k(sim, 1)


@each_case
def test_alignment_statistics(case, seed):
  family_name, dtype = case
  rng = np.random.default_rng(seed)
  z_a, z_b = (_cast(family(family_name, dtype, rng, B, D)) for _ in range(2))
  out = metrics.alignment_statistics(z_a, z_b)
  for k, v in out.items():
    # l2_paired is the raw distance: up to ~1e31 for the huge family, finite in float64.
    assert np.isfinite(v), (k, v)
  for k in ("cos_paired", "cos_unpaired"):
    assert -1 - 1e-9 <= out[k] <= 1 + 1e-9, (k, out[k])
  for k in ("l2_paired_unit", "l2_unpaired_unit"):
    assert 0 <= out[k] <= 2 + 1e-9, (k, out[k])
  same = metrics.alignment_statistics(z_a, z_a)
  assert same["l2_paired"] == 0.0
  if family_name not in ("zero", "tiny"):  # rows shorter than ε = 1e-8 have cos 0 by definition
    np.testing.assert_allclose(same["cos_paired"], 1.0, atol=1e-6)


@each_case
def test_linear_probe_accuracy(case, seed):
  family_name, dtype = case
  rng = np.random.default_rng(seed)
  train, test = (_cast(family(family_name, dtype, rng, 2, 4 * B * D)).reshape(2, 4 * B, D)
                 for _ in range(2))
  labels = np.arange(4 * B) % K
  out = metrics.linear_probe_accuracy(train, labels, test, labels, K, steps=20)
  assert out.shape == (2,) and np.all(np.isfinite(out)) and np.all((out >= 0) & (out <= 1))


@each_case
def test_neural_collapse(case, seed):
  family_name, dtype = case
  rng = np.random.default_rng(seed)
  features = _cast(family(family_name, dtype, rng, 4 * B, D))
  weights = _cast(family(family_name, dtype, rng, D, K + 1))
  labels = np.arange(4 * B) % K  # class K has no samples
  with pytest.raises(ValueError, match="missing_classes='skip'"):
    metrics.neural_collapse(features, labels, weights)
  with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 → NaN, documented (see below)
    out = metrics.neural_collapse(features, labels, weights, missing_classes="skip")
  np.testing.assert_array_equal(out.classes, np.arange(K))
  assert 0 <= out.nc4 <= 1
  means = np.stack([features[labels == c].mean(0) for c in range(K)]).astype(np.float64)
  degenerate = np.all(means == means[0]) or not np.any(weights[:, :K])
  # Documented: ratios whose denominator is 0 — ‖μ_c − μ_G‖ when all class means coincide (zero
  # family; opposite family, where each class holds as many +v as −v), ‖w_c‖ for a zero
  # classifier — are NaN (undefined), as `roc_auc_per_class` for a class without negatives.
  ratios = {"equinorm_means", "equinorm_weights", "etf_distance_means", "etf_distance_weights",
            "nc3", "alignment_cosine"}
  for name, v in out._asdict().items():
    if name != "classes" and not (degenerate and name in ratios):
      assert np.all(np.isfinite(v)), (name, v)
  assert out.nc1 >= 0
  assert not np.any(np.abs(out.alignment_cosine) > 1 + 1e-9)


@given(case=st.sampled_from(CASES), seed=st.integers(0, 2**16))
@SETTINGS
def test_shapley_values(case, seed):
  """Efficiency: Σ_m φ_m = v(all) − v(∅), for values of every family."""
  family_name, _ = case
  rng = np.random.default_rng(seed)
  names = ("a", "b", "c")
  subsets = metrics.modality_subsets(names)
  v = family_rows(family_name, rng, len(subsets), 1)[:, 0]
  value = dict(zip(subsets, v.tolist(), strict=True))
  phi = metrics.shapley_values(value, names)
  assert all(np.isfinite(p) for p in phi.values())
  full = value[frozenset(names)] - value[frozenset()]
  np.testing.assert_allclose(sum(phi.values()), full, rtol=1e-9, atol=1e-9 * np.max(np.abs(v)))

