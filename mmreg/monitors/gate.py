"""Co-information gate of RedReg: is the dominant modality's information already shared?

The authors' gate (xia-zhe/RedReg, main_RedReg.py:241-247) is the batch mean of the cosine
between the two encoders' features of the same sample, compared with a threshold τ that rises
linearly over training (main_RedReg.py:103-104). `shuffled_similarity` and
`excess_similarity` are mmreg's calibration of that cosine against unpaired samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp


def _unit_features(features: Mapping[str, jax.Array] | None, modalities: Sequence[str],
                   eps: float) -> dict[str, jax.Array]:
  missing = [m for m in modalities if features is None or m not in features]
  if missing:
    raise ValueError(f"the co-information gate needs `features` for {missing}; pass the "
                     "model's per-modality features as the `features` extra argument")
  if len(modalities) < 2:
    raise ValueError("the co-information gate needs at least two modalities")
  widths = {m: features[m].shape[-1] for m in modalities}
  if len(set(widths.values())) != 1:
    raise ValueError(f"the co-information gate compares features by cosine, so every modality "
                     f"needs the same feature width; got {widths}")
  # x / max(‖x‖, ε), as torch.nn.functional.normalize; computed on x/s (s = max|x|) so that
  # ‖x‖² neither overflows nor underflows.
  unit = {}
  for m in modalities:
    x = features[m].astype(jnp.float32)
    s = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    s = jnp.where(s > 0, s, 1.0)
    unit[m] = (x / s) / jnp.maximum(jnp.linalg.norm(x / s, axis=-1, keepdims=True), eps / s)
  return unit


def cross_modal_similarity(features: Mapping[str, jax.Array], modalities: Sequence[str],
                           eps: float = 1e-12) -> jax.Array:
  """sim = batch mean of cos(h_a,i, h_b,i), averaged over all modality pairs (a < b).

  With two modalities this is RedReg's `pos_sim` (main_RedReg.py:241-245, F.normalize with
  ε = 1e-12); for M > 2 the pairwise mean is mmreg's generalisation. Features of every
  modality must have the same width.
  """
  unit = _unit_features(features, modalities, eps)
  sims = [jnp.mean(jnp.sum(unit[a] * unit[b], axis=-1))
          for i, a in enumerate(modalities) for b in modalities[i + 1:]]
  return jnp.mean(jnp.stack(sims))


def shuffled_similarity(features: Mapping[str, jax.Array], modalities: Sequence[str],
                        key: jax.Array, eps: float = 1e-12) -> jax.Array:
  """The same cosine between unpaired samples: batch mean of cos(h_a,i, h_b,σ(i)) with σ a
  random cyclic derangement (no sample is paired with itself), averaged over modality pairs.

  It estimates the cosine that two modalities' features have without sharing any information
  about the sample (e.g. ≈ 0.6 for independent non-negative features), i.e. the baseline that
  the paired cosine of `cross_modal_similarity` must exceed. Needs a batch of at least 2.
  """
  unit = _unit_features(features, modalities, eps)
  size = unit[modalities[0]].shape[0]
  if size < 2:
    raise ValueError(f"shuffled_similarity pairs different samples, so it needs a batch of at "
                     f"least 2, got {size}")
  order = jax.random.permutation(key, size)
  partner = jnp.zeros((size,), jnp.int32).at[order].set(jnp.roll(order, -1).astype(jnp.int32))
  sims = [jnp.mean(jnp.sum(unit[a] * unit[b][partner], axis=-1))
          for i, a in enumerate(modalities) for b in modalities[i + 1:]]
  return jnp.mean(jnp.stack(sims))


def excess_similarity(similarity: jax.Array, baseline: jax.Array,
                      eps: float = 1e-12) -> jax.Array:
  """(sim − baseline) / (1 − baseline): the share of the distance from the unpaired cosine to
  perfect agreement that the paired cosine covers (= sim when the baseline is 0)."""
  return (similarity - baseline) / jnp.maximum(1.0 - baseline, eps)


def gate_threshold(epoch: jax.Array, total_epochs: int, start: float = 0.2,
                   end: float = 0.5) -> jax.Array:
  """τ(epoch) = start + (end − start)·epoch / max(1, total_epochs − 1), clipped to [start, end]
  (main_RedReg.py:103-104: 0.2 → 0.5)."""
  frac = jnp.clip(jnp.asarray(epoch, jnp.float32) / max(total_epochs - 1, 1), 0.0, 1.0)
  return start + (end - start) * frac


def coinformation_gate(similarity: jax.Array, threshold: jax.Array,
                       temperature: float | None = None) -> jax.Array:
  """Hard gate 1[sim > τ] (`temperature=None`, the authors' `agree_gate`, main_RedReg.py:247),
  or mmreg's smooth gate sigmoid((sim − τ)/temperature)."""
  if temperature is None:
    return (jnp.asarray(similarity) > threshold).astype(jnp.float32)
  return jax.nn.sigmoid((similarity - threshold) / temperature)
