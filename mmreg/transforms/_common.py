"""Helpers shared by the balancing transforms: labels, extras, flat leaf arithmetic."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mmreg.losses.geometry import power_of_two_scale
from mmreg.models.labels import ROLE_LABELS
from mmreg.tree import check_modalities, flat_labels

PyTree = Any
ONE_STAGE_SIZE = 4096  # row size reduced in one stage by `row_reduce`


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
  `stack_row_masks` gives) skips the rows known to be zero; the rows of a leaf are reduced where
  they lie (static slices, one variadic reduction), so neither the stack nor a selection of its
  rows is copied. s is at least 2^-126 (`peak_scale`)."""
  masks = masks if masks is not None else [None] * len(arrays)
  return peak_scale([p for a, r in zip(arrays, masks, strict=True) if a is not None
                     for p in row_reduce(a, [(i,) for i in row_indices(a, r)], jnp.abs,
                                         jnp.maximum)])


def row_indices(a: jax.Array, rows: Sequence[bool] | None) -> list[int]:
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


def row_reduce(g: jax.Array, groups: Sequence[tuple[int, ...]],
               term: Callable[..., jax.Array], combine: Callable[[jax.Array, jax.Array], jax.Array]
               ) -> list[jax.Array]:
  """[reduction of term(g_i, ...) for each group of row positions] over the rows of one stacked
  leaf `g` (`[L, ...]`), in float32, with `combine` (add, maximum) and 0 as its identity. All
  groups come from one variadic reduction, which reads each row once where it lies (static
  slices: no gathered or scaled copy is stored). It reduces along the leaf's last axis, then
  the partial results, so a float32 sum's round-off stays near a pairwise sum's; a row of at
  most `ONE_STAGE_SIZE` elements, and a 1-D row (a stacked bias) of any size, is reduced in one
  stage."""
  if not groups:
    return []
  size = math.prod(g.shape[1:])
  width = g.shape[-1] if g.ndim > 1 and size > ONE_STAGE_SIZE else size
  rows = {i: g[i].astype(jnp.float32).reshape(-1, width) for grp in groups for i in grp}
  terms = tuple(term(*(rows[i] for i in grp)) for grp in groups)
  partial = jax.lax.reduce(terms, (jnp.float32(0),) * len(groups),
                           lambda x, y: tuple(combine(u, v) for u, v in zip(x, y, strict=True)),
                           (1,))
  if width == size:  # one row: the reduction is complete
    return [p[0] for p in partial]
  return [jax.lax.reduce(p, jnp.float32(0), combine, (0,)) for p in partial]


def peak_scale(peaks: Sequence[jax.Array]) -> jax.Array:
  """One power of two above the largest of `peaks` (max |entry| values; 1 if none or all zero),
  at least 2^-126 (float32's smallest normal), so 1/s is finite and multiplying by it exact."""
  if not peaks:
    return power_of_two_scale(jnp.zeros((1,), jnp.float32))
  return jnp.maximum(power_of_two_scale(jnp.stack(peaks)), 2.0 ** -126)


def leaf_gram(g: jax.Array, rows: Sequence[bool] | None, s: jax.Array) -> jax.Array:
  """`[L, L]` Gram matrix of the rows of one stacked leaf `g` (`[L, ...]`), divided by s² (s a
  power of two, as `common_scale` gives): ⟨g_i/s, g_j/s⟩ for every pair of the rows that `rows`
  marks, from one variadic reduction (`row_reduce`); the other rows give zeros without being
  read. Dividing by s is exact and keeps the sums finite for any finite g."""
  L = g.shape[0]
  idx = row_indices(g, rows)
  pairs = [(i, j) for p, i in enumerate(idx) for j in idx[p:]]
  inv_s = 1.0 / s
  entries = {}
  if pairs:
    values = row_reduce(g, pairs, lambda a, b: (a * inv_s) * (b * inv_s), jnp.add)
    for (i, j), v in zip(pairs, values, strict=True):
      entries[i, j] = entries[j, i] = v
  zero = jnp.zeros((), jnp.float32)
  return jnp.stack([jnp.stack([entries.get((i, j), zero) for j in range(L)]) for i in range(L)])


def leaf_grams(rows: Sequence[jax.Array | None],
               masks: Sequence[Sequence[bool] | None] | None = None
               ) -> tuple[list[jax.Array | None], jax.Array]:
  """([G_l/s²], s): the `[L, L]` Gram matrix of each leaf shaped `[L, ...]` (None for a None
  leaf or one without non-zero rows) on g/s, s = `common_scale(rows)`, so they are finite for
  any finite g. `masks` (optional, from `stack_row_masks`) skips the rows known to be zero. Two
  passes over each leaf's non-zero rows: one variadic reduction for their peaks, one for all
  their dot products (k(k+1)/2 for k rows)."""
  masks = masks if masks is not None else [None] * len(rows)
  used = [j for j, (r, m) in enumerate(zip(rows, masks, strict=True))
          if r is not None and _any(m)]
  out: list[jax.Array | None] = [None] * len(rows)
  if not used:
    return out, peak_scale([])
  s = common_scale([rows[j] for j in used], [masks[j] for j in used])
  for j in used:
    out[j] = leaf_gram(rows[j], masks[j], s)
  return out, s


def gram(rows: Sequence[jax.Array | None],
         masks: Sequence[Sequence[bool] | None] | None = None) -> tuple[jax.Array, jax.Array]:
  """(G/s², s): G_ij = Σ_leaves ⟨g_i, g_j⟩ for leaves shaped `[L, ...]` (None leaves contribute
  0), from `leaf_grams`."""
  L = next(r for r in rows if r is not None).shape[0]
  grams, s = leaf_grams(rows, masks)
  return sum((g for g in grams if g is not None), jnp.zeros((L, L), jnp.float32)), s


def check_loss_stack(loss_grads: Any, names: Sequence[str], method: str) -> None:
  require(loss_grads, "loss_grads", method, "the per-loss gradient stack; build the train step "
          "with with_loss_grads=True")
  loss_grads.require(list(names), method)
