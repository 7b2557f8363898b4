"""AGM's mono-modal outputs: Shapley values of the fused logits over zero-filled inputs.

With v(S) the fused logits of the model fed the inputs of the modalities in S and zeros for the
others, out_m = φ_m + v(∅)/M, φ_m the exact Shapley value of m. The v(∅) terms cancel, and
Σ_m out_m = v(N), the fused logits. For two modalities out_a = ½(f(a,v) − f(0,v) + f(a,0)), as
lihong2303/AGM_ICCV2023:model/CREMAD_net.py:10-17 computes them (inputs zeroed with
`torch.zeros_like`, l. 101-105).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax

from mmreg.metrics.shapley import modality_subsets, shapley_values


def zero_input_shapley_logits(subset_logits: Callable[[frozenset[str]], jax.Array],
                              modalities: Sequence[str]) -> dict[str, jax.Array]:
  """`{m: out_m}` from `subset_logits(S)` = fused logits with the inputs outside S zeroed;
  calls it on the 2^M − 1 non-empty subsets."""
  # out_m = φ_m + v(∅)/M is the Shapley value of the game with v(∅) set to 0.
  value = {subset: subset_logits(subset) for subset in modality_subsets(modalities) if subset}
  value[frozenset()] = 0.0
  return shapley_values(value, modalities)
