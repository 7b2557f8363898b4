"""Methods on the per-loss gradient stack: argument checks, Gram matrix and Σ_k c_k ∇L_k.

The contract of a stack method (PCGrad, MGDA, DGL, MMPareto): on every leaf the stack covers
(`stack_rows` is not None), its output is a function of `loss_grads` only; `updates` passes
through unchanged on the other leaves. It therefore assumes that, on the leaves it recomputes,
the incoming `updates` are Σ_k w_k ∇L_k of its stack and loss weights. A transform placed before
it in a chain (a clip, a scale) breaks that, and so does `optax.MultiSteps`, which hands the
inner transform the accumulated `updates` but only the last micro-batch's `loss_grads`: both
would be silently discarded. `check_stack_updates` makes that misuse an error
(`StackContractError`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmreg.grads import weighted_rows
from mmreg.transforms._common import check_loss_stack, common_scale, gram, stack_rows

UPDATES_TOLERANCE = 1e-3


class StackContractError(ValueError):
  """A stack method's incoming `updates` are not Σ_k w_k ∇L_k of its `loss_grads`."""


def check_param_labels(param_labels: Any, method: str, *, required: bool) -> None:
  """Construction-time check of a transform's first argument, `param_labels`."""
  if param_labels is None:
    if required:
      raise ValueError(f"{method} needs param_labels as its first argument: the label tree of "
                       "the params (mmreg.param_labels(model)) or a function returning one")
    return
  if callable(param_labels):
    return
  if isinstance(param_labels, str) or (
      isinstance(param_labels, (list, tuple)) and param_labels
      and all(isinstance(x, str) for x in param_labels)):
    raise TypeError(f"{method}'s first argument is param_labels (a label tree such as "
                    f"mmreg.param_labels(model)); got {param_labels!r}, which looks like loss "
                    "names: pass them as loss_names=[...]")
  leaves = jax.tree.leaves(param_labels)
  if not leaves or not all(isinstance(x, str) for x in leaves):
    raise TypeError(f"{method}: param_labels must be a tree of strings shaped like the params "
                    f"(mmreg.param_labels(model)), got a {type(param_labels).__name__} with "
                    f"leaves {[type(x).__name__ for x in leaves[:3]]}")


def loss_selection(loss_grads: Any, loss_names: Sequence[str] | None,
                   loss_weights: Mapping[str, float] | None, method: str, min_losses: int = 2
                   ) -> tuple[tuple[int, ...], jax.Array]:
  """Positions of the losses a method combines (default: all in the stack), and the weight
  w_k of every loss in the stack (`loss_weights`, default 1)."""
  check_loss_stack(loss_grads, loss_names or (), method)
  names = tuple(loss_names) if loss_names is not None else loss_grads.names
  if len(names) < min_losses:
    raise ValueError(f"{method} combines at least {min_losses} losses, got {list(names)}")
  weights = loss_weights or {}
  unknown = set(weights) - set(loss_grads.names)
  if unknown:
    raise ValueError(f"{method}: loss_weights name losses {sorted(unknown)} that are not in "
                     f"loss_grads ({list(loss_grads.names)})")
  w = jnp.asarray([weights.get(n, 1.0) for n in loss_grads.names], jnp.float32)
  return tuple(loss_grads.index(n) for n in names), w


