"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al.,
CVPR 2022; code GeWu-Lab/OGM-GE_CVPR2022).

Defaults reproduce the authors' main.py (GeWu-Lab/OGM-GE_CVPR2022:main.py, cited by line):
  s_m = Σ_i softmax(z_m,i)[y_i]                                      (l. 105-106)
  ρ_1 = s_1/s_2, ρ_2 = 1/ρ_1                                          (l. 108-109)
  k_m = 1 − tanh(α·ρ_m) for the modality with ρ_m > 1, else 1;
  on a tie (ρ = 1) the first modality gets 1 − tanh(α)               (l. 119-124, the else branch)
  g ← k_m·g + N(0, (std(g) + 1e-8)²), std unbiased, of the unmodulated g (l. 138-139, 145-146)
  in epochs start_epoch ≤ epoch ≤ end_epoch                          (l. 132).
The code comments this as "Eq.(10) in our CVPR paper: 1 - tanh(alpha * rho_t_u), if
rho_t_u > 1" (l. 112-117). ρ is computed from batch means (equal to the ratio of sums).

Which parameters (`modulated`): the code modulates the 4-D conv kernels of the two encoders
only (l. 136, 143: `len(parms.grad.size()) == 4`), `"conv_kernels"`; BalanceBenchmark every
encoder tensor that is not 1-D (GeWu-Lab/BalanceBenchmark:balancemm/trainer/OGM_trainer.py:158),
`"weights"`, the default: the same tensors for conv encoders, and for MLP encoders their weight
matrices (no biases, no norm scales). `"all"` modulates every encoder tensor.

