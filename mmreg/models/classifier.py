"""The multimodal classifier: encoders, fusion, fused head, auxiliary heads, shared latent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from mmreg.data.batch import PRESENT, modality_names
from mmreg.models.encoders import MLPEncoder
from mmreg.models.etf import ETFHead
from mmreg.models.fusion import make_fusion
from mmreg.models.head_slices import concat_head_slices
from mmreg.models.monomodal import zero_input_shapley_logits
from mmreg.models.shared import FeatureMean, SharedSpace, SharedSpaceOutput, frozen_linear

MISSING_MODES = ("zero", "mean", "impute")
MODALITY_LOGITS = ("aux_heads", "head_slices", "zero_input_shapley")


class ModelOutput(NamedTuple):
  """What a multimodal model returns for a batch.

  logits: fused class logits `[B, K]`.
  modality_logits: `{m: [B, K]}` from each modality's auxiliary head, the slices of the
    concat head or AGM's mono-modal outputs (`MultimodalClassifier(modality_logits=...)`).
  features: `{m: [B, d_m]}` encoder outputs (after missing-modality filling).
  latents: `{m: [B, latent_dim]}` projections into the shared latent space (not normalised).
  fused: the fused representation `[B, d]` fed to the head (the penultimate features).
  shared: prototypes, temperature and imputations of the shared space (None without one).
  """

  logits: jax.Array
  modality_logits: dict[str, jax.Array]
  features: dict[str, jax.Array]
  latents: dict[str, jax.Array]
  fused: jax.Array
  shared: SharedSpaceOutput | None = None


class MultimodalClassifier(nnx.Module):
  """Encoders per modality → fusion → fused head; plus one auxiliary head and one shared-latent
  projection per modality.

  Args:
    encoders: `{modality: encoder}`; each encoder has an `out_features` attribute.
    num_classes: number of classes K.
    fusion: one of `mmreg.models.FUSIONS` ("concat", "sum", "film", "gated", "attention",
      "late").
    latent_dim: width of the shared latent space.
    fusion_options: keyword options of the fusion module (e.g. `out_features`, `num_heads`).
    head: the fused classifier: "linear" (`nnx.Linear`, trained) or "etf" (a fixed simplex ETF,
      `mmreg.models.ETFHead`, not a parameter; needs a fusion width >= num_classes).
    shared_space: add a `SharedSpace` (prototypes, InfoNCE temperature, latent→feature
      imputers), for the coherence losses; implied by `missing="impute"`.
    missing: how features of a modality absent for a sample are filled before fusion:
      "zero" (default), "mean" (the `feature_means` buffer, see `set_feature_means`) or
      "impute" (`SharedSpace.impute` from the present modalities' latents).
    modality_logits: where the per-modality logits come from: "aux_heads" (default, one
      linear head per modality) or "head_slices" (z_m = W_m·h_m + b/M, the slices of the
      linear head over concat fusion, `mmreg.models.concat_head_slices`, as OGM-GE's and
      InfoReg's code compute them; needs fusion="concat" and head="linear") or
      "zero_input_shapley" (AGM's mono-modal outputs, `mmreg.models.zero_input_shapley_logits`:
      the model is run again with each proper subset of the inputs zeroed, 2^M − 2 more head
      passes and M encoder passes on zeros; they sum to the fused logits). The auxiliary heads
      exist in every case (the shared space uses them).
    rngs: parameter initialisation.

  Call with a batch `{m: x_m, ..., "present": {m: bool[B]}}` (labels are ignored). With
  zero-fill, late and attention fusion, and gated fusion's weights, also leave absent
  modalities out; mean- and impute-fill hand the fusion the filled features as if present.
  """

  def __init__(self, encoders: Mapping[str, nnx.Module], num_classes: int, *,
               fusion: str = "concat", latent_dim: int = 32,
               fusion_options: Mapping[str, Any] | None = None, head: str = "linear",
               shared_space: bool = False, missing: str = "zero",
               modality_logits: str = "aux_heads", rngs: nnx.Rngs):
    if not encoders:
      raise ValueError("a MultimodalClassifier needs at least one encoder")
    if head not in ("linear", "etf"):
      raise ValueError(f"head={head!r}; use 'linear' or 'etf'")
    if missing not in MISSING_MODES:
      raise ValueError(f"unknown missing-modality fill {missing!r}; valid: {MISSING_MODES}")
    if modality_logits not in MODALITY_LOGITS:
      raise ValueError(f"unknown modality_logits {modality_logits!r}; valid: {MODALITY_LOGITS}")
    if modality_logits == "head_slices" and (fusion != "concat" or head != "linear"):
      raise ValueError(f"modality_logits='head_slices' slices a linear head over concatenated "
                       f"features; got fusion={fusion!r}, head={head!r}: use fusion='concat', "
                       "head='linear', or modality_logits='aux_heads'")
    self.modality_logits = modality_logits
    self.modalities = tuple(encoders)
    self.num_classes = num_classes
    dims = {m: int(enc.out_features) for m, enc in encoders.items()}
    self.encoders = nnx.Dict(dict(encoders))
    self.fusion = make_fusion(fusion, dims, num_classes, rngs=rngs, **(fusion_options or {}))
    if self.fusion.produces_logits and head == "etf":
      raise ValueError(f"fusion {fusion!r} produces logits itself, so it has no head to fix to "
                       "an ETF; use a fusion with a head (concat, sum, film, gated, attention)")
    if self.fusion.produces_logits:
      self.head = None
    elif head == "etf":
      self.head = ETFHead(self.fusion.out_features, num_classes, rngs=rngs)
    else:
      self.head = nnx.Linear(self.fusion.out_features, num_classes, rngs=rngs)
    self.aux_heads = nnx.Dict({m: nnx.Linear(d, num_classes, rngs=rngs) for m, d in dims.items()})
    self.projectors = nnx.Dict({m: nnx.Linear(d, latent_dim, rngs=rngs) for m, d in dims.items()})
    self.missing = missing
    self.shared = (SharedSpace(dims, num_classes, latent_dim, rngs=rngs)
                   if shared_space or missing == "impute" else None)
    self.feature_means = nnx.Dict({m: FeatureMean(jnp.zeros(d)) for m, d in dims.items()})

  def set_feature_means(self, means: Mapping[str, jax.Array]) -> None:
    """Set the vectors that `missing="mean"` fills in (e.g. mean train features)."""
    for m, v in means.items():
      if m not in self.feature_means or v.shape != self.feature_means[m].shape:
        raise ValueError(f"feature mean for {m!r} has shape {v.shape}; the model has "
                         f"{ {k: x.shape for k, x in self.feature_means.items()} }")
      self.feature_means[m][...] = v

  def encode(self, modality: str, x: jax.Array) -> jax.Array:
    """Features of one modality."""
    return self.encoders[modality](x)

  def __call__(self, batch: Mapping[str, Any]) -> ModelOutput:
    names = modality_names(batch)
    if set(names) != set(self.modalities):
      raise ValueError(
          f"batch modalities {sorted(names)} do not match the model's {sorted(self.modalities)}; "
          "rename the batch keys or build the model with these modalities")
    present = batch.get(PRESENT)
    encoded = self.encode_batch(batch)
    output = self.from_features(encoded, present)
    if self.modality_logits != "zero_input_shapley":
      return output
    zeros = {m: self.encode(m, jnp.zeros_like(batch[m])) for m in self.modalities}

    def subset_logits(subset: frozenset[str]) -> jax.Array:
      if len(subset) == len(self.modalities):
        return output.logits
      mixed = {m: encoded[m] if m in subset else zeros[m] for m in self.modalities}
      return self.from_features(mixed, present).logits

    return output._replace(modality_logits=zero_input_shapley_logits(subset_logits,
                                                                     self.modalities))

  def encode_batch(self, batch: Mapping[str, Any]) -> dict[str, jax.Array]:
    """Every modality's encoder output (before missing-modality filling)."""
    return {m: self.encode(m, batch[m]) for m in self.modalities}

  def from_features(self, encoded: Mapping[str, jax.Array],
                    present: Mapping[str, jax.Array] | None = None) -> ModelOutput:
    """Everything after the encoders: missing-modality filling, shared space, fusion, heads
    and projections of the encoder outputs `encoded`."""
    shared = None
    if self.shared is not None:
      imputed = self.shared.impute({m: self.projectors[m](encoded[m]) for m in encoded}, present)
      shared = SharedSpaceOutput(
          self.shared.prototypes[...], self.shared.log_temperature[...], imputed,
          {m: frozen_linear(self.aux_heads[m], imputed[m]) for m in self.modalities})
    features = {}
    for m, h in encoded.items():
      if present is not None and m in present:
        fill = {"zero": jnp.zeros_like(h),
                "mean": jnp.broadcast_to(self.feature_means[m][...], h.shape),
                "impute": shared.imputed[m] if shared is not None else None}[self.missing]
        h = jnp.where(jnp.asarray(present[m])[:, None], h, fill)
      features[m] = h
    fused = self.fusion(features, present if self.missing == "zero" else None)
    logits = fused if self.head is None else self.head(fused)
    if self.modality_logits == "head_slices":
      modality_logits = concat_head_slices(self.head.kernel[...], self.head.bias[...], features,
                                           self.fusion.modalities)
    else:
      modality_logits = {m: self.aux_heads[m](features[m]) for m in self.modalities}
    latents = {m: self.projectors[m](features[m]) for m in self.modalities}
    return ModelOutput(logits, modality_logits, features, latents, fused, shared)


def mlp_classifier(input_dims: Mapping[str, int], num_classes: int, *, hidden: tuple[int, ...] = (
    128,), feature_dim: int = 64, fusion: str = "concat", latent_dim: int = 32, seed: int = 0,
                   fusion_options: Mapping[str, Any] | None = None, head: str = "linear",
                   shared_space: bool = False, missing: str = "zero",
                   modality_logits: str = "aux_heads") -> MultimodalClassifier:
  """A classifier with one MLP encoder per modality of flat features `{m: d_in}`."""
  rngs = nnx.Rngs(seed)
  encoders = {m: MLPEncoder(d, feature_dim, hidden, rngs=rngs) for m, d in input_dims.items()}
  return MultimodalClassifier(encoders, num_classes, fusion=fusion, latent_dim=latent_dim,
                              fusion_options=fusion_options, head=head,
                              shared_space=shared_space, missing=missing,
                              modality_logits=modality_logits, rngs=rngs)
