"""AGM: adaptive gradient modulation (Li et al., ICCV 2023; code lihong2303/AGM_ICCV2023).

Defaults reproduce run/CREMAD_main.py (lihong2303/AGM_ICCV2023, cited by line):
- mono-modal outputs out_m: Shapley values over zero-filled inputs, out_a = ½(f(a,v) − f(0,v)
  + f(a,0)) (model/CREMAD_net.py:10-17; `mmreg.models.zero_input_shapley_logits`);
- score s_m = batch mean of min(−log softmax(out_m)[y], −log 1e-8) (l. 130-143);
- ratio r_a = exp(s_v − s_a), r_v = exp(s_a − s_v) (l. 145-146); running ratio r̄ from the
  cumulative means s̄ of the scores over every step since the start of training, before this
  step's score enters (l. 148-149, 154-155; s̄ starts at 0, l. 612-613);
- k_m = exp(α·min(r̄_m − r_m, 10)) (l. 151-152), α = 1.0 (utils/config.py:76);
- k_m multiplies the gradient flowing back through out_m (backward hooks,
  model/CREMAD_net.py:42-55): `apply_to="monomodal_outputs"`, exact, reading the rows
  `agm_<m>` of the per-loss stack built from `mmreg.losses.agm_losses` (see there);
- then, if any entry of the fused head's kernel gradient exceeds 1 in magnitude, the whole
  gradient is clipped to global norm 1 (l. 233-238; torch's clip_grad_norm_, factor
  min(1, 1/(‖g‖ + 1e-6))): `clip_grad_norm=1.0`.
To run the original: `MultimodalClassifier(..., modality_logits="zero_input_shapley")` (concat
fusion, linear head), `mmreg.losses.agm_losses(modalities)` as the loss spec and
`make_train_step(..., with_loss_grads=True)`.

mmreg's options, not the authors': `apply_to="encoders"` multiplies each encoder's gradient by
k_m instead (no per-loss stack needed; the mono-modal outputs then come from the `shapley_logits`
extra or from `logits_fn` on zero-filled inputs, 2^M − 1 passes without gradient). It differs
from the original by the gradient terms that flow through the zero-input passes and the head.
M > 2 modalities: s_other is the mean of the other modalities' scores. The code keeps the last
coefficients in its hooks after its modulation window ends; mmreg has no window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mmreg.losses.agm import agm_coefficients, agm_loss_name, agm_score
from mmreg.losses.geometry import power_of_two_scale
from mmreg.models.labels import HEAD
from mmreg.models.monomodal import zero_input_shapley_logits
from mmreg.transforms._common import (
    leaves,
    require,
    resolve_labels,
    stack_rows,
    unflatten_like,
)

APPLY_TO = ("monomodal_outputs", "encoders")


class AGMState(NamedTuple):
  """Cumulative mean s̄ `[M]` of the scores and the number of steps it averages."""

  running: jax.Array
  count: jax.Array
  diagnostics: dict[str, jax.Array]


def _monomodal_outputs(extra: dict, mods: tuple[str, ...], apply_to: str) -> dict:
  if apply_to == "monomodal_outputs":
    out = require(extra.get("modality_logits"), "modality_logits", "agm",
                  "the mono-modal outputs; build the model with "
                  "modality_logits='zero_input_shapley'")
  elif extra.get("shapley_logits") is not None:
    out = extra["shapley_logits"]
  else:
    logits_fn = require(extra.get("logits_fn"), "logits_fn", "agm",
                        "fused logits on zero-filled inputs, or pass shapley_logits")
    inputs = require(extra.get("inputs"), "inputs", "agm", "the batch's modality inputs")
    present = extra.get("present")

    def subset_logits(subset):
      batch = {m: x if m in subset else jnp.zeros_like(x) for m, x in inputs.items()}
      if present is not None:
        batch["present"] = present
      return logits_fn(batch)

    out = zero_input_shapley_logits(subset_logits, mods)
  missing = [m for m in mods if m not in out]
  if missing:
    raise ValueError(f"agm: the mono-modal outputs have no entry for {missing}")
  return out


def _global_norm(flat: Sequence[jax.Array]) -> jax.Array:
  s = power_of_two_scale(jnp.stack([power_of_two_scale(g) for g in flat]))
  total = sum(jnp.sum(jnp.square(g.astype(jnp.float32) / s)) for g in flat)
  return s * jnp.sqrt(total)


def agm(param_labels: Any, *, alpha: Any = 1.0, modalities: Sequence[str] | None = None,
        apply_to: str = "monomodal_outputs", clip_grad_norm: float | None = 1.0
        ) -> optax.GradientTransformationExtraArgs:
  """AGM as an optax transform.

  Args:
    param_labels: label tree of the params (or a function of the params returning one).
    alpha: α (utils/config.py:76: 1.0); schedulable via `optax.inject_hyperparams`.
    modalities: modalities to balance (default: every non-role label).
    apply_to: "monomodal_outputs" (the authors' hooks, exact; needs `loss_grads` with the
      rows of `mmreg.losses.agm_losses`) or "encoders" (mmreg's per-encoder scaling).
    clip_grad_norm: clip to this global norm when a fused-head kernel gradient entry exceeds 1
      (CREMAD_main.py:233-238); None disables it.

  Extras used: `labels`; `modality_logits` and `loss_grads` (monomodal_outputs), or
  `shapley_logits`, or `logits_fn` with `inputs` (and `present`) (encoders).
  """
  if apply_to not in APPLY_TO:
    raise ValueError(f"agm: unknown apply_to {apply_to!r}; valid: {list(APPLY_TO)}")

  def init_fn(params):
    _, mods = resolve_labels(param_labels, params, modalities, "agm")
    M = len(mods)
    ones = jnp.ones((M,), jnp.float32)
    return AGMState(jnp.zeros((M,), jnp.float32), jnp.zeros((), jnp.int32),
                    {"coefficient": ones, "score": jnp.zeros((M,), jnp.float32),
                     "ratio": ones, "running_ratio": ones, "clipped": jnp.zeros((), jnp.float32)})

  def update_fn(updates, state, params=None, **extra):
    del params
    labels, mods = resolve_labels(param_labels, updates, modalities, "agm")
    y = require(extra.get("labels"), "labels", "agm", "class labels of the batch")
    outputs = _monomodal_outputs(extra, mods, apply_to)
    scores = jnp.stack([agm_score(outputs[m], y) for m in mods])
    coeff, ratio, running_ratio = agm_coefficients(scores, state.running, alpha)
    flat = leaves(updates)
    if apply_to == "monomodal_outputs":
      names = [agm_loss_name(m) for m in mods]
      stack = extra.get("loss_grads")
      if stack is None or any(n not in stack.names for n in names):
        raise ValueError(f"agm: apply_to='monomodal_outputs' needs the per-loss gradient rows "
                         f"{names}; train on mmreg.losses.agm_losses(modalities) with "
                         "with_loss_grads=True, or use apply_to='encoders'")
      rows = stack_rows(extra["loss_grads"], names)
      scale = coeff - 1.0
      flat = [g if r is None else
              g + jnp.tensordot(scale, r.astype(jnp.float32), axes=1).astype(g.dtype)
              for g, r in zip(flat, rows, strict=True)]
    else:
      flat = [g * coeff[mods.index(lab)].astype(g.dtype) if lab in mods else g
              for g, lab in zip(flat, labels, strict=True)]
    clipped = jnp.zeros((), bool)
    if clip_grad_norm is not None:
      head = [jnp.max(jnp.abs(g.astype(jnp.float32))) for g, lab in zip(flat, labels, strict=True)
              if lab == HEAD and g.ndim >= 2]
      if head:
        clipped = jnp.max(jnp.stack(head)) > 1.0
        factor = jnp.minimum(1.0, clip_grad_norm / (_global_norm(flat) + 1e-6))
        flat = [jnp.where(clipped, g * factor.astype(g.dtype), g) for g in flat]
    count = state.count + 1
    running = state.running + (scores - state.running) / count.astype(jnp.float32)
    diagnostics = {"coefficient": coeff, "score": scores, "ratio": ratio,
                   "running_ratio": running_ratio, "clipped": clipped.astype(jnp.float32)}
    return unflatten_like(updates, flat), AGMState(running, count, diagnostics)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
