"""Jitted train and eval steps over a functional split of an NNX model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from mmreg.data.batch import LABEL, PRESENT, inputs_of
from mmreg.grads import LossGrads, per_loss_grads, per_loss_grads_over
from mmreg.losses.spec import LossSpec
from mmreg.models.classifier import ModelOutput
from mmreg.models.interface import check_model, check_output
from mmreg.train.feature_grads import per_loss_feature_grads
from mmreg.train.structured_grads import has_encoder_split, structured_loss_grads

PyTree = Any


@struct.dataclass
class TrainState:
  """Everything a step changes: step count, parameters (a plain nested dict), the rest of
  the model state, optimizer state and the PRNG key as raw uint32 key data (what orbax
  checkpoints; the step wraps it into a typed `jax.random.key` for the transforms); and the
  epoch-level state of a loss-side method (`mmreg.train.loss_methods`), which the step reads
  and its epoch-boundary update replaces (None without one)."""

  step: jax.Array
  params: PyTree
  model_state: PyTree
  opt_state: PyTree
  key: jax.Array
  loss_state: PyTree = None


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, PyTree, PyTree]:
  """(graphdef, params, other state) as plain nested dicts of fresh copies, so donating
  them to a jitted step leaves the model itself usable."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  copy = lambda tree: jax.tree.map(jnp.copy, nnx.to_pure_dict(tree))  # noqa: E731
  return graphdef, copy(params), copy(rest)


def init_train_state(model: nnx.Module, tx: optax.GradientTransformation, seed: int
                     ) -> tuple[nnx.GraphDef, TrainState]:
  """Raises a TypeError if `model` is not an `nnx.Module` callable as `model(batch)` (the
  loop and the structure-aware stack need the whole `mmreg.models.MultimodalModel`)."""
  check_model(model, split=False)
  graphdef, params, rest = split_model(model)
  return graphdef, TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=rest,
                              opt_state=tx.init(params),
                              key=jax.random.key_data(jax.random.key(seed)))


def model_apply(graphdef: nnx.GraphDef, params: PyTree, model_state: PyTree,
                batch: Mapping[str, Any]) -> tuple[ModelOutput, PyTree]:
  """Run the model functionally; returns its output and its updated non-param state."""
  model = nnx.merge(graphdef, params, model_state)
  output = model(batch)
  check_output(output, model, batch)
  return output, nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.Param)))


