"""MGDA-UB: MGDA on the gradients w.r.t. the shared representation (Sener & Koltun, "Multi-Task
Learning as Multi-Objective Optimization", NeurIPS 2018, §3.3).

With z_m = the features of modality m (shared by the fused and the unimodal losses) and
g_i = w_i ∂L_i/∂z (all modalities' features, all samples), α = argmin_{α ∈ Δ} ‖Σ_i α_i g_i‖²
is solved on the Gram matrix G_ij = Σ_m ⟨g_i, g_j⟩ (exactly for few losses, as `mmreg.mgda`),
and the encoders receive ∂z/∂θᵀ (s·Σ_i α_i g_i) instead of ∂z/∂θᵀ Σ_i g_i (s = 1 by default as
in Sener & Koltun's code; s = L with `scale="num_losses"`, so equal gradients give the plain sum
back). Parameters after the encoders keep the total gradient. The stack costs L×B×d numbers
instead of L× the encoders' parameters, and one extra backward pass through the encoders.
Needs a train step built with `with_feature_grads=True`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mmreg.transforms._common import common_scale, require
from mmreg.transforms._stack import check_param_labels, loss_selection
from mmreg.transforms.mgda import min_norm_weights, relative_gap, scale_factor


class MGDAUBState(NamedTuple):
  diagnostics: dict[str, jax.Array]


def mgda_ub(param_labels: Any = None, *, loss_names: Sequence[str] | None = None,
            loss_weights: Mapping[str, float] | None = None,
            scale: float | Literal["num_losses"] = 1.0, exact_up_to: int = 6,
            tolerance: float = 1e-6, max_iterations: int = 1000
            ) -> optax.GradientTransformationExtraArgs:
  """MGDA-UB as an optax transform.

  Args:
    param_labels: the label tree (or None); only checked, for a constructor shared by every
      transform.
    loss_names: losses combined (default: all in `feature_grads`); `loss_weights` their w_i
      (default 1; they must match the LossSpec's, as `updates` is corrected by
      ∂z/∂θᵀ Σ_i (s·α_i − 1)·g_i).
    scale: s above: 1 (Sener & Koltun) or "num_losses" (L).
    exact_up_to, tolerance, max_iterations: the min-norm solver (`mmreg.mgda`).

  Extras used: `feature_grads` (`LossGrads` of `{m: [L, B, d_m]}`), `features_vjp`.
  Unlike the parameter-stack methods, the output is `updates` plus a correction, so it assumes
  `updates` is the LossSpec's total gradient (no clip or accumulation before it).
  """
  check_param_labels(param_labels, "mgda_ub", required=False)
  scale_factor(scale, 2, "mgda_ub")

  def init_fn(params):
    del params
    zero = jnp.zeros((), jnp.float32)
    return MGDAUBState({"min_norm": zero, "max_weight": zero, "duality_gap": zero})

  def update_fn(updates, state, params=None, **extra):
    del state, params
    why = "the per-loss gradients w.r.t. the features; build the step with with_feature_grads=True"
    feature_grads = require(extra.get("feature_grads"), "feature_grads", "mgda_ub", why)
    features_vjp = require(extra.get("features_vjp"), "features_vjp", "mgda_ub", why)
    combined, w_all = loss_selection(feature_grads, loss_names, loss_weights, "mgda_ub")
    idx = jnp.asarray(combined)
    w = w_all[idx]
    rows = {m: g[idx].astype(jnp.float32) * w.reshape(-1, *([1] * (g.ndim - 1)))
            for m, g in feature_grads.grads.items()}
    s = common_scale(list(rows.values()))  # G on rows/s: finite for any finite gradients
    G = sum(jnp.einsum("i...,j...->ij", r / s, r / s) for r in rows.values())
    alpha, gap = min_norm_weights(G, exact_up_to=exact_up_to, tolerance=tolerance,
                                  max_iterations=max_iterations)
    factor = scale_factor(scale, len(combined), "mgda_ub")
    delta = {m: jnp.tensordot(factor * alpha - 1.0, r, axes=1).astype(feature_grads.grads[m].dtype)
             for m, r in rows.items()}
    correction = features_vjp(delta)
    new = jax.tree.map(lambda u, c: u + c.astype(u.dtype), updates, correction)
    diagnostics = {"min_norm": s * jnp.sqrt(jnp.maximum(alpha @ G @ alpha, 0.0)),
                   "max_weight": jnp.max(alpha), "duality_gap": relative_gap(G, gap)}
    return new, MGDAUBState(diagnostics)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
