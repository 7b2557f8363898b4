"""Gradient-Blending (Wang, Tran & Feiszli, CVPR 2020): loss weights from held-out deltas.

The default reproduces BalanceBenchmark (GeWu-Lab/BalanceBenchmark commit 4c1482f),
balancemm/trainer/GBlending_trainer.py:361-372. For each loss k, with train loss T and
validation loss V measured after the first (start) and the last (end) epoch of its probe run:

  G_k = V_k(end) − V_k(start)                                  (:361)
  O_k = (V_k(end) − T_k(end)) − (V_k(start) − T_k(start))      (:362-364)
  w_k = |G_k / O_k²|,  normalised to Σ_k w_k = 1               (:366-372)

Where that divides by zero or overflows (O_k² = 0, or |G_k|/O_k² = inf; the reference
then raises ZeroDivisionError or returns NaN weights), mmreg takes the limit O_k → 0: the
losses with an infinite ratio share the weight equally, and 0/0 counts as 0; if every ratio
is 0 the weights are uniform. `min_overfit_sq` > 0 (mmreg's option) floors O_k² instead.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def gblending_weights(train_start: Mapping[str, float], train_end: Mapping[str, float],
                      val_start: Mapping[str, float], val_end: Mapping[str, float], *,
                      min_overfit_sq: float = 0.0) -> dict[str, float]:
  """Normalised G-Blending weights `{name: w}` of every loss named in `val_end`.

  `min_overfit_sq`: O_k² is raised to at least this value (0: the reference formula).
  """
  names = list(val_end)
  for what, d in (("train_start", train_start), ("train_end", train_end),
                  ("val_start", val_start)):
    missing = [n for n in names if n not in d]
    if missing:
      raise ValueError(f"gblending_weights: {what} lacks losses {missing}; pass the train "
                       "and validation losses of the same names")
  if min_overfit_sq < 0:
    raise ValueError(f"min_overfit_sq={min_overfit_sq} must be >= 0")
  t0, t1, v0, v1 = (np.array([float(d[n]) for n in names], np.float64)
                    for d in (train_start, train_end, val_start, val_end))
  if not all(np.all(np.isfinite(x)) for x in (t0, t1, v0, v1)):
    raise ValueError("gblending_weights: a train or validation loss is not finite; the probe "
                     "runs diverged (lower the learning rate)")
  gain = np.abs(v1 - v0)
  overfit_sq = np.maximum(np.square((v1 - t1) - (v0 - t0)), min_overfit_sq)
  with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    raw = np.where(gain > 0, gain / overfit_sq, 0.0)
  infinite = np.isinf(raw)
  if infinite.any():
    raw = infinite.astype(np.float64)
  total = raw.sum()
  weights = raw / total if total > 0 else np.full(len(names), 1.0 / len(names))
  return {n: float(w) for n, w in zip(names, weights, strict=True)}
