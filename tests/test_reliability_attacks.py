"""Attacks on the paths around resume (issue 15): corrupt and bit-rotten checkpoints, non-finite
configs and parameters, two writers, writes cut short, bad inputs, changed code."""

import json
import os
import resource
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mmreg.data.dataset import MultimodalDataset, Splits
from mmreg.grads import LossGrads
from mmreg.train import Checkpointer, CheckpointError, loop
from mmreg.train.checkpoint import tree_checksums
from mmreg.train.loop import (
  NonFiniteError,
  StopSignals,
  WorkdirConflictError,
  WorkdirLock,
  WorkdirLockedError,
  claim_workdir,
  config_to_dict,
  train_and_evaluate,
)
from mmreg.train.results import read_jsonl, truncate_jsonl
from mmreg.train.validate import ConfigError, check_loss_grads
from tests.conftest import tiny_config

ROOT = Path(__file__).parent.parent


def _config(epochs: int = 1) -> ml_collections.ConfigDict:
  cfg = tiny_config(epochs=epochs)  # 9 steps per epoch
  cfg.train.checkpoint_every_steps = 4
  cfg.train.log_every = 1
  return cfg


def _params_equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  return train_and_evaluate(_config(), tmp_path_factory.mktemp("straight") / "run",
                            progress=False)


# --- 1, 6: corrupt and bit-rotten checkpoints ---------------------------------------------

def _largest_data_file(step_dir: Path) -> Path:
  files = [f for f in (step_dir / "state").rglob("*") if f.is_file() and "/d/" in str(f)]
  return max(files, key=lambda f: f.stat().st_size)


def _zero(step_dir: Path) -> None:
  f = _largest_data_file(step_dir)
  f.write_bytes(bytes(f.stat().st_size))