def make_train_step(
    graphdef: nnx.GraphDef,
    loss_spec: LossSpec,
    tx: optax.GradientTransformationExtraArgs,
    *,
    steps_per_epoch: int,
    with_loss_grads: bool = False,
    loss_grads_mask: PyTree | None = None,
    with_feature_grads: bool = False,
    loss_grads_impl: str = "auto",
    post_update: Callable[[PyTree, PyTree, jax.Array], PyTree] | None = None,
    loss_method: Any = None,
    jit: bool = True,
) -> Callable[[TrainState, Mapping[str, Any]], tuple[TrainState, dict[str, jax.Array]]]:
  """Build `step(state, batch) -> (state, metrics)` for the graph of a model that follows
  `mmreg.models.MultimodalModel` (its `__call__(batch)` returns a `ModelOutput`).

  The total gradient of Σ_name w·L_name goes to `tx.update` as `updates`, with the step's
  side information as extra keyword arguments: `loss_grads` (a `LossGrads` when
  `with_loss_grads`, else None), `loss_values`, `modality_logits`, `features`, `latents`,
  `penultimate` (the fused representation fed to the head), `labels`, `inputs`, `present`,
  `encode_fn` (`(modality, x) -> features` at the current parameters, no gradient),
  `logits_fn` (`batch -> fused logits` at the current parameters, no gradient), `key` and
  `epoch`. `post_update(params, opt_state, epoch)`, if given, runs after
  `optax.apply_updates` (e.g. `mmreg.spa_slerp_hook`). `loss_method` (a
  `mmreg.train.loss_methods.LossMethod`) trains `loss_method.loss_spec(loss_spec,
  state.loss_state)` instead of `loss_spec`: its epoch-level state is a step argument.

  Memory of the per-loss stack: `loss_grads_mask` (a bool tree shaped like the params, e.g.
  `mmreg.train.loss_grads_mask(param_labels, "encoders")`) computes the stack only over the
  covered leaves (`mmreg.grads.per_loss_grads_over`). `with_feature_grads` computes instead the
  stack w.r.t. the encoders' features and passes `feature_grads` (`LossGrads` of
  `{m: [L, B, d_m]}`) and `features_vjp` (`{m: cotangent} -> encoder gradients`); see
  `mmreg.train.feature_grads`.

  `loss_grads_impl` picks how the stack is computed: "structured"
  (`mmreg.train.structured_grads.structured_loss_grads`: each encoder pulls back only the
  losses that reach it), "vmap" (`per_loss_grads` / `per_loss_grads_over`: one VJP vmapped
  over all losses) or "auto" (structured for models with the encoder / post-encoder split,
  else vmap).
  """
  if loss_grads_impl not in ("auto", "structured", "vmap"):
    raise ValueError(f"loss_grads_impl={loss_grads_impl!r}; use 'auto', 'structured' or 'vmap'")
  if with_feature_grads and with_loss_grads:
    raise ValueError("with_feature_grads replaces the parameter stack: pass either "
                     "with_loss_grads or with_feature_grads, not both")

  def step(state: TrainState, batch: Mapping[str, Any]):
    spec = (loss_spec if loss_method is None
            else loss_method.loss_spec(loss_spec, state.loss_state))

    def losses_fn(params, model_state, batch):
      output, new_state = model_apply(graphdef, params, model_state, batch)
      return spec(output, batch), (output, new_state)

    key, tx_key = jax.random.split(jax.random.wrap_key_data(state.key))
    epoch = state.step // steps_per_epoch
    feature_grads = features_vjp = loss_grads = None
    structured = with_loss_grads and loss_grads_impl != "vmap" and (
        loss_grads_impl == "structured"
        or has_encoder_split(nnx.merge(graphdef, state.params, state.model_state)))
    if with_feature_grads:
      losses, grads, feature_grads, features_vjp, (output, new_model_state) = (
          per_loss_feature_grads(graphdef, spec, state.params, state.model_state, batch))
    elif structured:
      losses, grads, loss_grads, (output, new_model_state) = structured_loss_grads(
          graphdef, spec, state.params, state.model_state, batch, mask=loss_grads_mask)
    elif with_loss_grads and loss_grads_mask is not None:
      losses, grads, loss_grads, (output, new_model_state) = per_loss_grads_over(
          losses_fn, state.params, loss_grads_mask, spec.weights, state.model_state, batch,
          has_aux=True)
    elif with_loss_grads:
      losses, loss_grads, (output, new_model_state) = per_loss_grads(
          losses_fn, state.params, state.model_state, batch, has_aux=True)
      grads = loss_grads.weighted_sum(spec.weights)
    else:
      def total_fn(params):
        losses, aux = losses_fn(params, state.model_state, batch)
        return spec.total(losses), (losses, aux)
      (_, (losses, (output, new_model_state))), grads = jax.value_and_grad(
          total_fn, has_aux=True)(state.params)

    def encode_fn(modality: str, x: jax.Array) -> jax.Array:
      model = nnx.merge(graphdef, jax.lax.stop_gradient(state.params), state.model_state)
      return jax.lax.stop_gradient(model.encode(modality, x))

    def logits_fn(inputs: Mapping[str, Any]) -> jax.Array:
      output, _ = model_apply(graphdef, jax.lax.stop_gradient(state.params), state.model_state,
                              inputs)
      return jax.lax.stop_gradient(output.logits)

    updates, opt_state = tx.update(
        grads, state.opt_state, state.params,
        loss_grads=loss_grads,
        loss_values=losses,
        modality_logits=output.modality_logits,
        features=output.features,
        latents=output.latents,
        penultimate=output.fused,
        labels=batch[LABEL],
        inputs=inputs_of(batch),
        present=batch.get(PRESENT),
        encode_fn=encode_fn,
        logits_fn=logits_fn,
        feature_grads=feature_grads,
        features_vjp=features_vjp,
        key=tx_key,
        epoch=epoch,
    )
    params = optax.apply_updates(state.params, updates)
    if post_update is not None:
      params = post_update(params, opt_state, epoch)
    metrics = {f"loss/{n}": v for n, v in losses.items()}
    metrics["loss/total"] = spec.total(losses)
    metrics["grad_norm"] = optax.global_norm(grads)
    metrics["update_norm"] = optax.global_norm(updates)
    new_state = state.replace(step=state.step + 1, params=params, model_state=new_model_state,
                              opt_state=opt_state, key=jax.random.key_data(key))
    return new_state, metrics

  return jax.jit(step, donate_argnums=0) if jit else step


def make_predict(graphdef: nnx.GraphDef, jit: bool = True
                 ) -> Callable[[PyTree, PyTree, Mapping[str, Any]], ModelOutput]:
  """`predict(params, model_state, batch) -> ModelOutput` (no state update)."""

  def predict(params, model_state, batch):
    return model_apply(graphdef, params, model_state, batch)[0]

  return jax.jit(predict) if jit else predict


__all__ = ["LossGrads", "TrainState", "init_train_state", "make_predict", "make_train_step",
           "model_apply", "split_model"]
