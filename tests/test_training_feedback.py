"""Feedback while training (issue 14, item 7): progress bar, logged learning rate, curves
figure and the optional TensorBoard writer."""

import io
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from mmreg.train.loop import plot_training_curves, train_and_evaluate
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """Two epochs of 9 steps, with the progress bar on; returns (workdir, stderr)."""
  cfg = tiny_config(epochs=2)
  cfg.train.log_every = 1
  workdir = tmp_path_factory.mktemp("feedback") / "run"
  err = io.StringIO()
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(sys, "stderr", err)
    train_and_evaluate(cfg, workdir, progress=True)
  return workdir, err.getvalue()


def test_progress_bar_leaves_one_line_per_epoch_with_loss_and_val_accuracy(run):
  _, err = run
  final = [line.split("\r")[-1] for line in err.split("\n") if "epoch " in line]
  assert [line.split(":")[0] for line in final] == ["joint epoch 1/2", "joint epoch 2/2"]
  log = [json.loads(x) for x in (run[0] / "log.jsonl").read_text().splitlines()]
  val = [r["val/accuracy"] for r in log if "val/accuracy" in r]
  for line, acc in zip(final, val, strict=True):
    assert "9/9" in line and "loss=" in line and f"val_acc={acc:.4f}" in line


def test_learning_rate_is_logged_as_the_cosine_schedule(run):
  """optax.warmup_cosine_decay_schedule(0, lr, 0, T) at count s − 1 for step s:
  lr · ½(1 + cos(π (s − 1) / T)), T = epochs · steps per epoch (experiments/configs/default.py
  uses the cosine schedule without warm-up)."""
  log = [json.loads(x) for x in (run[0] / "log.jsonl").read_text().splitlines()]
  train = [r for r in log if "lr" in r]
  steps = np.array([r["step"] for r in train])
  assert steps.tolist() == list(range(1, 19))
  expected = 0.1 * 0.5 * (1 + np.cos(np.pi * (steps - 1) / 18))
  np.testing.assert_allclose([r["lr"] for r in train], expected, rtol=1e-5)  # float32


def _png_size(path: Path) -> tuple[int, int]:
  width, height = struct.unpack(">II", path.read_bytes()[16:24])
  return width, height


def test_curves_put_each_quantity_on_its_own_axis(tmp_path):
  log = [{"step": s, "epoch": 0, "loss/total": 1.0 / s, "loss/fused": 0.5 / s, "lr": 0.1,
          "diag/coeff": [0.5, 1.0], "diag/gate": 1.0} for s in range(1, 5)]
  log.append({"step": 4, "epoch": 0, "val/accuracy": 0.5, "val/accuracy/a": 0.4})
  path = plot_training_curves(log, tmp_path / "curves.png", "joint")
  # Panels: train loss, val accuracy, learning rate, diag coeff, diag gate (110 dpi).
  assert _png_size(path) == (660, round(110 * (1.2 + 2.6 * 5)))
  fewer = [{k: v for k, v in r.items() if k not in ("diag/gate", "lr")} for r in log]
  path = plot_training_curves(fewer, tmp_path / "fewer.png", "joint")
  assert _png_size(path)[1] == round(110 * (1.2 + 2.6 * 3))


def test_tensorboard_without_tensorboardx_fails_before_writing(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)
  with pytest.raises(ImportError, match="tensorboard=True needs tensorboardX"):
    train_and_evaluate(tiny_config(epochs=1), tmp_path / "run", progress=False,
                       tensorboard=True)
  assert not (tmp_path / "run").exists()


def _event_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
  """Scalars of TensorBoard event files: records of [u64 length][u32 crc][data][u32 crc],
  each data an `Event` protobuf."""
  from tensorboardX.proto import event_pb2

  out: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(folder.glob("events.out.tfevents.*")):
    data, i = path.read_bytes(), 0
    while i < len(data):
      (length,) = struct.unpack("<Q", data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
      i += 16 + length
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def test_tensorboard_events_hold_the_logged_scalars(tmp_path):
  pytest.importorskip("tensorboardX")
  cfg = tiny_config(epochs=1)
  cfg.train.log_every = 3
  train_and_evaluate(cfg, tmp_path / "run", progress=False, tensorboard=True)
  scalars = _event_scalars(tmp_path / "run" / "tensorboard")
  log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
  for tag in ("loss/total", "lr", "grad_norm", "val/accuracy", "val/accuracy/fou"):
    expected = [(r["step"], r[tag]) for r in log if tag in r]
    assert [s for s, _ in scalars[tag]] == [s for s, _ in expected]
    np.testing.assert_allclose([v for _, v in scalars[tag]], [v for _, v in expected],
                               rtol=1e-6)