def _flip_one_bit(step_dir: Path) -> None:
  f = _largest_data_file(step_dir)
  data = bytearray(f.read_bytes())
  data[len(data) // 2] ^= 0x04
  f.write_bytes(bytes(data))


CORRUPTIONS = {
    "truncated data file": lambda d: _largest_data_file(d).write_bytes(b""),
    "zeroed data file": _zero,
    "state/_METADATA deleted": lambda d: (d / "state" / "_METADATA").unlink(),
    "meta/metadata deleted": lambda d: (d / "meta" / "metadata").unlink(),
    "one flipped bit": _flip_one_bit,
}


def test_training_goes_past_a_corrupt_latest_checkpoint(straight, monkeypatch, tmp_path,
                                                        capsys):
  """Issue 15.1: the run resumes from the previous step, moves the bad one aside, saves that
  step again and ends as the uninterrupted run. (Each corruption is tried on the Checkpointer
  below.) Issue 15.8: the resume says where it starts, and warns that the code changed."""
  workdir = tmp_path / "run"
  monkeypatch.setattr(loop, "code_version", lambda: {"mmreg": "0.1", "git_commit": "aaaa"})
  assert train_and_evaluate(_config(), workdir, progress=False, max_steps=8) is None
  assert Checkpointer(workdir / "checkpoints").steps() == [4, 8]
  _zero(workdir / "checkpoints" / "8")
  monkeypatch.setattr(loop, "code_version", lambda: {"mmreg": "0.2", "git_commit": "bbbb"})
  capsys.readouterr()
  resumed = train_and_evaluate(_config(), workdir, progress=False)
  err = capsys.readouterr().err
  assert "checkpoint step 8" in err and "8.corrupt" in err
  assert "resumed from step 4 (epoch 0, batch 4)" in err
  assert ("warning: step 4 was saved by {'mmreg': '0.1', 'git_commit': 'aaaa'}, this is "
          "{'mmreg': '0.2', 'git_commit': 'bbbb'}") in err
  assert (workdir / "checkpoints" / "8.corrupt").is_dir()
  assert resumed["steps"] == straight["steps"] == 9
  assert _params_equal(resumed["state"].params, straight["state"].params)
  assert resumed["test"] == straight["test"]


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_checkpointer_falls_back_and_moves_each_corruption_aside(corruption, tmp_path, capsys):
  w = np.random.default_rng(0).normal(size=4096).astype(np.float32)  # incompressible
  ckpt = Checkpointer(tmp_path, max_to_keep=3)
  ckpt.save(1, {"w": w}, {"epoch": 1})
  ckpt.save(2, {"w": w + 1}, {"epoch": 2})
  CORRUPTIONS[corruption](tmp_path / "2")
  abstract = {"w": jax.ShapeDtypeStruct(w.shape, w.dtype)}
  step, restored, meta = Checkpointer(tmp_path, max_to_keep=3).restore(abstract)
  assert step == 1 and meta == {"epoch": 1}
  np.testing.assert_array_equal(restored["w"], w)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2.corrupt"]
  if corruption == "one flipped bit":
    assert "do not match their saved checksums" in capsys.readouterr().err


def test_nothing_is_moved_when_no_checkpoint_restores(tmp_path):
  ckpt = Checkpointer(tmp_path)
  ckpt.save(1, {"w": np.ones(3, np.float32)}, {})
  for f in (tmp_path / "1" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  with pytest.raises(CheckpointError, match="could be restored"):
    ckpt.restore({"w": jax.ShapeDtypeStruct((3,), np.float32)})
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


def _checksum_oracle(x: np.ndarray) -> int:
  """Σ (2i + 1)·w_i mod 2³² over the array's words (mmreg.train.checkpoint._leaf_checksum)."""
  x = np.asarray(x)
  if x.dtype == np.bool_:
    words = x.astype(np.uint64)
  elif x.dtype.itemsize >= 4:
    words = x.reshape(-1).view(np.uint32).astype(np.uint64)
  else:
    words = x.reshape(-1).view(np.uint16 if x.dtype.itemsize == 2 else np.uint8)
    words = words.astype(np.uint64)
  words = words.reshape(-1)
  weights = 2 * np.arange(words.size, dtype=np.uint64) + 1
  return int(np.sum((words * weights) % 2**32) % 2**32)


def test_checksums_match_a_numpy_oracle_and_see_one_bit():
  rng = np.random.default_rng(0)
  tree = {"f32": rng.normal(size=(7, 5)).astype(np.float32),
          "bf16": rng.normal(size=33).astype(jnp.bfloat16),
          "i32": rng.integers(-2**31, 2**31 - 1, size=100, dtype=np.int32),
          "key": np.asarray(jax.random.PRNGKey(3)),
          "flag": np.array([True, False, True]),
          "scalar": np.float32(-0.0)}
  sums = tree_checksums(tree)
  assert sums == {f"['{k}']": _checksum_oracle(np.asarray(v)) for k, v in tree.items()}
  flipped = tree["f32"].copy()
  flipped.view(np.uint32)[3, 2] ^= 1 << 31
  assert tree_checksums({"f32": flipped})["['f32']"] != sums["['f32']"]


# --- 2: non-finite configs and parameters ---------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("optim.learning_rate", float("nan"), "optim.learning_rate=nan is not a finite number"),
    ("optim.weight_decay", float("inf"), "optim.weight_decay=inf is not a finite number"),
    ("optim.momentum", float("nan"), "optim.momentum=nan is not a finite number"),
    ("optim.momentum", 1.0, r"optim.momentum=1.0 must be a number in \[0, 1\)"),
    ("optim.learning_rate", -0.1, "optim.learning_rate=-0.1 must be a positive number"),
    ("train.max_to_keep", 0, "train.max_to_keep=0 must be an integer ≥ 1"),
    ("train.log_every", 0, "train.log_every=0 must be an integer ≥ 1"),
    ("seed", -1, "seed=-1 must be a non-negative integer"),
    ("loss.label_smoothing", 1.0, r"loss.label_smoothing=1.0 must be a number in \[0, 1\)"),
    ("loss.unimodal_weight", -1.0, "loss.unimodal_weight=-1.0 must be a non-negative number"),
])
def test_every_numeric_config_value_is_checked_before_writing(field, value, message, tmp_path):
  cfg = _config()
  section, _, key = field.rpartition(".")
  (cfg[section] if section else cfg)[key] = value
  with pytest.raises(ConfigError, match=message):
    train_and_evaluate(cfg, tmp_path / "run", progress=False)
  assert not (tmp_path / "run").exists()


def test_nan_inside_method_options_is_refused(tmp_path):
  cfg = _config()
  cfg.method.options = {"alpha": float("nan")}
  with pytest.raises(ConfigError, match="method.options.alpha=nan is not a finite number"):
    train_and_evaluate(cfg, tmp_path / "run", progress=False)


