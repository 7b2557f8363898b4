"""AGM (Li et al., ICCV 2023), loss side: scores and the fused loss split by mono-modal outputs.

The authors' code trains on CE(Σ_m out_m) = CE(z) with a backward hook on each mono-modal output
out_m that multiplies the gradient flowing through it by k_m
(lihong2303/AGM_ICCV2023:model/CREMAD_net.py:42-55, 67-68), so the parameter gradient is
Σ_m k_m·J_mᵀδ, J_m = ∂out_m/∂θ, δ = ∂CE/∂z. `agm_losses` splits CE(z) into one term per
modality, L_m = ⟨sg(δ), out_m − sg(out_m)⟩ + sg(CE)/M: Σ_m L_m equals CE(z) in value and in
gradient, and the per-loss gradient stack (`mmreg.per_loss_grads`) then holds J_mᵀδ in row
`agm_<m>`, which `mmreg.agm` rescales by k_m. The out_m are the model's `modality_logits` with
`modality_logits="zero_input_shapley"`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mmreg.data.batch import LABEL
from mmreg.losses.spec import LossSpec
from mmreg.models.classifier import ModelOutput

SCORE_CAP = -math.log(1e-8)  # CREMAD_main.py:133-134: p < 1e-8 counts as 1e-8
PREFIX = "agm_"


def agm_loss_name(modality: str) -> str:
  return PREFIX + modality


def agm_score(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Batch mean of min(−log softmax(z_i)[y_i], −log 1e-8)
  (lihong2303/AGM_ICCV2023:run/CREMAD_main.py:130-143)."""
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
  return jnp.mean(jnp.minimum(nll, SCORE_CAP))


def agm_coefficients(scores: jax.Array, running: jax.Array, alpha: Any, cap: float = 10.0
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(k_m, r_m, r̄_m) from the step's scores s_m `[M]` and their running means s̄_m `[M]`:
  r_m = exp(s_other − s_m), r̄_m = exp(s̄_other − s̄_m), k_m = exp(α·min(r̄_m − r_m, cap))
  (CREMAD_main.py:145-152), s_other the mean of the other modalities' scores (the other one's
  for two modalities)."""
  scores = jnp.asarray(scores, jnp.float32)
  running = jnp.asarray(running, jnp.float32)
  M = scores.shape[0]

  def ratio(s):
    return jnp.exp((jnp.sum(s) - s) / (M - 1) - s)

  r, r_bar = ratio(scores), ratio(running)
  return jnp.exp(alpha * jnp.minimum(r_bar - r, cap)), r, r_bar


def _split_term(modality: str, modalities: Sequence[str]):
  M = len(modalities)

  def term(output: ModelOutput, batch: Mapping[str, Any]) -> jax.Array:
    z = output.logits.astype(jnp.float32)
    y = batch[LABEL]
    onehot = jax.nn.one_hot(y, z.shape[-1], dtype=jnp.float32)
    logp = jax.nn.log_softmax(z, axis=-1)
    ce = -jnp.mean(jnp.sum(onehot * logp, axis=-1))
    delta = jax.lax.stop_gradient((jnp.exp(logp) - onehot) / z.shape[0])
    out = output.modality_logits[modality].astype(jnp.float32)
    return jnp.sum(delta * (out - jax.lax.stop_gradient(out))) + jax.lax.stop_gradient(ce) / M

  return term


def agm_losses(modalities: Sequence[str]) -> LossSpec:
  """The fused cross-entropy split into one term `agm_<m>` per modality (weights 1), for a model
  with `modality_logits="zero_input_shapley"` and a train step with `with_loss_grads=True`."""
  modalities = tuple(modalities)
  if len(modalities) < 2:
    raise ValueError(f"agm_losses splits the fused loss over at least 2 modalities, got "
                     f"{list(modalities)}")
  terms = {agm_loss_name(m): _split_term(m, modalities) for m in modalities}
  return LossSpec(terms, {n: 1.0 for n in terms})
