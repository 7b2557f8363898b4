"""Check a run config against the registries and its numbers against their ranges before
anything is loaded or written; check a per-loss gradient stack against the parameters."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax

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


def _number(section: Mapping[str, Any], key: str, prefix: str, *, integer: bool,
            minimum: float, below: float = math.inf, strict: bool = False,
            default: Any = None, what: str = "") -> None:
  """`section[key]` must be a finite int (or number) ≥ `minimum` (> with `strict`), < `below`."""
  value = section.get(key, default)
  kind = int if integer else (int, float)
  ok = (isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
        and (value > minimum if strict else value >= minimum) and value < below)
  if not ok:
    name = "integer" if integer else "number"
    what = what or {(0, True): f"a positive {name}", (0, False): f"a non-negative {name}",
                    (1, False): f"an {name} ≥ 1"}.get((minimum, strict), f"a finite {name}")
    field = f"{prefix}.{key}" if prefix else key
    raise ConfigError(f"{field}={value!r} must be {what}; set --config.{field}")


def _finite_everywhere(node: Any, prefix: str) -> None:
  """Every float anywhere in the config (method and data options included) is finite."""
  if isinstance(node, Mapping):
    for k, v in node.items():
      _finite_everywhere(v, f"{prefix}.{k}" if prefix else str(k))
  elif isinstance(node, (list, tuple)):
    for i, v in enumerate(node):
      _finite_everywhere(v, f"{prefix}[{i}]")
  elif isinstance(node, float) and not math.isfinite(node):
    raise ConfigError(f"{prefix}={node!r} is not a finite number; set --config.{prefix}")


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
  _finite_everywhere(cfg, "")
  _number(cfg, "seed", "", integer=True, minimum=0)
  optim = cfg["optim"]
  _number(optim, "learning_rate", "optim", integer=False, minimum=0, strict=True)
  if optim.get("momentum") is not None:
    _number(optim, "momentum", "optim", integer=False, minimum=0, below=1,
            what="a number in [0, 1)")
  _number(optim, "weight_decay", "optim", integer=False, minimum=0, default=0.0)
  _number(optim, "warmup_epochs", "optim", integer=True, minimum=0, default=0)
  _number(optim, "decay_factor", "optim", integer=False, minimum=0, strict=True, default=0.1)
  train = cfg["train"]
  for key in ("epochs", "batch_size"):
    _number(train, key, "train", integer=True, minimum=0, strict=True)
  for key, default in (("log_every", 10), ("max_to_keep", 2)):
    _number(train, key, "train", integer=True, minimum=1, default=default)
  for key in ("skip_nonfinite", "checkpoint_every_steps"):
    _number(train, key, "train", integer=True, minimum=0, default=0)
  loss = cfg["loss"]
  for key, value in loss.items():
    if key.endswith("_weight") and isinstance(value, (int, float)):
      _number(loss, key, "loss", integer=False, minimum=0)
  if "label_smoothing" in loss:
    _number(loss, "label_smoothing", "loss", integer=False, minimum=0, below=1,
            what="a number in [0, 1)")


def check_loss_grads(loss_grads: Any, params: Any) -> None:
  """Raise ValueError naming the leaves where a per-loss gradient stack (`mmreg.LossGrads`)
  does not fit `params`: each stack leaf must have shape `[L, *param.shape]`.

  Works on concrete arrays and under `jax.jit` (it reads only tree structure and shapes).
  """
  stack = getattr(loss_grads, "grads", loss_grads)
  num = getattr(loss_grads, "num_losses", None)
  path = lambda p: jax.tree_util.keystr(p, simple=True, separator="/")  # noqa: E731
  want = {path(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(params)}
  have = {path(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(stack)}
  missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
  wrong = sorted(k for k in set(want) & set(have)
                 if have[k][1:] != want[k] or (num is not None and have[k][:1] != (num,)))
  if missing or extra or wrong:
    details = [f"missing {missing[:4]}" if missing else "",
               f"not in the parameters {extra[:4]}" if extra else "",
               ", ".join(f"{k} has shape {have[k]}, expected [L, *{want[k]}]"
                         for k in wrong[:4])]
    raise ValueError("loss_grads does not match the parameters: " +
                     "; ".join(d for d in details if d) +
                     ". Build the stack from these parameters (mmreg.per_loss_grads of the "
                     "same model).")
