"""Mesh training, multi-host runs and sharded checkpoints, on fake CPU devices in subprocesses
(XLA_FLAGS must be set before JAX starts). Bodies live in tests/scale_worker.py."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from mmreg.train.sharding import DistributedInitError, initialize_distributed
from tests.scale_worker import loop_config

ROOT = Path(__file__).resolve().parents[1]


def _env(devices: int) -> dict[str, str]:
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  return {**os.environ, "XLA_FLAGS": flags.strip(),
          "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"}


def _worker(devices: int, *args: str, timeout: float = 240) -> None:
  result = subprocess.run([sys.executable, "-m", "tests.scale_worker", *args], cwd=ROOT,
                          env=_env(devices), capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_mesh_training_matches_one_device_errors_and_resharded_restore(tmp_path):
  """One 8-device worker (fake devices are expensive to start): joint and RedReg on 8 devices
  and joint on a 4×2 data×fsdp mesh match the plain single-device path after 20 steps with a
  single compilation; bad shapes give clear errors; the fsdp-sharded checkpoint it saves then
  restores in a 4-device worker."""
  _worker(8, "mesh", str(tmp_path))
  report = json.loads((tmp_path / "mesh.json").read_text())
  for run in ("joint/eight", "joint/fsdp", "redreg/eight"):
    r = report[run]
    assert r["loss"] < 1e-5 and r["params"] < 1e-5 and r["opt_state"] < 1e-5, (run, r)
    assert r["compiles"] == 1, (run, r)
  assert report["joint/fsdp"]["fsdp_sharded"] > 0  # the fsdp run really split parameters
  assert report["joint/eight"]["fsdp_sharded"] == 0

  batch, shape, fsdp = report["errors"]
  assert "batch size 60 is not divisible by the 8 batch shards" in batch
  assert "does not match the 8 available devices" in shape
  assert "fsdp=3 does not divide the 8 devices" in fsdp

  _worker(4, "restore", str(tmp_path))
  restored = json.loads((tmp_path / "restore.json").read_text())
  assert restored["step"] == 20 and restored["meta"] == {"note": "saved on 8 devices"}
  assert restored["diff"] == 0.0
  assert restored["devices"] == [4]


def test_two_process_run_matches_single_process(tmp_path):
  from mmreg.train.loop import train_and_evaluate

  address = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen([sys.executable, "-m", "tests.scale_worker", "loop", str(tmp_path),
                             address, "2", str(pid)], cwd=ROOT, env=_env(2),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
           for pid in (0, 1)]
  try:
    deadline = time.monotonic() + 240
    for p in procs:
      p.wait(timeout=max(1.0, deadline - time.monotonic()))
    for p in procs:
      assert p.returncode == 0, p.stderr.read()[-3000:]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  single = train_and_evaluate(loop_config(), tmp_path / "single", progress=False)
  reference = jax.tree.leaves(single["state"].params)
  for pid in (0, 1):
    done = json.loads((tmp_path / f"done_{pid}.json").read_text())
    assert done["process_count"] == 2 and done["devices"] == 4
    assert done["steps"] == single["steps"]
    params = np.load(tmp_path / f"params_{pid}.npz")
    for i, ref in enumerate(reference):
      np.testing.assert_allclose(params[f"arr_{i}"], ref, atol=1e-5)
  run = tmp_path / "run"  # process 0 alone wrote the outputs
  assert {p.name for p in run.iterdir()} >= {"config.json", "log.jsonl", "results.json",
                                              "curves.png", "checkpoints"}
  log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
  ref_log = [json.loads(x) for x in (tmp_path / "single" / "log.jsonl").read_text().splitlines()]
  assert [r["step"] for r in log] == [r["step"] for r in ref_log]
  np.testing.assert_allclose([r.get("loss/total", 0.0) for r in log],
                             [r.get("loss/total", 0.0) for r in ref_log], atol=1e-5)


def test_unanswered_coordinator_times_out_with_clear_error():
  start = time.monotonic()
  with pytest.raises(DistributedInitError, match=r"did not answer within 1s"):
    initialize_distributed({"coordinator_address": f"127.0.0.1:{_free_port()}",
                            "num_processes": 2, "process_id": 1, "timeout_s": 1})
  assert time.monotonic() - start < 10
  with pytest.raises(DistributedInitError, match="coordinator_address"):
    initialize_distributed({"num_processes": 2, "process_id": 1})
  assert initialize_distributed({}) is False  # one process: nothing to start
