"""DGL: disentangled gradient learning (Wei, Luo, Luo, ICCV 2025): loss-to-parameter routing.

Each encoder gets only its own unimodal loss's gradient, times α; the fusion module and the
fused head only the fused loss's gradient:
g_θ ← α_θ Σ_{n ∈ routes[label(θ)]} w_n ∇_θ L_n, α_θ = α on modality parameters, 1 elsewhere.
This is the authors' code (shicaiwei123/ICCV2025-GDL, main_dgl.py:108-122): the unimodal loss
(loss_a + loss_v)·alpha is back-propagated, the fusion module's gradients are dropped, then the
fused loss, computed on detached features (models/fusion_modules.py:54), fills them; alpha = 4
(main_dgl.py:50). Their unimodal logits are the fused head applied to one modality's features
with the others zeroed (fusion_modules.py:57-58): in mmreg that is the model's
`modality_logits`. Parameters whose label has no route (auxiliary heads, projectors, ...) keep
the total gradient. Works for any number of modalities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mmreg.grads import weighted_rows
from mmreg.losses.spec import FUSED
from mmreg.models.labels import FUSION, HEAD
from mmreg.transforms._common import check_loss_stack, resolve_labels, stack_rows
from mmreg.transforms._stack import check_param_labels, check_rows_match, check_stack_updates


class DGLState(NamedTuple):
  pass


def dgl(param_labels: Any, *, alpha: float = 4.0, modalities: Sequence[str] | None = None,
        routes: Mapping[str, Sequence[str]] | None = None,
        loss_weights: Mapping[str, float] | None = None, fused_loss: str = FUSED,
        check_updates: bool = True) -> optax.GradientTransformationExtraArgs:
  """DGL as an optax transform.

  Args:
    param_labels: label tree of the params (or a function of the params returning one).
    alpha: multiplier of the gradients routed to modality parameters (4, main_dgl.py:50).
    modalities: encoders to route (default: every non-role label).
    routes: `{label: loss names}`; default `{m: (m,)}` per modality and
      `{"fusion": (fused,), "head": (fused,)}`.
    loss_weights: w_n (default 1).
    check_updates: raise `StackContractError` when the incoming `updates` are not Σ_n w_n ∇L_n
      on the routed leaves (see `mmreg.transforms._stack.check_stack_updates`).

  Extras used: `loss_grads`. On routed leaves the stack covers the output depends on
  `loss_grads` only (see `mmreg.transforms._stack`); other leaves keep `updates`.
  """
  check_param_labels(param_labels, "dgl", required=True)

  def table(mods: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    if routes is not None:
      return {k: tuple(v) for k, v in routes.items()}
    return {**{m: (m,) for m in mods}, FUSION: (fused_loss,), HEAD: (fused_loss,)}

  def init_fn(params):
    resolve_labels(param_labels, params, modalities, "dgl", min_modalities=1)
    return DGLState()

  def update_fn(updates, state, params=None, **extra):
    del params
    labels, mods = resolve_labels(param_labels, updates, modalities, "dgl", min_modalities=1)
    route = table(mods)
    needed = sorted({n for lab in set(labels) for n in route.get(lab, ())})
    loss_grads = extra.get("loss_grads")
    check_loss_stack(loss_grads, needed, "dgl")
    weights = loss_weights or {}
    coefficients = {lab: (alpha if lab in mods else 1.0) * jnp.asarray(
        [weights.get(n, 1.0) if n in names else 0.0 for n in loss_grads.names], jnp.float32)
                    for lab, names in route.items()}
    rows = stack_rows(loss_grads, loss_grads.names)
    check_rows_match(updates, rows, "dgl")
    if check_updates:
      w = jnp.asarray([weights.get(n, 1.0) for n in loss_grads.names], jnp.float32)
      check_stack_updates(updates, loss_grads, w, "dgl", [lab in route for lab in labels])
    flat, treedef = jax.tree.flatten(updates)
    out = [u if r is None or lab not in route
           else weighted_rows(coefficients[lab], r, m).astype(u.dtype)
           for u, r, m, lab in zip(flat, rows, loss_grads.row_masks(), labels, strict=True)]
    return jax.tree.unflatten(treedef, out), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
