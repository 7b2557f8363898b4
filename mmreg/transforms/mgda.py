"""MGDA: the min-norm point of the convex hull of the loss gradients (Désidéri 2012; Sener &
Koltun, NeurIPS 2018).

α = argmin_{α ∈ Δ} ‖Σ_i α_i g_i‖² over the simplex, with g_i = w_i ∇L_i. Up to `exact_up_to`
losses (default 6) the minimum is found exactly by enumerating the active sets S (the KKT system
[[G_SS, 1], [1ᵀ, 0]]·(α_S, λ) = (0, 1) for every S; the feasible solution of least norm wins).
Above that, pairwise Frank–Wolfe with exact line search runs until the Frank–Wolfe duality gap
αᵀGα − min_i (Gα)_i is at most `tolerance`·max_i G_ii. The update is `scale`·Σ_i α_i g_i with
scale 1, the convention of Sener & Koltun's training code (isl-org/MultiObjectiveOptimization:
multi_task/train_multi_task.py:164-182, scale[t] = sol[t], loss = Σ_t scale[t]·loss_t), of
torchjd's `MGDA` aggregator and of LibMTL's `MGDA` weighting; `scale="num_losses"` multiplies
by L, so equal gradients give the plain sum back.

Their solver starts at the best pair and iterates (min_norm_solvers.py:6-7, MAX_ITER = 250,
STOP_CRIT = 1e-5 on the change of α; train_multi_task.py:158 may first normalise the gradients,
`normalization_type`, which mmreg leaves to `loss_weights`), and its two-vector step returns
0.999 / 0.001 instead of 1 / 0 at the ends of the segment (min_norm_solvers.py:17-26); mmreg
returns the exact minimiser.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmreg.transforms._stack import (
  check_param_labels,
  check_stack_updates,
  combine,
  full_coefficients,
  loss_selection,
  weighted_gram,
)


class MGDAState(NamedTuple):
  diagnostics: dict[str, jax.Array]


def _active_sets_min_norm(G: jax.Array) -> jax.Array:
  """Exact simplex minimiser of αᵀGα by enumerating the 2^L − 1 supports."""
  L = G.shape[0]
  masks = np.array([m for m in itertools.product((0.0, 1.0), repeat=L) if any(m)], np.float32)
  masks = jnp.asarray(masks)  # [S, L]

  def solve(mask):
    off = 1.0 - mask
    # KKT system on the support; coordinates off the support are pinned to 0 by identity rows.
    A = G * mask[:, None] * mask[None, :] + jnp.diag(off)
    kkt = jnp.block([[A, mask[:, None]], [mask[None, :], jnp.zeros((1, 1), G.dtype)]])
    rhs = jnp.concatenate([jnp.zeros((L,), G.dtype), jnp.ones((1,), G.dtype)])
    alpha = jnp.linalg.solve(kkt, rhs)[:L] * mask
    feasible = (jnp.all(jnp.isfinite(alpha)) & jnp.all(alpha >= -1e-6)
                & (jnp.abs(jnp.sum(alpha) - 1.0) <= 1e-4))
    alpha = jnp.clip(jnp.where(jnp.isfinite(alpha), alpha, 0.0), 0.0, None)
    alpha = alpha / jnp.where(jnp.sum(alpha) > 0, jnp.sum(alpha), 1.0)
    return alpha, jnp.where(feasible, alpha @ G @ alpha, jnp.inf)

  alphas, values = jax.vmap(solve)(masks)
  # Singletons are always feasible, so some candidate has a finite value.
  return alphas[jnp.argmin(values)]


def _pairwise_frank_wolfe(G: jax.Array, tolerance: float, max_iterations: int) -> jax.Array:
  L = G.shape[0]
  tol = tolerance * jnp.max(jnp.diag(G))

  def gap(alpha):
    grad = G @ alpha
    return alpha @ grad - jnp.min(grad)

  def cond(carry):
    i, alpha = carry
    return (i < max_iterations) & (gap(alpha) > tol)

  def body(carry):
    i, alpha = carry
    grad = G @ alpha
    t = jnp.argmin(grad)
    a = jnp.argmax(jnp.where(alpha > 0, grad, -jnp.inf))
    den = G[t, t] + G[a, a] - 2 * G[t, a]
    step = jnp.where(den > 0, (grad[a] - grad[t]) / jnp.where(den > 0, den, 1.0), alpha[a])
    step = jnp.clip(step, 0.0, alpha[a])
    move = jax.nn.one_hot(t, L, dtype=G.dtype) - jax.nn.one_hot(a, L, dtype=G.dtype)
    alpha = alpha + step * move
    return i + 1, alpha

  start = jax.nn.one_hot(jnp.argmin(jnp.diag(G)), L, dtype=G.dtype)
  return jax.lax.while_loop(cond, body, (0, start))[1]


def min_norm_weights(G: jax.Array, *, exact_up_to: int = 6, tolerance: float = 1e-6,
                     max_iterations: int = 1000) -> tuple[jax.Array, jax.Array]:
  """Simplex weights α of the min-norm point of the hull of vectors with Gram matrix `G`, and
  the Frank–Wolfe duality gap αᵀGα − min_i (Gα)_i (≥ αᵀGα − min over the hull; 0 at the
  minimum)."""
  G = jnp.asarray(G, jnp.float32)
  if G.shape[0] <= exact_up_to:
    alpha = _active_sets_min_norm(G)
  else:
    alpha = _pairwise_frank_wolfe(G, tolerance, max_iterations)
  grad = G @ alpha
  return alpha, jnp.maximum(alpha @ grad - jnp.min(grad), 0.0)


def relative_gap(G: jax.Array, gap: jax.Array) -> jax.Array:
  """The duality gap as a fraction of max_i ‖g_i‖² (scale-free, so finite for any G/s²)."""
  top = jnp.max(jnp.diag(G))
  return gap / jnp.where(top > 0, top, 1.0)


def scale_factor(scale: float | str, num_losses: int, method: str) -> float:
  if scale == "num_losses":
    return float(num_losses)
  if isinstance(scale, str):
    raise ValueError(f"{method}: scale is a number or 'num_losses', got {scale!r}")
  return float(scale)


def mgda(param_labels: Any = None, *, loss_names: Sequence[str] | None = None,
         loss_weights: Mapping[str, float] | None = None,
         scale: float | Literal["num_losses"] = 1.0, exact_up_to: int = 6,
         tolerance: float = 1e-6, max_iterations: int = 1000, check_updates: bool = True
         ) -> optax.GradientTransformationExtraArgs:
  """MGDA on the per-loss gradient stack.

  Args:
    param_labels: the label tree (or None); MGDA acts on every leaf the stack covers, so it is
      only checked, for a constructor shared by every transform.
    loss_names: losses combined (default: all in `loss_grads`).
    loss_weights: w_k of every loss in the stack (default 1), as in the LossSpec; losses not
      combined are added as w_k ∇L_k.
    scale: multiplier of the min-norm direction: 1 (Sener & Koltun, torchjd, LibMTL) or
      "num_losses" (L, mmreg's option: equal gradients give the plain sum).
    exact_up_to: largest number of losses solved exactly (2^L − 1 small linear systems).
    tolerance, max_iterations: Frank–Wolfe stopping rule above `exact_up_to`.
    check_updates: raise `StackContractError` when the incoming `updates` are not Σ_k w_k ∇L_k
      on the covered leaves (see `mmreg.transforms._stack.check_stack_updates`).

  Extras used: `loss_grads`. Diagnostics: `min_norm` ‖Σ α_i g_i‖, `max_weight` max α_i,
  `duality_gap` (αᵀGα − min_i (Gα)_i over max_i ‖g_i‖²; ≤ `tolerance`). On the leaves the
  stack covers the output depends on `loss_grads` only (see `mmreg.transforms._stack`).
  """
  check_param_labels(param_labels, "mgda", required=False)
  scale_factor(scale, 2, "mgda")

  def init_fn(params):
    del params
    zero = jnp.zeros((), jnp.float32)
    return MGDAState({"min_norm": zero, "max_weight": zero, "duality_gap": zero})

  def update_fn(updates, state, params=None, **extra):
    del state, params
    loss_grads = extra.get("loss_grads")
    combined, w = loss_selection(loss_grads, loss_names, loss_weights, "mgda")
    if check_updates:
      check_stack_updates(updates, loss_grads, w, "mgda")
    G, s = weighted_gram(loss_grads, combined, w)
    alpha, gap = min_norm_weights(G, exact_up_to=exact_up_to, tolerance=tolerance,
                                  max_iterations=max_iterations)
    factor = scale_factor(scale, len(combined), "mgda")
    new = combine(updates, loss_grads, full_coefficients(combined, w, factor * alpha), "mgda")
    diagnostics = {"min_norm": s * jnp.sqrt(jnp.maximum(alpha @ G @ alpha, 0.0)),
                   "max_weight": jnp.max(alpha), "duality_gap": relative_gap(G, gap)}
    return new, MGDAState(diagnostics)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
