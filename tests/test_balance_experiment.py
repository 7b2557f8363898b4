import json

import pytest

from experiments import balance


@pytest.mark.slow
def test_balance_experiment_writes_results(tmp_path):
  out = tmp_path / "bal"
  balance.main(["--methods", "joint,redreg,gblending", "--datasets", "mfeat:pix+mor",
                          "--seeds", "2", "--epochs", "2", "--workdir", str(out)])
  for name in ("results.json", "results.md", "accuracy.png", "redreg_diagnostics.png"):
    assert (out / name).stat().st_size > 0
  saved = json.loads((out / "results.json").read_text())
  per = saved["datasets"]["mfeat:pix+mor"]
  assert set(per) == {"joint", "redreg", "gblending"}
  for r in per.values():
    assert 0 <= r["accuracy"]["mean"] <= 1 and r["accuracy"]["n"] == 2
    assert set(r["modality_accuracy"]) == {"pix", "mor"}
    shapley = sum(s["mean"] for s in r["shapley"].values())
    assert -1 <= shapley <= 1
  assert "vs_joint" in per["redreg"] and "beats_joint" in per["redreg"]["vs_joint"]
  trace = per["redreg"]["redreg_trace"]
  assert len(trace) == 2 * (1200 // 64)  # 2 epochs of the 1200 mfeat training samples
  assert {"r", "gate", "beta", "dominant"} <= set(trace[0])


def test_balance_cli_rejects_unknown_method():
  with pytest.raises(SystemExit):
    balance.parse_args(["--methods", "joint,foo"])
