"""SpA-Proj: project the classifier gradient toward the class centres (space alignment for
long-tailed neural collapse, arXiv 2512.07844; code smithgun2005/SpaceAlignmentLongTail)."""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mmreg.losses.geometry import l2_normalize
from mmreg.monitors.class_centres import (
  ClassCentres,
  alignment_cosine,
  init_class_centres,
  update_class_centres,
)
from mmreg.transforms._head import head_kernel_index
from mmreg.tree import LabelsOrFn

PENULTIMATE = "penultimate"


class SpAProjState(NamedTuple):
  """EMA class centres and per-step diagnostics (`alignment_cosine` `[K]` before the step,
  `conflict_fraction`: share of seen classes whose gradient pointed away from the centre)."""

  centres: ClassCentres
  diagnostics: dict[str, jax.Array]


def project_toward_centres(grad: jax.Array, kernel: jax.Array, centred: jax.Array,
                           seen: jax.Array, *, variant: str = "authors", gamma: float = 0.6,
                           eps: float = 1e-8) -> tuple[jax.Array, jax.Array]:
  """Project a `[d, K]` kernel gradient, column by column; returns (gradient, conflict `[K]`).

  For class c with gradient g, ŵ = w_c/‖w_c‖, m = normalize(μ_c − μ̄):
  d = normalize(m − (m·ŵ)ŵ) (the tangent direction from ŵ toward m); a descent step −g moves
  ŵ away from m iff g·d > 0 (a conflict).
  * authors (default; smithgun2005/SpaceAlignmentLongTail SpA_Proj/trainer.py:215-226):
    g_t = g − (g·ŵ)ŵ; if g_t·d > 0: g_t ← g_t − (g_t·d)d; g ← (1−γ)·g_t + γ·g. The
    conflicting component is only scaled by γ (and the radial one too), so a descent step can
    still turn ŵ away from m, at γ times the unprojected rate.
  * conflict_only (mmreg's): g ← g − max(g·d, 0)·d. Only the conflicting component is removed,
    so −g never turns ŵ away from m (to first order) and nothing else changes; classes not
    yet seen keep their gradient.
  """
  grad = grad.astype(jnp.float32)
  w_hat = l2_normalize(kernel.T, eps).T  # overflow-safe x / max(‖x‖, ε)
  m = l2_normalize(centred, eps).T
  d = m - jnp.sum(m * w_hat, axis=0, keepdims=True) * w_hat
  d = l2_normalize(d.T, eps).T
  along = jnp.sum(grad * d, axis=0, keepdims=True)
  conflict = (along > 0) & seen[None, :]
  if variant == "conflict_only":
    new = grad - jnp.where(conflict, along, 0.0) * d
  elif variant == "authors":
    tangent = grad - jnp.sum(grad * w_hat, axis=0, keepdims=True) * w_hat
    tangent = tangent - jnp.where(conflict, along, 0.0) * d
    new = jnp.where(seen[None, :], (1.0 - gamma) * tangent + gamma * grad, grad)
  else:
    raise ValueError(f"variant={variant!r}; use 'authors' or 'conflict_only'")
  return new, conflict[0]


def spa_proj(param_labels: LabelsOrFn, *, head_label: str = "head", momentum: float = 0.9,
             variant: Literal["authors", "conflict_only"] = "authors", gamma: float = 0.6
             ) -> optax.GradientTransformationExtraArgs:
  """SpA-Proj on the classifier kernel's gradient (see `project_toward_centres`).

  Args:
    param_labels: label tree of the parameters (`mmreg.param_labels(model)`); the classifier
      kernel is the one 2-D leaf labelled `head_label`, in Flax layout `[d, K]`.
    head_label: label of the classifier kernel ("head" for the fused head of a
      `MultimodalClassifier`, which is also the head of a one-modality model).
    momentum: EMA β of the class centres, 0.9 (trainer.py:32, :47; centres start at 0, :37).
    variant: "authors" (default: the released trainer's projection mixed with γ, centres from
      0, every class projected) or "conflict_only" (mmreg's: remove only the conflicting
      component, centres start at a class's first batch mean, unseen classes untouched).
    gamma: γ of the authors' mix, 0.6 (trainer.py:212).

  The released trainer projects `fc` but evaluates `fc_cb` and selects on the test set
  (docs/methods.md#spa-proj); mmreg projects the head it trains and evaluates.

  Extra args used: `penultimate` `[B, d]`, the features fed to the classifier (for a
  `MultimodalClassifier`, `ModelOutput.fused`), and `labels` `[B]`. `params` is required.
  Centres are updated with the batch before the projection.
  """
  if variant not in ("authors", "conflict_only"):
    raise ValueError(f"variant={variant!r}; use 'authors' or 'conflict_only'")
  if not 0.0 <= gamma <= 1.0:
    raise ValueError(f"gamma={gamma} must lie in [0, 1]")
  init_mode = "first" if variant == "conflict_only" else "zero"

  def init_fn(params):
    leaves = jax.tree.leaves(params)
    dim, num_classes = leaves[head_kernel_index(param_labels, params, head_label, "spa_proj")].shape
    return SpAProjState(init_class_centres(num_classes, dim),
                        {"alignment_cosine": jnp.zeros((num_classes,)),
                         "conflict_fraction": jnp.zeros(())})

  def update_fn(updates, state, params=None, *, penultimate=None, labels=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("spa_proj needs params: call tx.update(grads, state, params, ...)")
    if penultimate is None or labels is None:
      raise ValueError(
          f"spa_proj needs the classifier's input features as `{PENULTIMATE}=` ([B, d]; for a "
          "MultimodalClassifier ModelOutput.fused) and `labels=` in tx.update")
    index = head_kernel_index(param_labels, updates, head_label, "spa_proj")
    leaves, treedef = jax.tree.flatten(updates)
    kernel = jax.tree.leaves(params)[index]
    if penultimate.shape[-1] != kernel.shape[0]:
      raise ValueError(f"spa_proj: penultimate features have dimension {penultimate.shape[-1]} "
                       f"but the classifier kernel is {tuple(kernel.shape)} ([d, K])")
    centres, centred = update_class_centres(state.centres, penultimate, labels,
                                            momentum=momentum, init=init_mode)
    seen = centres.seen if variant == "conflict_only" else jnp.ones_like(centres.seen)
    grad, conflict = project_toward_centres(leaves[index], kernel, centred.astype(kernel.dtype),
                                            seen, variant=variant, gamma=gamma)
    leaves[index] = grad.astype(leaves[index].dtype)
    diagnostics = {"alignment_cosine": alignment_cosine(kernel, centred).astype(jnp.float32),
                   "conflict_fraction": conflict.sum() / jnp.maximum(seen.sum(), 1)}
    return jax.tree.unflatten(treedef, leaves), SpAProjState(centres, diagnostics)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
