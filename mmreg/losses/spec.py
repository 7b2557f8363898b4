"""Named, weighted losses of a multimodal model."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from mmreg.data.batch import LABEL, PRESENT
from mmreg.losses.classification import cross_entropy
from mmreg.models.classifier import ModelOutput

FUSED = "fused"
LossTerm = Callable[[ModelOutput, Mapping[str, Any]], jax.Array]


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """Losses by name, each a function `(model_output, batch) -> scalar`, with weights.

  The training objective is Σ_name weight·loss; `mmreg.per_loss_grads` differentiates each
  named loss separately. Build the usual one with `classification_losses`, add terms with
  `with_term`.
  """

  terms: Mapping[str, LossTerm]
  weights: Mapping[str, float]

  def __post_init__(self) -> None:
    if set(self.terms) != set(self.weights):
      raise ValueError(f"loss terms {sorted(self.terms)} and weights {sorted(self.weights)} "
                       "must name the same losses")
    if not self.terms:
      raise ValueError("a LossSpec needs at least one loss")

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(self.terms)

  def __call__(self, output: ModelOutput, batch: Mapping[str, Any]) -> dict[str, jax.Array]:
    return {name: term(output, batch) for name, term in self.terms.items()}

  def total(self, losses: Mapping[str, jax.Array]) -> jax.Array:
    return sum(self.weights[n] * losses[n] for n in self.names)

  def with_term(self, name: str, term: LossTerm, weight: float = 1.0) -> LossSpec:
    if name in self.terms:
      raise ValueError(f"loss {name!r} already exists in {self.names}")
    return LossSpec({**self.terms, name: term}, {**self.weights, name: weight})

  def reweighted(self, weights: Mapping[str, float]) -> LossSpec:
    unknown = set(weights) - set(self.terms)
    if unknown:
      raise ValueError(f"unknown losses {sorted(unknown)}; this spec has {self.names}")
    return LossSpec(self.terms, {**self.weights, **weights})


def fused_ce(label_smoothing: float = 0.0) -> LossTerm:
  """Cross-entropy of the fused logits."""
  def term(output: ModelOutput, batch: Mapping[str, Any]) -> jax.Array:
    return cross_entropy(output.logits, batch[LABEL], label_smoothing=label_smoothing)
  return term


def unimodal_ce(modality: str, label_smoothing: float = 0.0) -> LossTerm:
  """Cross-entropy of one modality's auxiliary head, over samples where it is present."""
  def term(output: ModelOutput, batch: Mapping[str, Any]) -> jax.Array:
    if modality not in output.modality_logits:
      raise ValueError(
          f"the unimodal loss {modality!r} needs modality_logits[{modality!r}], but the model "
          f"returns modality_logits for {sorted(output.modality_logits)}; give the model "
          "unimodal heads (or concat-head slices), or leave this loss out of the LossSpec")
    present = batch.get(PRESENT, {}).get(modality)
    weights = None if present is None else jnp.asarray(present, jnp.float32)
    return cross_entropy(output.modality_logits[modality], batch[LABEL], weights,
                         label_smoothing=label_smoothing)
  return term


def classification_losses(modalities: tuple[str, ...] | list[str], *, fused_weight: float = 1.0,
                          unimodal_weight: float = 1.0,
                          label_smoothing: float = 0.0) -> LossSpec:
  """`fused` CE on the fused logits plus one CE per modality (named by the modality) on its
  auxiliary head: L = w_f·CE(z, y) + w_u·Σ_m CE(z_m, y), the recipe of RedReg and MMPareto.
  A weight of 0 keeps the loss in the per-loss gradient stack without training on it."""
  terms: dict[str, LossTerm] = {FUSED: fused_ce(label_smoothing)}
  weights = {FUSED: fused_weight}
  for m in modalities:
    if m in (FUSED, LABEL, PRESENT):
      raise ValueError(f"modality name {m!r} is reserved; rename the modality")
    terms[m] = unimodal_ce(m, label_smoothing)
    weights[m] = unimodal_weight
  return LossSpec(terms, weights)


