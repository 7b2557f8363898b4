"""Shared fixtures: small models and batches.

The suite's processes (pytest-xdist workers, the training subprocesses and notebook kernels they
start) share one persistent XLA compilation cache, so a program that several of them build is
compiled once. It lives in pytest's cache folder; `JAX_COMPILATION_CACHE_DIR` overrides it.
They also compile with XLA's CPU backend at LLVM optimisation level 0 and with its older
(non-MLIR) fusion emitters, which compile the suite's programs in about 60% of the time, and
without splitting a module for parallel code generation (the cores are busy with the other
worker; about 10% less backend compile time again): the suite's programs are small and run a
few steps, so code generation dominates their time and fast code gains nothing.
The HLO passes (fusion, buffer assignment: the FLOP and memory figures tests read) are unchanged.
XLA aborts on a flag it does not know (newer releases dropped the fusion-emitter switch), so a
short subprocess checks them first and drops the unknown ones; the processes the suite starts
inherit the result.
Python's cyclic garbage collector runs less often (its full collections traverse every live
object, and a worker holds many traced and compiled programs): about 5% of a worker's time.
"""

import gc
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path(__file__).parent.parent / ".pytest_cache" / "jax-compilation"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1")


def known_xla_flags(flags: str) -> str:
  """`flags` without those this jaxlib's XLA rejects (it names the first unknown one and
  aborts when its CPU backend starts)."""
  words = flags.split()
  while words:
    probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"],
                           env={**os.environ, "XLA_FLAGS": " ".join(words)},
                           capture_output=True, text=True, timeout=300)
    unknown = re.search(r"Unknown flags? in XLA_FLAGS: (--[\w-]+)", probe.stderr)
    if probe.returncode == 0 or unknown is None:
      break
    words = [w for w in words if w.split("=")[0] != unknown[1]]
  return " ".join(words)


if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = known_xla_flags(f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}")
gc.set_threshold(50_000, 20, 20)


@pytest.fixture
def rng() -> np.random.Generator:
  return np.random.default_rng(0)


def tiny_config(workdir_views=("fou", "pix"), epochs: int = 2):
  from experiments.configs.default import get_config

  cfg = get_config()
  cfg.data.options.views = workdir_views
  cfg.model.hidden = (16,)
  cfg.model.feature_dim = 8
  cfg.model.latent_dim = 4
  cfg.train.epochs = epochs
  cfg.train.batch_size = 128
  cfg.optim.learning_rate = 0.1
  return cfg