def test_nan_parameters_are_never_saved(monkeypatch, tmp_path):
  """A NaN learning rate (past validation) gives a finite first gradient but NaN parameters:
  the save after step 1 refuses them, so no poisoned checkpoint exists."""
  monkeypatch.setattr(loop, "validate_config", lambda cfg: None)
  cfg = _config()
  cfg.optim.learning_rate = float("nan")
  cfg.train.checkpoint_every_steps = 1
  with pytest.raises(NonFiniteError, match=r"after step 1 \['params/.*hold NaN/Inf; nothing was "
                                           "saved"):
    train_and_evaluate(cfg, tmp_path / "run", progress=False)
  assert Checkpointer(tmp_path / "run" / "checkpoints").steps() == []


# --- 3: signals (in-process part; the subprocess runs are in test_reliability.py) ------------

def test_first_sigint_asks_to_stop_and_a_second_aborts():
  with StopSignals() as stop:
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.received == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  with StopSignals() as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.received == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


# --- 4: two writers -------------------------------------------------------------------------

_HOLD_LOCK = ("import sys, time; from pathlib import Path; from mmreg.train.loop import "
              "WorkdirLock; WorkdirLock(Path(sys.argv[1])).acquire(); print('locked', "
              "flush=True); time.sleep(120)")


def test_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path, capsys):
  workdir = tmp_path / "run"
  workdir.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(workdir)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(WorkdirLockedError, match=rf"in use by pid {holder.pid} on host "
                                                 f"{os.uname().nodename}"):
      train_and_evaluate(_config(epochs=1), workdir, progress=False)
    assert sorted(p.name for p in workdir.iterdir()) == [".lock"]  # nothing else written
  finally:
    holder.kill()
    holder.wait()
  capsys.readouterr()
  results = train_and_evaluate(_config(epochs=1), workdir, progress=False)
  assert f"stale lock of {workdir} left by pid {holder.pid}" in capsys.readouterr().err
  assert results["steps"] == 9 and not (workdir / ".lock").exists()


def test_lock_is_exclusive_within_one_process_too(tmp_path):
  first = WorkdirLock(tmp_path)
  first.acquire()
  with pytest.raises(WorkdirLockedError, match=f"pid {os.getpid()}"):
    WorkdirLock(tmp_path).acquire()
  first.release()
  second = WorkdirLock(tmp_path)
  second.acquire()
  second.release()


# --- 5: writes cut short (kill or full disk mid-write) --------------------------------------

@contextmanager
def _file_size_limit(nbytes: int):
  """Writes past `nbytes` fail with EFBIG, as on a full disk (RLIMIT_FSIZE, SIGXFSZ ignored)."""
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)


def test_config_cut_short_leaves_the_workdir_resumable(tmp_path):
  cfg = config_to_dict(_config())
  with _file_size_limit(200), pytest.raises(OSError):
    claim_workdir(tmp_path / "run", cfg)
  assert not (tmp_path / "run" / "config.json").exists()
  assert claim_workdir(tmp_path / "run", cfg) is False  # a fresh start, no JSONDecodeError
  assert claim_workdir(tmp_path / "run", cfg) is True


def test_log_rewrite_cut_short_keeps_every_record(tmp_path):
  log = tmp_path / "log.jsonl"
  log.write_text("".join(json.dumps({"step": s, "loss": 0.125 * s}) + "\n" for s in range(300)))
  before = log.read_text()
  with _file_size_limit(2000), pytest.raises(OSError):
    truncate_jsonl(log, lambda r: r["step"] <= 250)
  assert log.read_text() == before
  assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]
  truncate_jsonl(log, lambda r: r["step"] <= 250)
  assert [r["step"] for r in read_jsonl(log)] == list(range(251))


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path):
  w = np.random.default_rng(1).normal(size=50_000).astype(np.float32)
  ckpt = Checkpointer(tmp_path)
  ckpt.save(1, {"w": w}, {"epoch": 1})
  with _file_size_limit(20_000), pytest.raises(Exception):  # noqa: B017 (orbax's own error)
    ckpt.save(2, {"w": w + 1}, {"epoch": 2})
  reopened = Checkpointer(tmp_path)  # removes the temporary folder the failed save left
  step, restored, _ = reopened.restore({"w": jax.ShapeDtypeStruct(w.shape, w.dtype)})
  assert step == 1
  np.testing.assert_array_equal(restored["w"], w)
  reopened.close()
  assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]


# --- 7: bad inputs, each one line before anything is written --------------------------------

