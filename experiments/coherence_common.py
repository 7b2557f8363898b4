"""Shared pieces of the robustness and alignment experiments: the model and optimisation
settings, one configuration trained on every seed at once with the library's multi-run loop
(`mmreg.train.train_runs`), evaluation of the selected runs under missing/noisy modalities,
and plots with confidence bands."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import mmreg
from mmreg.data import MultimodalDataset, Splits
from mmreg.losses import LossSpec
from mmreg.train import RunsResult, evaluate_runs, make_predict, split_model, train_runs
from mmreg.train.results import mean_ci
from mmreg.train.runs import Augment, ValScore
from mmreg.train.seeds import unstack_tree


@dataclasses.dataclass(frozen=True)
class Setup:
  """Model and optimisation settings shared by every run of an experiment."""

  hidden: tuple[int, ...] = (64,)
  feature_dim: int = 32
  latent_dim: int = 16
  epochs: int = 25
  batch_size: int = 64
  learning_rate: float = 2e-3


@dataclasses.dataclass(frozen=True)
class Config:
  """One trained configuration: its loss, model options and training-batch augmentation
  (`train_runs`'s `augment`)."""

  loss_spec: LossSpec
  shared_space: bool = False
  missing: str = "zero"
  augment: Augment | None = None


# No balancing transform: plain Adam. One object, so that every configuration's later calls
# reuse its compiled programs.
NO_METHOD = optax.identity()


def train_seeds(config: Config, setup: Setup, input_dims: Mapping[str, int], num_classes: int,
                splits: Sequence[Splits], seeds: Sequence[int], *,
                val_score: ValScore | None = None) -> RunsResult:
  """Train `config` on every seed together, seed `seeds[i]` on `splits[i]`: Adam at
  `setup.learning_rate` for `setup.epochs` epochs, each run keeping the parameters of its
  best validation epoch by `val_score` (default: validation accuracy)."""

  def build(seed: int) -> nnx.Module:
    return mmreg.mlp_classifier(input_dims, num_classes, hidden=setup.hidden,
                                feature_dim=setup.feature_dim, latent_dim=setup.latent_dim,
                                seed=seed, shared_space=config.shared_space,
                                missing=config.missing)

  return train_runs(build, config.loss_spec, NO_METHOD, list(splits),
                    learning_rates=(setup.learning_rate,), seeds=seeds,
                    batch_size=setup.batch_size, max_epochs=setup.epochs, patience=setup.epochs,
                    optimizer=optax.adam, augment=config.augment, val_score=val_score)


def run_model(result: RunsResult, r: int) -> nnx.Module:
  """Run r's selected model."""
  return nnx.merge(result.graphdef, unstack_tree(result.params, r),
                   unstack_tree(result.model_state, r))


def with_fill(result: RunsResult, missing: str) -> RunsResult:
  """The runs with absent modalities' features filled by `missing` ("zero", "mean",
  "impute")."""
  model = run_model(result, 0)
  model.missing = missing
  return result._replace(graphdef=split_model(model)[0])


def with_train_feature_means(result: RunsResult, trains: Sequence[MultimodalDataset]
                             ) -> RunsResult:
  """Mean-fill vectors: run r's mean encoder feature of each modality over `trains[r]`."""
  features = evaluate_runs(result, list(trains))["features"]
  means = {m: jnp.asarray(f.mean(axis=1)) for m, f in features.items()}
  return result._replace(model_state={**result.model_state, "feature_means": means})


def run_outputs(result: RunsResult, datasets: Sequence[MultimodalDataset],
                missing: str = "zero") -> dict[str, Any]:
  """`evaluate_runs` of run r on `datasets[r]`, absent modalities filled by `missing`."""
  return evaluate_runs(with_fill(result, missing), list(datasets))


def accuracies(result: RunsResult, datasets: Sequence[MultimodalDataset],
               missing: str = "zero") -> list[float]:
  """Run r's accuracy on `datasets[r]`."""
  logits = run_outputs(result, datasets, missing)["logits"]
  return [mmreg.metrics.accuracy(d.labels, z.argmax(-1))
          for d, z in zip(datasets, logits, strict=True)]


_PREDICT_CACHE: dict[Any, Any] = {}


def predict(model: nnx.Module, data: MultimodalDataset) -> mmreg.ModelOutput:
  """The model's whole output on a dataset (host arrays)."""
  graphdef, params, rest = split_model(model)
  if graphdef not in _PREDICT_CACHE:
    _PREDICT_CACHE[graphdef] = make_predict(graphdef)
  return jax.tree.map(np.asarray, _PREDICT_CACHE[graphdef](params, rest, data.as_batch()))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """`[N, M]` cosine similarities of the rows of a and b (a zero row gives 0)."""
  a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-8)
  b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-8)
  return a @ b.T


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
