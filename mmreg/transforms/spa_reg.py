"""SpA-Reg as a gradient transformation: the regulariser's gradient on the classifier kernel,
with the class centres it needs kept in the optimizer state (arXiv 2512.07844; the form of the
regulariser is mmreg's, `mmreg.losses.spa_reg_loss`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mmreg.losses.spa_reg import spa_reg_loss
from mmreg.monitors.class_centres import ClassCentres, init_class_centres, update_class_centres
from mmreg.transforms._head import head_kernel_index
from mmreg.tree import LabelsOrFn


class SpARegState(NamedTuple):
  """EMA centres (`mmreg.find_class_centres` finds them) and `diagnostics["spa_reg_loss"]`,
  λ·L at the parameters the step started from (the part of the objective the step's loss
  values leave out)."""

  centres: ClassCentres
  diagnostics: dict[str, jax.Array]


def spa_reg(param_labels: LabelsOrFn, *, weight: float = 1.0, momentum: float = 0.9,
            head_label: str = "head") -> optax.GradientTransformationExtraArgs:
  """updates_W ← updates_W + λ·∂L/∂W on the classifier kernel W `[d, K]`, with
  L = `spa_reg_loss(W, sg(h), y, μ)` (1/K'·Σ_{c seen} (1 − cos(w_c, μ_c − μ̄))), then
  μ ← EMA(μ, h, y) as `track_class_centres`.

  The same gradient as training on CE + λ·L (with the centres' stop-gradient, L reaches only
  W), so place it first in the chain, where `updates` is the raw gradient. Extra args used:
  `penultimate` `[B, d]` (the classifier's input, `ModelOutput.fused`) and `labels`.
  λ = `weight` (mmreg's default 1.0), β = `momentum` (0.9, the centres' EMA).
  """
  if weight < 0:
    raise ValueError(f"spa_reg weight={weight} must be >= 0")
  if not 0.0 <= momentum < 1.0:
    raise ValueError(f"spa_reg momentum={momentum} must be in [0, 1)")

  def init_fn(params):
    kernel = jax.tree.leaves(params)[head_kernel_index(param_labels, params, head_label,
                                                       "spa_reg")]
    dim, num_classes = kernel.shape
    return SpARegState(init_class_centres(num_classes, dim),
                       {"spa_reg_loss": jnp.zeros((), jnp.float32)})

  def update_fn(updates, state, params=None, *, penultimate=None, labels=None, **extra_args):
    del extra_args
    if params is None or penultimate is None or labels is None:
      raise ValueError("spa_reg needs `params`, `penultimate=` ([B, d], the classifier's input "
                       "features; ModelOutput.fused) and `labels=` in tx.update")
    index = head_kernel_index(param_labels, params, head_label, "spa_reg")
    kernel = jax.tree.leaves(params)[index]

    def objective(w):
      return weight * spa_reg_loss(w, penultimate, labels, state.centres, momentum=momentum)

    value, grad = jax.value_and_grad(objective)(kernel)
    leaves, treedef = jax.tree.flatten(updates)
    leaves[index] = leaves[index] + grad.astype(leaves[index].dtype)
    centres, _ = update_class_centres(state.centres, penultimate, labels, momentum=momentum)
    return (jax.tree.unflatten(treedef, leaves),
            SpARegState(centres, {"spa_reg_loss": value.astype(jnp.float32)}))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
