"""Whole-batch modality dropout on the schedule of RedReg's training recipe.

The authors' trainer (xia-zhe/RedReg, main_RedReg.py) drops one modality for the whole batch
with probability p(epoch), falling linearly from 0.6 to 0.1 over the first 30% of the epochs
(:108-114); one uniform draw u per step drops audio if u < p/2 and visual if p/2 ≤ u < p
(:168-171), and the forward pass that gives the losses, the confidences p_m and the gate's
features runs on the dropped-out batch (:181-184), while the redundancy probe perturbs the
original inputs (:199-211).

mmreg marks the dropped modality missing in the batch's presence mask instead of zeroing its
inputs: the model's missing-modality fill replaces its features (zeros by default), the
inputs stay intact, and RedReg's probe, which reads the `inputs` extra, sees the original
inputs as in the authors' code. The authors' encoders instead see an all-zero input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from mmreg.data.batch import LABEL, PRESENT, Batch, modality_names


def dropout_rate(epoch: int | jax.Array, total_epochs: int, *, start: float = 0.6,
                 end: float = 0.1, warm_fraction: float = 0.3) -> jax.Array:
  """p = start + (end − start)·min(1, epoch / max(1, int(total_epochs·warm_fraction)))
  (main_RedReg.py:108-112: 0.6 → 0.1 over the first 30% of the epochs)."""
  phase = max(1, int(total_epochs * warm_fraction))
  ratio = jnp.minimum(1.0, jnp.asarray(epoch, jnp.float32) / phase)
  return start + (end - start) * ratio


def drop_one_modality(key: jax.Array, batch: Mapping[str, Any], rate: float | jax.Array
                      ) -> Batch:
  """With probability `rate`, mark one modality missing for the whole batch.

  One draw u ~ U(0, 1): modality i (of M, in batch order) is dropped if
  i·rate/M ≤ u < (i + 1)·rate/M (main_RedReg.py:169-171 for M = 2). A sample whose other
  modalities are already missing keeps the dropped one. Runs under `jax.jit`.
  """
  names = modality_names(batch)
  size = jnp.shape(batch[LABEL])[0]
  old = batch.get(PRESENT, {})
  present = {m: jnp.asarray(old.get(m, jnp.ones((size,), bool)), bool) for m in names}
  u = jax.random.uniform(key)
  rate = jnp.asarray(rate, jnp.float32)
  which = jnp.where(u < rate, jnp.floor(u * len(names) / jnp.maximum(rate, 1e-12)), -1)
  new = {m: present[m] & (which != i) for i, m in enumerate(names)}
  left = jnp.any(jnp.stack(list(new.values())), axis=0)
  return {**batch, PRESENT: {m: jnp.where(left, new[m], present[m]) for m in names}}


def with_modality_dropout(train_step: Callable, *, steps_per_epoch: int, total_epochs: int,
                          seed: int = 0, start: float = 0.6, end: float = 0.1,
                          warm_fraction: float = 0.3) -> Callable:
  """`step(state, batch)` that applies `drop_one_modality` at rate `dropout_rate(epoch)`
  before `train_step` (an unjitted `mmreg.train.make_train_step(..., jit=False)`).

  The draw depends only on (seed, state.step), so a resumed run drops the same modalities as
  an uninterrupted one. Config form: `train.modality_dropout = {"start": 0.6, "end": 0.1,
  "warm_fraction": 0.3}` in `mmreg.train.train_and_evaluate`.
  """
  for name, value in (("start", start), ("end", end)):
    if not 0.0 <= value <= 1.0:
      raise ValueError(f"modality_dropout.{name}={value!r} is a probability: it must lie in "
                       "[0, 1]")
  if not 0.0 < warm_fraction <= 1.0:
    raise ValueError(f"modality_dropout.warm_fraction={warm_fraction!r} is a share of the "
                     "epochs: it must lie in (0, 1]")
  base = jax.random.PRNGKey(seed)

  def step(state, batch):
    epoch = state.step // steps_per_epoch
    rate = dropout_rate(epoch, total_epochs, start=start, end=end, warm_fraction=warm_fraction)
    key = jax.random.fold_in(base, state.step)
    return train_step(state, drop_one_modality(key, batch, rate))

  return step
