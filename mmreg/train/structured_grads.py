"""Per-loss gradients that follow the model's structure: each encoder pulls back only the
losses that reach it.

`mmreg.per_loss_grads` vmaps one VJP of the whole model over the L loss cotangents, so every
encoder runs L backward passes, even for losses that never reach it (modality a's auxiliary
head never reaches encoder b). For a model with the encoder / post-encoder split of
`mmreg.models.MultimodalModel`:

1. each encoder m runs forward once, keeping its VJP;
2. the post-encoder part (missing-modality filling, fusion, heads, losses) runs forward once
   and its VJP is vmapped over the L loss cotangents: the per-loss gradients of the
   post-encoder parameters, and the per-loss cotangents c_{i,m} = ∂L_i/∂h_m of the features;
3. which losses reach which feature and which parameters each part uses are read statically
   from the traced programs (`reach`);
4. encoder m pulls back only the c_{i,m} of the losses that reach it (for the usual fused +
   unimodal losses: two, whatever the number of modalities), as separate pullbacks or one
   vmapped pullback (`pullbacks`).

The result equals `per_loss_grads` (up to float rounding) and records in `LossGrads.nonzero`
which rows of each leaf can be non-zero, so the stack's consumers skip the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.extend import core as jcore

from mmreg.data.batch import PRESENT
from mmreg.grads import LossGrads
from mmreg.losses.spec import LossSpec

PyTree = Any
PULLBACKS = ("auto", "separate", "vmap")
_SPLIT = ("modalities", "encode", "from_features")


def has_encoder_split(model: Any) -> bool:
  """Whether `model` exposes `modalities`, `encode` and `from_features` (the split the
  structure-aware stack needs) and its output is `from_features` of the encoded batch (a
  classifier with `modality_logits="zero_input_shapley"` runs more passes in `__call__`)."""
  return (all(hasattr(model, name) for name in _SPLIT)
          and getattr(model, "modality_logits", None) != "zero_input_shapley")


def _propagate(jaxpr: Any, deps: Sequence[int]) -> list[int]:
  """Bitmask of the inputs each output of `jaxpr` depends on differentiably, given the masks
  `deps` of its inputs. Integer and boolean values and `stop_gradient` carry no gradient;
  a call with one inner program (jit, custom_jvp/vjp, remat) is followed inside; any other
  primitive makes each output depend on all its inputs (conservative)."""
  env = dict(zip(jaxpr.invars, deps, strict=True))

  def read(atom: Any) -> int:
    return 0 if isinstance(atom, jcore.Literal) else env.get(atom, 0)

  for eqn in jaxpr.eqns:
    ins = [read(a) for a in eqn.invars]
    inner = list(jcore.jaxprs_in_params(eqn.params))
    if eqn.primitive.name == "stop_gradient":
      outs = [0] * len(eqn.outvars)
    elif (len(inner) == 1 and len(inner[0].invars) == len(ins)
          and len(inner[0].outvars) == len(eqn.outvars) and not inner[0].constvars):
      outs = _propagate(inner[0], ins)
    else:
      union = 0
      for d in ins:
        union |= d
      outs = [union] * len(eqn.outvars)
    for var, d in zip(eqn.outvars, outs, strict=True):
      inexact = jnp.issubdtype(getattr(var.aval, "dtype", jnp.float32), jnp.inexact)
      env[var] = d if inexact else 0
  return [read(v) for v in jaxpr.outvars]


def reach(fn: Callable[..., Any], *args: Any) -> np.ndarray:
  """Static `[outputs, inputs]` bool matrix (leaves of `fn(*args)` by leaves of `args`): True
  where the output may have a non-zero derivative in the input. Traces `fn` on the shapes of
  `args` only; never runs it."""
  flat, treedef = jax.tree.flatten(args)
  shapes = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in flat]
  closed = jax.make_jaxpr(lambda *leaves: fn(*jax.tree.unflatten(treedef, leaves)))(*shapes)
  outs = _propagate(closed.jaxpr, [1 << i for i in range(len(flat))])
  return np.array([[bool(d >> i & 1) for i in range(len(flat))] for d in outs],
                  dtype=bool).reshape(len(outs), len(flat))


def _pullbacks_for_backend(pullbacks: str) -> str:
  if pullbacks not in PULLBACKS:
    raise ValueError(f"pullbacks={pullbacks!r}; use one of {list(PULLBACKS)}")
  if pullbacks != "auto":
    return pullbacks
  return "separate" if jax.default_backend() == "cpu" else "vmap"


def structured_loss_grads(
    graphdef: nnx.GraphDef,
    loss_spec: LossSpec,
    params: PyTree,
    model_state: PyTree,
    batch: Mapping[str, Any],
    *,
    mask: PyTree | None = None,
    pullbacks: str = "auto",
) -> tuple[dict[str, jax.Array], PyTree, LossGrads, tuple[Any, PyTree]]:
  """Losses, total gradient and per-loss gradient stack, pulling each loss back only through
  the encoders it reaches.

  `mask` (a bool tree shaped like `params`, as `mmreg.train.loss_grads_mask` builds) limits
  the stack to the covered leaves: the others get zero rows and only their total gradient,
  from one pullback of the weighted cotangent Σ_i w_i c_{i,m}. `pullbacks`: "separate" (one
  backward pass per loss reaching an encoder), "vmap" (one vmapped pass) or "auto": separate on
  CPU, whose vmapped weight-gradient products need transposed copies, vmap on other
  backends (not measured: no accelerator was available; see docs/performance.md).

  Returns `(losses, grads, LossGrads, (output, new_model_state))`, like
  `per_loss_grads_over`; `LossGrads.nonzero` holds each leaf's static row mask.
  """
  mode = _pullbacks_for_backend(pullbacks)
  flat, treedef = jax.tree.flatten(params)
  n = len(flat)
  covered = ([True] * n if mask is None else [bool(c) for c in treedef.flatten_up_to(mask)])
  if not any(covered):
    raise ValueError("the per-loss gradient mask covers no parameter; cover at least one leaf "
                     "or drop the mask")
  model = nnx.merge(graphdef, params, model_state)
  if not has_encoder_split(model):
    lacks = [name for name in _SPLIT if not hasattr(model, name)]
    why = f"lacks {lacks}" if lacks else "computes its output beyond from_features"
    raise TypeError(f"{type(model).__name__} {why}: the structure-aware per-loss "
                    "stack needs the encoder / post-encoder split of mmreg.models."
                    "MultimodalModel; use mmreg.per_loss_grads instead")
  modalities = tuple(model.modalities)

  def replaced(idx: Sequence[int], sub: Sequence[jax.Array]) -> list[jax.Array]:
    leaves = list(flat)
    for i, x in zip(idx, sub, strict=True):
      leaves[i] = x
    return leaves

  def rest_of(m: nnx.Module) -> PyTree:
    return nnx.to_pure_dict(nnx.state(m, nnx.Not(nnx.Param)))

  # 1. Encoders: the leaves each one uses, its features and its VJP.
  state = model_state
  features, encoder_vjps, encoder_leaves = [], [], []
  for m in modalities:
    def encode(leaves, state, m=m):
      model = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves), state)
      return model.encode(m, batch[m]), rest_of(model)

    used = reach(lambda leaves, encode=encode, state=state: encode(leaves, state)[0], flat)
    idx = [int(i) for i in np.flatnonzero(used.any(axis=0))]

    def encode_used(sub, idx=idx, encode=encode, state=state):
      return encode(replaced(idx, sub), state)

    h, vjp, state = jax.vjp(encode_used, [flat[i] for i in idx], has_aux=True)
    features.append(h)
    encoder_vjps.append(vjp)
    encoder_leaves.append(idx)
  encoded_state = state

  # 2. Post-encoder part, vmapped over the loss cotangents.
  def post(feats, leaves):
    model = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves), encoded_state)
    output = model.from_features(dict(zip(modalities, feats, strict=True)), batch.get(PRESENT))
    losses = loss_spec(output, batch)
    for name, value in losses.items():
      if jnp.shape(value) != ():
        raise ValueError(f"loss {name!r} has shape {jnp.shape(value)}; every named loss must be "
                         "a scalar")
    return losses, output, rest_of(model)

  post_reach = reach(lambda f, leaves: tuple(post(f, leaves)[0].values()), tuple(features), flat)
  feature_reach = post_reach[:, :len(modalities)]  # [L, M]
  param_reach = post_reach[:, len(modalities):]  # [L, n]
  post_idx = [int(i) for i in np.flatnonzero(param_reach.any(axis=0))]

  def post_used(feats, sub):
    losses, output, new_state = post(feats, replaced(post_idx, sub))
    names = tuple(losses)
    return jnp.stack([losses[k] for k in names]), (names, output, new_state)

  values, post_vjp, (names, output, new_state) = jax.vjp(
      post_used, tuple(features), [flat[i] for i in post_idx], has_aux=True)
  num = len(names)
  w = LossGrads(grads=(), names=names).weight_vector(loss_spec.weights).astype(values.dtype)
  feature_stack, post_stack = jax.vmap(post_vjp)(jnp.eye(num, dtype=values.dtype))

  # 3. Rows: rows[j][i] is ∂L_i/∂θ_j's contribution (absent = structurally zero).
  rows: list[dict[int, jax.Array]] = [{} for _ in range(n)]
  totals: list[jax.Array | None] = [None] * n

  def add(store: dict, key: Any, value: jax.Array) -> None:
    store[key] = value if key not in store else store[key] + value

  for k, j in enumerate(post_idx):
    for i in np.flatnonzero(param_reach[:, j]):
      add(rows[j], int(i), post_stack[k][i])

  # 4. Each encoder pulls back only the losses that reach it.
  for mi, (vjp, idx) in enumerate(zip(encoder_vjps, encoder_leaves, strict=True)):
    losses_in = [int(i) for i in np.flatnonzero(feature_reach[:, mi])]
    if not losses_in or not idx:
      continue
    cot = feature_stack[mi]
    if not any(covered[j] for j in idx):
      (grads,) = vjp(jnp.tensordot(w.astype(cot.dtype), cot, axes=1))
      for j, g in zip(idx, grads, strict=True):
        totals[j] = g
      continue
    if mode == "vmap":
      (stacked,) = jax.vmap(vjp)(cot[jnp.asarray(losses_in)])
      per_loss = [[g[r] for g in stacked] for r in range(len(losses_in))]
    else:
      per_loss = [vjp(cot[i])[0] for i in losses_in]
    for i, grads in zip(losses_in, per_loss, strict=True):
      for j, g in zip(idx, grads, strict=True):
        add(rows[j], i, g)

  # 5. Totals Σ_i w_i ∂L_i/∂θ_j and the stack with its static row masks.
  grads_out, stack_out, nonzero = [], [], []
  for j, x in enumerate(flat):
    total = sum((w[i].astype(g.dtype) * g for i, g in rows[j].items()), jnp.zeros_like(x))
    if totals[j] is not None:
      total = total + totals[j]
    grads_out.append(total)
    keep = covered[j] and bool(rows[j])
    mask_j = tuple(keep and i in rows[j] for i in range(num))
    nonzero.append(mask_j)
    zero = jnp.zeros_like(x)
    stack_out.append(jnp.stack([rows[j].get(i, zero) for i in range(num)]) if keep
                     else jnp.broadcast_to(zero, (num, *x.shape)))
  losses = {name: values[i] for i, name in enumerate(names)}
  stack = LossGrads(grads=jax.tree.unflatten(treedef, stack_out), names=names,
                    covered=tuple(covered) if mask is not None else None,
                    nonzero=tuple(nonzero))
  return losses, jax.tree.unflatten(treedef, grads_out), stack, (output, new_state)
