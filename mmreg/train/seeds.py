"""Several seeds of one configuration trained together: one `jax.vmap` inside one jitted step.

Each seed has its own parameters, optimizer state, PRNG key and data order; the step is the
library's `make_train_step`, vmapped over a leading seed axis of the state and of the batch. On
a small model this turns S sequential runs into one program whose matrix products are S times
wider, which is how 10 seeds × a hyper-parameter grid fit on a few CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mmreg.data.batch import Batch
from mmreg.data.dataset import MultimodalDataset, iterate_batches
from mmreg.losses.spec import LossSpec
from mmreg.train.step import TrainState, init_train_state, make_train_step

PyTree = Any
SeedsStep = Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]


def stack_trees(trees: Sequence[PyTree]) -> PyTree:
  """Stack pytrees of one structure on a new leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack_tree(tree: PyTree, index: int) -> PyTree:
  """Entry `index` of the leading axis of every leaf."""
  return jax.tree.map(lambda x: x[index], tree)


def init_seed_states(build_model: Callable[[int], nnx.Module], tx: optax.GradientTransformation,
                     seeds: Sequence[int]) -> tuple[nnx.GraphDef, TrainState]:
  """The graph definition and a `TrainState` whose leaves have a leading axis of len(seeds):
  seed s's model is `build_model(s)`, its PRNG key `seed=s`, exactly as a run trained alone."""
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"seeds {list(seeds)} must be a non-empty list of distinct integers")
  return stack_states([init_train_state(build_model(s), tx, s) for s in seeds])


def stack_states(built: Sequence[tuple[nnx.GraphDef, TrainState]]
                 ) -> tuple[nnx.GraphDef, TrainState]:
  """The shared graph definition and the stacked states of `init_train_state` results; one
  error line if the models differ in structure."""
  graphdefs, states = zip(*built, strict=True)
  if any(g != graphdefs[0] for g in graphdefs[1:]):
    raise ValueError("build_model returned models of different structures for different seeds; "
                     "the seed may change the initial values only")
  return graphdefs[0], stack_trees(states)


def make_seeds_train_step(graphdef: nnx.GraphDef, loss_spec: LossSpec,
                          tx: optax.GradientTransformationExtraArgs, *, steps_per_epoch: int,
                          **step_options: Any) -> SeedsStep:
  """`step(states, batches) -> (states, metrics)` for stacked seeds: `make_train_step`'s step
  (same `step_options`) vmapped over the leading seed axis and jitted once; metrics come back
  with a leading seed axis."""
  step = make_train_step(graphdef, loss_spec, tx, steps_per_epoch=steps_per_epoch, jit=False,
                         **step_options)
  return jax.jit(jax.vmap(step), donate_argnums=0)


def seed_batches(data: MultimodalDataset, batch_size: int, seeds: Sequence[int], *, epoch: int,
                 start: int = 0) -> Iterator[Batch]:
  """Batches of one epoch with a leading seed axis: entry s is the batch that a run with seed
  `seeds[s]` sees alone (`iterate_batches(data, batch_size, seed=s, epoch=epoch)`)."""
  streams = [iterate_batches(data, batch_size, seed=s, epoch=epoch, start=start) for s in seeds]
  for batches in zip(*streams, strict=True):
    yield jax.tree.map(lambda *xs: np.stack(xs), *batches)


def seed_metrics(metrics: Mapping[str, jax.Array]) -> dict[str, np.ndarray]:
  """Per-seed metric values on the host, `{name: [S]}`."""
  return {k: np.asarray(v) for k, v in metrics.items()}
