"""Runs of one training configuration at several learning rates and seeds, trained together.

The library's multi-run loop. Run r has its own learning rate, seed (initial parameters, PRNG
key, data order), optimizer state and method state; all runs advance through one jitted
`lax.scan` over an epoch of `make_train_step` steps vmapped over the runs, each run reading its
batches by index from one copy of the training arrays on the device (a streamed split is read
batch by batch instead, one vmapped step at a time). A run's learning rate
lives in its optimizer state (`optax.inject_hyperparams`), so one program serves the whole
grid. Runs train until none has improved its validation accuracy for `patience` epochs (or
`max_epochs`); each keeps the parameters of its best validation epoch. The test split is not
read here: `evaluate_runs` reads it once, after selection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mmreg.data.dataset import MultimodalDataset, Splits, batch_indices, eval_batches
from mmreg.losses.spec import LossSpec
from mmreg.models.labels import ROLE_LABELS, param_labels
from mmreg.train.loss_methods import EpochContext
from mmreg.train.seeds import stack_states, stack_trees, unstack_tree
from mmreg.train.step import TrainState, init_train_state, make_predict, make_train_step

PyTree = Any
OptimizerFactory = Callable[..., optax.GradientTransformation]


def sgd_momentum(learning_rate: float) -> optax.GradientTransformation:
  """SGD with momentum 0.9, the optimizer of the balancing methods' released code."""
  return optax.sgd(learning_rate, momentum=0.9)


class RunsResult(NamedTuple):
  """Per run r (learning-rate-major order: `learning_rates[r]`, `seeds[r]`): the parameters and
  model state of its best validation epoch (leading axis R), its best validation accuracy and
  that epoch, and the norm of its encoders' parameter change over the first epoch (the
  effective step a method takes, comparable across methods at one learning rate), and
  whether its training loss became NaN/Inf (a diverged run keeps its best epoch before that,
  and its later epochs cannot improve on it)."""

  graphdef: nnx.GraphDef
  params: PyTree
  model_state: PyTree
  learning_rates: np.ndarray
  seeds: np.ndarray
  best_val_accuracy: np.ndarray
  best_epoch: np.ndarray
  first_epoch_encoder_step: np.ndarray
  diverged: np.ndarray
  epochs: int
  seconds: float


def _stacked_states(build_model: Callable[[int], nnx.Module], tx_for: Callable[[float], Any],
                    runs: Sequence[tuple[float, int]]) -> tuple[nnx.GraphDef, TrainState,
                                                                nnx.Module]:
  models = {seed: build_model(seed) for _, seed in runs}
  graphdef, states = stack_states([init_train_state(models[seed], tx_for(lr), seed)
                                   for lr, seed in runs])
  return graphdef, states, models[runs[0][1]]


def _where_runs(mask: jax.Array, new: PyTree, old: PyTree) -> PyTree:
  return jax.tree.map(lambda n, o: jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o),
                      new, old)


def _encoder_step(labels: PyTree, after: PyTree, before: PyTree) -> jax.Array:
  squares = jax.tree.map(
      lambda lab, a, b: (jnp.sum(jnp.square(a - b), axis=tuple(range(1, a.ndim)))
                         if lab not in ROLE_LABELS else jnp.zeros(a.shape[:1])),
      labels, after, before)
  return jnp.sqrt(sum(jax.tree.leaves(squares)))


