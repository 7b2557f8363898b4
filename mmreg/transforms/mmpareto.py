"""MMPareto: innocent unimodal assistance (Wei & Hu, ICML 2024), the authors' code
(GeWu-Lab/MMPareto_ICML2024, code/MMPareto.py).

For each encoder m, with g_mm = ∇L_fused and g_uni = ∇L_m on θ_m (whole-encoder vectors,
MMPareto.py:76-85, :149-150): if cos(g_mm, g_uni) > 0, w = (½, ½) (:165-167); else the two-task
min-norm weights (:169, min_norm_solvers.py:9-30) w_1 = (‖g_uni‖² − g_mm·g_uni)/‖g_mm − g_uni‖²,
which that solver replaces by 0.999 when g_mm·g_uni ≥ ‖g_mm‖² and by 0.001 when
g_mm·g_uni ≥ ‖g_uni‖² (a zero gradient), and w_2 = 1 − w_1. Per parameter tensor (:184-206):
g̃ = 2(w_1·g_mm + w_2·g_uni); if ‖g_sum‖ > ‖g̃‖, g̃ is rescaled to ‖g_sum‖, g_sum the tensor's
gradient of the sum of all losses (:180-181, here Σ_k w_k ∇L_k over the stack, w_k = 1 by
default); then g̃ ← γ·g̃,
γ = 1.5 (:178). Fusion and head parameters keep the total gradient. Every modality is handled
the same way, so M ≥ 2 needs no change.

mmreg's guard (`stationary_tol`): where g_mm and g_uni are anti-parallel, the min-norm point is
the origin (Pareto-stationary) and the computed g̃ is round-off, which the authors' rescale
would blow up to ‖g_sum‖ in an arbitrary direction (or to inf/NaN when it is exactly 0). A block
whose ‖w_1 g_mm + w_2 g_uni‖ is at most `stationary_tol`·(w_1‖g_mm‖ + w_2‖g_uni‖) gets 0.

Cost: per leaf, two variadic reductions over its non-zero rows (their peaks; every dot product
of a pair of them) and one pass over the two rows that form g̃; all on g/s, s one power of two
above the largest entry (exact, so finite for any finite gradients), folded into those passes
rather than applied to a copy of the stack (`mmreg.transforms._common.leaf_grams`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mmreg.losses.spec import FUSED
from mmreg.transforms._common import (
  check_loss_stack,
  leaf_grams,
  resolve_labels,
  stack_rows,
)
from mmreg.transforms._stack import check_param_labels, check_rows_match, check_stack_updates


class MMParetoState(NamedTuple):
  diagnostics: dict[str, jax.Array]


def two_task_min_norm(g1g1: jax.Array, g1g2: jax.Array, g2g2: jax.Array) -> jax.Array:
  """Weight w_1 of g1 in the min-norm point of the segment [g1, g2], from the three dot
  products, as MMPareto's solver computes it (min_norm_solvers.py:17-30: 0.999 / 0.001 where
  the minimum is at an end because g1·g2 ≥ ‖g1‖² or ≥ ‖g2‖²)."""
  den = g1g1 + g2g2 - 2 * g1g2
  inner = (g2g2 - g1g2) / jnp.where(den > 0, den, 1.0)
  return jnp.where(g1g2 >= g1g1, 0.999, jnp.where(g1g2 >= g2g2, 0.001, inner))


def mmpareto(param_labels: Any, *, gamma: Any = 1.5, modalities: Sequence[str] | None = None,
             fused_loss: str = FUSED, unimodal_losses: Mapping[str, str] | None = None,
             stationary_tol: float = 1e-5, loss_weights: Mapping[str, float] | None = None,
             check_updates: bool = True) -> optax.GradientTransformationExtraArgs:
  """MMPareto as an optax transform.

  Args:
    param_labels: label tree of the params (or a function of the params returning one).
    gamma: γ, the boost of the encoders' combined gradient (1.5, MMPareto.py:178).
    modalities: encoders balanced (default: every non-role label).
    fused_loss, unimodal_losses: the losses' names in the stack (default: `fused` and, per
      modality m, `m`).
    stationary_tol: mmreg's guard above; 0 keeps the authors' rescale everywhere except an
      exactly zero g̃.
    loss_weights: w_k of the stack's losses in g_sum = Σ_k w_k ∇L_k, the gradient of the loss
      as trained (default 1: the authors' plain sum, MMPareto.py:180-181).
    check_updates: raise `StackContractError` when the incoming `updates` are not g_sum on the
      encoder leaves it recomputes (see `mmreg.transforms._stack.check_stack_updates`).

  Extras used: `loss_grads` (fused and unimodal losses). On encoder leaves the stack covers the
  output depends on `loss_grads` only; leaves it does not cover keep `updates`. Diagnostics per
  modality: `cosine`, `weight_fused` (w_1), `stationary` (1 where the guard gave 0).
  """
  check_param_labels(param_labels, "mmpareto", required=True)

  def init_fn(params):
    _, mods = resolve_labels(param_labels, params, modalities, "mmpareto", min_modalities=1)
    M = len(mods)
    return MMParetoState({"cosine": jnp.zeros((M,), jnp.float32),
                          "weight_fused": jnp.full((M,), 0.5, jnp.float32),
                          "stationary": jnp.zeros((M,), jnp.float32)})

  def update_fn(updates, state, params=None, **extra):
    del state, params
    labels, mods = resolve_labels(param_labels, updates, modalities, "mmpareto",
                                  min_modalities=1)
    unimodal = {m: (unimodal_losses or {}).get(m, m) for m in mods}
    loss_grads = extra.get("loss_grads")
    check_loss_stack(loss_grads, [fused_loss, *unimodal.values()], "mmpareto")
    rows = stack_rows(loss_grads, loss_grads.names)
    check_rows_match(updates, rows, "mmpareto")
    unknown = set(loss_weights or {}) - set(loss_grads.names)
    if unknown:
      raise ValueError(f"mmpareto: loss_weights name losses {sorted(unknown)} that are not in "
                       f"loss_grads ({list(loss_grads.names)})")
    w = jnp.asarray([(loss_weights or {}).get(n, 1.0) for n in loss_grads.names], jnp.float32)
    if check_updates:
      check_stack_updates(updates, loss_grads, w, "mmpareto", [lab in mods for lab in labels])
    flat, treedef = jax.tree.flatten(updates)
    out = list(flat)
    blocks = {m: [j for j, lab in enumerate(labels) if lab == m and rows[j] is not None]
              for m in mods}
    used = [j for idx in blocks.values() for j in idx]
    L = loss_grads.num_losses
    i_mm = loss_grads.index(fused_loss)
    masks = loss_grads.row_masks()
    # Per-leaf Gram matrices of g/s, s one power of two for the whole stack (`leaf_grams`); s is
    # folded into the passes that form g̃: the stack is never copied, its zero rows never read.
    grams, s = leaf_grams([r if j in used else None for j, r in enumerate(rows)], masks)
    new_leaves, cosines, weights, stationary = {}, [], [], []
    for m in mods:
      idx, i_uni = blocks[m], loss_grads.index(unimodal[m])
      block = sum((grams[j] for j in idx), jnp.zeros((L, L), jnp.float32))
      a, b, c = block[i_mm, i_mm], block[i_uni, i_uni], block[i_mm, i_uni]
      norms = jnp.sqrt(a * b)
      cos = jnp.where(norms > 0, c / jnp.where(norms > 0, norms, 1.0), 0.0)
      w1 = jnp.where(cos > 0, 0.5, two_task_min_norm(a, c, b))
      # g̃ = 2·half (on g/s); the factor 2 is applied outside the sums of squares
      half = {j: w1 * (rows[j][i_mm].astype(jnp.float32) / s)
              + (1.0 - w1) * (rows[j][i_uni].astype(jnp.float32) / s) for j in idx}
      half_sq = {j: jnp.sum(jnp.square(v)) for j, v in half.items()}
      d_norm = jnp.sqrt(sum(half_sq.values(), jnp.zeros((), jnp.float32)))
      is_stationary = d_norm <= stationary_tol * (w1 * jnp.sqrt(a) + (1.0 - w1) * jnp.sqrt(b))
      for j in idx:
        total_norm = jnp.sqrt(jnp.maximum(w @ grams[j] @ w, 0.0))
        new_norm = 2.0 * jnp.sqrt(half_sq[j])
        rescale = jnp.where(total_norm > new_norm,
                            total_norm / jnp.where(new_norm > 0, new_norm, 1.0), 1.0)
        factor = jnp.where(is_stationary, 0.0, 2.0 * gamma * rescale * s)
        new_leaves[j] = (factor * half[j]).astype(flat[j].dtype)
      cosines.append(cos)
      weights.append(w1)
      stationary.append(is_stationary.astype(jnp.float32))
    cosines, weights, stationary = jnp.stack(cosines), jnp.stack(weights), jnp.stack(stationary)
    for j, v in new_leaves.items():
      out[j] = v
    diagnostics = {"cosine": cosines, "weight_fused": weights, "stationary": stationary}
    return jax.tree.unflatten(treedef, out), MMParetoState(diagnostics)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
