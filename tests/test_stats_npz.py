"""Paired statistics and Holm correction against hand-computed values; the npz user-data loader."""

import numpy as np
import pytest

from mmreg.data.npz import load_npz
from mmreg.data.registry import load_dataset
from mmreg.metrics import holm_bonferroni, paired_difference


def test_paired_difference_matches_the_textbook_formula():
  a = np.array([0.81, 0.84, 0.79, 0.88, 0.83])
  b = np.array([0.80, 0.80, 0.78, 0.85, 0.84])
  d = a - b                     # 0.01, 0.04, 0.01, 0.03, -0.01
  mean = d.sum() / 5
  s = np.sqrt(((d - mean) ** 2).sum() / 4)
  t975_4 = 2.7764451051977987   # Student t quantile, 4 degrees of freedom (tables)
  out = paired_difference(a, b)
  assert out.n == 5
  np.testing.assert_allclose(out.mean, mean, rtol=1e-12)
  np.testing.assert_allclose(out.ci, t975_4 * s / np.sqrt(5), rtol=1e-9)
  # Two-sided p of Student t with 4 dof in closed form: with x = t/√(t² + 4),
  # P(|T| < t) = x·(1 + (1 − x²)/2).
  t = mean / (s / np.sqrt(5))
  x = t / np.sqrt(t * t + 4)
  np.testing.assert_allclose(out.p_value, 1 - x * (1 + (1 - x * x) / 2), rtol=1e-9)


def test_paired_difference_without_spread_and_bad_input():
  assert paired_difference([1.0, 2.0], [1.0, 2.0]).p_value == 1.0
  assert paired_difference([1.5, 2.5], [1.0, 2.0]).p_value == 0.0
  with pytest.raises(ValueError, match="one length"):
    paired_difference([1.0, 2.0], [1.0])
  with pytest.raises(ValueError, match="at least 2 seeds"):
    paired_difference([1.0], [1.0])
  with pytest.raises(ValueError, match="NaN"):
    paired_difference([1.0, np.nan], [1.0, 2.0])


def test_holm_bonferroni_step_down_by_hand():
  # sorted: d=0.005·4=0.02, a=0.01·3=0.03, c=0.03·2=0.06, b=0.04·1=0.04 → running max 0.06.
  out = holm_bonferroni({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
  expected = {"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02}
  for k, v in expected.items():
    assert out[k][0] == pytest.approx(v)
    assert out[k][1] == (v <= 0.05)
  # x: 2·0.6 = 1.2 → 1; y: max(1.2, 0.9) → 1 (adjusted p-values never decrease).
  assert holm_bonferroni({"x": 0.6, "y": 0.9}) == {"x": (1.0, False), "y": (1.0, False)}
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    holm_bonferroni({"x": 1.5})


def _write(path, **arrays):
  np.savez(path, **arrays)
  return path


def _valid(rng, n=(12, 6, 6)):
  arrays = {}
  for split, size in zip(("train", "val", "test"), n, strict=True):
    arrays[f"{split}/audio"] = rng.normal(size=(size, 5)).astype(np.float32)
    arrays[f"{split}/video"] = rng.normal(size=(size, 2, 3)).astype(np.float32)
    arrays[f"{split}/label"] = np.arange(size) % 3
  return arrays


def test_npz_loads_every_split_through_the_registry(tmp_path):
  rng = np.random.default_rng(0)
  arrays = _valid(rng)
  arrays["val/present/video"] = np.array([True, False] * 3)
  path = _write(tmp_path / "d.npz", **arrays)
  splits = load_dataset("npz", {"path": str(path)})
  assert splits.train.modalities == ("audio", "video")
  assert splits.train.num_classes == 3 and len(splits.val) == 6
  np.testing.assert_array_equal(splits.test.inputs["video"], arrays["test/video"])
  np.testing.assert_array_equal(splits.val.present["video"], arrays["val/present/video"])
  assert splits.val.present["audio"].all() and splits.train.present is None


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("val/label"), "lacks the key val/label"),
    (lambda a: [a.pop(k) for k in list(a) if k.startswith("test/")], r"splits \['test'\]"),
    (lambda a: a.__setitem__("train/label", np.arange(11) % 3), "12 samples but train/label"),
    (lambda a: a.__setitem__("train/label", (np.arange(12) % 3).astype(float)),
     "must be integers.*astype"),
    (lambda a: a.__setitem__("val/audio", np.full((6, 5), np.nan, np.float32)), "NaN/Inf"),
    (lambda a: a.__setitem__("test/video", np.zeros((6, 3, 3), np.float32)), "per-sample shape"),
    (lambda a: a.pop("val/video"), "same modalities"),
])
def test_npz_errors_name_the_problem(tmp_path, change, message):
  arrays = _valid(np.random.default_rng(1))
  change(arrays)
  with pytest.raises(ValueError, match=message):
    load_npz(_write(tmp_path / "bad.npz", **arrays))


def test_npz_missing_file_and_out_of_range_labels(tmp_path):
  with pytest.raises(ValueError, match="no .npz file"):
    load_npz(tmp_path / "absent.npz")
  path = _write(tmp_path / "d.npz", **_valid(np.random.default_rng(2)))
  with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
    load_npz(path, num_classes=2)
