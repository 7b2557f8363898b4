"""benchmarks/scale.py on one CPU device at the smallest size: outputs and memory ordering."""

import json
import math

from benchmarks.scale import main


def test_scale_benchmark_writes_results_and_orders_memory(tmp_path):
  main(["--scale", "0.1", "--width", "4", "--blocks", "1", "--batch-per-device", "2",
        "--devices", "1", "--steps", "1", "--variants", "joint,pcgrad@all,pcgrad@fusion_head",
        "--out", str(tmp_path)])
  result = json.loads((tmp_path / "results.json").read_text())
  rows = {r["variant"]: r for r in result["rows"]}
  assert result["input_shapes"] == {"audio": [26, 19, 1], "visual": [22, 22, 3]}
  for r in rows.values():
    assert r["compiles"] == 1 and math.isfinite(r["loss"]) and r["samples_per_s"] > 0
  # XLA's peak-memory estimate: the 3-loss stack over all parameters costs memory; over the
  # fusion/head, little. Which of joint and pcgrad@fusion_head estimates higher depends on how
  # XLA schedules the two programs (on Python 3.12 with JAX 0.12 joint's is the higher), so
  # only the stack over all parameters is ordered.
  peak = {v: r["peak_bytes_per_device"] for v, r in rows.items()}
  assert peak["pcgrad@all"] > max(peak["joint"], peak["pcgrad@fusion_head"])
  assert peak["pcgrad@all"] - peak["joint"] > 2 * (peak["pcgrad@fusion_head"] - peak["joint"])
  assert (tmp_path / "throughput.png").stat().st_size > 0
  assert (tmp_path / "memory.png").stat().st_size > 0
