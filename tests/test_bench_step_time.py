"""benchmarks/step_time.py in its tiny mode: every figure is there and consistent."""

import json
import math
from pathlib import Path

import pytest

from benchmarks.step_time import main

ROOT = Path(__file__).parent.parent


def test_step_time_tiny_writes_ratios_flops_and_memory(tmp_path):
  out = tmp_path / "step_time.json"
  main(["--tiny", "--no-torch", "--methods", "stack,pcgrad", "--json", str(out)])
  result = json.loads(out.read_text())
  (shape,) = result["shapes"]
  rows = shape["rows"]
  assert list(rows) == ["joint", "stack", "pcgrad"]
  assert rows["joint"]["x_joint"]["median"] == 1.0 and rows["joint"]["flops_x_joint"] == 1.0
  for r in rows.values():
    x = r["x_joint"]
    assert x["q1"] <= x["median"] <= x["q3"] and math.isfinite(r["ms"]) and r["peak_mib"] > 0
  # the per-loss stack adds backward work and memory over joint training
  assert rows["stack"]["flops_x_joint"] > 1.0 and rows["stack"]["peak_x_joint"] > 1.0
  assert result["header"]["loss_grads_impl"] == "auto"
  # the joint step's rate beside the rate of its largest matrix product alone (no torch here)
  rates = shape["rates"]
  assert set(rates) == {"mmreg_joint_gflops", "mmreg_product_gflops", "mmreg_joint_of_product"}
  assert math.isclose(rates["mmreg_joint_of_product"],
                      rates["mmreg_joint_gflops"] / rates["mmreg_product_gflops"])
  assert rates["mmreg_product_gflops"] > 0 and rates["mmreg_joint_gflops"] > 0


def test_step_time_compile_only_reports_flops_and_memory_without_timing(tmp_path):
  """Three modalities: InfoReg's two-modality default strength is replaced for the sweep."""
  out = tmp_path / "compiled.json"
  main(["--widths", "16", "--batches", "8", "--modalities", "3", "--rounds", "0", "--methods",
        "pcgrad,inforeg", "--json", str(out)])
  rows = json.loads(out.read_text())["shapes"][0]["rows"]
  assert list(rows) == ["joint", "pcgrad", "inforeg"]
  assert rows["joint"]["peak_x_joint"] == 1.0 and rows["pcgrad"]["flops_x_joint"] > 1.0
  assert all("x_joint" not in r and "torch_ms" not in r and r["peak_mib"] > 0
             for r in rows.values())


def test_redreg_probe_rows_report_the_step_without_the_probe_and_the_mean(tmp_path):
  """XLA counts a lax.cond at its costliest branch, so the row's FLOP figure is a probed step;
  a row that probes every 10 steps also reports a step without the probe (FLOPs, memory)
  and the mean FLOPs."""
  out = tmp_path / "redreg.json"
  main(["--tiny", "--rounds", "0", "--methods", "redreg,redreg_probe10", "--json", str(out)])
  rows = json.loads(out.read_text())["shapes"][0]["rows"]
  every, tenth = rows["redreg"], rows["redreg_probe10"]
  assert "flops_x_joint_mean" not in every  # it probes every step: its figure is the mean
  assert math.isclose(tenth["flops_x_joint"], every["flops_x_joint"], rel_tol=1e-3)
  between, probed = tenth["flops_x_joint_without_probe"], tenth["flops_x_joint"]
  assert 1.0 < between < probed
  assert math.isclose(tenth["flops_x_joint_mean"], (9 * between + probed) / 10, rel_tol=1e-9)
  assert 0 < tenth["peak_x_joint_without_probe"] <= tenth["peak_x_joint"]


def test_against_times_another_checkouts_rows_side_by_side(tmp_path):
  """`--against DIR`: a child process with DIR's mmreg (here this checkout) times the same rows
  in the interleaved rounds; same code, so the same FLOPs. A folder without mmreg is refused."""
  out = tmp_path / "ab.json"
  main(["--tiny", "--no-torch", "--methods", "joint", "--against", str(ROOT), "--json", str(out)])
  joint = json.loads(out.read_text())["shapes"][0]["rows"]["joint"]
  a = joint["against_over_current"]
  assert a["q1"] <= a["median"] <= a["q3"] and math.isfinite(joint["against_ms"])
  assert joint["against_x_joint"]["median"] == 1.0
  assert joint["against_flops_x"] == 1.0
  with pytest.raises(SystemExit, match="no mmreg package there"):
    main(["--tiny", "--no-torch", "--methods", "joint", "--against", str(tmp_path)])


def test_against_env_reaches_the_child_only(tmp_path):
  """`--against-env NAME=VALUE` is set in the child's environment: an XLA flag the child's
  XLA refuses makes the child exit, which the parent reports; malformed or without --against,
  it is refused before anything compiles."""
  with pytest.raises(SystemExit, match="child exited with status"):
    main(["--tiny", "--no-torch", "--methods", "joint", "--against", str(ROOT),
          "--against-env", "XLA_FLAGS=--xla_no_such_flag=1"])
  with pytest.raises(SystemExit, match="expected NAME=VALUE"):
    main(["--tiny", "--no-torch", "--methods", "joint", "--against", str(ROOT),
          "--against-env", "XLA_FLAGS"])
  with pytest.raises(SystemExit, match="pass --against too"):
    main(["--tiny", "--no-torch", "--methods", "joint", "--against-env", "A=1"])
