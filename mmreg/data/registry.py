"""Datasets by name, for configs and experiment modules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mmreg.data.av_digits import load_av_digits
from mmreg.data.dataset import Splits, standardize
from mmreg.data.mfeat import load_mfeat
from mmreg.data.npz import load_npz
from mmreg.data.synthetic import CompetitionConfig, load_competition

Loader = Callable[..., Splits]


def _competition(seed: int = 0, num_samples: int = 4000, **options: Any) -> Splits:
  return load_competition(CompetitionConfig(**options), num_samples=num_samples, seed=seed)


def _mfeat_longtail(views: tuple[str, ...] = ("fou", "pix"), imbalance_factor: float = 100.0,
                    seed: int = 0) -> Splits:
  """mfeat with a long-tailed train split (n_c = ⌊n_max·IF^(−c/(K−1))⌋) and balanced
  val/test splits, standardised on the long-tailed train split."""
  from mmreg.data.longtail import longtail_splits

  splits = load_mfeat(views, seed=seed, standardized=False)
  return standardize(longtail_splits(splits, imbalance_factor, seed=seed))


def _audio_visual(loader_name: str) -> Loader:
  """Loader of a TFDS audio-visual builder, imported on first use (TFDS import is slow)."""

  def load(**options: Any) -> Splits:
    from mmreg.data import builders

    return getattr(builders, loader_name)(**options)

  load.__name__ = loader_name
  return load


DATASETS: dict[str, Loader] = {
    "mfeat": load_mfeat,
    "competition": _competition,
    "mfeat_longtail": _mfeat_longtail,
    "npz": load_npz,
    "av_digits": load_av_digits,
    "crema_d": _audio_visual("load_crema_d"),
    "kinetics_sounds": _audio_visual("load_kinetics_sounds"),
    "ave": _audio_visual("load_ave"),
}


def register_dataset(name: str, loader: Loader) -> None:
  DATASETS[name] = loader


def load_dataset(name: str, options: Mapping[str, Any] | None = None) -> Splits:
  """Load splits of a registered dataset; `options` are the loader's keyword arguments."""
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; valid datasets: {sorted(DATASETS)}")
  try:
    return DATASETS[name](**dict(options or {}))
  except TypeError as e:
    raise ValueError(f"bad options {dict(options or {})} for dataset {name!r}: {e}") from e
