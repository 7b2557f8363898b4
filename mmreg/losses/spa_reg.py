"""SpA-Reg: a loss that pulls each class weight toward its class centre (space alignment for
long-tailed neural collapse, arXiv 2512.07844)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mmreg.monitors.class_centres import (
    ClassCentres,
    alignment_cosine,
    centred_centres,
    ema_centres,
)


def spa_reg_loss(kernel: jax.Array, features: jax.Array, labels: jax.Array,
                 centres: ClassCentres, *, momentum: float = 0.9,
                 stop_gradient: bool = True) -> jax.Array:
  """L = (1/K')·Σ_{c seen} (1 − cos(w_c, μ_c − μ̄)); multiply by λ yourself.

  μ_c are the EMA centres `centres` (e.g. `mmreg.find_class_centres(opt_state)`) advanced by
  this batch's class means of `features` `[B, d]` (the classifier's input), μ̄ their unweighted
  mean over the K' seen classes, `kernel` the `[d, K]` classifier (column w_c per class).
  With `stop_gradient=True` (sg(μ_c), mmreg's default) only the classifier moves toward the
  centres; with False the gradient also moves this batch's features toward the weights.
  """
  if features.shape[-1] != kernel.shape[0]:
    raise ValueError(f"features have dimension {features.shape[-1]} but the kernel is "
                     f"{tuple(kernel.shape)} ([d, K])")
  if stop_gradient:
    features = jax.lax.stop_gradient(features)
  state = ema_centres(centres, features, labels, momentum=momentum)
  centred = centred_centres(state)
  cos = alignment_cosine(kernel, centred)
  seen = state.seen.astype(cos.dtype)
  return jnp.sum(seen * (1.0 - cos)) / jnp.maximum(seen.sum(), 1.0)
