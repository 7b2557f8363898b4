"""NC metrics against exact collapse and an independent NumPy computation of the formulas."""

import jax
import numpy as np
import pytest

import mmreg
from mmreg.metrics import neural_collapse, neural_collapse_batches


def _sample_std(x):
  """Standard deviation with n − 1 in the denominator (torch.std's default, unbiased=True)."""
  x = np.asarray(x, np.float64)
  return np.sqrt(np.sum((x - x.mean()) ** 2) / (len(x) - 1))


def _reference(h, y, kernel, bias, global_mean, classes=None):
  """Papyan et al. (2020) written out directly: explicit loops, np.linalg.pinv."""
  classes = np.unique(y) if classes is None else classes
  k = len(classes)
  means = np.stack([h[y == c].mean(0) for c in classes])
  counts = np.array([np.sum(y == c) for c in classes])
  mu_g = means.mean(0) if global_mean == "classes" else (counts[:, None] * means).sum(0) / len(h)
  sigma_w = np.zeros((h.shape[1],) * 2)
  for i in range(len(h)):
    r = h[i] - means[list(classes).index(y[i])]
    sigma_w += np.outer(r, r) / len(h)
  sigma_b = sum(np.outer(m - mu_g, m - mu_g) for m in means) / k
  m_tilde = (means - mu_g).T
  w = kernel[:, classes].T  # K × d, rows w_c
  out = {"nc1": np.trace(sigma_w @ np.linalg.pinv(sigma_b)) / k}
  for name, vecs in (("means", m_tilde.T), ("weights", w)):
    norms = np.linalg.norm(vecs, axis=1)
    out[f"equinorm_{name}"] = _sample_std(norms) / norms.mean()
    cos = [vecs[a] @ vecs[b] / (norms[a] * norms[b]) for a in range(k) for b in range(k) if a != b]
    out[f"equiangular_{name}"] = _sample_std(cos)
    out[f"max_angle_{name}"] = np.mean(np.abs(np.array(cos) + 1 / (k - 1)))
    g = vecs @ vecs.T
    target = (np.eye(k) - np.ones((k, k)) / k) / np.sqrt(k - 1)
    out[f"etf_distance_{name}"] = np.linalg.norm(g / np.linalg.norm(g) - target)
  out["nc3"] = np.linalg.norm(w.T / np.linalg.norm(w) - m_tilde / np.linalg.norm(m_tilde)) ** 2
  out["alignment_cosine"] = np.array([w[c] @ m_tilde[:, c] / np.linalg.norm(w[c]) /
                                      np.linalg.norm(m_tilde[:, c]) for c in range(k)])
  logits = h @ w.T + (0 if bias is None else bias[classes])
  nearest = np.array([np.argmin([np.linalg.norm(x - m) for m in means]) for x in h])
  out["nc4"] = np.mean(logits.argmax(1) != nearest)
  return out


def _imbalanced(seed, k=5, d=12, counts=(30, 15, 9, 5, 3), spread=0.7):
  rng = np.random.default_rng(seed)
  y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
  centres = rng.normal(size=(k, d)) * 2
  h = centres[y] + spread * rng.normal(size=(len(y), d))
  return h, y, rng.normal(size=(d, k)), rng.normal(size=k)


@pytest.mark.parametrize("global_mean", ["classes", "samples"])
def test_random_features_match_numpy_formulas(global_mean):
  h, y, kernel, bias = _imbalanced(0)
  got = neural_collapse(h, y, kernel, bias, global_mean=global_mean)
  want = _reference(h, y, kernel, bias, global_mean)
  for name, value in want.items():
    np.testing.assert_allclose(getattr(got, name), value, rtol=1e-7, atol=1e-10, err_msg=name)
  assert 0 < got.nc4 < 1 and got.nc1 > 0.01


