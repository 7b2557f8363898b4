"""Prime-learning-window detector of InfoReg (CVPR 2025) from the diagonal Fisher trace.

One trace value per modality and step goes in; per epoch they are summed (`epoch_reduction=
"sum"`, GeWu-Lab/InfoReg_CVPR2025:main.py:504-514 accumulate grad² over the epoch's steps) or
averaged ("mean"). With tr̄ the mean of the last W epochs' traces and tr̄_shift the mean of the
W epochs one epoch earlier,

  k = (tr̄ − tr̄_shift) / tr̄          (main.py:240-243)

and the modality is in its prime learning window while k > threshold (main.py:465, 0.05).
`pad_history=True` (the code, main.py:693-694) starts the history with W zeros, so k is defined
from the second epoch on; during the first epoch k = 1 (main.py:237-238). With
`pad_history=False` (mmreg's earlier form) a modality counts as in the window, with k = 1, until
W + 1 epochs are complete. k = 0 when tr̄ = 0 (all traces zero; the code divides by zero).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

EPOCH_REDUCTIONS = ("sum", "mean")


class FisherWindowState(NamedTuple):
  """Ring buffer of completed epochs' traces `[W+1, M]` and their count, the running sum of
  the current epoch's traces `[M]` with its step count, the current epoch, and the options
  (`padded`, `summed`: 0-d bools)."""

  history: jax.Array
  num_epochs: jax.Array
  running: jax.Array
  running_steps: jax.Array
  epoch: jax.Array
  padded: jax.Array
  summed: jax.Array


class FisherWindow(NamedTuple):
  k: jax.Array
  in_window: jax.Array


def fisher_window_init(num_modalities: int, window: int = 10, *, pad_history: bool = True,
                       epoch_reduction: str = "sum") -> FisherWindowState:
  if window < 1:
    raise ValueError(f"the Fisher window must be at least 1 epoch, got {window}")
  if epoch_reduction not in EPOCH_REDUCTIONS:
    raise ValueError(f"unknown epoch_reduction {epoch_reduction!r}; valid: "
                     f"{list(EPOCH_REDUCTIONS)}")
  m = num_modalities
  return FisherWindowState(jnp.zeros((window + 1, m), jnp.float32), jnp.zeros((), jnp.int32),
                           jnp.zeros((m,), jnp.float32), jnp.zeros((), jnp.int32),
                           jnp.zeros((), jnp.int32), jnp.asarray(pad_history),
                           jnp.asarray(epoch_reduction == "sum"))


def fisher_window_signal(state: FisherWindowState, threshold: float = 0.05) -> FisherWindow:
  """k and the window test from the completed epochs in `state`."""
  size = state.history.shape[0]
  slot = jnp.arange(size)[:, None]
  scaled = state.history / (size - 1)  # sums of W terms ≤ float max / W: no overflow
  current = jnp.sum(jnp.where(slot == state.num_epochs % size, 0.0, scaled), axis=0)
  previous = jnp.sum(jnp.where(slot == (state.num_epochs - 1) % size, 0.0, scaled), axis=0)
  positive = current > 0
  k = jnp.where(positive, (current - previous) / jnp.where(positive, current, 1.0), 0.0)
  defined = jnp.where(state.padded, state.num_epochs >= 1, state.num_epochs >= size)
  return FisherWindow(jnp.where(defined, k, 1.0), jnp.where(defined, k > threshold, True))


def fisher_window_advance(state: FisherWindowState, epoch: jax.Array) -> FisherWindowState:
  """When `epoch` moves past the state's epoch, the finished epoch's trace enters the history."""
  epoch = jnp.asarray(epoch, jnp.int32)
  size = state.history.shape[0]
  finished = (epoch != state.epoch) & (state.running_steps > 0)
  value = jnp.where(state.summed, state.running,
                    state.running / jnp.maximum(state.running_steps, 1))
  history = jnp.where(finished, state.history.at[state.num_epochs % size].set(value),
                      state.history)
  return state._replace(history=history, num_epochs=state.num_epochs + finished.astype(jnp.int32),
                        running=jnp.where(finished, 0.0, state.running),
                        running_steps=jnp.where(finished, 0, state.running_steps), epoch=epoch)


def fisher_window_add(state: FisherWindowState, trace: jax.Array) -> FisherWindowState:
  """Add one step's trace `[M]` to the current epoch (saturating at the float32 maximum)."""
  running = jnp.minimum(state.running + trace, jnp.finfo(jnp.float32).max)
  return state._replace(running=running, running_steps=state.running_steps + 1)


def fisher_window_update(state: FisherWindowState, trace: jax.Array, epoch: jax.Array, *,
                         threshold: float = 0.05) -> tuple[FisherWindowState, FisherWindow]:
  """Advance to `epoch`, add one step's trace `[M]`, and return the window signal (which
  depends on completed epochs only)."""
  state = fisher_window_advance(state, epoch)
  return fisher_window_add(state, trace), fisher_window_signal(state, threshold)
