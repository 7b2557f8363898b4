"""PMR's loss and G-Blending's weights against NumPy oracles transcribed from the reference code.

PMR: fanyunfeng-bit/Modal-Imbalance-PMR, main_Prototype_grad.py (commit 3615e48).
G-Blending: GeWu-Lab/BalanceBenchmark, balancemm/trainer/GBlending_trainer.py (commit 4c1482f).
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmreg import losses
from mmreg.metrics import shapley_values

# ---------------------------------------------------------------------------------------------
# PMR oracle (main_Prototype_grad.py)


def eu_dist(x1, x2):  # :69-75
  d = np.zeros((x1.shape[0], x2.shape[0]))
  for i in range(x1.shape[0]):
    for j in range(x2.shape[0]):
      d[i, j] = np.sqrt(np.dot(x1[i] - x2[j], x1[i] - x2[j]))
  return d


def softmax(z):
  e = np.exp(z - z.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def criterion(z, y):  # nn.CrossEntropyLoss()
  return -np.mean(np.log(softmax(z)[np.arange(len(y)), y]))


def reference_pmr_terms(a, v, audio_proto, visual_proto, label, alpha):
  """beta·loss_proto_a + lam·loss_proto_v of :152-178 (the fused CE left out)."""
  audio_sim = -eu_dist(a, audio_proto)  # :152
  visual_sim = -eu_dist(v, visual_proto)  # :153
  score_a_p = sum(softmax(audio_sim)[i][label[i]] for i in range(audio_sim.shape[0]))  # :158
  score_v_p = sum(softmax(visual_sim)[i][label[i]] for i in range(visual_sim.shape[0]))  # :159
  ratio_a_p = score_a_p / score_v_p  # :160
  loss_proto_a = criterion(audio_sim, label)  # :166
  loss_proto_v = criterion(visual_sim, label)  # :167
  if ratio_a_p > 1:  # :169-177
    beta, lam = 0, 1 * alpha
  elif ratio_a_p < 1:
    beta, lam = 1 * alpha, 0
  else:
    beta, lam = 0, 0
  return beta * loss_proto_a + lam * loss_proto_v, (beta, lam)


def reference_class_means(features, labels, n_classes):  # :397-433 over the given samples
  protos = np.zeros((n_classes, features.shape[1]))
  count_class = [0 for _ in range(n_classes)]
  for c, lab in enumerate(labels):
    count_class[lab] += 1
    protos[lab, :] += features[c, :]
  with np.errstate(invalid="ignore"):
    for c in range(n_classes):
      protos[c, :] /= count_class[c]
  return protos


@pytest.mark.parametrize("weak", ["a", "v", "neither"])
def test_pmr_loss_matches_the_authors_code(rng, weak):
  y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
  h = {m: rng.normal(size=(8, 5)).astype(np.float32) for m in "av"}
  if weak == "neither":
    h["v"] = h["a"].copy()
  protos = {m: losses.class_prototypes(h[m], y, 3) for m in "av"}
  if weak != "neither":
    protos[weak] = np.roll(protos[weak], 1, axis=0)  # each class nearer another's prototype
  expected, (beta, lam) = reference_pmr_terms(h["a"], h["v"], protos["a"], protos["v"], y, 0.7)
  got = losses.pmr_loss({m: jnp.asarray(x) for m, x in h.items()}, jnp.asarray(y),
                        {m: jnp.asarray(p) for m, p in protos.items()}, ("a", "v"), alpha=0.7)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  assert (beta, lam) == {"a": (0.7, 0), "v": (0, 0.7), "neither": (0, 0)}[weak]


def test_pmr_gradient_matches_finite_differences_of_the_oracle(rng):
  y = np.array([0, 1, 2, 0, 1, 2])
  h = {m: rng.normal(size=(6, 3)) for m in "av"}
  protos = {m: reference_class_means(h[m], y, 3) for m in "av"}
  protos["v"] = np.roll(protos["v"], 1, axis=0)  # v lags behind
  grad = jax.grad(lambda f: losses.pmr_loss(f, jnp.asarray(y), protos, ("a", "v"), 1.3))(
      {m: jnp.asarray(x, jnp.float32) for m, x in h.items()})
  eps = 1e-5
  for m in "av":
    fd = np.zeros_like(h[m])
    for idx in np.ndindex(h[m].shape):
      plus, minus = {k: x.copy() for k, x in h.items()}, {k: x.copy() for k, x in h.items()}
      plus[m][idx] += eps
      minus[m][idx] -= eps
      fd[idx] = (reference_pmr_terms(plus["a"], plus["v"], protos["a"], protos["v"], y, 1.3)[0]
                 - reference_pmr_terms(minus["a"], minus["v"], protos["a"], protos["v"], y,
                                       1.3)[0]) / (2 * eps)
    np.testing.assert_allclose(grad[m], fd, rtol=2e-3, atol=1e-5)
  assert np.abs(np.asarray(grad["a"])).max() == 0  # only the weak modality (v) gets the term


def test_pmr_coefficients_beyond_two_modalities():
  np.testing.assert_array_equal(losses.pmr_coefficients(jnp.asarray([0.2, 0.5, 0.2]), 2.0),
                                [2.0, 0.0, 2.0])
  np.testing.assert_array_equal(losses.pmr_coefficients(jnp.asarray([0.9, 0.5, 0.7]), 2.0),
                                [0.0, 2.0, 0.0])
  np.testing.assert_array_equal(losses.pmr_coefficients(jnp.asarray([0.3, 0.3, 0.3]), 2.0),
                                [0.0, 0.0, 0.0])
  with pytest.raises(ValueError, match="at least two modalities"):
    losses.pmr_coefficients(jnp.asarray([0.3]), 1.0)


def test_class_prototypes_match_the_authors_means_and_fill_empty_classes(rng):
  feats, y = rng.normal(size=(9, 4)), np.array([0, 1, 1, 3, 0, 3, 3, 1, 0])
  got = losses.class_prototypes(feats, y, 5, fallback=np.full((5, 4), 7.0))
  ref = reference_class_means(feats, y, 5)
  assert np.isnan(ref[[2, 4]]).all()  # the authors divide 0/0 for a class without samples
  np.testing.assert_allclose(got[[0, 1, 3]], ref[[0, 1, 3]], rtol=1e-6)
  np.testing.assert_array_equal(got[[2, 4]], 7.0)
  np.testing.assert_array_equal(losses.class_prototypes(feats, y, 5)[2], 0.0)


# ---------------------------------------------------------------------------------------------
# G-Blending oracle (GBlending_trainer.py:361-372)


def reference_gblending(pre_train, now_train, pre_val, now_val):
  weights = {}
  for modality in now_val:
    g = now_val[modality] - pre_val[modality]  # :361
    o_pre = pre_val[modality] - pre_train[modality]  # :362
    o_now = now_val[modality] - now_train[modality]  # :363
    o = o_now - o_pre  # :364
    weights[modality] = abs((g) / (o**2))  # :366
  sums = sum(weights.values())  # :368
  for modality in weights:  # :371-372
    weights[modality] /= sums
  return weights


def test_gblending_weights_match_balancebenchmark(rng):
  for _ in range(20):
    names = ["output", "audio", "visual"]
    t0, t1, v0, v1 = ({n: float(x) for n, x in zip(names, rng.uniform(0.1, 30, 3), strict=True)}
                      for _ in range(4))
    got = losses.gblending_weights(t0, t1, v0, v1)
    ref = reference_gblending(t0, t1, v0, v1)
    for n in names:
      np.testing.assert_allclose(got[n], ref[n], rtol=1e-12)


def test_gblending_zero_overfitting_takes_the_limit_where_the_reference_divides_by_zero():
  t0, t1 = {"f": 10.0, "a": 12.0, "b": 11.0}, {"f": 6.0, "a": 9.0, "b": 8.0}
  v0, v1 = {"f": 2.0, "a": 2.5, "b": 2.2}, {"f": 1.5, "a": 2.0, "b": 2.1}
  t1["a"] = v1["a"] - (v0["a"] - t0["a"])  # O_a = 0 with G_a = −0.5
  with pytest.raises(ZeroDivisionError):
    reference_gblending(t0, t1, v0, v1)
  assert losses.gblending_weights(t0, t1, v0, v1) == {"f": 0.0, "a": 1.0, "b": 0.0}
  # a floor on O² gives finite ratios instead: |G|/max(O², floor)
  floored = losses.gblending_weights(t0, t1, v0, v1, min_overfit_sq=0.01)
  raw = {n: abs(v1[n] - v0[n]) / max(((v1[n] - t1[n]) - (v0[n] - t0[n])) ** 2, 0.01)
         for n in t0}
  for n in raw:
    np.testing.assert_allclose(floored[n], raw[n] / sum(raw.values()), rtol=1e-12)
  # two losses with O = 0 and G ≠ 0 share the weight; 0/0 (no gain, no overfitting) counts 0
  t1["b"] = v1["b"] - (v0["b"] - t0["b"])
  assert losses.gblending_weights(t0, t1, v0, v1) == {"f": 0.0, "a": 0.5, "b": 0.5}
  same = {"f": 1.0, "a": 1.0, "b": 1.0}
  with pytest.raises(ZeroDivisionError):
    reference_gblending(same, same, same, same)
  assert losses.gblending_weights(same, same, same, same) == pytest.approx(
      {"f": 1 / 3, "a": 1 / 3, "b": 1 / 3})


def test_gblending_weights_reject_bad_input():
  with pytest.raises(ValueError, match="lacks losses"):
    losses.gblending_weights({}, {}, {}, {"f": 1.0})
  with pytest.raises(ValueError, match="not finite"):
    losses.gblending_weights({"f": 1.0}, {"f": np.nan}, {"f": 1.0}, {"f": 1.0})
  with pytest.raises(ValueError, match="min_overfit_sq"):
    losses.gblending_weights({"f": 1.0}, {"f": 1.0}, {"f": 1.0}, {"f": 1.0}, min_overfit_sq=-1)


def test_shapley_values_brute_force_permutations(rng):
  mods = ("a", "b", "c")
  value = {frozenset(s): float(rng.normal()) for r in range(4)
           for s in itertools.combinations(mods, r)}
  phi = shapley_values(value, mods)
  for m in mods:
    marginal = []
    for order in itertools.permutations(mods):
      before = frozenset(order[:order.index(m)])
      marginal.append(value[before | {m}] - value[before])
    np.testing.assert_allclose(phi[m], np.mean(marginal), rtol=1e-9)
  assert math.isclose(sum(phi.values()), value[frozenset(mods)] - value[frozenset()])
