"""PCGrad: gradient surgery for multi-task learning (Yu et al., NeurIPS 2020).

For each loss i, g_i^PC starts at g_i and, for every loss j (i itself included) in turn, loses
its component along g_j when they conflict: if g_i^PC·g_j < 0, g_i^PC ← g_i^PC −
(g_i^PC·g_j/‖g_j‖²)g_j. The update is Σ_i g_i^PC. This is the authors' code
(tianheyu927/PCGrad: PCGrad_tf.py:44-49 the projection over every task k, :51-65 the sum); its
`tf.random.shuffle(loss)` (:36) discards its result, so every task visits the others in stack
order, the default here. `random_order=True` draws a fresh order per loss and step (mmreg's
option, what :36 appears to intend). A zero g_j is skipped (the authors' code divides 0/0).
Gradients are the weighted rows w_i ∇L_i of the per-loss stack. Every g_i^PC stays in the span
of the g_k, so the surgery runs on coefficient vectors and the L×L Gram matrix; the update is one
weighted sum of the stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mmreg.transforms._stack import (
  check_param_labels,
  check_stack_updates,
  combine,
  full_coefficients,
  loss_selection,
  weighted_gram,
)


class PCGradState(NamedTuple):
  key: jax.Array
  diagnostics: dict[str, jax.Array]


def pcgrad_coefficients(G: jax.Array, orders: jax.Array) -> jax.Array:
  """c with Σ_i g_i^PC = Σ_k c_k g_k, from the Gram matrix `[L, L]` and, per loss i, the order
  `orders[i]` (a permutation of 0..L−1) in which the losses are visited."""
  L = G.shape[0]
  eye = jnp.eye(L, dtype=G.dtype)
  total = jnp.zeros((L,), G.dtype)
  for i in range(L):
    a = eye[i]
    for pos in range(L):
      j = orders[i, pos]
      inner = a @ G[:, j]
      conflict = (inner < 0) & (G[j, j] > 0)
      a = a - jnp.where(conflict, inner / jnp.where(G[j, j] > 0, G[j, j], 1.0), 0.0) * eye[j]
    total = total + a
  return total


def pcgrad(param_labels: Any = None, *, loss_names: Sequence[str] | None = None,
           loss_weights: Mapping[str, float] | None = None, random_order: bool = False,
           seed: int = 0, check_updates: bool = True) -> optax.GradientTransformationExtraArgs:
  """PCGrad on the per-loss gradient stack.

  Args:
    param_labels: the label tree (or None); PCGrad acts on every leaf the stack covers, so it
      is only checked, for a constructor shared by every transform.
    loss_names: losses to de-conflict (default: every loss in `loss_grads`).
    loss_weights: w_k of every loss in the stack (default 1), as in the LossSpec; losses not
      de-conflicted are added as w_k ∇L_k.
    random_order: False (the authors' code) visits the losses in stack order; True in a fresh
      random order per loss and step.
    seed: order seed when no `key` extra is passed.
    check_updates: raise `StackContractError` when the incoming `updates` are not Σ_k w_k ∇L_k
      on the covered leaves (a transform before it, `optax.MultiSteps`; see
      `mmreg.transforms._stack.check_stack_updates`).

  Extras used: `loss_grads`, `key` (optional). On the leaves the stack covers the output
  depends on `loss_grads` only (see `mmreg.transforms._stack`).
  """
  check_param_labels(param_labels, "pcgrad", required=False)

  def init_fn(params):
    del params
    return PCGradState(jax.random.PRNGKey(seed), {"conflicts": jnp.zeros((), jnp.float32)})

  def update_fn(updates, state, params=None, **extra):
    del params
    loss_grads = extra.get("loss_grads")
    combined, w = loss_selection(loss_grads, loss_names, loss_weights, "pcgrad")
    if check_updates:
      check_stack_updates(updates, loss_grads, w, "pcgrad")
    L = len(combined)
    key, next_key = jax.random.split(state.key)
    if extra.get("key") is not None:
      key = extra["key"]
    if random_order:
      orders = jax.vmap(lambda k: jax.random.permutation(k, L))(jax.random.split(key, L))
    else:
      orders = jnp.tile(jnp.arange(L), (L, 1))
    G, _ = weighted_gram(loss_grads, combined, w)
    coefficients = pcgrad_coefficients(G, orders)
    conflicts = jnp.sum(jnp.triu(G < 0, k=1)).astype(jnp.float32)
    new = combine(updates, loss_grads, full_coefficients(combined, w, coefficients), "pcgrad")
    return new, PCGradState(next_key, {"conflicts": conflicts})

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
