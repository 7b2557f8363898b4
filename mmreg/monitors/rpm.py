"""Redundancy Phase Monitor (RPM) of RedReg (arXiv 2511.13755; code xia-zhe/RedReg).

Per step t and modality m, as in main_RedReg.py:

* growth S_m(t) = (mean p_m[t−W+1..t] − mean p_m[t−W..t−1]) / (|mean p_m[t−W..t−1]| + ε), with
  p_m the batch-mean true-class confidence; S = 1 until W + 1 values have been seen
  (`_growth_rate`, main_RedReg.py:116-121, W = 10 at :97).
* redundancy red_m(t) = mean((z1 − z2)²) / (mean((x1 − x2)²) + ε), z_i = enc_m(x + N(0, σ²))
  (main_RedReg.py:196-219, σ = 0.03), normalised by its EMA (momentum 0.9, :96, starting at 0,
  :95): red_norm = red / (ema + ε) (:221-224).
* score r_m = red_norm − γ·max(S_m, 0) (:225-226, γ = 0.6 at :98); the authors intervene on the
  dominant modality if r_m > R = 0.15 (:99, :228-232).

With the authors' EMA (no bias correction) red_norm = 10 on the first probe after a reset and
≈ 1 once the EMA has settled, so r > 0.15 unless S > 1.4: the fixed trigger is on at almost
every step. `calibrated_threshold` is mmreg's alternative: R relative to the running
distribution of r. `bias_correction=True` (ema / (1 − momentumⁿ)) is mmreg's option.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mmreg._threefry import normal


class RPMState(NamedTuple):
  """Ring buffer of the last W + 1 confidences `[W+1, M]`, how many were pushed, the
  redundancy EMA `[M]` with its update count, and the latest normalised redundancy `[M]`."""

  confidence: jax.Array
  count: jax.Array
  red_ema: jax.Array
  ema_count: jax.Array
  red_norm: jax.Array


class TriggerCalibration(NamedTuple):
  """Exponentially weighted mean and variance of the RPM score r `[M]`, and how many scores
  they hold."""

  mean: jax.Array
  var: jax.Array
  count: jax.Array


class RPMSignal(NamedTuple):
  growth: jax.Array
  red_norm: jax.Array
  score: jax.Array


def rpm_init(num_modalities: int, window: int = 10) -> RPMState:
  if window < 1:
    raise ValueError(f"the RPM window must be at least 1 step, got {window}")
  m = num_modalities
  return RPMState(confidence=jnp.zeros((window + 1, m), jnp.float32),
                  count=jnp.zeros((), jnp.int32), red_ema=jnp.zeros((m,), jnp.float32),
                  ema_count=jnp.zeros((), jnp.int32), red_norm=jnp.ones((m,), jnp.float32))


def growth_rate(state: RPMState, eps: float = 1e-12) -> jax.Array:
  """S_m from the ring buffer (1 until it holds W + 1 values)."""
  size = state.confidence.shape[0]
  window = size - 1
  newest = (state.count - 1) % size
  oldest = state.count % size
  total = jnp.sum(state.confidence, axis=0)
  current = (total - state.confidence[oldest]) / window
  previous = (total - state.confidence[newest]) / window
  growth = (current - previous) / (jnp.abs(previous) + eps)
  return jnp.where(state.count >= size, growth, 1.0)


def push_confidence(state: RPMState, confidence: jax.Array) -> RPMState:
  size = state.confidence.shape[0]
  buffer = state.confidence.at[state.count % size].set(confidence.astype(jnp.float32))
  return state._replace(confidence=buffer, count=state.count + 1)


def push_redundancy(state: RPMState, redundancy: jax.Array, momentum: float = 0.9,
                    bias_correction: bool = False, eps: float = 1e-12) -> RPMState:
  """Update the EMA with a new redundancy measurement and normalise it by the updated EMA."""
  ema = momentum * state.red_ema + (1.0 - momentum) * redundancy
  n = state.ema_count + 1
  scale = 1.0 - momentum ** n.astype(jnp.float32) if bias_correction else 1.0
  red_norm = redundancy / (ema / scale + eps)
  return state._replace(red_ema=ema, ema_count=n, red_norm=red_norm.astype(jnp.float32))


def rpm_score(state: RPMState, gamma: float = 0.6, eps: float = 1e-12) -> RPMSignal:
  """r_m = red_norm_m − γ·max(S_m, 0) from the current state."""
  growth = growth_rate(state, eps)
  return RPMSignal(growth, state.red_norm, state.red_norm - gamma * jnp.maximum(growth, 0.0))


def rpm_update(state: RPMState, confidence: jax.Array, redundancy: jax.Array | None = None, *,
               gamma: float = 0.6, momentum: float = 0.9, bias_correction: bool = False,
               eps: float = 1e-12) -> tuple[RPMState, RPMSignal]:
  """One RPM step: push p_m, optionally a new redundancy measurement, and score."""
  state = push_confidence(state, confidence)
  if redundancy is not None:
    state = push_redundancy(state, redundancy, momentum, bias_correction, eps)
  return state, rpm_score(state, gamma, eps)


def noise_redundancy(encode: Callable[[jax.Array], jax.Array], x: jax.Array, key: jax.Array,
                     sigma: float = 0.03, eps: float = 1e-12) -> jax.Array:
  """red = mean((enc(x1) − enc(x2))²) / (mean((x1 − x2)²) + ε), x_i = x + N(0, σ²)."""
  k1, k2 = jax.random.split(key)
  x = jnp.asarray(x)
  x1 = x + sigma * normal(k1, x.shape, x.dtype)
  x2 = x + sigma * normal(k2, x.shape, x.dtype)
  z1 = jax.lax.stop_gradient(encode(x1))
  z2 = jax.lax.stop_gradient(encode(x2))
  return jnp.mean((z1 - z2) ** 2) / (jnp.mean((x1 - x2) ** 2) + eps)


def calibration_init(num_modalities: int) -> TriggerCalibration:
  return TriggerCalibration(jnp.zeros((num_modalities,), jnp.float32),
                            jnp.zeros((num_modalities,), jnp.float32), jnp.zeros((), jnp.int32))


def calibrated_threshold(calibration: TriggerCalibration, z: float = 1.0,
                         min_count: int = 10) -> jax.Array:
  """mean(r) + z·std(r) per modality over the scores pushed so far (mmreg's calibrated
  trigger: fire when r is unusually high for this run, whatever its scale); +inf until
  `min_count` scores have been pushed. A constant r never exceeds it."""
  threshold = calibration.mean + z * jnp.sqrt(calibration.var)
  return jnp.where(calibration.count >= min_count, threshold, jnp.inf)


def push_score(calibration: TriggerCalibration, score: jax.Array,
               momentum: float = 0.99) -> TriggerCalibration:
  """Exponentially weighted mean and variance, started at the first score (incremental form,
  Finch 2009: δ = r − mean, mean += (1 − m)·δ, var = m·(var + (1 − m)·δ²)), so a constant
  score keeps mean = r and var = 0 exactly."""
  score = score.astype(jnp.float32)
  first = calibration.count == 0
  delta = score - calibration.mean
  mean = jnp.where(first, score, calibration.mean + (1.0 - momentum) * delta)
  var = jnp.where(first, 0.0, momentum * (calibration.var + (1.0 - momentum) * delta ** 2))
  return TriggerCalibration(mean, var, calibration.count + 1)
