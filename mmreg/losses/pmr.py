"""PMR: prototypical modal rebalance (Fan et al., CVPR 2023), the per-batch loss.

The default reproduces the authors' released code, fanyunfeng-bit/Modal-Imbalance-PMR
main_Prototype_grad.py (commit 3615e48), for two modalities a, v with features h_a, h_v and
class prototypes c^a, c^v `[K, d]`:

  sim_m = −‖h_m − c_k^m‖                                  (EU_dist, :69-75; :152-153)
  s_m   = Σ_i softmax(sim_m)_i[y_i]                        (:158-159)
  β_a, β_v = (0, α) if s_a > s_v;  (α, 0) if s_a < s_v;  (0, 0) if equal   (:160, :169-177)
  L     = CE(z, y) + Σ_m β_m·CE(sim_m, y)                  (:166-167, :178)

The coefficients are plain numbers (no gradient flows through them). For M > 2 modalities
(the authors' code has two) mmreg gives α to every modality whose score is the lowest,
when it is below the highest: the authors' rule for M = 2. The prototypes and the epoch
window come from `mmreg.train.loss_methods.pmr`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmreg.losses.classification import cross_entropy, true_class_confidence
from mmreg.losses.geometry import power_of_two_scale


def distance_logits(features: jax.Array, prototypes: jax.Array) -> jax.Array:
  """−√(‖h_i − c_k‖² + 1e-12) for features `[B, d]` and prototypes `[K, d]` → `[B, K]` float32.

  Each difference is divided by a power of two s near its largest entry first (exact), so
  ‖h − c‖ neither overflows (|h| ≳ 1e19) nor underflows (|h| ≲ 1e-19) in float32; the 1e-12
  is added as hypot(‖h − c‖, 1e-6), which keeps the gradient finite at h = c (the authors'
  √(d·d) has an infinite derivative there).
  """
  diff = (jnp.asarray(features, jnp.float32)[:, None, :]
          - jnp.asarray(prototypes, jnp.float32)[None, :, :])
  s = power_of_two_scale(diff, axis=-1)
  sq = jnp.sum(jnp.square(diff / s[..., None]), axis=-1)
  nonzero = sq > 0
  norm = jnp.where(nonzero, s * jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)
  return -jnp.hypot(norm, 1e-6)


def class_prototypes(features: np.ndarray, labels: np.ndarray, num_classes: int,
                     fallback: np.ndarray | None = None) -> np.ndarray:
  """Class means of the features `[K, d]` float32 (calculate_prototype, :417-433).

  A class without samples takes its row of `fallback` (zeros if None); the authors' code
  divides 0/0 there, which makes every prototype logit of that class NaN.
  """
  features = np.asarray(features, np.float64)
  labels = np.asarray(labels)
  sums = np.zeros((num_classes, features.shape[1]))
  np.add.at(sums, labels, features)
  counts = np.bincount(labels, minlength=num_classes)[:, None]
  means = sums / np.maximum(counts, 1)
  empty = np.zeros_like(means) if fallback is None else np.asarray(fallback, np.float64)
  return np.where(counts > 0, means, empty).astype(np.float32)


def pmr_coefficients(scores: jax.Array, alpha: float) -> jax.Array:
  """β_m = α for the modalities whose score is the lowest when it is below the highest, else 0.

  For two modalities this is the authors' rule (:169-177); `scores` `[M]`, M ≥ 2.
  """
  if scores.shape[0] < 2:
    raise ValueError(f"PMR rebalances at least two modalities, got {scores.shape[0]}")
  lowest = scores == jnp.min(scores)
  return jnp.where(lowest & (jnp.min(scores) < jnp.max(scores)), alpha, 0.0)


def pmr_loss(features: Mapping[str, jax.Array], labels: jax.Array,
             prototypes: Mapping[str, jax.Array], modalities: Sequence[str],
             alpha: float = 1.0) -> jax.Array:
  """Σ_m β_m·CE(−‖h_m − c^m‖, y) for one batch: PMR's addition to the classification loss."""
  missing = [m for m in modalities if m not in features or m not in prototypes]
  if missing:
    raise ValueError(f"pmr_loss needs features and prototypes of modalities {missing}")
  logits = {m: distance_logits(features[m], prototypes[m]) for m in modalities}
  scores = jnp.stack([jnp.sum(true_class_confidence(logits[m], labels)) for m in modalities])
  beta = jax.lax.stop_gradient(pmr_coefficients(scores, alpha))
  return sum(beta[i] * cross_entropy(logits[m], labels) for i, m in enumerate(modalities))
