"""Shared pieces of the robustness and alignment experiments: a small in-memory training
loop (no checkpoints; each run takes seconds), evaluation under missing/noisy modalities, and
plots with confidence bands."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

import mmreg
from mmreg.data import MultimodalDataset, iterate_batches, steps_per_epoch
from mmreg.losses import LossSpec
from mmreg.train import init_train_state, make_predict, make_train_step, split_model
from mmreg.train.results import mean_ci


@dataclasses.dataclass(frozen=True)
class Setup:
  """Model and optimisation settings shared by every run of an experiment."""

  hidden: tuple[int, ...] = (64,)
  feature_dim: int = 32
  latent_dim: int = 16
  epochs: int = 25
  batch_size: int = 64
  learning_rate: float = 2e-3


class Trainer:
  """Trains models of one architecture and loss, compiling the train step once."""

  def __init__(self, input_dims: Mapping[str, int], num_classes: int, loss_spec: LossSpec,
               setup: Setup, *, shared_space: bool, missing: str = "zero",
               modality_dropout: float = 0.0):
    self.input_dims, self.num_classes = dict(input_dims), num_classes
    self.loss_spec, self.setup, self.shared_space = loss_spec, setup, shared_space
    self.missing, self.dropout = missing, modality_dropout
    self._step = None
    self._drop = jax.jit(lambda key, batch: mmreg.data.modality_dropout(
        key, batch, modality_dropout, per_sample=True))

  def model(self, seed: int) -> nnx.Module:
    s = self.setup
    return mmreg.mlp_classifier(self.input_dims, self.num_classes, hidden=s.hidden,
                                feature_dim=s.feature_dim, latent_dim=s.latent_dim, seed=seed,
                                shared_space=self.shared_space, missing=self.missing)

  def train(self, data: MultimodalDataset, seed: int,
            select: Callable[[nnx.Module], float] | None = None) -> nnx.Module:
    """Train for `setup.epochs`; with `select` (a validation score, higher is better) return
    the model of the best-scoring epoch instead of the last (early stopping)."""
    s = self.setup
    tx = optax.adam(s.learning_rate)
    graphdef, state = init_train_state(self.model(seed), tx, seed)
    if self._step is None:
      self._step = make_train_step(graphdef, self.loss_spec, tx,
                                   steps_per_epoch=steps_per_epoch(len(data), s.batch_size))
    key, best = jax.random.key(seed + 10_000), None
    for epoch in range(s.epochs):
      for batch in iterate_batches(data, s.batch_size, seed=seed, epoch=epoch):
        if self.dropout > 0:
          key, sub = jax.random.split(key)
          batch = self._drop(sub, batch)
        state, _ = self._step(state, batch)
      if select is not None:
        score = select(nnx.merge(graphdef, state.params, state.model_state))
        if best is None or score > best[0]:
          best = (score, jax.tree.map(np.array, (state.params, state.model_state)))
    if select is not None:
      return nnx.merge(graphdef, *best[1])
    return nnx.merge(graphdef, state.params, state.model_state)


_PREDICT_CACHE: dict[Any, Any] = {}


def predict(model: nnx.Module, data: MultimodalDataset, *, missing: str = "zero"
            ) -> mmreg.ModelOutput:
  """The model's output on a whole dataset, with absent modalities filled by `missing`."""
  trained_with = model.missing
  model.missing = missing
  graphdef, params, rest = split_model(model)
  key = (graphdef, data.present is None)
  if key not in _PREDICT_CACHE:
    _PREDICT_CACHE[key] = make_predict(graphdef)
  out = _PREDICT_CACHE[key](params, rest, data.as_batch())
  model.missing = trained_with
  return jax.tree.map(np.asarray, out)


def set_train_feature_means(model: nnx.Module, train: MultimodalDataset) -> None:
  """Mean-fill vectors: each modality's mean encoder feature over the training set."""
  model.set_feature_means({m: model.encode(m, x).mean(axis=0) for m, x in train.inputs.items()})


def accuracy_of(model: nnx.Module, data: MultimodalDataset, missing: str = "zero") -> float:
  logits = predict(model, data, missing=missing).logits
  return mmreg.metrics.accuracy(data.labels, logits.argmax(-1))


def summarize(values_by_seed: Sequence[float]) -> dict[str, float]:
  out = mean_ci(values_by_seed)
  out["values"] = [float(v) for v in values_by_seed]
  return out


def plot_bands(series: Mapping[str, tuple[Sequence[float], Sequence[dict[str, float]]]],
               path: Path, *, title: str, xlabel: str, ylabel: str,
               hline: tuple[float, str] | None = None) -> Path:
  """Mean curves with shaded 95% intervals over seeds: `{name: (x, [mean_ci dict per x])}`."""
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
  for name, (x, stats) in series.items():
    mean = np.array([s["mean"] for s in stats])
    half = np.nan_to_num(np.array([s["ci95"] for s in stats]))
    ax.plot(x, mean, marker="o", label=name)
    ax.fill_between(x, mean - half, mean + half, alpha=0.2)
  if hline is not None:
    ax.axhline(hline[0], color="gray", linestyle="--", label=hline[1])
  ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path
