"""Runs of one training configuration at several learning rates and seeds, trained together.

The library's multi-run loop. Run r has its own learning rate, seed (initial parameters, PRNG
key, data order), optimizer state and method state; all runs advance through one jitted
`lax.scan` over an epoch of `make_train_step` steps vmapped over the runs, each run reading its
batches by index from one copy of the training arrays on the device (a streamed split is read
batch by batch instead, one vmapped step at a time). A run's learning rate
lives in its optimizer state (`optax.inject_hyperparams`), so one program serves the whole
grid. Given one `Splits` per seed, run r reads the train and validation split of its seed: the
per-seed training arrays are stacked on a leading axis on the device and run r gathers
`arrays[seed_index[r], batch_index]`, so the seeds of one configuration share one program.
Runs train until none has improved its validation score (validation accuracy unless
`val_score` is given) for `patience` epochs (or `max_epochs`); each keeps the parameters of
its best validation epoch (or, with `keep="last"`, all train `max_epochs` epochs and keep the
last). The test split is not read here: `evaluate_runs` reads it once,
after selection.
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mmreg.data.batch import LABEL, Batch
from mmreg.data.dataset import MultimodalDataset, Splits, batch_indices, eval_batches
from mmreg.losses.spec import LossSpec
from mmreg.models.labels import ROLE_LABELS, param_labels
from mmreg.train.loss_methods import EpochContext
from mmreg.train.seeds import stack_states, stack_trees, unstack_tree
from mmreg.train.step import TrainState, init_train_state, make_predict, make_train_step

PyTree = Any
OptimizerFactory = Callable[..., optax.GradientTransformation]
Augment = Callable[[jax.Array, Batch], Batch]
ValScore = Callable[[dict[str, Any], np.ndarray], np.ndarray]
Data = MultimodalDataset | Sequence[MultimodalDataset]
OUTPUT_FIELDS = ("logits", "modality_logits", "features", "latents", "fused")
Keep = Literal["best", "last"]
OnEpoch = Callable[[int, PyTree, PyTree], None]
PostUpdate = Callable[[PyTree, PyTree, jax.Array], PyTree]


def sgd_momentum(learning_rate: float) -> optax.GradientTransformation:
  """SGD with momentum 0.9, the optimizer of the balancing methods' released code."""
  return optax.sgd(learning_rate, momentum=0.9)


class RunsResult(NamedTuple):
  """Per run r (learning-rate-major order: `learning_rates[r]`, `seeds[r]`): the parameters and
  model state of its kept epoch (the best validation epoch, or the last with `keep="last"`;
  leading axis R), that epoch's validation score (the selection criterion) and validation
  accuracy, the epoch, and the norm of its encoders'
  parameter change over the first epoch (the effective step a method takes, comparable
  across methods at one learning rate), and whether its training loss became NaN/Inf (a
  diverged run keeps its best epoch before that, and its later epochs cannot improve on it)."""

  graphdef: nnx.GraphDef
  params: PyTree
  model_state: PyTree
  learning_rates: np.ndarray
  seeds: np.ndarray
  best_val_score: np.ndarray
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


def _per_seed_splits(splits: Splits | Sequence[Splits], seeds: Sequence[int]) -> list[Splits]:
  if isinstance(splits, Splits):
    return [splits]
  splits = list(splits)
  if len(splits) != len(seeds):
    raise ValueError(f"{len(splits)} per-seed splits for seeds {list(seeds)}: pass one Splits "
                     "per seed, in the order of the seeds, or one Splits for all")
  for seed, other in zip(seeds[1:], splits[1:], strict=True):
    for name in ("train", "val"):
      a, b = getattr(splits[0], name), getattr(other, name)
      if (len(a), a.input_shapes, a.present is None) != (len(b), b.input_shapes,
                                                         b.present is None):
        raise ValueError(
            f"seed {seed}'s {name} split has {len(b)} samples of {b.input_shapes} but seed "
            f"{seeds[0]}'s has {len(a)} of {a.input_shapes}; per-seed splits need equal sizes, "
            "modalities, shapes and presence masks")
  return splits