def train_runs(build_model: Callable[[int], nnx.Module], loss_spec: LossSpec,
               method_tx: optax.GradientTransformationExtraArgs, splits: Splits, *,
               learning_rates: Sequence[float], seeds: Sequence[int], batch_size: int,
               max_epochs: int, patience: int, optimizer: OptimizerFactory = sgd_momentum,
               with_loss_grads: bool = False, loss_method: Any = None,
               eval_batch_size: int = 128) -> RunsResult:
  """Train every (learning rate, seed) pair of the grid together; see the module docstring.

  `build_model(seed)` builds seed's model; `method_tx` is the balancing transform (the
  registry's `build_method`), chained before `optimizer(learning_rate=lr)`; `with_loss_grads`
  and `loss_method` are `make_train_step`'s. A loss-side method's epoch-level state is updated
  run by run at the start of every epoch, with the run's own optimizer and seed.
  """
  if patience < 1 or max_epochs < 1:
    raise ValueError(f"patience={patience} and max_epochs={max_epochs} must be at least 1")
  if not learning_rates or not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"learning rates {list(learning_rates)} and seeds {list(seeds)} must be "
                     "non-empty, the seeds distinct")
  if any(not np.isfinite(lr) or lr <= 0 for lr in learning_rates):
    raise ValueError(f"learning rates {list(learning_rates)} must be finite and positive")
  start = time.perf_counter()
  runs = [(float(lr), int(seed)) for lr in learning_rates for seed in seeds]

  def tx_for(lr: float) -> optax.GradientTransformationExtraArgs:
    return optax.chain(method_tx, optax.inject_hyperparams(optimizer)(learning_rate=lr))

  graphdef, states, model = _stacked_states(build_model, tx_for, runs)
  labels = param_labels(model)
  train, val = splits.train, splits.val
  spe = len(train) // batch_size
  step = make_train_step(graphdef, loss_spec, tx_for(runs[0][0]), steps_per_epoch=spe,
                         with_loss_grads=with_loss_grads, loss_method=loss_method, jit=False)

  def epoch_fn(states: TrainState, indices: jax.Array, arrays: PyTree):
    def body(states, index):
      batches = jax.vmap(lambda i: jax.tree.map(lambda a: a[i], arrays))(index)
      states, metrics = jax.vmap(step)(states, batches)
      return states, metrics["loss/total"]
    return jax.lax.scan(body, states, indices)

  run_epoch = jax.jit(epoch_fn, donate_argnums=0)
  run_step = jax.jit(jax.vmap(step), donate_argnums=0)
  # A split held in memory goes to the device once; a streamed one (`SourceDataset`) is read
  # batch by batch.
  arrays = jax.device_put(train.as_batch()) if hasattr(train, "as_batch") else None
  accuracy = _accuracy_fn(graphdef, val, eval_batch_size)
  select = jax.jit(_where_runs)
  encoder_step = jax.jit(lambda after, before: _encoder_step(labels, after, before))

  # One optimizer object per learning rate: a loss-side method's jitted probes take it as a
  # static argument, so a fresh object per run and epoch would recompile them.
  optimizers = {lr: optimizer(learning_rate=lr) for lr, _ in runs}

  def contexts(states: TrainState, epoch: int) -> list[EpochContext]:
    return [EpochContext(graphdef, unstack_tree(states.params, r),
                         unstack_tree(states.model_state, r), train, val, loss_spec,
                         optimizers[lr], batch_size, seed, epoch)
            for r, (lr, seed) in enumerate(runs)]

  if loss_method is not None:
    states = states.replace(loss_state=stack_trees(
        [loss_method.init(c) for c in contexts(states, 0)]))
  initial = jax.tree.map(jnp.copy, states.params)
  best = (jax.tree.map(jnp.copy, states.params), jax.tree.map(jnp.copy, states.model_state))
  best_acc = np.full(len(runs), -1.0)
  best_epoch = np.zeros(len(runs), np.int64)
  first_step = np.zeros(len(runs))
  diverged = np.zeros(len(runs), bool)
  epoch = 0
  for epoch in range(max_epochs):
    if loss_method is not None:
      updated = [loss_method.update(unstack_tree(states.loss_state, r), c)
                 for r, c in enumerate(contexts(states, epoch))]
      states = states.replace(loss_state=stack_trees(updated))
    indices = np.stack([np.stack(list(batch_indices(len(train), batch_size, seed=seed,
                                                    epoch=epoch)))
                        for _, seed in runs], axis=1)
    if arrays is not None:
      states, losses = run_epoch(states, indices, arrays)
    else:
      losses = []
      for index in indices:
        states, metrics = run_step(states, stack_trees(list(train.batches(index))))
        losses.append(metrics["loss/total"])
      losses = np.stack(losses)
    diverged |= ~np.all(np.isfinite(np.asarray(losses)), axis=0)
    if epoch == 0:
      first_step = np.asarray(encoder_step(states.params, initial))
      del initial
    acc = accuracy(states.params, states.model_state)
    improved = acc > best_acc
    best = (select(improved, states.params, best[0]),
            select(improved, states.model_state, best[1]))
    best_acc = np.where(improved, acc, best_acc)
    best_epoch = np.where(improved, epoch, best_epoch)
    if np.all(epoch - best_epoch >= patience):
      break
  return RunsResult(graphdef, best[0], best[1], np.array([lr for lr, _ in runs]),
                    np.array([s for _, s in runs]), best_acc, best_epoch, first_step,
                    diverged, epoch + 1, time.perf_counter() - start)


def _predict_runs(graphdef: nnx.GraphDef) -> Callable[..., Any]:
  return jax.jit(jax.vmap(make_predict(graphdef, jit=False), in_axes=(0, 0, None)))


def _accuracy_fn(graphdef: nnx.GraphDef, data: MultimodalDataset, batch_size: int
                 ) -> Callable[[PyTree, PyTree], np.ndarray]:
  predict = _predict_runs(graphdef)

  def accuracy(params: PyTree, model_state: PyTree) -> np.ndarray:
    correct = 0
    for batch, valid in eval_batches(data, batch_size):
      pred = np.asarray(jnp.argmax(predict(params, model_state, batch).logits, -1))
      correct = correct + ((pred == batch["label"]) & valid).sum(-1)
    return correct / len(data)

  return accuracy


def take_runs(result: RunsResult, index: Sequence[int]) -> RunsResult:
  """The runs `index` of `result`, in that order."""
  index = np.asarray(index)
  take = lambda tree: jax.tree.map(lambda x: x[index], tree)  # noqa: E731
  return result._replace(params=take(result.params), model_state=take(result.model_state),
                         **{f: getattr(result, f)[index] for f in _PER_RUN})


_PER_RUN = ("learning_rates", "seeds", "best_val_accuracy", "best_epoch",
            "first_epoch_encoder_step", "diverged")


def evaluate_runs(result: RunsResult, data: MultimodalDataset, batch_size: int = 128
                  ) -> dict[str, Any]:
  """Every run's outputs on `data` at its selected parameters: fused logits `[R, N, K]`,
  per-modality logits and encoder features `{m: [R, N, ·]}` (host arrays)."""
  predict = _predict_runs(result.graphdef)
  parts: dict[str, list[Any]] = {"logits": [], "modality_logits": [], "features": []}
  for batch, valid in eval_batches(data, batch_size):
    out = predict(result.params, result.model_state, batch)
    parts["logits"].append(np.asarray(out.logits)[:, valid])
    parts["modality_logits"].append({m: np.asarray(z)[:, valid]
                                     for m, z in out.modality_logits.items()})
    parts["features"].append({m: np.asarray(z)[:, valid] for m, z in out.features.items()})

  def joined(chunks: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {m: np.concatenate([c[m] for c in chunks], axis=1) for m in chunks[0]}

  return {"logits": np.concatenate(parts["logits"], axis=1),
          "modality_logits": joined(parts["modality_logits"]),
          "features": joined(parts["features"])}


__all__ = ["RunsResult", "evaluate_runs", "sgd_momentum", "take_runs", "train_runs"]