mmreg's options, not the authors': `coefficient="shifted"`, k_m = 1 − tanh(α·(ρ_m − 1)), which
is 1 at ρ = 1 and much weaker (ρ = 1.5, α = 0.8: 0.62 instead of 0.17); M > 2 modalities with
ρ_m = s_m / mean_{j≠m} s_j, every modality with ρ_m > 1 modulated, the first modality when all
scores tie. Scores that are both 0 give ρ = 0 and k = 1 (the code's 0/0 gives NaN).

The original reads z_m from the slices of the concat head of a model trained on the fused loss
only (l. 88-93); build the model with `modality_logits="head_slices"` and train with
`classification_losses(..., unimodal_weight=0)` to run it that way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mmreg._threefry import normal
from mmreg.losses.geometry import power_of_two_scale
from mmreg.monitors.dominance import modality_confidence
from mmreg.transforms._common import (
    in_epoch_window,
    leaves,
    require,
    resolve_labels,
    unflatten_like,
)

COEFFICIENTS = ("authors", "shifted")
MODULATED = ("weights", "conv_kernels", "all")


class OGMGEState(NamedTuple):
  key: jax.Array
  diagnostics: dict[str, jax.Array]


def ogm_coefficients(scores: jax.Array, alpha: Any, coefficient: str = "authors"
                     ) -> tuple[jax.Array, jax.Array]:
  """(k_m, ρ_m) from per-modality scores `[M]` (sums or means of true-class confidence)."""
  scores = jnp.asarray(scores, jnp.float32)
  M = scores.shape[0]
  others = (jnp.sum(scores) - scores) / (M - 1)
  ratio = scores / jnp.maximum(others, jnp.finfo(jnp.float32).tiny)
  excess = ratio if coefficient == "authors" else ratio - 1.0
  over = ratio > 1.0
  first = jnp.arange(M) == 0
  modulated = over | (first & ~jnp.any(over))
  coeff = jnp.where(modulated, 1.0 - jnp.tanh(alpha * excess), 1.0)
  return coeff, ratio


def _check_choice(value: str, valid: tuple[str, ...], option: str) -> None:
  if value not in valid:
    raise ValueError(f"ogm_ge: unknown {option} {value!r}; valid: {list(valid)}")


def _is_modulated(g: jax.Array, modulated: str) -> bool:
  if modulated == "weights":
    return g.ndim >= 2
  if modulated == "conv_kernels":
    return g.ndim == 4
  return True


def gradient_std(g: jax.Array) -> jax.Array:
  """Unbiased standard deviation of a tensor's entries (0 for a single entry), in the tensor's
  dtype; computed in float32 on g/s (s a power of two near max|g|, exact) and scaled back, so
  the squares neither overflow nor underflow."""
  if g.size <= 1:
    return jnp.zeros((), g.dtype)
  s = power_of_two_scale(g)
  return (s * jnp.std(g.astype(jnp.float32) / s, ddof=1)).astype(g.dtype)


def ogm_ge(param_labels: Any, *, alpha: Any = 0.8, modalities: Sequence[str] | None = None,
           coefficient: str = "authors", modulated: str = "weights",
           generalization_enhancement: bool = True, start_epoch: Any = None,
           end_epoch: Any = None, seed: int = 0) -> optax.GradientTransformationExtraArgs:
  """OGM-GE as an optax transform.

  Args:
    param_labels: label tree of the params (`mmreg.param_labels(model)`) or a function of the
      params returning one.
    alpha: α; the authors recommend 0.8 for CREMA-D and 0.1 for VGGSound
      (GeWu-Lab/OGM-GE_CVPR2022:README.md:151); schedulable through `optax.inject_hyperparams`.
    modalities: modalities to balance (default: every non-role label).
    coefficient: "authors" (1 − tanh(α·ρ), main.py:120,123) or "shifted" (mmreg's
      1 − tanh(α·(ρ − 1))).
    modulated: which encoder tensors are modulated and get noise: "weights" (ndim ≥ 2),
      "conv_kernels" (ndim = 4, main.py:136) or "all".
    generalization_enhancement: add the gradient-std Gaussian noise (`--modulation OGM_GE`).
    start_epoch, end_epoch: modulation window (inclusive, None = unbounded), read from the
      `epoch` extra; the authors' defaults are 0 and 50 of 100 epochs (main.py:41-42).
    seed: noise seed when no `key` extra is passed.

  Extras used: `modality_logits`, `labels`, `epoch` (when windowed), `key` (optional).
  """
  _check_choice(coefficient, COEFFICIENTS, "coefficient")
  _check_choice(modulated, MODULATED, "modulated")
  windowed = start_epoch is not None or end_epoch is not None

  def init_fn(params):
    _, mods = resolve_labels(param_labels, params, modalities, "ogm_ge")
    M = len(mods)
    return OGMGEState(jax.random.PRNGKey(seed), {
        "coefficient": jnp.ones((M,), jnp.float32), "ratio": jnp.ones((M,), jnp.float32),
        "active": jnp.zeros((), jnp.float32)})

  def update_fn(updates, state, params=None, **extra):
    del params
    labels, mods = resolve_labels(param_labels, updates, modalities, "ogm_ge")
    scores = modality_confidence(extra.get("modality_logits"), extra.get("labels"), mods,
                                 "ogm_ge")
    coeff, ratio = ogm_coefficients(scores, alpha, coefficient)
    if windowed:
      epoch = require(extra.get("epoch"), "epoch", "ogm_ge", "its modulation window is in epochs")
      active = in_epoch_window(epoch, 0 if start_epoch is None else start_epoch, end_epoch)
    else:
      active = jnp.asarray(True)
    key, next_key = jax.random.split(state.key)
    if extra.get("key") is not None:
      key = extra["key"]
    flat = leaves(updates)
    keys = jax.random.split(key, len(flat))
    out = []
    for g, lab, k in zip(flat, labels, keys, strict=True):
      if lab not in mods or not _is_modulated(g, modulated):
        out.append(g)
        continue
      new = coeff[mods.index(lab)].astype(g.dtype) * g
      if generalization_enhancement:
        std = gradient_std(g) + 1e-8
        new = new + std * normal(k, g.shape, g.dtype)
      out.append(jnp.where(active, new, g))
    diagnostics = {"coefficient": jnp.where(active, coeff, 1.0), "ratio": ratio,
                   "active": active.astype(jnp.float32)}
    return unflatten_like(updates, out), OGMGEState(next_key, diagnostics)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