def _augment_key(seed: jax.Array, step: jax.Array) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed), step)


def _read_batches(trains: Sequence[Any], seed_index: np.ndarray, index: np.ndarray) -> Batch:
  """Run r's batch `index[r]` of its split `trains[seed_index[r]]`, one read per split."""
  batches: list[Any] = [None] * len(index)
  for k, train in enumerate(trains):
    rows = np.flatnonzero(seed_index == k)
    for r, batch in zip(rows, train.batches(index[rows]), strict=True):
      batches[r] = batch
  return stack_trees(batches)


# The jitted programs of the last few configurations, kept with the objects that define them
# (so that their ids stay unique while cached).
_PROGRAMS: collections.OrderedDict[tuple, tuple[tuple, tuple]] = collections.OrderedDict()
_PROGRAMS_KEPT = 8


def _programs(graphdef: nnx.GraphDef, model: nnx.Module, loss_spec: LossSpec,
              method_tx: Any, optimizer: OptimizerFactory, tx: Any, steps_per_epoch: int,
              with_loss_grads: bool, loss_method: Any, augment: Augment | None,
              post_update: PostUpdate | None) -> tuple[Callable[..., Any], ...]:
  """The jitted epoch, step and encoder-step programs of one configuration, built once for
  the same graph, step count and loss, transform, optimizer, loss method, augment and
  post-update objects (a run's learning rate is read from its optimizer state, so `tx` may
  carry any)."""
  defining = (loss_spec, method_tx, optimizer, loss_method, augment, post_update)
  key = (graphdef, steps_per_epoch, with_loss_grads, *map(id, defining))
  if key in _PROGRAMS:
    _PROGRAMS.move_to_end(key)
    return _PROGRAMS[key][1]
  step = make_train_step(graphdef, loss_spec, tx, steps_per_epoch=steps_per_epoch,
                         with_loss_grads=with_loss_grads, post_update=post_update,
                         loss_method=loss_method, jit=False)
  labels = param_labels(model)

  def run_step_fn(state: TrainState, batch: Batch, seed: jax.Array):
    if augment is not None:
      batch = augment(_augment_key(seed, state.step), batch)
    return step(state, batch)

  def epoch_fn(states: TrainState, indices: jax.Array, arrays: PyTree, seed_index: jax.Array,
               seeds: jax.Array):
    def body(states, index):
      batches = jax.vmap(lambda k, i: jax.tree.map(lambda a: a[k, i], arrays))(seed_index,
                                                                              index)
      states, metrics = jax.vmap(run_step_fn)(states, batches, seeds)
      return states, metrics["loss/total"]
    return jax.lax.scan(body, states, indices)

  programs = (jax.jit(epoch_fn, donate_argnums=0),
              jax.jit(jax.vmap(run_step_fn), donate_argnums=0),
              jax.jit(lambda after, before: _encoder_step(labels, after, before)))
  _PROGRAMS[key] = (defining, programs)
  if len(_PROGRAMS) > _PROGRAMS_KEPT:
    _PROGRAMS.popitem(last=False)
  return programs


def validation_accuracy(outputs: dict[str, Any], labels: np.ndarray) -> np.ndarray:
  """The default `val_score`: each run's accuracy of its fused logits `[R, N, K]` against its
  labels `[R, N]`."""
  return np.mean(outputs["logits"].argmax(-1) == labels, axis=-1)


