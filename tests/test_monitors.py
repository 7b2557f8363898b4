import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmreg import monitors


def _np_growth(history: np.ndarray, W: int, eps: float = 1e-8) -> np.ndarray:
  if len(history) < W + 1:
    return np.ones(history.shape[1])
  cur = history[-W:].mean(0)
  prev = history[-W - 1:-1].mean(0)
  return (cur - prev) / (np.abs(prev) + eps)


def test_growth_rate_matches_numpy_over_a_sequence(rng):
  W, M = 4, 2
  state = monitors.rpm_init(M, W)
  seen = []
  for _ in range(11):
    p = rng.uniform(0.1, 0.9, size=M)
    seen.append(p)
    state, signal = monitors.rpm_update(state, jnp.asarray(p, jnp.float32))
    np.testing.assert_allclose(signal.growth, _np_growth(np.array(seen), W), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bias_correction", [True, False])
def test_redundancy_ema_normalisation(rng, bias_correction):
  state = monitors.rpm_init(2, 3)
  ema, reds = np.zeros(2), rng.uniform(0.5, 2.0, size=(5, 2))
  for n, red in enumerate(reds, start=1):
    state = monitors.push_redundancy(state, jnp.asarray(red, jnp.float32), 0.9, bias_correction)
    ema = 0.9 * ema + 0.1 * red
    norm = ema / (1 - 0.9 ** n) if bias_correction else ema
    np.testing.assert_allclose(state.red_norm, red / (norm + 1e-8), rtol=1e-5)
  first = monitors.push_redundancy(monitors.rpm_init(1, 3), jnp.ones(1), 0.9, bias_correction)
  # Pinned: bias-corrected EMA starts at red_norm = 1, the authors' (main_RedReg.py:221-223)
  # at 1/(1 − 0.9) = 10.
  np.testing.assert_allclose(first.red_norm, [1.0 if bias_correction else 10.0], rtol=1e-5)


def test_score_is_red_norm_minus_gamma_positive_growth():
  state = monitors.rpm_init(2, 1)
  for p in ([0.5, 0.5], [0.6, 0.4]):
    state, _ = monitors.rpm_update(state, jnp.asarray(p))
  state = monitors.push_redundancy(state, jnp.asarray([2.0, 2.0]), bias_correction=True)
  sig = monitors.rpm_score(state, gamma=0.6)
  growth = np.array([(0.6 - 0.5) / 0.5, (0.4 - 0.5) / 0.5])
  np.testing.assert_allclose(sig.growth, growth, rtol=1e-5)
  np.testing.assert_allclose(sig.score, 1.0 - 0.6 * np.maximum(growth, 0), rtol=1e-5)


def test_noise_redundancy_of_a_linear_encoder(rng):
  A = rng.normal(size=(5, 3)).astype(np.float32)
  x = rng.normal(size=(8, 5)).astype(np.float32)
  key = jax.random.PRNGKey(3)
  red = monitors.noise_redundancy(lambda v: v @ A, jnp.asarray(x), key, sigma=0.1)
  k1, k2 = jax.random.split(key)
  x1 = x + 0.1 * np.asarray(jax.random.normal(k1, x.shape))
  x2 = x + 0.1 * np.asarray(jax.random.normal(k2, x.shape))
  expected = np.mean(((x1 - x2) @ A) ** 2) / (np.mean((x1 - x2) ** 2) + 1e-8)
  np.testing.assert_allclose(red, expected, rtol=1e-4)


def test_dominance_strict_max_and_ties():
  d = monitors.dominance(jnp.asarray([0.2, 0.7, 0.4]))
  assert int(d.dominant) == 1 and int(d.weak) == 0
  np.testing.assert_allclose(d.gap, 0.5, rtol=1e-6)
  tie = monitors.dominance(jnp.asarray([0.7, 0.7, 0.1]))
  assert int(tie.dominant) == -1 and float(tie.gap) == 0.0
  with pytest.raises(ValueError, match="at least 2 modalities"):
    monitors.dominance(jnp.asarray([0.5]))


def test_modality_confidence_and_missing_modality():
  logits = {"a": jnp.log(jnp.asarray([[0.7, 0.3], [0.2, 0.8]]))}
  p = monitors.modality_confidence(logits, jnp.asarray([0, 1]), ("a",))
  np.testing.assert_allclose(p, [0.75], rtol=1e-6)
  with pytest.raises(ValueError, match=r"no entry for \['b'\]"):
    monitors.modality_confidence(logits, jnp.asarray([0, 1]), ("a", "b"))


def test_gate_similarity_threshold_and_smooth(rng):
  h = {m: rng.normal(size=(6, 4)).astype(np.float32) for m in "abc"}
  unit = {m: v / np.linalg.norm(v, axis=1, keepdims=True) for m, v in h.items()}
  pairs = [np.mean(np.sum(unit[a] * unit[b], 1)) for a, b in (("a", "b"), ("a", "c"), ("b", "c"))]
  sim = monitors.cross_modal_similarity({m: jnp.asarray(v) for m, v in h.items()}, ("a", "b", "c"))
  np.testing.assert_allclose(sim, np.mean(pairs), rtol=1e-5)
  np.testing.assert_allclose(monitors.gate_threshold(0, 11), 0.2)
  np.testing.assert_allclose(monitors.gate_threshold(5, 11), 0.35, rtol=1e-6)
  np.testing.assert_allclose(monitors.gate_threshold(10, 11), 0.5, rtol=1e-6)
  assert float(monitors.coinformation_gate(0.4, 0.3)) == 1.0
  assert float(monitors.coinformation_gate(0.3, 0.3)) == 0.0
  np.testing.assert_allclose(monitors.coinformation_gate(0.4, 0.3, 0.1), 1 / (1 + np.exp(-1.0)),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="same feature width"):
    monitors.cross_modal_similarity({"a": jnp.ones((2, 3)), "b": jnp.ones((2, 4))}, ("a", "b"))


def test_fisher_window_matches_numpy(rng):
  W, M = 2, 2
  state = monitors.fisher_window_init(M, W, pad_history=False, epoch_reduction="mean")
  per_epoch: list[list[np.ndarray]] = []
  for epoch in range(6):
    per_epoch.append([])
    for _ in range(3):
      tr = rng.uniform(0.5, 2.0, size=M)
      per_epoch[-1].append(tr)
      state, sig = monitors.fisher_window_update(state, jnp.asarray(tr, jnp.float32), epoch,
                                                 threshold=0.05)
    done = np.array([np.mean(e, axis=0) for e in per_epoch[:-1]])
    if len(done) < W + 1:
      assert bool(np.all(sig.in_window)) and np.all(sig.k == 1.0)
    else:
      cur, prev = done[-W:].mean(0), done[-W - 1:-1].mean(0)
      k = (cur - prev) / cur
      np.testing.assert_allclose(sig.k, k, rtol=1e-4)
      np.testing.assert_array_equal(sig.in_window, k > 0.05)


def test_calibrated_threshold_matches_numpy(rng):
  """mmreg's calibrated trigger: mean + z·std of the previous scores, exponentially weighted."""
  cal = monitors.calibration_init(2)
  scores = rng.uniform(0.5, 2.0, size=(14, 2))
  for n, score in enumerate(scores):
    thr = monitors.calibrated_threshold(cal, z=1.5, min_count=5)
    if n < 5:
      assert np.all(np.isposinf(np.asarray(thr)))
    else:
      w = 0.9 ** np.arange(n)[::-1]  # weights of scores 0..n-1: (1−m)·m^k, the first m^(n−1)
      w[1:] *= 0.1
      mean = w @ scores[:n]
      var = w @ (scores[:n] - mean) ** 2
      np.testing.assert_allclose(thr, mean + 1.5 * np.sqrt(var), rtol=1e-4)
    cal = monitors.push_score(cal, jnp.asarray(score, jnp.float32), momentum=0.9)
  steady = monitors.calibration_init(1)
  for _ in range(20):
    steady = monitors.push_score(steady, jnp.full(1, 0.3), momentum=0.9)
  np.testing.assert_array_equal(monitors.calibrated_threshold(steady), np.float32(0.3))


def test_shuffled_similarity_pairs_only_different_samples():
  """One-hot features, identical across modalities: paired cosine 1, and every unpaired pair
  is orthogonal, so the shuffled cosine is exactly 0 (no sample is paired with itself)."""
  h = jnp.eye(8)
  feats = {"a": h, "b": h}
  for seed in range(5):
    np.testing.assert_allclose(
        monitors.shuffled_similarity(feats, ("a", "b"), jax.random.PRNGKey(seed)), 0.0)
  np.testing.assert_allclose(monitors.cross_modal_similarity(feats, ("a", "b")), 1.0, rtol=1e-6)
  np.testing.assert_allclose(monitors.excess_similarity(0.7, 0.4), 0.5, rtol=1e-6)
  np.testing.assert_allclose(monitors.excess_similarity(0.3, 0.0), 0.3, rtol=1e-6)
  with pytest.raises(ValueError, match="batch of at least 2"):
    monitors.shuffled_similarity({"a": h[:1], "b": h[:1]}, ("a", "b"), jax.random.PRNGKey(0))


@pytest.mark.parametrize("scale", [1e30, 1e-30, 1e-15])
def test_gate_cosine_is_torch_normalize_at_extreme_scales(rng, scale):
  """cos via x / max(‖x‖, 1e-12) as F.normalize (main_RedReg.py:242-243), in float64."""
  a, b = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  a[0] = 0.0
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
  expected = np.mean(np.sum(unit(scale * a) * unit(scale * b), axis=1))
  sim = monitors.cross_modal_similarity({"a": jnp.asarray(scale * a, jnp.float32),
                                         "b": jnp.asarray(scale * b, jnp.float32)}, ("a", "b"))
  assert np.isfinite(float(sim))
  np.testing.assert_allclose(sim, expected, rtol=1e-4, atol=1e-30)
