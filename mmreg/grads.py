"""Per-loss gradient stack: ∂L_i/∂θ for every named loss from one forward pass."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

PyTree = Any


@struct.dataclass
class LossGrads:
  """Gradients of L named losses, stacked on a leading axis of size L.

  `grads` has the structure of the parameters; each leaf has shape `[L, *param.shape]`.
  `names` is static (part of the tree definition), so methods can look losses up by
  name under `jax.jit` without retracing. `covered` (static, one bool per leaf, or None for
  all) says which leaves hold real per-loss gradients; the others are zeros
  (`per_loss_grads_over`), which methods that sum over leaves may skip. `nonzero` (static,
  one tuple of L bools per leaf, or None for all True) says which rows of each leaf can be
  non-zero (`mmreg.train.structured_grads.structured_loss_grads`: a unimodal loss never
  reaches the other encoders); the other rows are exact zeros, skipped by `weighted_sum` and by
  `mmreg.transforms._common.stack_rows`, `gram` and `common_scale`.
  """

  grads: PyTree
  names: tuple[str, ...] = struct.field(pytree_node=False)
  covered: tuple[bool, ...] | None = struct.field(pytree_node=False, default=None)
  nonzero: tuple[tuple[bool, ...], ...] | None = struct.field(pytree_node=False, default=None)

  def index(self, name: str) -> int:
    """Position of `name` on the loss axis."""
    if name not in self.names:
      raise KeyError(
          f"loss {name!r} is not in the per-loss gradient stack {self.names}; "
          "add it to the LossSpec or pass a stack that contains it")
    return self.names.index(name)

  def __getitem__(self, name: str) -> PyTree:
    i = self.index(name)
    return jax.tree.map(lambda g: g[i], self.grads)

  def require(self, names: Sequence[str], method: str) -> None:
    """Raise a clear error if any of `names` is absent from the stack."""
    missing = [n for n in names if n not in self.names]
    if missing:
      raise ValueError(
          f"{method} needs the gradients of losses {missing}, but loss_grads holds "
          f"{self.names}; name those losses in the LossSpec")

  def row_masks(self) -> tuple[tuple[bool, ...], ...]:
    """Per leaf, which of the L rows can be non-zero (from `covered` and `nonzero`)."""
    leaves = jax.tree.leaves(self.grads)
    covered = self.covered or (True,) * len(leaves)
    nonzero = self.nonzero or ((True,) * self.num_losses,) * len(leaves)
    return tuple(tuple(c and r for r in rows) for c, rows in zip(covered, nonzero, strict=True))

  def weighted_sum(self, weights: Mapping[str, float] | jax.Array) -> PyTree:
    """Σ_i w_i ∂L_i/∂θ: the total gradient for a weighted loss (zero rows skipped)."""
    w = self.weight_vector(weights)
    flat, treedef = jax.tree.flatten(self.grads)
    out = [weighted_rows(w, g, rows) for g, rows in zip(flat, self.row_masks(), strict=True)]
    return jax.tree.unflatten(treedef, out)

  def weight_vector(self, weights: Mapping[str, float] | jax.Array) -> jax.Array:
    if isinstance(weights, Mapping):
      unknown = set(weights) - set(self.names)
      if unknown:
        raise ValueError(f"weights name unknown losses {sorted(unknown)}; known: {self.names}")
      return jnp.asarray([weights.get(n, 0.0) for n in self.names], jnp.float32)
    return jnp.asarray(weights, jnp.float32)

  @property
  def num_losses(self) -> int:
    return len(self.names)


def weighted_rows(w: jax.Array, g: jax.Array, rows: Sequence[bool]) -> jax.Array:
  """Σ_{i: rows[i]} w_i g[i] for a stacked leaf `g` (`[L, ...]`; zeros if no row is set).

  One fused elementwise sum of static row slices: the unmarked rows are never read, and no
  `[L, ...]` temporary (a transposed or weighted copy of the leaf) is built."""
  idx = [i for i, r in enumerate(rows) if r]
  if not idx:
    return jnp.zeros(g.shape[1:], g.dtype)
  return sum((w[i].astype(g.dtype) * g[i] for i in idx[1:]), w[idx[0]].astype(g.dtype) * g[idx[0]])


def per_loss_grads(
    loss_fn: Callable[..., Any],
    params: PyTree,
    *args: Any,
    has_aux: bool = False,
) -> tuple[dict[str, jax.Array], LossGrads, Any]:
  """Value and per-loss gradients of a dict-valued loss, from one VJP.

  `loss_fn(params, *args)` returns `{name: scalar}` (or `({name: scalar}, aux)` with
  `has_aux=True`). The forward pass runs once; the pullback is vmapped over the rows of
  the identity matrix, so row i of every leaf is ∂L_i/∂θ.

  Returns `(losses, LossGrads, aux)`; `aux` is None without `has_aux`.
  """

  def stacked(p: PyTree) -> tuple[jax.Array, tuple[tuple[str, ...], Any]]:
    out = loss_fn(p, *args)
    losses, aux = out if has_aux else (out, None)
    if not isinstance(losses, Mapping) or not losses:
      raise TypeError("loss_fn must return a non-empty dict {loss_name: scalar}")
    names = tuple(losses)
    values = [jnp.asarray(losses[n]) for n in names]
    for n, v in zip(names, values, strict=True):
      if v.shape != ():
        raise ValueError(f"loss {n!r} has shape {v.shape}; every named loss must be a scalar")
    return jnp.stack(values), (names, aux)

  values, pullback, (names, aux) = jax.vjp(stacked, params, has_aux=True)
  cotangents = jnp.eye(len(names), dtype=values.dtype)
  (grads,) = jax.vmap(pullback)(cotangents)
  losses = {n: values[i] for i, n in enumerate(names)}
  return losses, LossGrads(grads=grads, names=names), aux


def per_loss_grads_over(
    loss_fn: Callable[..., Any],
    params: PyTree,
    mask: PyTree,
    weights: Mapping[str, float],
    *args: Any,
    has_aux: bool = False,
) -> tuple[dict[str, jax.Array], PyTree, LossGrads, Any]:
  """Per-loss gradients only over the leaves where `mask` is True, plus the total gradient.

  One forward pass and one VJP with respect to (covered, other) leaves; the pullback is
  vmapped over the L loss cotangents for the covered leaves only, and run once more with
  cotangent w = (w_1, …, w_L) for the total gradient Σ_i w_i ∂L_i/∂θ of the other leaves. The
  stack thus costs L× the covered parameters instead of L× all of them. In the returned
  `LossGrads`, the leaves outside the mask are zeros (a broadcast that XLA never builds unless
  a method reads them): methods that read only covered leaves see exactly the full stack.

  Returns `(losses, total_grads, LossGrads, aux)`.
  """
  flat, treedef = jax.tree.flatten(params)
  covered = [bool(m) for m in treedef.flatten_up_to(mask)]
  if not any(covered):
    raise ValueError("the per-loss gradient mask covers no parameter; cover at least one leaf "
                     "or drop the mask")

  def merge(inside, outside):
    it_in, it_out = iter(inside), iter(outside)
    return jax.tree.unflatten(treedef, [next(it_in) if c else next(it_out) for c in covered])

  def stacked(inside, outside):
    out = loss_fn(merge(inside, outside), *args)
    losses, aux = out if has_aux else (out, None)
    if not isinstance(losses, Mapping) or not losses:
      raise TypeError("loss_fn must return a non-empty dict {loss_name: scalar}")
    names = tuple(losses)
    return jnp.stack([jnp.asarray(losses[n]) for n in names]), (names, aux)

  inside = [x for x, c in zip(flat, covered, strict=True) if c]
  outside = [x for x, c in zip(flat, covered, strict=True) if not c]
  values, pullback, (names, aux) = jax.vjp(stacked, inside, outside, has_aux=True)
  if values.ndim != 1:
    raise ValueError("every named loss must be a scalar")
  w = LossGrads(grads=(), names=names).weight_vector(weights).astype(values.dtype)
  _, total_out = pullback(w)
  # The stacked pass starts once the total one is done, so the two never hold their
  # cotangents at the same time.
  total_out, rows = jax.lax.optimization_barrier(
      (total_out, jnp.eye(len(names), dtype=values.dtype)))
  stack_in, _ = jax.vmap(pullback)(rows)
  loss_grads_in = LossGrads(grads=stack_in, names=names)
  total_in = loss_grads_in.weighted_sum(w)
  zeros = [jnp.broadcast_to(jnp.zeros((), x.dtype), (len(names), *x.shape)) for x in outside]
  losses = {n: values[i] for i, n in enumerate(names)}
  stack = LossGrads(grads=merge(stack_in, zeros), names=names, covered=tuple(covered))
  return losses, merge(total_in, total_out), stack, aux