def train_runs(build_model: Callable[[int], nnx.Module], loss_spec: LossSpec,
               method_tx: optax.GradientTransformationExtraArgs,
               splits: Splits | Sequence[Splits], *, learning_rates: Sequence[float],
               seeds: Sequence[int], batch_size: int, max_epochs: int, patience: int,
               optimizer: OptimizerFactory = sgd_momentum, with_loss_grads: bool = False,
               loss_method: Any = None, augment: Augment | None = None,
               val_score: ValScore | None = None, post_update: PostUpdate | None = None,
               keep: Keep = "best", on_epoch: OnEpoch | None = None,
               eval_batch_size: int = 128) -> RunsResult:
  """Train every (learning rate, seed) pair of the grid together; see the module docstring.

  `build_model(seed)` builds seed's model; `method_tx` is the balancing transform (the
  registry's `build_method`), chained before `optimizer(learning_rate=lr)` (wrapped in
  `optax.inject_hyperparams`, so `optimizer` must accept an array learning rate);
  `with_loss_grads`, `loss_method` and `post_update(params, opt_state, epoch) -> params` (e.g.
  the registry's `build_post_update`) are `make_train_step`'s. A loss-side method's
  epoch-level state is updated run by run at the start of every epoch, with the run's own
  optimizer and seed.

  `splits`: one `Splits` for every run, or one per seed (in the order of `seeds`; equal
  train and validation sizes, modalities and shapes). `augment(key, batch) -> batch` (e.g.
  `mmreg.data.modality_dropout`) transforms each run's training batch inside the jitted step
  with `key = jax.random.fold_in(jax.random.key(seed), state.step)`: it depends only on the
  run's seed and step, so a run draws the same keys alone as in any grid.
  `val_score(outputs, labels) -> [R]` (higher is better) selects the epochs: `outputs` are
  `evaluate_runs`'s outputs on each run's validation split, `labels` `[R, N]` that split's
  labels; the default is `validation_accuracy`.

  `keep="best"` keeps each run's best validation epoch and stops after `patience` epochs
  without improvement; `keep="last"` trains `max_epochs` epochs, keeps the last and scores
  the validation split only after it. `on_epoch(epoch, params, model_state)`, if given, is
  called on the host after every epoch with the runs' current parameters and model state
  (device arrays, leading axis R, valid during the call: the next epoch reuses their buffers).

  The compiled programs of the last 8 configurations are kept: a later call with the same
  loss, transform, optimizer, loss method and augment objects (e.g. on relabelled data)
  compiles nothing new.
  """
  if keep not in ("best", "last"):
    raise ValueError(f"keep={keep!r}; use 'best' (the best validation epoch) or 'last'")
  if patience < 1 or max_epochs < 1:
    raise ValueError(f"patience={patience} and max_epochs={max_epochs} must be at least 1")
  if not learning_rates or not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"learning rates {list(learning_rates)} and seeds {list(seeds)} must be "
                     "non-empty, the seeds distinct")
  if any(not np.isfinite(lr) or lr <= 0 for lr in learning_rates):
    raise ValueError(f"learning rates {list(learning_rates)} must be finite and positive")
  start = time.perf_counter()
  seeds = [int(seed) for seed in seeds]
  per_seed = _per_seed_splits(splits, seeds)
  runs = [(float(lr), seed) for lr in learning_rates for seed in seeds]
  seed_index = np.array([seeds.index(seed) if len(per_seed) > 1 else 0 for _, seed in runs])

  def tx_for(lr: float) -> optax.GradientTransformationExtraArgs:
    return optax.chain(method_tx, optax.inject_hyperparams(optimizer)(learning_rate=lr))

  graphdef, states, model = _stacked_states(build_model, tx_for, runs)
  trains = [s.train for s in per_seed]
  vals = per_seed[0].val if len(per_seed) == 1 else [per_seed[k].val for k in seed_index]
  spe = len(trains[0]) // batch_size
  run_epoch, run_step, encoder_step = _programs(
      graphdef, model, loss_spec, method_tx, optimizer, tx_for(runs[0][0]), spe,
      with_loss_grads, loss_method, augment, post_update)
  run_seeds = jnp.array([seed for _, seed in runs], jnp.int32)
  device_index = jnp.asarray(seed_index)
  # Splits held in memory go to the device once, stacked on a leading seed axis; streamed ones
  # (`SourceDataset`) are read batch by batch.
  arrays = (jax.device_put(stack_trees([t.as_batch() for t in trains]))
            if all(hasattr(t, "as_batch") for t in trains) else None)
  fields = OUTPUT_FIELDS if val_score is not None else ("logits",)
  score_fn = val_score or validation_accuracy
  select = jax.jit(_where_runs)

  # One optimizer object per learning rate: a loss-side method's jitted probes take it as a
  # static argument, so a fresh object per run and epoch would recompile them.
  optimizers = {lr: optimizer(learning_rate=lr) for lr, _ in runs}

  def contexts(states: TrainState, epoch: int) -> list[EpochContext]:
    return [EpochContext(graphdef, unstack_tree(states.params, r),
                         unstack_tree(states.model_state, r), per_seed[k].train,
                         per_seed[k].val, loss_spec, optimizers[lr], batch_size, seed, epoch)
            for r, ((lr, seed), k) in enumerate(zip(runs, seed_index, strict=True))]

  if loss_method is not None:
    states = states.replace(loss_state=stack_trees(
        [loss_method.init(c) for c in contexts(states, 0)]))
  initial = jax.tree.map(jnp.copy, states.params)
  best = ((jax.tree.map(jnp.copy, states.params), jax.tree.map(jnp.copy, states.model_state))
          if keep == "best" else None)
  best_score = np.full(len(runs), -np.inf)
  best_acc = np.zeros(len(runs))
  best_epoch = np.zeros(len(runs), np.int64)
  first_step = np.zeros(len(runs))
  diverged = np.zeros(len(runs), bool)
  epoch = 0
  for epoch in range(max_epochs):
    if loss_method is not None:
      updated = [loss_method.update(unstack_tree(states.loss_state, r), c)
                 for r, c in enumerate(contexts(states, epoch))]
      states = states.replace(loss_state=stack_trees(updated))
    indices = np.stack([np.stack(list(batch_indices(len(trains[0]), batch_size, seed=seed,
                                                    epoch=epoch)))
                        for _, seed in runs], axis=1)
    if arrays is not None:
      states, losses = run_epoch(states, indices, arrays, device_index, run_seeds)
    else:
      losses = []
      for index in indices:
        states, metrics = run_step(states, _read_batches(trains, seed_index, index),
                                   run_seeds)
        losses.append(metrics["loss/total"])
      losses = np.stack(losses)
    diverged |= ~np.all(np.isfinite(np.asarray(losses)), axis=0)
    if epoch == 0:
      first_step = np.asarray(encoder_step(states.params, initial))
      del initial
    if keep == "best" or epoch + 1 == max_epochs:
      outputs, val_labels = _outputs(graphdef, states.params, states.model_state, vals,
                                     eval_batch_size, fields, len(runs))
      score = np.asarray(score_fn(outputs, val_labels), np.float64)
      if score.shape != (len(runs),):
        raise ValueError(f"val_score returned shape {score.shape}; it must return one score "
                         f"per run, shape ({len(runs)},)")
      improved = score > best_score if keep == "best" else np.ones(len(runs), bool)
      if keep == "best":
        best = (select(improved, states.params, best[0]),
                select(improved, states.model_state, best[1]))
      best_score = np.where(improved, score, best_score)
      best_acc = np.where(improved, validation_accuracy(outputs, val_labels), best_acc)
      best_epoch = np.where(improved, epoch, best_epoch)
    if on_epoch is not None:
      on_epoch(epoch, states.params, states.model_state)
    if keep == "best" and np.all(epoch - best_epoch >= patience):
      break
  params, model_state = best if keep == "best" else (states.params, states.model_state)
  return RunsResult(graphdef, params, model_state, np.array([lr for lr, _ in runs]),
                    np.array([s for _, s in runs]), best_score, best_acc, best_epoch,
                    first_step, diverged, epoch + 1, time.perf_counter() - start)