def weighted_gram(loss_grads: Any, combined: Sequence[int], w: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
  """(G/s², s): the Gram matrix G of the weighted gradients w_i ∇L_i of the `combined` losses,
  divided by the square of one power of two s near the largest gradient entry (finite for any
  finite gradients; the min-norm weights and PCGrad's coefficients do not depend on s)."""
  selected = set(combined)
  masks = [tuple(r and i in selected for i, r in enumerate(m)) for m in loss_grads.row_masks()]
  if not any(any(m) for m in masks):
    return jnp.zeros((len(combined),) * 2, jnp.float32), jnp.ones((), jnp.float32)
  # The Gram matrix of the whole stack with the unselected and zero rows skipped (never read),
  # then the selected block: no gathered copy of the selected rows.
  G, s = gram(jax.tree.leaves(loss_grads.grads), masks)
  pick = np.asarray(combined)
  wc = w[pick]
  return G[pick[:, None], pick[None, :]] * wc[:, None] * wc[None, :], s


def check_rows_match(updates: Any, rows: Sequence[jax.Array | None], method: str) -> None:
  """Raise unless `rows` (from `stack_rows`) are `[L, *leaf.shape]` for the leaves of `updates`."""
  u_leaves = jax.tree.leaves(updates)
  if len(rows) != len(u_leaves) or any(
      r is not None and r.shape[1:] != u.shape for r, u in zip(rows, u_leaves, strict=True)):
    raise ValueError(f"{method}: loss_grads does not match the updates ({len(rows)} stacked "
                     f"leaves vs {len(u_leaves)} update leaves, or different shapes); build the "
                     "stack from the same parameters the updates are for")


def combine(updates: Any, loss_grads: Any, coefficients: jax.Array, method: str) -> Any:
  """Σ_k c_k ∇L_k over every loss of the stack on the leaves it covers; `updates` elsewhere."""
  rows = stack_rows(loss_grads, loss_grads.names)
  check_rows_match(updates, rows, method)
  flat, treedef = jax.tree.flatten(updates)
  out = [u if r is None else weighted_rows(coefficients, r, m).astype(u.dtype)
         for u, r, m in zip(flat, rows, loss_grads.row_masks(), strict=True)]
  return jax.tree.unflatten(treedef, out)


def full_coefficients(combined: Sequence[int], w: jax.Array, c: jax.Array) -> jax.Array:
  """Per stack loss: c_i·w_i for the combined losses, w_k for the others."""
  return w.at[jnp.asarray(combined)].multiply(c)


def updates_tolerance(arrays: Sequence[jax.Array]) -> float:
  """`UPDATES_TOLERANCE`, or 8 ulps of the least precise dtype among `arrays` if larger
  (bfloat16: 2^-4, float16: 2^-7): the stack and the joint gradient round differently."""
  eps = max(float(jnp.finfo(a.dtype).eps) for a in arrays)
  return max(UPDATES_TOLERANCE, 8.0 * eps)


def updates_mismatch(updates: Any, loss_grads: Any, w: jax.Array,
                     recomputed: Sequence[bool] | None = None,
                     rows: Sequence[Any] | None = None) -> tuple[jax.Array, float]:
  """(‖u − Σ_k w_k ∇L_k‖ / max(‖u‖, ‖Σ_k w_k ∇L_k‖), tolerance) over the leaves a method
  recomputes from the stack (`recomputed`, one bool per leaf; default every covered leaf);
  0 when both are 0, NaN for non-finite inputs. Computed on values divided by one power of two,
  so it is finite for any finite gradients; the weighted sums read row slices of the stack.
  `rows`: the stack's `stack_rows`, where the caller has them already."""
  rows = stack_rows(loss_grads, loss_grads.names) if rows is None else rows
  masks = loss_grads.row_masks()
  flat = jax.tree.leaves(updates)
  recomputed = recomputed if recomputed is not None else [True] * len(flat)
  triples = [(u, r, m) for u, r, m, c in zip(flat, rows, masks, recomputed, strict=True)
             if c and r is not None]
  if not triples:
    return jnp.zeros((), jnp.float32), UPDATES_TOLERANCE
  s = common_scale([*(u[None] for u, _, _ in triples), *(r for _, r, _ in triples)],
                   [*(None for _ in triples), *(m for _, _, m in triples)])
  w_over_s = jnp.asarray(w, jnp.float32) / s  # Σ (w_k/s) g_k: row slices, no scaled stack copy
  diff = ref = given = jnp.zeros((), jnp.float32)
  for u, r, m in triples:
    u32 = u.astype(jnp.float32) / s
    want = weighted_rows(w_over_s, r.astype(jnp.float32), m)
    diff = diff + jnp.sum(jnp.square(u32 - want))
    ref = ref + jnp.sum(jnp.square(want))
    given = given + jnp.sum(jnp.square(u32))
  scale = jnp.sqrt(jnp.maximum(ref, given))
  rel = jnp.where(scale > 0, jnp.sqrt(diff) / jnp.where(scale > 0, scale, 1.0), 0.0)
  return rel, updates_tolerance([a for u, r, _ in triples for a in (u, r)])


def _mismatch_message(method: str, rel: float, tolerance: float) -> str:
  return (f"{method}: the incoming updates differ from the weighted sum of its loss_grads by "
          f"{rel:.3g} (relative, on the leaves it recomputes from the stack; tolerance "
          f"{tolerance:g}), so it would silently discard what changed them. Likely causes: a "
          f"transform before {method} in the chain (a clip, a scale), optax.MultiSteps "
          "(accumulated updates, last micro-batch's loss_grads), or loss_weights that differ "
          f"from the loss spec's. Fix: put such transforms after {method}; to accumulate, "
          f"average the updates and the loss_grads stacks yourself before {method}; pass the "
          "spec's loss_weights; or check_updates=False")


def check_stack_updates(updates: Any, loss_grads: Any, w: jax.Array, method: str,
                        recomputed: Sequence[bool] | None = None) -> None:
  """Raise `StackContractError` unless `updates` equal Σ_k w_k ∇L_k on the leaves the method
  recomputes (`updates_mismatch` at most `updates_tolerance`).

  Outside a trace it raises at once. Under `jit` the comparison runs on the device and only a
  mismatch calls back to the host (`jax.debug.callback` in a `lax.cond`), where the error is
  raised; it reaches the caller as a `JaxRuntimeError` whose message ends with this one. Under
  `vmap` the cond's branches both run, so the callback runs every step and raises only if
  some element mismatches. `checkify` was not chosen: it would need every caller to wrap its
  step in `checkify.checkify`. Non-finite inputs (NaN difference) are left to the caller's
  non-finite handling (`optax.apply_if_finite`, the training loop's checks)."""
  rows = stack_rows(loss_grads, loss_grads.names)
  check_rows_match(updates, rows, method)
  rel, tolerance = updates_mismatch(updates, loss_grads, w, recomputed, rows)

  def fail(value: Any) -> None:
    value = np.asarray(value)
    if np.any(value > tolerance):  # under vmap both branches of the cond run
      raise StackContractError(_mismatch_message(method, float(np.max(value)), tolerance))

  if not isinstance(rel, jax.core.Tracer):
    fail(rel)
    return
  jax.lax.cond(rel > tolerance, lambda: jax.debug.callback(fail, rel), lambda: None)