def test_exact_collapse_gives_zero():
  k, d = 5, 8
  etf = np.asarray(mmreg.simplex_etf(k, d, jax.random.PRNGKey(0)), np.float64)
  offset = np.arange(d, dtype=np.float64)
  counts = [40, 20, 10, 5, 2]  # imbalanced: the class-mean global mean is still the ETF centre
  y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
  h = 3.0 * etf.T[y] + offset
  # W = M̃ᵀ (kernel M̃) and b = −Wμ_G: the collapsed classifier of Papyan et al.
  got = neural_collapse(h, y, 3.0 * etf, -(3.0 * etf).T @ offset)
  assert got.nc1 == pytest.approx(0.0, abs=1e-12)
  for name in ("equinorm_means", "equinorm_weights", "equiangular_means", "equiangular_weights",
               "max_angle_means", "max_angle_weights", "etf_distance_means",
               "etf_distance_weights", "nc3"):
    assert getattr(got, name) == pytest.approx(0.0, abs=1e-6), name
  np.testing.assert_allclose(got.alignment_cosine, 1.0, atol=1e-6)
  assert got.nc4 == 0.0
  # The sample-weighted global mean is pulled toward the head class, so M̃ is no longer an ETF.
  by_samples = neural_collapse(h, y, 3.0 * etf, global_mean="samples")
  assert by_samples.etf_distance_means > 0.1 and by_samples.nc3 > 0.01


def test_global_mean_options_differ_only_under_imbalance():
  h, y, kernel, _ = _imbalanced(1, counts=(10, 10, 10, 10, 10))
  a = neural_collapse(h, y, kernel, global_mean="classes")
  b = neural_collapse(h, y, kernel, global_mean="samples")
  np.testing.assert_allclose(a.nc1, b.nc1, rtol=1e-10)
  np.testing.assert_allclose(a.nc3, b.nc3, rtol=1e-10)
  h, y, kernel, _ = _imbalanced(1)
  a = neural_collapse(h, y, kernel, global_mean="classes")
  b = neural_collapse(h, y, kernel, global_mean="samples")
  # Σ_B(samples) = Σ_B(classes) + δδᵀ with δ = μ_G,classes − μ_G,samples: only NC1-NC3 of the
  # means move, the weights' NC2 and NC4 do not.
  assert abs(a.nc1 - b.nc1) > 1e-4 and abs(a.etf_distance_means - b.etf_distance_means) > 1e-4
  assert a.etf_distance_weights == b.etf_distance_weights and a.nc4 == b.nc4


def test_batched_equals_full_and_is_shift_stable():
  h, y, kernel, bias = _imbalanced(2)
  h = h + 1e5  # a large common offset: sums are shifted, so nothing cancels catastrophically
  full = neural_collapse(h, y, kernel, bias)
  order = np.random.default_rng(0).permutation(len(y))

  def batches():
    return ((h[order[i:i + 7]], y[order[i:i + 7]]) for i in range(0, len(y), 7))

  batched = neural_collapse_batches(batches, kernel, bias)
  for name in ("nc1", "nc3", "nc4", "etf_distance_means"):
    np.testing.assert_allclose(getattr(batched, name), getattr(full, name), rtol=1e-6)
  want = _reference(h - 1e5, y, kernel, bias, "classes")
  np.testing.assert_allclose(full.nc1, want["nc1"], rtol=1e-6)


def test_missing_class_raises_or_skips():
  h, y, kernel, bias = _imbalanced(3)
  keep = y != 2
  with pytest.raises(ValueError, match=r"classes \[2\] have no samples"):
    neural_collapse(h[keep], y[keep], kernel, bias)
  got = neural_collapse(h[keep], y[keep], kernel, bias, missing_classes="skip")
  want = _reference(h[keep], y[keep], kernel, bias, "classes", classes=np.array([0, 1, 3, 4]))
  assert got.classes.tolist() == [0, 1, 3, 4]
  for name, value in want.items():
    np.testing.assert_allclose(getattr(got, name), value, rtol=1e-7, atol=1e-10, err_msg=name)


def test_weight_orientation_error():
  h, y, kernel, _ = _imbalanced(4)
  with pytest.raises(ValueError, match="transpose"):
    neural_collapse(h, y, kernel.T)
