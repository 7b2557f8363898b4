"""Build a model from a config: the multimodal classifier, or a registered model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flax import nnx

from mmreg.models.classifier import MultimodalClassifier
from mmreg.models.encoders import Conv1DEncoder, Conv2DEncoder, MLPEncoder
from mmreg.models.interface import MultimodalModel, check_model
from mmreg.models.resnet import ResNetEncoder

ENCODERS = ("auto", "mlp", "conv1d", "conv2d", "resnet")


def make_encoder(kind: str, input_shape: tuple[int, ...], cfg: Mapping[str, Any], *,
                 rngs: nnx.Rngs) -> nnx.Module:
  """`auto` picks MLP for vectors `[d]`, 1-D conv for `[T, C]`, 2-D conv for `[H, W, C]`."""
  if kind == "auto":
    kind = {1: "mlp", 2: "conv1d", 3: "conv2d"}.get(len(input_shape), "mlp")
  feature_dim = int(cfg.get("feature_dim", 64))
  if kind == "mlp":
    in_features = 1
    for s in input_shape:
      in_features *= s
    return MLPEncoder(in_features, feature_dim, tuple(cfg.get("hidden", (128,))), rngs=rngs)
  if kind == "conv1d":
    return Conv1DEncoder(input_shape[-1], feature_dim, tuple(cfg.get("channels", (32, 64))),
                         rngs=rngs)
  if kind == "conv2d":
    return Conv2DEncoder(input_shape[-1], feature_dim, tuple(cfg.get("channels", (32, 64))),
                         rngs=rngs)
  if kind == "resnet":
    if len(input_shape) != 3:
      raise ValueError(f"the resnet encoder takes [H, W, C] inputs, got shape {input_shape}; "
                       "add a channel axis (e.g. a spectrogram as [F, T, 1])")
    return ResNetEncoder(input_shape[-1], feature_dim, width=int(cfg.get("width", 64)),
                         blocks=tuple(cfg.get("blocks", (2, 2, 2, 2))),
                         downsample=int(cfg.get("downsample", 1)), norm=cfg.get("norm", "group"),
                         rngs=rngs)
  raise ValueError(f"unknown encoder {kind!r}; valid encoders: {list(ENCODERS)}")


def build_model(cfg: Mapping[str, Any], input_shapes: Mapping[str, tuple[int, ...]],
                num_classes: int, seed: int) -> MultimodalClassifier:
  """Model config keys: encoder (or a per-modality dict), hidden, feature_dim, channels,
  fusion, fusion_options, latent_dim, shared_space, missing, modality_logits ("aux_heads",
  "head_slices", "zero_input_shapley"; "auto" is "aux_heads"); for `resnet`: width, blocks,
  downsample, norm."""
  rngs = nnx.Rngs(seed)
  kinds = cfg.get("encoder", "auto")
  modality_logits = cfg.get("modality_logits", "auto")
  modality_logits = "aux_heads" if modality_logits == "auto" else modality_logits
  encoders = {m: make_encoder(kinds.get(m, "auto") if isinstance(kinds, Mapping) else kinds,
                              tuple(shape), cfg, rngs=rngs)
              for m, shape in input_shapes.items()}
  return MultimodalClassifier(encoders, num_classes, fusion=cfg.get("fusion", "concat"),
                              latent_dim=int(cfg.get("latent_dim", 32)),
                              fusion_options=dict(cfg.get("fusion_options", {})),
                              shared_space=bool(cfg.get("shared_space", False)),
                              missing=cfg.get("missing", "zero"),
                              modality_logits=modality_logits,
                              head=cfg.get("head", "linear"), rngs=rngs)


CLASSIFIER = "multimodal_classifier"
ModelBuilder = Callable[[Mapping[str, Any], Mapping[str, tuple[int, ...]], int, int], nnx.Module]
MODELS: dict[str, ModelBuilder] = {CLASSIFIER: build_model}


def register_model(name: str, builder: ModelBuilder) -> None:
  """Make `builder(cfg, input_shapes, num_classes, seed) -> model` buildable from a config as
  `model.name = name` (the loop and the CLIs call it with the config's `model` section, the
  train split's `{modality: per-sample shape}`, its class count and the run's seed).

  The model must follow `mmreg.models.MultimodalModel`. Registering a name again replaces it.
  For the command-line tools, register at module level in the config file.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"model name {name!r} must be a non-empty string")
  if not callable(builder):
    raise TypeError(f"register_model({name!r}, ...): the builder must be a callable "
                    "(cfg, input_shapes, num_classes, seed) -> model, got "
                    f"{type(builder).__name__}")
  MODELS[name] = builder


def model_from_config(cfg: Mapping[str, Any], input_shapes: Mapping[str, tuple[int, ...]],
                      num_classes: int, seed: int) -> MultimodalModel:
  """The model named by `cfg["name"]` (default "multimodal_classifier", `build_model`),
  checked against the `MultimodalModel` interface."""
  name = cfg.get("name", CLASSIFIER)
  if name not in MODELS:
    raise ValueError(f"model.name={name!r}: unknown model; valid models: {sorted(MODELS)}. "
                     "Register your own with mmreg.models.register_model(name, builder)")
  model = MODELS[name](cfg, input_shapes, num_classes, seed)
  try:
    check_model(model)
  except TypeError as e:
    raise TypeError(f"the builder of model {name!r} returned an unusable model: {e}") from e
  return model