@functools.lru_cache(maxsize=64)
def _predict_runs(graphdef: nnx.GraphDef, per_run_data: bool) -> Callable[..., Any]:
  data_axis = 0 if per_run_data else None
  return jax.jit(jax.vmap(make_predict(graphdef, jit=False), in_axes=(0, 0, data_axis)))


def _eval_batches(data: Data, batch_size: int):
  """`eval_batches` of one dataset, or of one dataset per run stacked on a leading axis."""
  if not isinstance(data, (list, tuple)):
    yield from eval_batches(data, batch_size)
    return
  if len({len(d) for d in data}) != 1:
    raise ValueError(f"per-run datasets have sizes {[len(d) for d in data]}; they must be equal")
  for parts in zip(*(eval_batches(d, batch_size) for d in data), strict=True):
    yield stack_trees([batch for batch, _ in parts]), parts[0][1]


def _outputs(graphdef: nnx.GraphDef, params: PyTree, model_state: PyTree, data: Data,
             batch_size: int, fields: Sequence[str], num_runs: int
             ) -> tuple[dict[str, Any], np.ndarray]:
  """The runs' `fields` of their `ModelOutput`s on `data` (host arrays, run axis first; a
  field without arrays is left out) and the labels `[R, N]`."""
  predict = _predict_runs(graphdef, isinstance(data, (list, tuple)))
  chunks: dict[str, list[Any]] = {f: [] for f in fields}
  labels = []
  for batch, valid in _eval_batches(data, batch_size):
    out = predict(params, model_state, batch)
    for f in fields:
      chunks[f].append(jax.tree.map(lambda x, v=valid: np.asarray(x)[:, v], getattr(out, f)))
    labels.append(np.broadcast_to(np.asarray(batch[LABEL])[..., valid],
                                  (num_runs, int(valid.sum()))))
  joined = {f: jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *c)
            for f, c in chunks.items()}
  return ({f: v for f, v in joined.items() if jax.tree.leaves(v)},
          np.concatenate(labels, axis=1))


