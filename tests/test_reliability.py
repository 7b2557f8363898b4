"""Crash-and-resume, non-finite gradients, determinism and provenance."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmreg.losses import classification_losses
from mmreg.train import Checkpointer
from mmreg.train.loop import NonFiniteError, train_and_evaluate
from tests.conftest import tiny_config

ROOT = Path(__file__).parent.parent
FLAGS = ["--config.model.hidden=(16,)", "--config.model.feature_dim=8",
         "--config.model.latent_dim=4", "--config.train.epochs=2", "--config.train.batch_size=32",
         "--config.train.checkpoint_every_steps=10", "--config.train.log_every=1",
         "--config.optim.learning_rate=0.05"]


def _train_cmd(workdir: Path, kill_at_commit: int = 0) -> list[str]:
  return [sys.executable, str(ROOT / "tests" / "_crash_child.py"), str(kill_at_commit),
          f"--workdir={workdir}", *FLAGS]


def _final_state(workdir: Path):
  ckpt = Checkpointer(workdir / "checkpoints")
  step = ckpt.steps()[-1]
  path = workdir / "checkpoints" / str(step) / "state"
  import orbax.checkpoint as ocp

  restored = ocp.StandardCheckpointer().restore(path)
  return step, restored


def _committed_steps(workdir: Path) -> list[int]:
  folder = workdir / "checkpoints"
  if not folder.exists():
    return []
  return sorted(int(p.name) for p in folder.iterdir()
                if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists())


def _assert_same_run(a: Path, b: Path) -> None:
  step_a, state_a = _final_state(a)
  step_b, state_b = _final_state(b)
  assert step_a == step_b
  leaves_a, leaves_b = jax.tree.leaves(state_a), jax.tree.leaves(state_b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_array_equal(x, y)  # bitwise
  ra = json.loads((a / "results.json").read_text())
  rb = json.loads((b / "results.json").read_text())
  for key in ("test", "best_val_accuracy", "best_epoch", "final_val", "steps"):
    assert ra[key] == rb[key]
  log_a = (a / "log.jsonl").read_text().splitlines()
  log_b = (b / "log.jsonl").read_text().splitlines()
  assert log_a == log_b


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
  workdir = tmp_path_factory.mktemp("straight") / "run"
  subprocess.run(_train_cmd(workdir), check=True, capture_output=True, cwd=ROOT, timeout=900)
  return workdir


def test_sigkill_mid_epoch_then_restart_is_bitwise_identical(reference_run, tmp_path):
  workdir = tmp_path / "run"
  child = subprocess.Popen(_train_cmd(workdir), cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 240
  killed_after = None
  while time.monotonic() < deadline and child.poll() is None:
    steps = _committed_steps(workdir)
    log = workdir / "log.jsonl"
    if steps and steps[-1] >= 20 and log.exists():
      lines = log.read_text().splitlines()
      if lines and json.loads(lines[-1] if lines[-1].endswith("}") else lines[-2])["step"] > (
          steps[-1] + 3):
        child.send_signal(signal.SIGKILL)
        killed_after = steps[-1]
        break
    time.sleep(0.005)
  child.wait(timeout=60)
  assert killed_after is not None, "the run ended before it could be killed"
  assert child.returncode == -signal.SIGKILL
  assert not (workdir / "results.json").exists()
  subprocess.run(_train_cmd(workdir), check=True, capture_output=True, cwd=ROOT, timeout=900)
  _assert_same_run(reference_run, workdir)


def test_sigkill_during_checkpoint_write_keeps_previous_and_resumes(reference_run, tmp_path):
  workdir = tmp_path / "run"
  crashed = subprocess.run(_train_cmd(workdir, kill_at_commit=5), cwd=ROOT, capture_output=True,
                           timeout=900)
  assert crashed.returncode == -signal.SIGKILL
  committed = _committed_steps(workdir)
  assert committed, "an earlier checkpoint must have survived"
  subprocess.run(_train_cmd(workdir), check=True, capture_output=True, cwd=ROOT, timeout=900)
  _assert_same_run(reference_run, workdir)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_the_current_step_and_the_rerun_resumes(sig, reference_run, tmp_path):
  """Issue 15.3: SIGTERM or a first SIGINT mid-epoch finishes the step, saves it, flushes the
  log and exits with 128 + the signal number well within 30 s; the rerun says where it resumed
  and ends bitwise identical to the uninterrupted run."""
  workdir = tmp_path / "run"
  child = subprocess.Popen(_train_cmd(workdir), cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 600
  sent_at, seen = None, 0
  while time.monotonic() < deadline and child.poll() is None:
    log = workdir / "log.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    seen = json.loads(lines[-2])["step"] if len(lines) > 1 else 0
    if seen >= 13:
      child.send_signal(sig)
      sent_at = time.monotonic()
      break
    time.sleep(0.005)
  if sent_at is None:
    child.kill()
    child.wait()
    pytest.fail("the run ended, or did not reach step 13 in 600 s, before the signal")
  _, err = child.communicate(timeout=60)
  assert time.monotonic() - sent_at < 30
  assert child.returncode == 128 + sig, err
  stopped = int(re.search(rf"{signal.Signals(sig).name}: stopped after step (\d+), saved", err)[1])
  assert stopped >= seen and _committed_steps(workdir)[-1] == stopped
  assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
  assert json.loads((workdir / "log.jsonl").read_text().splitlines()[-1])["step"] == stopped
  rerun = subprocess.run(_train_cmd(workdir), check=True, capture_output=True, text=True,
                         cwd=ROOT, timeout=900)
  assert f"resumed from step {stopped} " in rerun.stderr and "warning" not in rerun.stderr
  _assert_same_run(reference_run, workdir)


def _nan_when_first_label_in(bad_labels: tuple[int, ...]):
  def spec_fn(modalities, loss_cfg):
    spec = classification_losses(modalities, **loss_cfg)

    def poison(output, batch):
      bad = jnp.isin(batch["label"][0], jnp.asarray(bad_labels))
      return jnp.where(bad, jnp.nan, 0.0) * jnp.mean(output.logits)

    return spec.with_term("poison", poison, 1.0)
  return spec_fn


def _poisoned_batches(cfg, bad_labels) -> list[bool]:
  from mmreg.data import iterate_batches
  from mmreg.train.loop import prepare_data

  splits = prepare_data(cfg.to_dict()["data"])
  return [int(b["label"][0]) in bad_labels
          for e in range(cfg.train.epochs)
          for b in iterate_batches(splits.train, cfg.train.batch_size, seed=cfg.seed, epoch=e)]


def test_non_finite_gradient_stops_before_saving(tmp_path):
  cfg = tiny_config(epochs=2)
  cfg.train.checkpoint_every_steps = 1
  first_bad = _poisoned_batches(cfg, (0, 1)).index(True) + 1
  assert first_bad > 1
  with pytest.raises(NonFiniteError, match=rf"step {first_bad} has a non-finite gradient"):
    train_and_evaluate(cfg, tmp_path / "run", progress=False,
                       loss_spec_fn=_nan_when_first_label_in((0, 1)))
  assert _committed_steps(tmp_path / "run")[-1] == first_bad - 1
  _, state = _final_state(tmp_path / "run")
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["train"]["params"]))


def test_skip_nonfinite_skips_and_counts(tmp_path):
  cfg = tiny_config(epochs=2)
  cfg.train.skip_nonfinite = 3
  cfg.train.log_every = 1
  expected = sum(_poisoned_batches(cfg, (0, 1)))
  assert expected > 0
  results = train_and_evaluate(cfg, tmp_path / "run", progress=False,
                               loss_spec_fn=_nan_when_first_label_in((0, 1)))
  assert results["skipped_steps"] == expected
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(results["state"].params))
  log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
  assert max(r.get("skipped_steps", 0) for r in log) == expected


def test_same_config_and_seed_give_identical_results(tmp_path):
  cfg = tiny_config(epochs=1)
  a = train_and_evaluate(cfg, tmp_path / "a", progress=False)
  b = train_and_evaluate(cfg, tmp_path / "b", progress=False)
  for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
    np.testing.assert_array_equal(x, y)
  assert a["test"] == b["test"]
  prov = json.loads((tmp_path / "a" / "results.json").read_text())["provenance"]
  assert prov["versions"]["jax"] == jax.__version__
  assert prov["backend"] == "cpu" and prov["device_count"] == jax.device_count()
  assert "git_commit" in prov
