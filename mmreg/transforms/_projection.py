"""Projections as coefficients: d_⊥ = d − Σ_b α_b·(v_b/s_b), the scalars α_b and 1/s_b computed
from reductions, so a caller forms d_⊥ in one elementwise pass where it needs it (with one
direction, no copy of d, of a scaled v_b or of a basis vector is stored)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mmreg.transforms._common import peak_scale


def inverse_scale(leaves: Sequence[jax.Array | None]) -> jax.Array:
  """1/s for s = `peak_scale` of max|x| over the leaves: multiplying by it is exact and keeps
  float32 sums of squares finite."""
  return 1.0 / peak_scale([jnp.max(jnp.abs(x.astype(jnp.float32)))
                           for x in leaves if x is not None])


def direction_coefficient(d: jax.Array, g: jax.Array, eps: float = 1e-12
                          ) -> tuple[jax.Array, jax.Array]:
  """(c, 1/s) with d − c·(g/s) = d − (⟨d, g⟩ / (‖g‖² + ε))·g (= d when g = 0), per tensor as in
  RedReg's code.

  c = ⟨d, ĝ⟩ / (‖ĝ‖² + ε/s²) with ĝ = g/s, s a power of two near max|g| (the same value), so
  ‖g‖² never overflows; ε/s² is capped where it would overflow (‖ĝ‖² ≤ size). Each reduction
  gets its own copy of 1/s (optimization barrier), so ĝ is never stored.
  """
  inv = inverse_scale([g])
  inv_a, inv_b = jax.lax.optimization_barrier((inv, inv))
  d32, g32 = d.astype(jnp.float32), g.astype(jnp.float32)
  num = jnp.sum(d32 * (g32 * inv_a))
  den = jnp.sum(jnp.square(g32 * inv_b))
  return num / (den + jnp.minimum(eps * inv * inv, 1e30)), inv


def _sum_dots(a: Sequence[jax.Array], b: Sequence[jax.Array | None] | None,
              inv_b: jax.Array) -> jax.Array:
  """Σ_leaves ⟨a, b·inv_b⟩ (b None: Σ ‖a·inv_b‖²), one fused reduction per leaf, each with its
  own copy of inv_b; None leaves of b count as zero."""
  pairs = [(x, None if b is None else y) for x, y in zip(a, b or a, strict=True)
           if y is not None]
  copies = jax.lax.optimization_barrier((inv_b,) * max(len(pairs), 1))
  total = jnp.zeros((), jnp.float32)
  for (x, y), inv in zip(pairs, copies, strict=False):
    x = x.astype(jnp.float32)
    total = total + (jnp.sum(jnp.square(x * inv)) if y is None
                     else jnp.sum(x * (y.astype(jnp.float32) * inv)))
  return total


def span_coefficients(d: Sequence[jax.Array], vectors: Sequence[Sequence[jax.Array | None]],
                      tol: float = 1e-4) -> tuple[jax.Array, jax.Array]:
  """(α, 1/s), each `[k]`, with d − Σ_b α_b·(v_b/s_b) = d − P_span(vectors) d: the component of
  d (a leaf list) orthogonal to every vector (leaf lists aligned with d; a None leaf is zero).

  The basis is modified Gram–Schmidt on v_b/s_b (s_b a power of two above max|v_b|): a vector
  whose residual norm is at most `tol`·its norm (collinear with earlier ones) or that is zero
  adds nothing, so the basis spans exactly the vectors' span and never divides by ~0. The
  coefficients of each basis vector over the v_b are tracked beside it. One vector needs only
  reductions (nothing of d's size is stored); more vectors store their residuals.
  """
  k = len(vectors)
  inv = jnp.stack([inverse_scale(v) for v in vectors])
  tiny = jnp.finfo(jnp.float32).tiny
  if k == 1:
    (v,) = vectors
    vv = _sum_dots(v, None, inv[0])
    keep = jnp.sqrt(vv) > tiny  # a single nonzero vector is never collinear with an earlier one
    alpha = jnp.where(keep, _sum_dots(d, v, inv[0]) / jnp.where(keep, vv, 1.0), 0.0)
    return alpha[None], inv
  scaled = [[jnp.zeros(x.shape, jnp.float32) if y is None else y.astype(jnp.float32) * inv[b]
             for x, y in zip(d, v, strict=True)] for b, v in enumerate(vectors)]
  basis: list[tuple[list[jax.Array], jax.Array]] = []  # (q, q's coefficients over the v_b/s_b)
  for b, v in enumerate(scaled):
    u, t = list(v), jnp.zeros((k,), jnp.float32).at[b].set(1.0)
    for q, tq in basis:
      c = _sum_dots(u, q, jnp.ones((), jnp.float32))
      u = [x - c * y for x, y in zip(u, q, strict=True)]
      t = t - c * tq
    norm_u = jnp.sqrt(_sum_dots(u, None, jnp.ones((), jnp.float32)))
    norm_v = jnp.sqrt(_sum_dots(v, None, jnp.ones((), jnp.float32)))
    keep = (norm_u > tol * norm_v) & (norm_v > tiny)
    inv_n = jnp.where(keep, 1.0 / jnp.where(keep, norm_u, 1.0), 0.0)
    basis.append(([x * inv_n for x in u], t * inv_n))
  alpha = sum((_sum_dots(d, q, jnp.ones((), jnp.float32)) * tq for q, tq in basis),
              jnp.zeros((k,), jnp.float32))
  return alpha, inv
