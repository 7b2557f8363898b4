"""Check a run config against the registries before anything is loaded or written."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmreg.data.registry import DATASETS
from mmreg.models.factory import CLASSIFIER, ENCODERS, MODELS
from mmreg.models.fusion import FUSIONS
from mmreg.train.methods import METHODS
from mmreg.train.optim import OPTIMIZERS, SCHEDULES

SECTIONS = ("seed", "data", "model", "loss", "method", "optim", "train")


class ConfigError(ValueError):
  """A config names something unknown or holds an impossible value."""


def _choice(value: Any, valid: Any, what: str, key: str) -> None:
  if value not in valid:
    raise ConfigError(f"{key}={value!r}: unknown {what}; valid {what}s: {sorted(valid)}")


def _positive(section: Mapping[str, Any], key: str, prefix: str, *, integer: bool) -> None:
  value = section.get(key)
  kind = int if integer else (int, float)
  if not isinstance(value, kind) or isinstance(value, bool) or value <= 0:
    raise ConfigError(f"{prefix}.{key}={value!r} must be a positive "
                      f"{'integer' if integer else 'number'}")


def validate_config(cfg: Mapping[str, Any]) -> None:
  """Raise ConfigError naming the field, the problem and the valid choices."""
  missing = [s for s in SECTIONS if s not in cfg]
  if missing:
    raise ConfigError(f"config lacks sections {missing}; start from "
                      "experiments/configs/default.py")
  _choice(cfg["data"].get("name"), DATASETS, "dataset", "data.name")
  _choice(cfg["method"].get("name"), METHODS, "method", "method.name")
  _choice(cfg["model"].get("name", CLASSIFIER), MODELS, "model", "model.name")
  _choice(cfg["model"].get("fusion", "concat"), FUSIONS, "fusion", "model.fusion")
  encoders = cfg["model"].get("encoder", "auto")
  for kind in (encoders.values() if isinstance(encoders, Mapping) else [encoders]):
    _choice(kind, ENCODERS, "encoder", "model.encoder")
  _choice(cfg["optim"].get("name", "sgd"), OPTIMIZERS, "optimizer", "optim.name")
  _choice(cfg["optim"].get("schedule", "constant"), SCHEDULES, "schedule", "optim.schedule")
  _positive(cfg["optim"], "learning_rate", "optim", integer=False)
  for key in ("epochs", "batch_size"):
    _positive(cfg["train"], key, "train", integer=True)
  skip = cfg["train"].get("skip_nonfinite", 0)
  if not isinstance(skip, int) or skip < 0:
    raise ConfigError(f"train.skip_nonfinite={skip!r} must be a non-negative integer")
