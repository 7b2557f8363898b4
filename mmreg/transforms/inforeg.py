"""InfoReg: adaptive unimodal regulation in the prime learning window (CVPR 2025; code
GeWu-Lab/InfoReg_CVPR2025).

While the window is open, the dominant modality's encoder gets a proximal pull toward its
weights at the start of the epoch:

  g_dom ← g_dom + β·(θ_dom − θ_dom^epoch-start),   β = c_dom·exp(tanh(s_dom − s_weak)).

`variant="authors"` (default) reproduces main.py (GeWu-Lab/InfoReg_CVPR2025:main.py, by line):
- s_m = Σ_i softmax(z_m,i)[y_i], batch sums (l. 460-461);
- c = 0.95 when the first modality dominates, 0.1 when the second does (l. 465-476); no pull on
  a tie (l. 482-484); the pull reaches every encoder parameter, biases included (l. 489-495);
- the window (`mmreg.monitors.fisher`) is driven by the FIRST modality's trace for both
  (l. 240-243, `audio_trace_list`), with W = 10, threshold 0.05, zero-padded history (l. 693-694)
  and k = 1 in the first epoch (l. 237-238);
- the per-step trace is Σ over the encoder's weight tensors (ndim ≥ 2: Conv2d/Linear weights) of
  the mean of grad², taken after the pull (l. 501-514, reduced per tensor at l. 569-572), summed
  over the epoch's steps.
The code's z_m are the slices of the concat head (l. 361-363) and its loss is CE(fused) +
Σ_m CE(z_m) (l. 456-458): `MultimodalClassifier(modality_logits="head_slices")` with
`classification_losses(...)` reproduces that model.

`variant="symmetric"` is mmreg's earlier form: one strength c (default 1) for every modality,
batch-mean scores, each modality's own window on its trace Σ_θ g² over all encoder tensors before
the pull, averaged over the epoch's steps, and no padding (in the window until W + 1 epochs).
For M > 2 modalities: dominant = strictly largest score, weak = smallest (both variants); the
authors' variant needs one strength per modality and the first modality's window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmreg.losses.geometry import power_of_two_scale
from mmreg.monitors.dominance import dominance, modality_confidence
from mmreg.monitors.fisher import (
    FisherWindowState,
    fisher_window_add,
    fisher_window_advance,
    fisher_window_init,
    fisher_window_signal,
)
from mmreg.transforms._common import (
    leaves,
    require,
    require_params,
    resolve_labels,
    unflatten_like,
)

VARIANTS = ("authors", "symmetric")
AUTHORS_STRENGTH = (0.95, 0.1)  # main.py:468 (first modality dominant), main.py:476 (second)
_FLOAT_MAX = float(np.finfo(np.float32).max)


class InfoRegState(NamedTuple):
  fisher: FisherWindowState
  anchor: Any
  anchor_epoch: jax.Array
  diagnostics: dict[str, jax.Array]


def _square_stat(g: jax.Array, mean: bool) -> jax.Array:
  """mean(g²) or Σ g² in float32, computed on g/s (s a power of two near max|g|) and
  saturating at the float32 maximum instead of overflowing."""
  s = power_of_two_scale(g)
  x = jnp.square(g.astype(jnp.float32) / s)
  stat = jnp.mean(x) if mean else jnp.sum(x)
  return jnp.minimum(s * s * stat, _FLOAT_MAX)


def _strengths(strength: Any, num_modalities: int) -> jax.Array:
  size = int(np.size(strength))
  if size not in (1, num_modalities):
    raise ValueError(f"inforeg: strength has {size} values for {num_modalities} modalities; "
                     "pass one per modality (the strength used when it dominates) or a scalar")
  return jnp.broadcast_to(jnp.asarray(strength, jnp.float32).reshape(-1), (num_modalities,))


def inforeg(param_labels: Any, *, variant: str = "authors", strength: Any = None,
            window: int = 10, threshold: float = 0.05,
            modalities: Sequence[str] | None = None) -> optax.GradientTransformationExtraArgs:
  """InfoReg as an optax transform.

  Args:
    param_labels: label tree of the params (or a function of the params returning one).
    variant: "authors" (main.py) or "symmetric" (mmreg's form); see the module docstring.
    strength: c in β = c·exp(tanh(s_dom − s_weak)): a scalar, or one value per modality (used
      when that modality dominates). Default (0.95, 0.1) for "authors", 1.0 for "symmetric";
      schedulable via `optax.inject_hyperparams`.
    window: W, epochs per Fisher-trace window (main.py:240-241: 10).
    threshold: regulate while k > threshold (main.py:465: 0.05).
    modalities: modalities to balance (default: every non-role label).

  Extras used: `modality_logits`, `labels`, `epoch`; `params` is required.
  """
  if variant not in VARIANTS:
    raise ValueError(f"inforeg: unknown variant {variant!r}; valid: {list(VARIANTS)}")
  authors = variant == "authors"
  if strength is None:
    strength = AUTHORS_STRENGTH if authors else 1.0

  def init_fn(params):
    _, mods = resolve_labels(param_labels, params, modalities, "inforeg")
    M = len(mods)
    _strengths(strength, M)
    fisher = fisher_window_init(M, window, pad_history=authors,
                                epoch_reduction="sum" if authors else "mean")
    return InfoRegState(fisher, jax.tree.map(jnp.copy, params), -jnp.ones((), jnp.int32), {
        "dominant": -jnp.ones((), jnp.float32), "k": jnp.ones((M,), jnp.float32),
        "trace": jnp.zeros((M,), jnp.float32), "beta": jnp.zeros((), jnp.float32)})

  def update_fn(updates, state, params=None, **extra):
    labels, mods = resolve_labels(param_labels, updates, modalities, "inforeg")
    params = require_params(params, "inforeg")
    epoch = jnp.asarray(require(extra.get("epoch"), "epoch", "inforeg",
                                "the Fisher window and the anchors are per epoch"), jnp.int32)
    fisher = fisher_window_advance(state.fisher, epoch)
    window_signal = fisher_window_signal(fisher, threshold)
    new_epoch = epoch != state.anchor_epoch
    anchor = jax.lax.cond(new_epoch, lambda: jax.tree.map(jnp.copy, params),
                          lambda: state.anchor)
    scores = modality_confidence(extra.get("modality_logits"), extra.get("labels"), mods,
                                 "inforeg")
    if authors:
      scores = scores * jnp.shape(extra["labels"])[0]
    dom = dominance(scores)
    dom_index = jnp.maximum(dom.dominant, 0)
    in_window = window_signal.in_window[0 if authors else dom_index]
    c = _strengths(strength, len(mods))[dom_index]
    beta = jnp.where((dom.dominant >= 0) & in_window, c * jnp.exp(jnp.tanh(dom.gap)), 0.0)
    flat_g = leaves(updates)
    out = []
    for g, p, a, lab in zip(flat_g, leaves(params), leaves(anchor), labels, strict=True):
      if lab in mods:
        pull = jnp.where(dom.dominant == mods.index(lab), beta, 0.0).astype(g.dtype)
        g = g + pull * (p - a)
      out.append(g)
    if authors:
      trace = [sum((_square_stat(g, mean=True) for g, lab in zip(out, labels, strict=True)
                    if lab == m and g.ndim >= 2), jnp.zeros((), jnp.float32)) for m in mods]
    else:
      trace = [sum((_square_stat(g, mean=False) for g, lab in zip(flat_g, labels, strict=True)
                    if lab == m), jnp.zeros((), jnp.float32)) for m in mods]
    trace = jnp.minimum(jnp.stack(trace), _FLOAT_MAX)
    fisher = fisher_window_add(fisher, trace)
    diagnostics = {"dominant": dom.dominant.astype(jnp.float32), "k": window_signal.k,
                   "trace": trace, "beta": beta}
    return unflatten_like(updates, out), InfoRegState(fisher, anchor, epoch, diagnostics)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
