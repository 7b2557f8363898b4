import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from mmreg.train import Checkpointer, CheckpointError
from mmreg.train.loop import WorkdirConflictError, train_and_evaluate
from tests.conftest import tiny_config


def _params_equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_training_learns_and_writes_outputs(tmp_path):
  cfg = tiny_config(epochs=3)
  results = train_and_evaluate(cfg, tmp_path / "run", progress=False)
  assert results["test"]["accuracy"] > 0.8  # 10 classes: chance is 0.1
  assert set(results["test"]["modality_accuracy"]) == {"fou", "pix"}
  for name in ("config.json", "log.jsonl", "results.json", "curves.png"):
    assert (tmp_path / "run" / name).exists()
  saved = json.loads((tmp_path / "run" / "results.json").read_text())
  assert saved["test"]["accuracy"] == results["test"]["accuracy"]


def test_interrupted_run_resumes_to_identical_parameters(tmp_path):
  cfg = tiny_config(epochs=3)  # 9 steps per epoch
  cfg.train.checkpoint_every_steps = 4
  cfg.train.log_every = 1
  straight = train_and_evaluate(cfg, tmp_path / "straight", progress=False)
  assert train_and_evaluate(cfg, tmp_path / "resumed", progress=False, max_steps=7) is None
  assert train_and_evaluate(cfg, tmp_path / "resumed", progress=False, max_steps=9) is None
  assert train_and_evaluate(cfg, tmp_path / "resumed", progress=False, max_steps=20) is None
  resumed = train_and_evaluate(cfg, tmp_path / "resumed", progress=False)
  assert resumed["steps"] == straight["steps"] == 27
  assert _params_equal(straight["state"].params, resumed["state"].params)
  assert _params_equal(straight["state"].opt_state, resumed["state"].opt_state)
  assert _params_equal(straight["best_params"], resumed["best_params"])
  assert resumed["test"] == straight["test"]
  log = [json.loads(x) for x in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
  ref = [json.loads(x) for x in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
  assert [r["step"] for r in log] == [r["step"] for r in ref]
  assert [r.get("loss/total") for r in log] == [r.get("loss/total") for r in ref]


def test_workdir_holding_another_run_is_refused_before_writing(tmp_path):
  cfg = tiny_config(epochs=1)
  train_and_evaluate(cfg, tmp_path / "run", progress=False)
  before = (tmp_path / "run" / "results.json").read_text()
  cfg.optim.learning_rate = 0.5
  with pytest.raises(WorkdirConflictError, match=r"different config.*optim.learning_rate"):
    train_and_evaluate(cfg, tmp_path / "run", progress=False)
  assert (tmp_path / "run" / "results.json").read_text() == before
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("x")
  with pytest.raises(WorkdirConflictError, match="not empty"):
    train_and_evaluate(cfg, tmp_path / "other", progress=False)


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path):
  state = {"w": np.arange(4.0, dtype=np.float32)}
  ckpt = Checkpointer(tmp_path / "ck", max_to_keep=3)
  ckpt.save(1, state, {"epoch": 1})
  ckpt.save(2, {"w": state["w"] + 1}, {"epoch": 2})
  for f in (tmp_path / "ck" / "2" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  step, restored, meta = ckpt.restore(abstract)
  assert step == 1 and meta == {"epoch": 1}
  np.testing.assert_array_equal(restored["w"], state["w"])
  with pytest.raises(CheckpointError, match="no checkpoint"):
    Checkpointer(tmp_path / "empty").restore(abstract)


def test_unknown_names_list_valid_ones(tmp_path):
  cfg = tiny_config(epochs=1)
  cfg.method.name = "nope"
  with pytest.raises(ValueError,
                     match=r"method.name='nope': unknown method; valid methods: \[.*'joint'"):
    train_and_evaluate(cfg, tmp_path / "a", progress=False)
  cfg = tiny_config(epochs=1)
  cfg.data.name = "imagenet"
  with pytest.raises(ValueError, match="data.name='imagenet': unknown dataset; valid datasets"):
    train_and_evaluate(cfg, tmp_path / "b", progress=False)
  cfg = tiny_config(epochs=1)
  cfg.optim.schedule = "zigzag"
  with pytest.raises(ValueError, match="unknown schedule"):
    train_and_evaluate(cfg, tmp_path / "c", progress=False)
  cfg = tiny_config(epochs=1)
  cfg.train.batch_size = 0
  with pytest.raises(ValueError, match="train.batch_size=0 must be a positive integer"):
    train_and_evaluate(cfg, tmp_path / "d", progress=False)
  cfg = tiny_config(epochs=1)
  cfg.model.fusion = "sideways"
  with pytest.raises(ValueError, match="unknown fusion; valid fusions: .*'attention'"):
    train_and_evaluate(cfg, tmp_path / "e", progress=False)
  assert not any((tmp_path / d).exists() for d in "abcde")


def test_demo_command_writes_results_and_plots(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.demo", "--seeds=1", "--epochs=1",
       f"--workdir={tmp_path}"], capture_output=True, text=True, check=True,
      cwd=Path(__file__).parent.parent)
  folder = Path(out.stdout.strip().splitlines()[-1].removeprefix("output folder: "))
  results = json.loads((folder / "results.json").read_text())
  assert set(results["runs"]) == {"unimodal:fou", "unimodal:fac", "unimodal:kar",
                                  "unimodal:pix", "unimodal:zer", "unimodal:mor",
                                  "joint:fou+pix"}
  assert len(list(folder.glob("*.png"))) >= 3
  assert "wall time" in out.stdout


@pytest.fixture(scope="module")
def joint_two_epochs(tmp_path_factory):
  """Plain joint training with tiny_config(epochs=2): the reference the methods must leave."""
  return train_and_evaluate(tiny_config(epochs=2), tmp_path_factory.mktemp("joint") / "run",
                            progress=False)


@pytest.mark.parametrize("method", ["spa_proj", "spa_slerp"])
def test_space_alignment_methods_run_in_the_loop(method, tmp_path, joint_two_epochs):
  cfg = tiny_config(epochs=2)
  cfg.method.name = method
  results = train_and_evaluate(cfg, tmp_path / method, progress=False)
  assert results["test"]["accuracy"] > 0.5
  kernel = results["state"].params["head"]["kernel"]
  assert not np.allclose(kernel, joint_two_epochs["state"].params["head"]["kernel"])


@pytest.mark.parametrize("method", ["redreg", "mmpareto"])
def test_balancing_methods_run_in_the_loop(method, tmp_path):
  cfg = tiny_config(epochs=2)
  cfg.method.name = method
  cfg.train.log_every = 1
  results = train_and_evaluate(cfg, tmp_path / method, progress=False)
  assert results["test"]["accuracy"] > 0.5
  log = [json.loads(x) for x in (tmp_path / method / "log.jsonl").read_text().splitlines()]
  if method == "redreg":  # the transform's diagnostics reach the log
    assert {"diag/beta", "diag/gate", "diag/r"} <= set(log[0])


def test_train_command_takes_method_and_data_options_as_json(tmp_path, monkeypatch, capsys):
  from experiments import train  # the command's own entry point, in this process

  argv = ["mmreg-train", "--config.method.name=ogm_ge", "--method_options={\"alpha\": 0.5}",
          "--data_options={\"views\": [\"mor\", \"kar\"]}", "--config.train.epochs=1",
          "--config.model.hidden=(16,)", f"--workdir={tmp_path / 'r'}"]
  monkeypatch.setattr(sys, "argv", argv)
  train.cli()
  saved = json.loads((tmp_path / "r" / "config.json").read_text())
  assert saved["method"]["options"] == {"alpha": 0.5}
  assert saved["data"]["options"]["views"] == ["mor", "kar"]
  capsys.readouterr()
  monkeypatch.setattr(sys, "argv", [argv[0], "--method_options=[1]", f"--workdir={tmp_path / 'b'}"])
  with pytest.raises(SystemExit) as bad:
    train.cli()
  assert bad.value.code != 0 and "must be a JSON object" in capsys.readouterr().err
