"""Paired comparisons over seeds: Student-t intervals and Holm–Bonferroni correction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np


class PairedDifference(NamedTuple):
  """Mean of the per-seed differences a − b, the half-width of its two-sided Student-t
  interval, the two-sided paired t-test p-value and the number of pairs."""

  mean: float
  ci: float
  p_value: float
  n: int


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95
                      ) -> PairedDifference:
  """Paired t statistics of `a − b` over matched seeds.

  d_i = a_i − b_i; mean d̄, s = std(d, ddof=1); half-width t_{1−(1−c)/2, n−1}·s/√n;
  p = 2·(1 − F_t(|d̄|/(s/√n); n−1)). With s = 0 the p-value is 0 for d̄ ≠ 0 and 1 for d̄ = 0.
  """
  from scipy import stats

  x, y = np.asarray(a, float), np.asarray(b, float)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f"paired values need two 1-D sequences of one length, got shapes "
                     f"{x.shape} and {y.shape}; pass one value per seed for each")
  if not 0 < confidence < 1:
    raise ValueError(f"confidence={confidence} must lie in (0, 1)")
  n = len(x)
  if n < 2:
    raise ValueError(f"a paired t interval needs at least 2 seeds, got {n}")
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
    raise ValueError("paired values hold NaN/Inf; drop the failed runs or fix them first")
  d = x - y
  mean, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(n))
  half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * se)
  no_spread = 1.0 if mean == 0.0 else 0.0
  p = no_spread if se == 0.0 else float(2 * stats.t.sf(abs(mean) / se, n - 1))
  return PairedDifference(mean, half, p, n)


def holm_bonferroni(p_values: Mapping[str, float], alpha: float = 0.05
                    ) -> dict[str, tuple[float, bool]]:
  """Holm's step-down correction of a family of p-values: `{name: (p_adjusted, rejected)}`.

  With p_(1) ≤ … ≤ p_(m): p̃_(i) = min(1, max_{j ≤ i} (m − j + 1)·p_(j)); hypothesis (i) is
  rejected iff p̃_(i) ≤ alpha. Controls the family-wise error rate at `alpha` (Holm 1979).
  """
  if not 0 < alpha < 1:
    raise ValueError(f"alpha={alpha} must lie in (0, 1)")
  names = list(p_values)
  p = np.asarray([p_values[k] for k in names], float)
  if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
    bad = {k: v for k, v in zip(names, p.tolist(), strict=True) if not 0 <= v <= 1}
    raise ValueError(f"p-values must lie in [0, 1], got {bad}")
  m = len(p)
  order = np.argsort(p, kind="stable")
  adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
  out = np.empty(m)
  out[order] = adjusted
  return {k: (float(v), bool(v <= alpha)) for k, v in zip(names, out, strict=True)}
