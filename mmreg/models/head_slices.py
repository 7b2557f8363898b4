"""Per-modality logits from the slices of a linear head over concatenated features.

A linear head on concat fusion computes z = Σ_m W_m·h_m + b, W_m the rows of the kernel that
multiply modality m's features. Its slices z_m = W_m·h_m + b/M sum to z and serve as unimodal
scores without unimodal heads, as OGM-GE's code does for two modalities
(GeWu-Lab/OGM-GE_CVPR2022:main.py:88-93: `fc_out.weight[:, :d]`, `fc_out.bias / 2`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp


def concat_head_slices(kernel: jax.Array, bias: jax.Array | None,
                       features: Mapping[str, jax.Array],
                       order: Sequence[str] | None = None) -> dict[str, jax.Array]:
  """`{m: h_m @ kernel[rows of m] + bias/M}` for a head `z = concat(h) @ kernel + bias`.

  Args:
    kernel: `[Σ_m d_m, K]` (flax layout: inputs × outputs).
    bias: `[K]` or None.
    features: `{m: [B, d_m]}`.
    order: the concatenation order (default: the order of `features`).
  """
  order = tuple(features) if order is None else tuple(order)
  missing = [m for m in order if m not in features]
  if missing:
    raise ValueError(f"concat_head_slices: no features for {missing}; pass every concatenated "
                     "modality's features")
  widths = [features[m].shape[-1] for m in order]
  if kernel.ndim != 2 or kernel.shape[0] != sum(widths):
    raise ValueError(f"concat_head_slices: the kernel has shape {kernel.shape} but the features "
                     f"{dict(zip(order, widths, strict=True))} concatenate to {sum(widths)} "
                     "inputs; pass the head's [inputs, classes] kernel and every modality")
  share = None if bias is None else bias / len(order)
  out, start = {}, 0
  for m, d in zip(order, widths, strict=True):
    z = jnp.asarray(features[m]) @ kernel[start:start + d]
    out[m] = z if share is None else z + share
    start += d
  return out
