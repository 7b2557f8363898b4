"""Orbax checkpoints of the train state plus JSON metadata (data position, history), with
checksums of every saved array."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from mmreg.train.sharding import to_host

CHECKSUMS = "checksums"
CORRUPT_SUFFIX = ".corrupt"
TMP_SUFFIX = ".orbax-checkpoint-tmp"


class CheckpointError(RuntimeError):
  """No usable checkpoint could be restored."""


def _leaf_checksum(x: jax.Array) -> jax.Array:
  """Σ_i (2i + 1)·w_i mod 2³², over the array's bytes read as words w_i (uint32 for 4- and
  8-byte dtypes, uint16/uint8 widened for narrower ones). The odd weights make every single
  flipped bit, and every swap of two different words, change the sum."""
  if x.dtype == jnp.bool_:
    words = x.astype(jnp.uint32)
  elif x.dtype.itemsize >= 4:
    words = jax.lax.bitcast_convert_type(x, jnp.uint32)
  else:
    narrow = jnp.uint16 if x.dtype.itemsize == 2 else jnp.uint8
    words = jax.lax.bitcast_convert_type(x, narrow).astype(jnp.uint32)
  words = words.reshape(-1)
  weights = 2 * jnp.arange(words.size, dtype=jnp.uint32) + 1
  return jnp.sum(words * weights, dtype=jnp.uint32)


_checksums = jax.jit(lambda tree: jax.tree.map(_leaf_checksum, tree))


def tree_checksums(tree: Any) -> dict[str, int]:
  """`{leaf path: checksum}` of every array in `tree` (computed on device, any sharding)."""
  sums = to_host(_checksums(tree))
  return {jax.tree_util.keystr(path): int(v)
          for path, v in jax.tree_util.tree_leaves_with_path(sums)}


class Checkpointer:
  """Saves `(state, meta)` by step; restores the newest checkpoint that reads back whole.

  Orbax writes each checkpoint into a temporary folder and renames it when complete, so a
  crash mid-write never replaces the last good one; temporary folders left by a crash are
  removed when the next Checkpointer opens the folder. `meta` also stores a checksum of every
  saved array. A checkpoint that fails to restore (missing or corrupted files, or arrays whose
  checksums differ) is reported in one line and the previous one is tried; once an older one
  restores, the unreadable ones are renamed `<step>.corrupt` so that training can save those
  steps again.
  """

  def __init__(self, directory: str | Path, max_to_keep: int = 3):
    self.directory = Path(directory).absolute()
    if self.directory.is_dir():  # folders of saves cut short by a crash or a full disk
      for tmp in self.directory.glob(f"*{TMP_SUFFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))

  def steps(self) -> list[int]:
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    meta = {**meta, CHECKSUMS: tree_checksums(state)}
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore(self, abstract_state: Any, step: int | None = None, *,
              move_aside: bool = True) -> tuple[int, Any, dict]:
    """Restore `step` (default: the newest that reads back whole and matches its checksums).

    Returns `(step, state, meta)`. With `move_aside`, the newer steps that could not be
    restored are renamed `<step>.corrupt`; if none restores, nothing is moved.
    """
    steps = self.steps() if step is None else [step]
    if not steps:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    errors, unreadable = [], []
    for s in reversed(steps):
      try:
        restored = self._manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        state, meta = restored["state"], dict(restored["meta"])
        if jax.tree.structure(state) != jax.tree.structure(abstract_state):
          raise CheckpointError("its tree structure differs from the model's")
        _verify_checksums(state, meta.pop(CHECKSUMS, None))
      except Exception as e:  # any failure to read a step makes it unusable
        problem = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        errors.append(f"step {s}: {problem}")
        unreadable.append(s)
        print(f"checkpoint step {s} in {self.directory} cannot be restored ({problem}); "
              "trying an older one", file=sys.stderr, flush=True)
        continue
      for bad in unreadable if move_aside else ():
        print(f"moved unreadable checkpoint step {bad} to {self._move_aside(bad)}; training "
              f"goes on from step {s}", file=sys.stderr, flush=True)
      return s, state, meta
    raise CheckpointError(
        f"no checkpoint in {self.directory} could be restored:\n  " + "\n  ".join(errors) +
        "\nThe files are corrupt or were written by a different model/config; delete the "
        "folder to start afresh or point --workdir elsewhere.")

  def _move_aside(self, step: int) -> Path:
    source = self.directory / str(step)
    target = source.with_name(source.name + CORRUPT_SUFFIX)
    n = 1
    while target.exists():
      n += 1
      target = source.with_name(f"{source.name}{CORRUPT_SUFFIX}{n}")
    source.rename(target)
    self._manager.reload()
    return target

  def close(self) -> None:
    self._manager.close()


def _verify_checksums(state: Any, saved: dict[str, int] | None) -> None:
  if saved is None:  # written before checksums were stored
    return
  actual = tree_checksums(state)
  bad = sorted(k for k in set(saved) | set(actual) if saved.get(k) != actual.get(k))
  if bad:
    raise CheckpointError(f"arrays {bad[:4]} do not match their saved checksums "
                          f"({len(bad)} of {len(saved)} differ)")

