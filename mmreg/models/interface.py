"""The model interface every part of mmreg accepts: encode each modality, then the rest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import jax

from mmreg.models.classifier import ModelOutput


@runtime_checkable
class MultimodalModel(Protocol):
  """What a model must provide to work with the train step, the loop, the CLIs and the
  structure-aware per-loss gradients (`MultimodalClassifier` is one implementation).

  - `modalities`: the modality names, in order, matching the batch keys.
  - `encode(modality, x)`: that modality's features `[B, d_m]` (the encoder alone).
  - `encode_batch(batch)`: `{m: encode(m, batch[m])}` for every modality.
  - `from_features(features, present)`: everything after the encoders (missing-modality
    filling, fusion, fused head, optional unimodal heads) as a `ModelOutput`; `present` is the
    batch's optional `{m: bool[B]}` presence mask.
  - `__call__(batch)`: `from_features(encode_batch(batch), batch.get("present"))`.

  The split between `encode` and `from_features` is what lets the per-loss gradient stack
  pull each loss back only through the encoders it reaches.
  """

  modalities: tuple[str, ...]

  def encode(self, modality: str, x: jax.Array) -> jax.Array: ...

  def encode_batch(self, batch: Mapping[str, Any]) -> dict[str, jax.Array]: ...

  def from_features(self, features: Mapping[str, jax.Array],
                    present: Mapping[str, jax.Array] | None = None) -> ModelOutput: ...

  def __call__(self, batch: Mapping[str, Any]) -> ModelOutput: ...


def check_model(model: Any) -> None:
  """Raise a clear error naming what `model` lacks of the `MultimodalModel` interface."""
  missing = [name for name in ("modalities", "encode", "encode_batch", "from_features")
             if not hasattr(model, name)]
  if missing or not callable(model):
    lacks = missing + ([] if callable(model) else ["__call__"])
    raise TypeError(
        f"{type(model).__name__} lacks {lacks} of the mmreg model interface: a model provides "
        "`modalities`, `encode(modality, x)`, `encode_batch(batch)`, `from_features(features, "
        "present) -> ModelOutput` and `__call__(batch)`; see mmreg.models.MultimodalModel")
