"""The balancing benchmark on a tiny configuration: schema, selection on validation, paired
statistics with Holm's correction, controls, outputs, and user data through `npz:PATH`."""

import json

import numpy as np
import pytest

from experiments import balance
from mmreg.data import load_mfeat
from mmreg.metrics import holm_bonferroni, paired_difference


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory):
  """A small two-modality task written as a user would: train/val/test arrays in one .npz."""
  splits = load_mfeat(("fou", "mor"), seed=0)
  arrays = {}
  for name, part, n in (("train", splits.train, 256), ("val", splits.val, 100),
                        ("test", splits.test, 120)):
    for m in ("fou", "mor"):
      arrays[f"{name}/{m}"] = part.inputs[m][:n]
    arrays[f"{name}/label"] = part.labels[:n]
  path = tmp_path_factory.mktemp("data") / "task.npz"
  np.savez(path, **arrays)
  return path


@pytest.mark.slow
def test_balance_benchmark_writes_the_protocol_results(npz_path, tmp_path):
  out = tmp_path / "bal"
  name = f"npz:{npz_path}"
  results = balance.main([
      "--datasets", name, "--methods", "joint,joint+heads,mmpareto", "--seeds", "3",
      "--tune_seeds", "1", "--max_epochs", "3", "--patience", "1",
      "--learning_rates", "0.01,0.05", "--method_learning_rates", "0.05", "--nounimodal",
      "--workdir", str(out)])
  for file in ("results.json", "results.md", "accuracy.png"):
    assert (out / file).stat().st_size > 0
  saved = json.loads((out / "results.json").read_text())
  per = saved["datasets"][name]
  assert {"joint", "joint+heads", "mmpareto"} <= set(per)
  for label, r in per.items():
    for metric in ("accuracy", "macro_f1"):
      assert set(r[metric]) >= {"mean", "ci95", "runs"} and len(r[metric]["runs"]) == 3
      assert r[metric]["mean"] == pytest.approx(np.mean(r[metric]["runs"]))
    assert r["config"]["learning_rate"] in (0.01, 0.05) or label.startswith("control:")
    assert set(r["probe_accuracy"]) == {"fou", "mor"}
  # joint trains the fused loss alone on a concat head: its per-modality logits are slices.
  assert set(per["joint"]["head_accuracy"]) == {"fou", "mor"}
  # Deltas: paired over seeds, Holm-adjusted across the task's methods, for each baseline.
  for baseline in ("joint", "joint+heads"):
    family = {k: r["delta"][baseline] for k, r in per.items() if baseline in r.get("delta", {})}
    assert set(family) == {"joint", "joint+heads", "mmpareto"} - {baseline}
    ours = {k: paired_difference(per[k]["accuracy"]["runs"], per[baseline]["accuracy"]["runs"])
            for k in family}
    holm = holm_bonferroni({k: d.p_value for k, d in ours.items()})
    for k, d in family.items():
      assert d["mean"] == pytest.approx(ours[k].mean) and d["ci95"] == pytest.approx(ours[k].ci)
      assert (d["p_holm"], d["significant"]) == pytest.approx(holm[k])
  # MMPareto's boost moves the encoders further than joint+heads at one learning rate.
  ratio = per["mmpareto"]["config"]["first_epoch_step_ratio"]
  assert ratio > 1.0
  if ratio > balance.CONTROL_RATIO:
    control = per["control:mmpareto"]["config"]["learning_rate"]
    assert control == pytest.approx(per["mmpareto"]["config"]["learning_rate"] * ratio)
    assert "lr_matched_control" in per["mmpareto"]["delta"]
  table = (out / "results.md").read_text()
  assert "| mmpareto |" in table and "p_Holm" in table
  assert results["seconds"] > 0


def test_selection_uses_tuning_seeds_only(monkeypatch, npz_path):
  """The selected configuration is the best mean validation accuracy over the tuning seeds;
  the reported runs are the fresh seeds of that configuration."""
  args = balance.parse_args(["--seeds", "2", "--tune_seeds", "1", "--max_epochs", "2",
                             "--patience", "1", "--learning_rates", "0.001,0.05",
                             "--method_learning_rates", "0.05"])
  splits = balance.load(f"npz:{npz_path}", args)
  selected = balance.tune(balance.ENTRIES["joint+heads"], splits, args)
  runs = selected["all"]
  assert set(runs.seeds.tolist()) == {100}
  tuning = {lr: runs.best_val_accuracy[runs.learning_rates == lr].mean() for lr in (0.001, 0.05)}
  assert selected["learning_rate"] == max(tuning, key=tuning.get)
  assert sorted(selected["runs"].seeds.tolist()) == [0, 1]
  assert set(selected["runs"].learning_rates.tolist()) == {selected["learning_rate"]}


@pytest.mark.parametrize("argv, message", [
    (["--methods", "joint,foo"], None),
    (["--learning_rates", "0.01,0.02", "--method_learning_rates", "0.05"], "not in"),
    (["--learning_rates", "0.01,0.02,0.05", "--method_learning_rates", "0.05"], "twice"),
])
def test_balance_cli_rejects_bad_flags(argv, message, capsys):
  with pytest.raises(SystemExit):
    balance.parse_args(argv)
  if message:
    assert message in capsys.readouterr().err


def test_balance_dataset_errors_name_the_fix(tmp_path):
  args = balance.parse_args([])
  with pytest.raises(ValueError, match="npz needs a path"):
    balance.load("npz:", args)
  with pytest.raises(ValueError, match="no .npz file"):
    balance.load(f"npz:{tmp_path}/missing.npz", args)
  with pytest.raises(ValueError, match="unknown dataset"):
    balance.load("cifar", args)
