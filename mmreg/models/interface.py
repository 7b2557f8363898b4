"""The model interface every part of mmreg accepts: encode each modality, then the rest."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from flax import nnx

from mmreg.data.batch import modality_names
from mmreg.models.classifier import ModelOutput

_SIGNATURES = {"encode": ("modality", "x"), "encode_batch": ("batch",),
               "from_features": ("features", "present"), "__call__": ("batch",)}
_INTERFACE = ("a model is a flax.nnx.Module with `modalities` (a tuple of names), "
              "`encode(modality, x)`, `encode_batch(batch)`, `from_features(features, present) "
              "-> ModelOutput` and `__call__(batch) -> ModelOutput`; see "
              "mmreg.models.MultimodalModel")


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

  The `ModelOutput` holds `logits` `[B, K]`, `features` `{m: [B, d_m]}` for every modality and
  `fused` `[B, d]` (the representation fed to the fused classifier); `modality_logits`
  `{m: [B, K]}` and `latents` may be empty dicts when the model has no unimodal heads or
  shared-latent projections (methods and losses that read them then say so). The split between
  `encode` and `from_features` is what lets the per-loss gradient stack pull each loss back
  only through the encoders it reaches. The model must be a `flax.nnx.Module`: the train step
  splits it into parameters and state. Optionally, `param_label_rule` (a rule of
  `mmreg.param_labels`) says which modality or role owns each parameter; the loop needs it
  for a model other than `MultimodalClassifier`.
  """

  modalities: tuple[str, ...]

  def encode(self, modality: str, x: jax.Array) -> jax.Array: ...

  def encode_batch(self, batch: Mapping[str, Any]) -> dict[str, jax.Array]: ...

  def from_features(self, features: Mapping[str, jax.Array],
                    present: Mapping[str, jax.Array] | None = None) -> ModelOutput: ...

  def __call__(self, batch: Mapping[str, Any]) -> ModelOutput: ...


def check_model(model: Any, batch: Mapping[str, Any] | None = None, *, split: bool = True
                ) -> ModelOutput | None:
  """Raise a TypeError naming what `model` lacks of the `MultimodalModel` interface.

  `split=False` checks only what the train step needs of any model (an `nnx.Module` callable
  as `model(batch)`): without `encode`/`from_features` the per-loss gradient stack falls back
  to one VJP vmapped over all losses.

  With a `batch`, also check that its modalities are the model's (a ValueError otherwise), run
  the model on it abstractly (`jax.eval_shape`: nothing is computed or changed) and check the
  output with `check_output`; returns that abstract output.
  """
  name = type(model).__name__
  if not isinstance(model, nnx.Module):
    raise TypeError(f"{name} is not a flax.nnx.Module; {_INTERFACE}")
  signatures = _SIGNATURES if split else {"__call__": _SIGNATURES["__call__"]}
  missing = [m for m in ("modalities", *signatures) if split and not hasattr(model, m)]
  if missing:
    raise TypeError(f"{name} lacks {missing}; {_INTERFACE}")
  modalities = model.modalities if split else ("",)
  if (not isinstance(modalities, tuple | list) or not modalities
      or not all(isinstance(m, str) for m in modalities)):
    raise TypeError(f"{name}.modalities is {modalities!r}; it must be a non-empty tuple of "
                    "modality names (the batch keys)")
  for method, args in signatures.items():
    try:
      inspect.signature(getattr(model, method)).bind(*args)
    except TypeError as e:
      raise TypeError(f"{name}.{method} cannot be called as {method}({', '.join(args)}) "
                      f"({e}); {_INTERFACE}") from e
    except ValueError:  # no signature to inspect (a builtin): calling it will tell
      pass
  if batch is None or not split:
    return None
  names = modality_names(batch)
  if set(names) != set(modalities):
    raise ValueError(f"batch modalities {sorted(names)} do not match {name}.modalities "
                     f"{sorted(modalities)}; rename the batch keys or the model's modalities")
  graphdef, state = nnx.split(model)

  def run(state: Any, batch: Mapping[str, Any]) -> ModelOutput:
    return nnx.merge(graphdef, state)(batch)

  output = jax.eval_shape(run, state, dict(batch))
  check_output(output, model, batch)
  return output


def check_output(output: Any, model: Any, batch: Mapping[str, Any]) -> None:
  """Raise a TypeError naming what is wrong with `model(batch)`'s output, and the fix."""
  name = type(model).__name__
  if not isinstance(output, ModelOutput):
    raise TypeError(
        f"{name}(batch) returned {type(output).__name__}; return mmreg.ModelOutput(logits=[B, "
        "K], modality_logits={m: [B, K]} or {}, features={m: [B, d_m]}, latents={} or "
        "{m: [B, d]}, fused=[B, d])")
  sizes = {jnp.shape(batch[m])[0] for m in modality_names(batch)}
  size = sizes.pop() if len(sizes) == 1 else None
  logits_shape = jnp.shape(output.logits)
  if len(logits_shape) != 2 or (size is not None and logits_shape[0] != size):
    raise TypeError(f"{name}: ModelOutput.logits has shape {logits_shape}; it must be "
                    f"[batch, classes] = [{size}, K]")
  modalities = tuple(getattr(model, "modalities", None) or modality_names(batch))
  fields = {"modality_logits": output.modality_logits, "features": output.features,
            "latents": output.latents}
  for field, value in fields.items():
    if not isinstance(value, Mapping):
      raise TypeError(f"{name}: ModelOutput.{field} is {type(value).__name__}; it must be a "
                      "dict {modality: array} (an empty dict if the model has none)")
    unknown = sorted(set(value) - set(modalities))
    if unknown:
      raise TypeError(f"{name}: ModelOutput.{field} has keys {unknown} that are not the "
                      f"modalities {list(modalities)}; key it by modality name")
  absent = [m for m in modalities if m not in output.features]
  if absent:
    raise TypeError(f"{name}: ModelOutput.features lacks {absent}; return every modality's "
                    "encoder output (after any missing-modality filling)")
  for m, z in output.modality_logits.items():
    if jnp.shape(z) != logits_shape:
      raise TypeError(f"{name}: ModelOutput.modality_logits[{m!r}] has shape "
                      f"{jnp.shape(z)}; it must match the fused logits {logits_shape}")
  if output.fused is None or jnp.ndim(output.fused) < 1:
    raise TypeError(f"{name}: ModelOutput.fused is {output.fused!r}; return the [B, d] "
                    "representation fed to the fused classifier")