def _patched_splits(monkeypatch, change):
  original = loop.load_dataset

  def load(name, options):
    splits = original(name, options)
    return change(splits)

  monkeypatch.setattr(loop, "load_dataset", load)


def test_val_split_with_other_features_is_refused_before_training(monkeypatch, tmp_path):
  def narrow(splits: Splits) -> Splits:
    val = splits.val
    pix = val.inputs["pix"][:, :200]
    return Splits(splits.train, val.replace(inputs={**val.inputs, "pix": pix}), splits.test)

  _patched_splits(monkeypatch, narrow)
  with pytest.raises(ValueError, match=r"mfeat val split: modality 'pix' has per-sample shape "
                                       r"\(200,\), the model is built for .*\(240,\)"):
    train_and_evaluate(_config(), tmp_path / "run", progress=False)
  assert not (tmp_path / "run").exists()


def test_presence_rows_missing_everything_beyond_the_first_batch(monkeypatch, tmp_path):
  def mask(splits: Splits) -> Splits:
    n = len(splits.train)
    present = {m: np.ones(n, bool) for m in splits.train.modalities}
    for m in present:
      present[m][n - 3] = False
    return Splits(splits.train.replace(present=present), splits.val, splits.test)

  _patched_splits(monkeypatch, mask)
  with pytest.raises(ValueError, match=r"mfeat train split: 1 samples \(rows \[\d+\]\) have "
                                       "every modality marked missing"):
    train_and_evaluate(_config(), tmp_path / "run", progress=False)
  assert not (tmp_path / "run").exists()


def test_float_labels_are_named():
  with pytest.raises(ValueError, match="labels have dtype float64; class labels must be "
                                       "integers"):
    MultimodalDataset({"a": np.zeros((3, 2), np.float32)}, np.array([0.0, 1.0, 1.0]), 2)


def test_loss_grads_from_another_model_name_the_paths():
  params = {"enc": {"a": {"kernel": jnp.zeros((4, 3))}}, "head": {"kernel": jnp.zeros((3, 2))}}
  good = LossGrads(grads=jax.tree.map(lambda p: jnp.zeros((2, *p.shape)), params),
                   names=("fused", "a"))
  check_loss_grads(good, params)
  other = {"enc": {"a": {"kernel": jnp.zeros((2, 5, 3))}}, "head": {"bias": jnp.zeros((2, 2))}}
  with pytest.raises(ValueError, match=r"missing \['head/kernel'\]; not in the parameters "
                                       r"\['head/bias'\]; enc/a/kernel has shape \(2, 5, 3\), "
                                       r"expected \[L, \*\(4, 3\)\]"):
    check_loss_grads(LossGrads(grads=other, names=("fused", "a")), params)
  jax.jit(lambda g: check_loss_grads(g, params))(good)  # shapes only: fine under jit


def test_read_only_checkpoints_folder_is_named_with_its_absolute_path(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  cfg = _config()
  claim_workdir(Path("run"), config_to_dict(cfg))
  folder = tmp_path / "run" / "checkpoints"
  folder.mkdir()
  if os.geteuid() == 0:
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
      pytest.skip("running as root without chattr: cannot make a folder read-only")
  else:
    folder.chmod(0o555)
  try:
    with pytest.raises(WorkdirConflictError, match=f"cannot write to {folder} "):
      train_and_evaluate(cfg, "run", progress=False)
  finally:
    if os.geteuid() == 0:
      subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
      folder.chmod(0o755)


def test_train_command_reports_an_unknown_config_field_in_one_line(tmp_path):
  out = subprocess.run([sys.executable, "-m", "experiments.train", "--config.train.epochz=1",
                        f"--workdir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 2
  assert out.stderr.strip() == ("train.py: error: the config has no field 'epochz'; did you "
                                "mean 'epochs'?")
  assert not (tmp_path / "run").exists()


def test_only_the_coordinator_address_may_change_on_resume(tmp_path):
  cfg = config_to_dict(_config())
  claim_workdir(tmp_path / "run", {**cfg, "distributed": {"coordinator_address": "h:1"}})
  assert claim_workdir(tmp_path / "run", {**cfg, "distributed": {"coordinator_address": "h:2"}})
  with pytest.raises(WorkdirConflictError, match=r"differs in \['seed'\]"):
    claim_workdir(tmp_path / "run", {**cfg, "seed": 1, "distributed": {}})
