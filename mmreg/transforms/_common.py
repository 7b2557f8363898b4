"""Helpers shared by the balancing transforms: labels, extras, flat leaf arithmetic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mmreg.losses.geometry import power_of_two_scale
from mmreg.models.labels import ROLE_LABELS
from mmreg.tree import check_modalities, flat_labels

PyTree = Any


def resolve_labels(param_labels: Any, updates: PyTree, modalities: Sequence[str] | None,
                   method: str, *, min_modalities: int = 2) -> tuple[list[str], tuple[str, ...]]:
  """Labels aligned with the leaves of `updates`, and the modalities the method balances.

  Without explicit `modalities`, every label that is not a role label (fusion, head, aux_head,
  projector) is a modality, in order of first appearance.
  """
  labels = flat_labels(param_labels, updates)
  if modalities is None:
    modalities = tuple(dict.fromkeys(lab for lab in labels if lab not in ROLE_LABELS))
  modalities = tuple(modalities)
  check_modalities(labels, modalities, method)
  if len(modalities) < min_modalities:
    raise ValueError(f"{method} balances at least {min_modalities} modalities, got "
                     f"{list(modalities)}; it has nothing to balance with one modality")
  return labels, modalities


def require(value: Any, name: str, method: str, why: str) -> Any:
  """Raise a clear error if the extra argument `name` was not passed."""
  if value is None:
    raise ValueError(f"{method} needs the `{name}` extra argument ({why}); pass it to "
                     f"tx.update(..., {name}=...) (mmreg.train.make_train_step does)")
  return value


def require_params(params: PyTree, method: str) -> PyTree:
  if params is None:
    raise ValueError(f"{method} needs the current parameters: call tx.update(updates, state, "
                     "params, ...)")
  return params


def in_epoch_window(epoch: Any, start: Any, end: Any) -> jax.Array:
  """start ≤ epoch ≤ end (end=None: no upper bound)."""
  epoch = jnp.asarray(epoch, jnp.int32)
  active = epoch >= start
  return active if end is None else active & (epoch <= end)


def leaves(tree: PyTree) -> list[jax.Array]:
  return jax.tree.leaves(tree)


def unflatten_like(tree: PyTree, flat: list[jax.Array]) -> PyTree:
  return jax.tree.unflatten(jax.tree.structure(tree), flat)


def dot(a: Sequence[jax.Array], b: Sequence[jax.Array]) -> jax.Array:
  """Σ over leaves of ⟨a_l, b_l⟩ in float32."""
  return sum((jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32)) for x, y in zip(a, b,
                                                                                    strict=True)),
             jnp.zeros((), jnp.float32))


def common_scale(arrays: Sequence[jax.Array | None],
                 masks: Sequence[Sequence[bool] | None] | None = None) -> jax.Array:
  """One power of two above the largest |entry| of all `arrays` (1 if all zero); dividing by
  it is exact and keeps float32 dot products from overflowing (|g| ≳ 1e19) or underflowing.
  `masks` (optional, one per array: which rows of its leading axis can be non-zero, as
  `stack_row_masks` gives) skips the rows known to be zero; each row is reduced where it lies
  (a static slice), so neither the stack nor a selection of its rows is copied. s is at least
  2^-126 (float32's smallest normal), so 1/s is finite and multiplying by it is exact too."""
  masks = masks if masks is not None else [None] * len(arrays)
  peaks = [jnp.max(jnp.abs(a[i].astype(jnp.float32)))
           for a, r in zip(arrays, masks, strict=True) if a is not None
           for i in _row_indices(a, r)]
  if not peaks:
    return power_of_two_scale(jnp.zeros((1,), jnp.float32))
  return jnp.maximum(power_of_two_scale(jnp.stack(peaks)), 2.0 ** -126)


def _row_indices(a: jax.Array, rows: Sequence[bool] | None) -> list[int]:
  """Positions of the rows of `a` that `rows` marks (all of them for None)."""
  return list(range(a.shape[0])) if rows is None else [i for i, r in enumerate(rows) if r]


def _any(rows: Sequence[bool] | None) -> bool:
  return rows is None or any(rows)


def stack_rows(loss_grads: Any, names: Sequence[str]) -> list[jax.Array | None]:
  """Leaves of the per-loss stack restricted to `names`, each `[len(names), *shape]`; None for
  a leaf whose selected rows are all zero (not covered, or no selected loss reaches it)."""
  idx = tuple(loss_grads.index(n) for n in names)
  leaves = jax.tree.leaves(loss_grads.grads)
  masks = loss_grads.row_masks()
  whole = idx == tuple(range(loss_grads.num_losses))  # the whole stack in order: no copy
  return [None if not any(m[i] for i in idx) else g if whole else g[jnp.asarray(idx)]
          for g, m in zip(leaves, masks, strict=True)]


def stack_row_masks(loss_grads: Any, names: Sequence[str]) -> list[tuple[bool, ...]]:
  """Per leaf, which of the rows `stack_rows(loss_grads, names)` returns can be non-zero."""
  idx = tuple(loss_grads.index(n) for n in names)
  return [tuple(m[i] for i in idx) for m in loss_grads.row_masks()]


def scaled_dot(a: jax.Array, b: jax.Array | None, inv_s: jax.Array,
               inv_s_b: jax.Array | None = None) -> jax.Array:
  """⟨a/s, b/s⟩ (b = None: ‖a/s‖²) in float32 as one fused multiply-and-sum, with `inv_s` = 1/s
  for a power of two s (multiplying by it is exact); `inv_s_b` (default `inv_s`) scales b."""
  a = a.astype(jnp.float32) * inv_s
  if b is None:
    return jnp.sum(jnp.square(a))
  return jnp.sum(a * (b.astype(jnp.float32) * (inv_s if inv_s_b is None else inv_s_b)))


def leaf_gram(g: jax.Array, rows: Sequence[bool] | None, s: jax.Array) -> jax.Array:
  """`[L, L]` Gram matrix of the rows of one stacked leaf `g` (`[L, ...]`), divided by s² (s a
  power of two, as `common_scale` gives); the rows that `rows` marks as zero give zeros without
  being read. Each entry is one fused multiply-and-sum of static row slices, so the leaf is
  neither gathered nor rescaled as a copy: every product gets its own copy of the scalar 1/s
  (through an optimization barrier), since a scaled row shared by two sums would be stored."""
  L = g.shape[0]
  idx = _row_indices(g, rows)
  pairs = [(i, j) for p, i in enumerate(idx) for j in idx[p:]]
  inv_s = jax.lax.optimization_barrier((1.0 / s,) * (2 * len(pairs)))
  entries = {}
  for k, (i, j) in enumerate(pairs):
    b = None if i == j else g[j]
    entries[i, j] = entries[j, i] = scaled_dot(g[i], b, inv_s[2 * k], inv_s[2 * k + 1])
  zero = jnp.zeros((), jnp.float32)
  return jnp.stack([jnp.stack([entries.get((i, j), zero) for j in range(L)]) for i in range(L)])


def gram(rows: Sequence[jax.Array | None],
         masks: Sequence[Sequence[bool] | None] | None = None) -> tuple[jax.Array, jax.Array]:
  """(G/s², s): G_ij = Σ_leaves ⟨g_i, g_j⟩ for leaves shaped `[L, ...]` (None leaves contribute
  0), computed on g/s with s = `common_scale(rows)` so it stays finite for any finite g.
  `masks` (optional, from `stack_row_masks`) skips the rows known to be zero: a leaf with k
  non-zero rows costs k(k+1)/2 fused dot products instead of L(L+1)/2."""
  masks = masks if masks is not None else [None] * len(rows)
  pairs = [(r, m) for r, m in zip(rows, masks, strict=True) if r is not None and _any(m)]
  L = next(r for r in rows if r is not None).shape[0]
  if not pairs:
    return jnp.zeros((L, L), jnp.float32), power_of_two_scale(jnp.zeros((1,), jnp.float32))
  s = common_scale([r for r, _ in pairs], [m for _, m in pairs])
  return sum((leaf_gram(r, m, s) for r, m in pairs), jnp.zeros((L, L), jnp.float32)), s


def check_loss_stack(loss_grads: Any, names: Sequence[str], method: str) -> None:
  require(loss_grads, "loss_grads", method, "the per-loss gradient stack; build the train step "
          "with with_loss_grads=True")
  loss_grads.require(list(names), method)
