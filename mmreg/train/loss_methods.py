"""Loss-side methods with epoch-level state: PMR (class prototypes), G-Blending (weights) and
ETF + dot-regression (the fixed ETF kernel).

A loss-side method changes what is trained, not the gradient. Like an optax transformation it
is a triple of pure functions around an explicit state:

  state = method.init(ctx)                 # zeros of the right shapes, no data pass
  state = method.update(state, ctx)        # at the start of every epoch, outside jit
  spec  = method.loss_spec(base, state)    # inside the jitted step: the losses to train

The state lives in `TrainState.loss_state`, so it is checkpointed with the run and enters the
jitted step as an argument (no retracing when it changes); `make_train_step(...,
loss_method=)` applies `loss_spec`. `ctx` is an `EpochContext`: the model in functional form,
the data and the run's settings at the start of `ctx.epoch`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mmreg.data.batch import LABEL, Batch, inputs_of
from mmreg.data.dataset import MultimodalDataset, iterate_batches
from mmreg.losses.classification import cross_entropy
from mmreg.losses.dot_regression import dot_regression
from mmreg.losses.gblending import gblending_weights
from mmreg.losses.pmr import class_prototypes, pmr_loss
from mmreg.losses.spec import FUSED, LossSpec
from mmreg.models.classifier import ModelOutput
from mmreg.models.etf import ETFHead
from mmreg.train.methods import MethodNeeds, register_method
from mmreg.train.step import model_apply

PyTree = Any
PMR_TERM = "pmr"


@dataclasses.dataclass(frozen=True)
class EpochContext:
  """What a loss-side method reads at the start of epoch `epoch`.

  `graphdef`, `params`, `model_state`: the model as `mmreg.train.split_model` returns it
  (`params`/`model_state` of `TrainState`). `train`, `val`: the data splits. `loss_spec`: the
  run's base losses. `optimizer`: the run's optimizer without the balancing transform (a
  fresh copy trains G-Blending's probes). `batch_size`, `seed`: the run's.
  """

  graphdef: nnx.GraphDef
  params: PyTree
  model_state: PyTree
  train: MultimodalDataset
  val: MultimodalDataset
  loss_spec: LossSpec
  optimizer: optax.GradientTransformation
  batch_size: int
  seed: int
  epoch: int


class LossMethod(NamedTuple):
  """A loss-side method: `init(ctx) -> state`, `update(state, ctx) -> state` (epoch start,
  host side), `loss_spec(base_spec, state) -> LossSpec` (traceable)."""

  init: Callable[[EpochContext], PyTree]
  update: Callable[[PyTree, EpochContext], PyTree]
  loss_spec: Callable[[LossSpec, PyTree], LossSpec]


def _output_shapes(ctx: EpochContext) -> ModelOutput:
  n = min(len(ctx.train), ctx.batch_size)
  batch = ctx.train.take(np.arange(n)).as_batch()
  return jax.eval_shape(lambda p, s, b: model_apply(ctx.graphdef, p, s, b)[0],
                        ctx.params, ctx.model_state, batch)


@functools.partial(jax.jit, static_argnums=0)
def _features(graphdef: nnx.GraphDef, params: PyTree, model_state: PyTree,
              batch: Batch) -> dict[str, jax.Array]:
  return model_apply(graphdef, params, model_state, batch)[0].features


# --------------------------------------------------------------------------------------------
# PMR


def prototype_batches(num_samples: int, batch_size: int, fraction: float) -> int:
  """How many batches PMR's prototype pass reads: max(1, ⌊⌈N/B⌉·fraction⌋) (the authors'
  loop stops once it has read `len(dataloader) // 10` batches, at least one, :425-430)."""
  return max(1, math.floor(math.ceil(num_samples / batch_size) * fraction + 1e-9))


class PMRState(NamedTuple):
  """Class prototypes `{m: [K, d_m]}` and whether the prototype loss is on this epoch (1/0)."""

  prototypes: dict[str, jax.Array]
  active: jax.Array


def pmr(alpha: float = 1.0, momentum: float = 0.2, prototype_fraction: float = 0.1,
        start_epoch: int = 0, end_epoch: int = 100) -> LossMethod:
  """PMR (Fan et al., CVPR 2023) as in the authors' released code.

  Source: fanyunfeng-bit/Modal-Imbalance-PMR, main_Prototype_grad.py (commit 3615e48).
  Adds the loss term "pmr" = Σ_m β_m·CE(−‖h_m − c^m‖, y) (`mmreg.losses.pmr_loss`; the authors
  add it to the fused CE alone, i.e. `classification_losses(..., unimodal_weight=0)`), during
  epochs `start_epoch ≤ epoch ≤ end_epoch` (:156). At the start of each epoch the prototypes
  are the class means of the encoder features over the first max(1, ⌊n·prototype_fraction⌋)
  of the n batches of a shuffled pass over the train split (:405-433; the code's
  `all_num // 10`; mmreg reads them in the epoch's own training order), blended with the
  previous ones, c ← (1 − momentum)·mean + momentum·c, from epoch 2 on (:435-440: the
  prototypes for epochs 0 and 1 are plain means, :535-557).

  Defaults: alpha = 1.0 (:49), momentum = 0.2 (:39), start/end epoch 0/100 (:47-48). A class
  absent from the pass keeps its previous prototype (zeros at first); the code divides 0/0.
  """
  if not 0.0 < prototype_fraction <= 1.0:
    raise ValueError(f"prototype_fraction={prototype_fraction} must be in (0, 1]")
  if not 0.0 <= momentum < 1.0:
    raise ValueError(f"momentum={momentum} must be in [0, 1)")

  def init(ctx: EpochContext) -> PMRState:
    features = _output_shapes(ctx).features
    if len(features) < 2:
      raise ValueError(f"PMR rebalances at least two modalities; the model has {list(features)}")
    k = ctx.train.num_classes
    return PMRState({m: jnp.zeros((k, f.shape[-1]), jnp.float32) for m, f in features.items()},
                    jnp.zeros((), jnp.float32))

  def update(state: PMRState, ctx: EpochContext) -> PMRState:
    n, b = len(ctx.train), ctx.batch_size
    num_batches = prototype_batches(n, b, prototype_fraction)
    rows = np.random.default_rng((ctx.seed, ctx.epoch)).permutation(n)[:num_batches * b]
    feats: dict[str, list[np.ndarray]] = {m: [] for m in state.prototypes}
    for lo in range(0, len(rows), b):
      index = rows[lo:lo + b]
      padded = np.concatenate([index, np.full(b - len(index), index[-1])])
      out = _features(ctx.graphdef, ctx.params, ctx.model_state,
                      ctx.train.take(padded).as_batch())
      for m in feats:
        feats[m].append(np.asarray(out[m])[:len(index)])
    labels = ctx.train.labels[rows]
    prototypes = {}
    for m, old in state.prototypes.items():
      old = np.asarray(old)
      mean = class_prototypes(np.concatenate(feats[m]), labels, ctx.train.num_classes, old)
      blended = (1 - momentum) * mean + momentum * old if ctx.epoch >= 2 else mean
      prototypes[m] = jnp.asarray(blended, jnp.float32)
    active = jnp.asarray(float(start_epoch <= ctx.epoch <= end_epoch), jnp.float32)
    return PMRState(prototypes, active)

  def loss_spec(base: LossSpec, state: PMRState) -> LossSpec:
    modalities = tuple(state.prototypes)

    def term(output: ModelOutput, batch: Mapping[str, Any]) -> jax.Array:
      return pmr_loss(output.features, batch[LABEL], state.prototypes, modalities, alpha)

    return base.with_term(PMR_TERM, term, state.active)

  return LossMethod(init, update, loss_spec)


# --------------------------------------------------------------------------------------------
# G-Blending


class GBlendingState(NamedTuple):
  """The weight of each blended loss, `{name: scalar}`."""

  weights: dict[str, jax.Array]


def _zero_others(batch: Batch, keep: Mapping[str, jax.Array]) -> Batch:
  """The batch with the inputs of modalities whose `keep` flag is False set to zero."""
  return {**batch, **{m: jnp.where(keep[m], x, jnp.zeros_like(x))
                      for m, x in inputs_of(batch).items()}}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _probe_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                keep: Mapping[str, jax.Array], params: PyTree, model_state: PyTree,
                opt_state: PyTree, batch: Batch):
  batch = _zero_others(batch, keep)

  def loss_fn(p):
    output, new_state = model_apply(graphdef, p, model_state, batch)
    return cross_entropy(output.logits, batch[LABEL]), new_state

  (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), new_state, opt_state, loss


@functools.partial(jax.jit, static_argnums=0)
def _probe_loss(graphdef: nnx.GraphDef, keep: Mapping[str, jax.Array], params: PyTree,
                model_state: PyTree, batch: Batch) -> jax.Array:
  batch = _zero_others(batch, keep)
  return cross_entropy(model_apply(graphdef, params, model_state, batch)[0].logits, batch[LABEL])


def _full_batches(data: MultimodalDataset, batch_size: int) -> Iterator[Batch]:
  for lo in range(0, len(data) - batch_size + 1, batch_size):
    yield data.take(np.arange(lo, lo + batch_size)).as_batch()


def probe_losses(ctx: EpochContext, kept: tuple[str, ...], epochs: int
                 ) -> tuple[tuple[float, float], tuple[float, float]]:
  """((T_start, V_start), (T_end, V_end)) of one G-Blending probe, as BalanceBenchmark's
  `super_epoch_origin` (GBlending_trainer.py:306-360): a copy of the model with a fresh
  optimizer trains `epochs` epochs on the fused CE with the modalities not in `kept` zeroed;
  T = Σ of its batch losses during the first / last epoch, V = Σ of its batch-mean validation
  losses (full batches, in order) after that epoch."""
  params, model_state = ctx.params, ctx.model_state
  opt_state = ctx.optimizer.init(params)
  keep = {m: jnp.asarray(m in kept) for m in ctx.train.modalities}
  measured = []
  for j in range(epochs):
    losses = []
    for batch in iterate_batches(ctx.train, ctx.batch_size, seed=ctx.seed, epoch=ctx.epoch + j):
      params, model_state, opt_state, loss = _probe_step(
          ctx.graphdef, ctx.optimizer, keep, params, model_state, opt_state, batch)
      losses.append(loss)
    if j in (0, epochs - 1):
      val = [_probe_loss(ctx.graphdef, keep, params, model_state, batch)
             for batch in _full_batches(ctx.val, ctx.batch_size)]
      measured.append((float(np.sum(np.asarray(jax.device_get(losses), np.float64))),
                       float(np.sum(np.asarray(jax.device_get(val), np.float64)))))
  return measured[0], measured[-1]


def gblending(super_epoch: int = 10, min_overfit_sq: float = 0.0,
              mean_losses: bool = False) -> LossMethod:
  """G-Blending (Wang, Tran & Feiszli, CVPR 2020) as in BalanceBenchmark's online trainer.

  Source: GeWu-Lab/BalanceBenchmark (commit 4c1482f), balancemm/trainer/GBlending_trainer.py.
  Reweights the losses "fused" and one per modality (the auxiliary heads' CE, the reference's
  `unimodal_result`) to w (Σ w = 1, :300-301). At every epoch e with e % super_epoch == 0
  (:92-95) one probe per loss (:311-360, `probe_losses`: the fused model for "fused", the model
  with the other modalities zeroed for a modality) trains `super_epoch` epochs from the current
  parameters, and w = `mmreg.losses.gblending_weights` of its deltas (:361-372).

  Defaults: super_epoch = 10 (configs/trainer_config.yaml:38, method "online" :35).
  `min_overfit_sq` floors O² (mmreg's guard; 0: the reference, with a finite fallback where
  it divides by zero). `mean_losses` (mmreg's) divides T and V by their number of batches,
  so O compares train and validation losses on one scale; the reference sums them (:341,
  :350).
  """
  if super_epoch < 2:
    raise ValueError(f"super_epoch={super_epoch}: G-Blending compares the first and the last "
                     "epoch of each probe, so it needs at least 2")

  def names_of(ctx: EpochContext) -> tuple[str, ...]:
    modalities = tuple(_output_shapes(ctx).features)
    names = (FUSED, *modalities)
    missing = [n for n in names if n not in ctx.loss_spec.terms]
    if missing:
      raise ValueError(f"G-Blending weights the losses {list(names)} but the loss spec lacks "
                       f"{missing}; build it with mmreg.classification_losses")
    return names

  def init(ctx: EpochContext) -> GBlendingState:
    return GBlendingState({n: jnp.asarray(ctx.loss_spec.weights[n], jnp.float32)
                           for n in names_of(ctx)})

  def update(state: GBlendingState, ctx: EpochContext) -> GBlendingState:
    if ctx.epoch % super_epoch:
      return state
    if len(ctx.val) < ctx.batch_size:
      raise ValueError(f"G-Blending's validation loss needs a full batch: the val split has "
                       f"{len(ctx.val)} samples, fewer than batch_size {ctx.batch_size}")
    names = names_of(ctx)
    modalities = names[1:]
    deltas = {n: probe_losses(ctx, modalities if n == FUSED else (n,), super_epoch)
              for n in names}
    if mean_losses:
      scale = (len(ctx.train) // ctx.batch_size, len(ctx.val) // ctx.batch_size)
      deltas = {n: tuple((t / scale[0], v / scale[1]) for t, v in d) for n, d in deltas.items()}
    weights = gblending_weights({n: d[0][0] for n, d in deltas.items()},
                                {n: d[1][0] for n, d in deltas.items()},
                                {n: d[0][1] for n, d in deltas.items()},
                                {n: d[1][1] for n, d in deltas.items()},
                                min_overfit_sq=min_overfit_sq)
    return GBlendingState({n: jnp.asarray(w, jnp.float32) for n, w in weights.items()})

  def loss_spec(base: LossSpec, state: GBlendingState) -> LossSpec:
    return base.reweighted(state.weights)

  return LossMethod(init, update, loss_spec)


# --------------------------------------------------------------------------------------------
# ETF + dot-regression

DOT_REGRESSION = "dot_regression"


class ETFState(NamedTuple):
  """The model's fixed simplex-ETF kernel M `[d, K]`."""

  kernel: jax.Array


def etf_dot_regression(feature_norm: float = 1.0, normalize: bool = True) -> LossMethod:
  """Fixed simplex-ETF classifier + dot-regression loss (Yang et al., NeurIPS 2022).

  Replaces the run's fused cross-entropy ("fused") by "dot_regression" =
  `mmreg.losses.dot_regression_loss(fused features, y, M)` at the same weight; the other
  losses of the run stay. M is the kernel of the model's `ETFHead` (a model built with
  `head="etf"`), read once at `init`: it is fixed, and as loss state it enters the step as an
  argument, so one compiled step serves models of every seed. `feature_norm` and `normalize`
  are `dot_regression_loss`'s.
  """

  def init(ctx: EpochContext) -> ETFState:
    head = getattr(nnx.merge(ctx.graphdef, ctx.params, ctx.model_state), "head", None)
    if not isinstance(head, ETFHead):
      raise ValueError(f"etf_dr trains against a fixed simplex-ETF head but the model's head is "
                       f"{type(head).__name__}; build the model with head='etf'")
    return ETFState(jnp.array(head.kernel[...], jnp.float32))  # a copy (both states are donated)

  def update(state: ETFState, ctx: EpochContext) -> ETFState:
    del ctx
    return state

  def loss_spec(base: LossSpec, state: ETFState) -> LossSpec:
    if FUSED not in base.terms:
      raise ValueError(f"etf_dr replaces the fused cross-entropy {FUSED!r}, which the loss spec "
                       f"{base.names} lacks; build it with mmreg.classification_losses")
    rest = [n for n in base.names if n != FUSED]
    term = dot_regression(state.kernel, feature_norm=feature_norm, normalize=normalize)
    return LossSpec({DOT_REGRESSION: term, **{n: base.terms[n] for n in rest}},
                    {DOT_REGRESSION: base.weights[FUSED], **{n: base.weights[n] for n in rest}})

  return LossMethod(init, update, loss_spec)


def _etf_dr_needs(options: Mapping[str, Any]) -> MethodNeeds:
  del options
  return MethodNeeds(model={"head": "etf"})


def _no_transform(param_labels: Any, modalities: tuple[str, ...], **options: Any
                  ) -> optax.GradientTransformation:
  del param_labels, modalities, options
  return optax.identity()


register_method("pmr", _no_transform, loss_method=pmr)
register_method("gblending", _no_transform, loss_method=gblending)
register_method("etf_dr", _no_transform, loss_method=etf_dot_regression, needs=_etf_dr_needs)
