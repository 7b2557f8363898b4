"""How a result was made: package versions, backend, devices, git commit."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import jax

PACKAGES = ("mmreg", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def git_commit(path: str | Path = ".") -> str | None:
  """The commit of the checkout holding `path`, with `+dirty` if it has local changes."""
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                            text=True, check=True, timeout=10).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                           capture_output=True, text=True, check=True, timeout=10).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ("+dirty" if dirty.strip() else "")


def code_version() -> dict[str, str | None]:
  """The mmreg version and git commit: stored with each checkpoint, compared on resume."""
  try:
    version = metadata.version("mmreg")
  except metadata.PackageNotFoundError:
    version = None
  return {"mmreg": version, "git_commit": git_commit(Path(__file__).parent)}


def provenance() -> dict[str, Any]:
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  return {
      "versions": versions,
      "python": platform.python_version(),
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "device_count": jax.device_count(),
      "process_count": jax.process_count(),
      "machine": f"{platform.machine()} {platform.system()}, {_cpu_count()} CPUs",
      "git_commit": git_commit(Path(__file__).parent),
  }


def _cpu_count() -> int:
  import os

  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
