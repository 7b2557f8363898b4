"""The closed-form CCA baseline, and smoke runs of the robustness and alignment experiments."""

import json

import numpy as np
import pytest

from experiments import alignment, robustness


def test_fit_cca_projections_have_the_canonical_correlations():
  rng = np.random.default_rng(0)
  shared = rng.normal(size=(400, 2))
  x = np.c_[shared @ rng.normal(size=(2, 5)), rng.normal(size=(400, 3))] + 0.3 * rng.normal(
      size=(400, 8))
  y = shared @ rng.normal(size=(2, 6)) + 0.3 * rng.normal(size=(400, 6))
  a, b, s = alignment.fit_cca(x, y, 3, 0.0)
  u, v = (x - x.mean(0)) @ a, (y - y.mean(0)) @ b
  corr = [np.corrcoef(u[:, k], v[:, k])[0, 1] for k in range(3)]
  np.testing.assert_allclose(corr, s, rtol=1e-6)
  assert s[0] > 0.9 and s[1] > 0.9 and s[2] < 0.3  # two shared directions, then noise
  np.testing.assert_allclose(np.cov(u.T), np.eye(3), atol=1e-8)  # unit-variance variates


@pytest.mark.slow
def test_robustness_experiment_smoke(tmp_path):
  robustness.main(["--workdir", str(tmp_path), "--seeds", "2", "--epochs", "1", "--al_rounds",
                   "1", "--severities=0,1", "--missing=0,0.5", "--label_noise=0,0.2"])
  results = json.loads((tmp_path / "results.json").read_text())
  assert "target_missing_50pct" in results
  assert {p.name for p in tmp_path.glob("*.png")} == {
      "noise.png", "missing.png", "label_noise.png", "active_learning.png", "retrieval.png"}


@pytest.mark.slow
def test_alignment_experiment_smoke(tmp_path):
  alignment.main(["--workdir", str(tmp_path), "--seeds", "2", "--epochs", "1"])
  results = json.loads((tmp_path / "results.json").read_text())
  assert set(results["methods"]) == {"infonce", "infonce+prototypes", "cca"}
  assert (tmp_path / "retrieval.png").exists()