def take_runs(result: RunsResult, index: Sequence[int]) -> RunsResult:
  """The runs `index` of `result`, in that order."""
  index = np.asarray(index)
  take = lambda tree: jax.tree.map(lambda x: x[index], tree)  # noqa: E731
  return result._replace(params=take(result.params), model_state=take(result.model_state),
                         **{f: getattr(result, f)[index] for f in _PER_RUN})


_PER_RUN = ("learning_rates", "seeds", "best_val_score", "best_val_accuracy", "best_epoch",
            "first_epoch_encoder_step", "diverged")


def predict_runs(graphdef: nnx.GraphDef, params: PyTree, model_state: PyTree, data: Data,
                 batch_size: int = 128, fields: Sequence[str] = OUTPUT_FIELDS
                 ) -> dict[str, Any]:
  """The outputs of R runs' stacked parameters and model state (leading axis R) on `data`, or
  on `data[r]` for run r when given one dataset per run (equal sizes): fused logits
  `[R, N, K]`, per-modality logits, encoder features and (for models that have them)
  shared-space latents `{m: [R, N, ·]}`, and the fused representation fed to the head
  `[R, N, d]`, limited to `fields` (host arrays)."""
  num_runs = len(jax.tree.leaves(params)[0])
  if isinstance(data, (list, tuple)) and len(data) != num_runs:
    raise ValueError(f"{len(data)} datasets for {num_runs} runs; pass one dataset or one per "
                     "run")
  return _outputs(graphdef, params, model_state, data, batch_size, fields, num_runs)[0]


def evaluate_runs(result: RunsResult, data: Data, batch_size: int = 128) -> dict[str, Any]:
  """`predict_runs` at every run's kept parameters: its outputs on `data`, or on `data[r]` for
  run r."""
  return predict_runs(result.graphdef, result.params, result.model_state, data, batch_size)


__all__ = ["RunsResult", "evaluate_runs", "predict_runs", "sgd_momentum", "take_runs",
           "train_runs", "validation_accuracy"]
