"""Optimizers and learning-rate schedules from a config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax

SCHEDULES = ("constant", "step", "cosine")
OPTIMIZERS = ("sgd", "adam", "adamw")


def learning_rate_schedule(cfg: Mapping[str, Any], steps_per_epoch: int,
                           total_epochs: int) -> optax.Schedule:
  """`constant`; `step` (×`decay_factor` at each epoch in `decay_epochs`); `cosine` (linear
  warm-up over `warmup_epochs`, then cosine decay to 0). The learning rate may be an array
  (e.g. traced under `optax.inject_hyperparams`)."""
  lr, name = cfg["learning_rate"], cfg.get("schedule", "constant")
  lr = lr if isinstance(lr, jax.Array) else float(lr)
  if name == "constant":
    return optax.constant_schedule(lr)
  if name == "step":
    boundaries = {int(e) * steps_per_epoch: float(cfg.get("decay_factor", 0.1))
                  for e in cfg.get("decay_epochs", ())}
    return optax.piecewise_constant_schedule(lr, boundaries)
  if name == "cosine":
    warmup = int(cfg.get("warmup_epochs", 0)) * steps_per_epoch
    unit = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, total_epochs * steps_per_epoch)
    return lambda count: lr * unit(count)
  raise ValueError(f"unknown schedule {name!r}; valid schedules: {list(SCHEDULES)}")


def make_optimizer(cfg: Mapping[str, Any], steps_per_epoch: int,
                   total_epochs: int) -> optax.GradientTransformation:
  """SGD (+momentum, coupled weight decay as in PyTorch), Adam, or AdamW."""
  name = cfg.get("name", "sgd")
  lr = learning_rate_schedule(cfg, steps_per_epoch, total_epochs)
  wd = float(cfg.get("weight_decay", 0.0))
  if name == "sgd":
    return optax.chain(optax.add_decayed_weights(wd),
                       optax.sgd(lr, momentum=cfg.get("momentum", 0.9) or None))
  if name == "adam":
    return optax.chain(optax.add_decayed_weights(wd), optax.adam(lr))
  if name == "adamw":
    return optax.adamw(lr, weight_decay=wd)
  raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {list(OPTIMIZERS)}")
