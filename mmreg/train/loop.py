"""The resumable training loop: train, evaluate on val each epoch, test the best model."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from mmreg.data.batch import validate_batch
from mmreg.data.batch_dropout import with_modality_dropout
from mmreg.data.dataset import Splits, check_finite, iterate_batches, steps_per_epoch
from mmreg.data.registry import load_dataset
from mmreg.losses.spec import LossSpec, classification_losses
from mmreg.models.factory import model_from_config
from mmreg.models.interface import check_model
from mmreg.models.labels import param_labels
from mmreg.train.checkpoint import Checkpointer
from mmreg.train.diagnostics import find_diagnostics
from mmreg.train.evaluate import evaluate
from mmreg.train.loss_methods import EpochContext
from mmreg.train.methods import (
    build_loss_method,
    build_method,
    build_post_update,
    get_method,
    loss_grads_mask,
)
from mmreg.train.optim import make_optimizer
from mmreg.train.provenance import provenance
from mmreg.train.results import append_jsonl, plot_curves, read_jsonl, truncate_jsonl, write_json
from mmreg.train.sharding import Runtime, broadcast_from_process_0
from mmreg.train.step import init_train_state, make_predict, make_train_step
from mmreg.train.validate import validate_config

CONFIG_FILE, LOG_FILE, RESULTS_FILE = "config.json", "log.jsonl", "results.json"


class WorkdirConflictError(RuntimeError):
  """The output folder holds a different run."""


class NonFiniteError(FloatingPointError):
  """Training produced non-finite gradients and was stopped before saving them."""


def config_to_dict(config: Any) -> dict[str, Any]:
  """A plain, JSON-round-tripped dict of a ConfigDict / mapping (tuples become lists)."""
  raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return json.loads(json.dumps(raw, sort_keys=True, default=list))


def claim_workdir(workdir: Path, config: dict[str, Any]) -> bool:
  """Create `workdir` for this config; True if it already holds this same run (resume).

  Raises WorkdirConflictError, before writing anything, if it holds a different run.
  """
  path = workdir / CONFIG_FILE
  if path.exists():
    previous = json.loads(path.read_text())
    if previous != config:
      diff = sorted(k for k in set(_flatten(previous)) | set(_flatten(config))
                    if _flatten(previous).get(k) != _flatten(config).get(k))
      raise WorkdirConflictError(
          f"{workdir} holds a run with a different config (differs in {diff[:8]}); pass "
          "another --workdir, or delete the folder to start afresh")
    return True
  if workdir.exists() and any(workdir.iterdir()):
    raise WorkdirConflictError(
        f"{workdir} is not empty and holds no {CONFIG_FILE}; pass an empty or new --workdir")
  workdir.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
  return False


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out: dict[str, Any] = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    out.update(_flatten(v, key + ".") if isinstance(v, Mapping) else {key: v})
  return out


def prepare_data(cfg: Mapping[str, Any]) -> Splits:
  splits = load_dataset(cfg["name"], cfg.get("options", {}))
  for name in ("train", "val", "test"):
    split = getattr(splits, name)
    check_finite(split, f"{cfg['name']} {name} split")
    empty = np.flatnonzero(split.class_counts() == 0)
    if name == "train" and empty.size:
      raise ValueError(f"{cfg['name']} train split has no sample of classes {empty.tolist()}; "
                       "use a larger dataset or fewer classes")
  return splits


def train_and_evaluate(config: Any, workdir: str | Path, *,
                       loss_spec_fn: Callable[[tuple[str, ...], Mapping[str, Any]], LossSpec]
                       | None = None,
                       progress: bool = True,
                       max_steps: int | None = None) -> dict[str, Any] | None:
  """Train `config` in `workdir`, resuming from its last checkpoint, and return results.

  `max_steps` stops the run (after a checkpoint) once the global step reaches it, as a
  pre-empted job would, and returns None; calling again without it finishes the run.

  Writes `config.json`, `log.jsonl` (train metrics every `train.log_every` steps and one
  record per epoch), `checkpoints/`, `results.json` and `curves.png`. The run is exactly
  reproducible: an interrupted run restarted with the same config ends with the same
  parameters as one that was never interrupted.
  """
  cfg = config_to_dict(config)
  validate_config(cfg)
  runtime = Runtime.from_config(cfg)
  workdir = Path(workdir)
  splits = prepare_data(cfg["data"])
  train_cfg, seed = cfg["train"], int(cfg["seed"])
  batch_size, epochs = int(train_cfg["batch_size"]), int(train_cfg["epochs"])
  spe = steps_per_epoch(len(splits.train), batch_size)
  if spe == 0:
    raise ValueError(f"batch_size {batch_size} exceeds the {len(splits.train)} train samples")
  runtime.check_batch_size(batch_size)

  model = model_from_config(cfg["model"], splits.train.input_shapes, splits.train.num_classes,
                            seed)
  modalities = model.modalities
  first_batch = next(iterate_batches(splits.train, batch_size, seed=seed, epoch=0))
  validate_batch(first_batch, splits.train.input_shapes, splits.train.num_classes)
  # The unimodal losses of the modalities the model has unimodal logits for.
  heads = tuple(m for m in modalities if m in check_model(model, first_batch).modality_logits)
  loss_cfg = cfg.get("loss", {})
  loss_spec = (loss_spec_fn or _classification_spec)(modalities if loss_spec_fn else heads,
                                                     loss_cfg)
  method = get_method(cfg["method"]["name"])
  labels, options = param_labels(model), cfg["method"].get("options", {})
  method_tx = build_method(cfg["method"]["name"], labels, modalities, options,
                           total_epochs=epochs)
  post_update = build_post_update(cfg["method"]["name"], labels, options, total_epochs=epochs)
  loss_method = build_loss_method(cfg["method"]["name"], options)
  tx = optax.chain(method_tx, make_optimizer(cfg["optim"], spe, epochs))
  skip_nonfinite = int(train_cfg.get("skip_nonfinite", 0))
  if skip_nonfinite:
    tx = optax.apply_if_finite(tx, skip_nonfinite)
  graphdef, state = init_train_state(model, tx, seed)
  # A loss-side method's probes train with the run's optimizer at its base rate.
  probe_optimizer = make_optimizer({**cfg["optim"], "schedule": "constant"}, spe, epochs)

  def epoch_context(train_state: Any, epoch: int) -> EpochContext:
    params, model_state = runtime.local((train_state.params, train_state.model_state))
    return EpochContext(graphdef, params, model_state, splits.train, splits.val, loss_spec,
                        probe_optimizer, batch_size, seed, epoch)

  if loss_method is not None:
    state = state.replace(loss_state=loss_method.init(epoch_context(state, 0)))
  by_features = method.loss_grads_over == "features"
  step_fn = make_train_step(graphdef, loss_spec, tx, steps_per_epoch=spe,
                            with_loss_grads=method.needs_loss_grads and not by_features,
                            with_feature_grads=method.needs_loss_grads and by_features,
                            loss_grads_mask=loss_grads_mask(labels, method.loss_grads_over),
                            post_update=post_update, loss_method=loss_method, jit=False)
  if train_cfg.get("modality_dropout"):  # e.g. RedReg's recipe: experiments/configs/redreg.py
    step_fn = with_modality_dropout(step_fn, steps_per_epoch=spe, total_epochs=epochs,
                                    seed=seed, **train_cfg["modality_dropout"])
  train_step, state = runtime.distribute(step_fn, state)
  predict = make_predict(graphdef)

  resumed = bool(broadcast_from_process_0(claim_workdir(workdir, cfg) if runtime.is_writer
                                          else False))
  checkpointer = Checkpointer(workdir / "checkpoints", int(train_cfg.get("max_to_keep", 2)))
  log_path = workdir / LOG_FILE
  tracked = {"train": state, "best_params": jax.tree.map(jnp.copy, state.params)}
  meta: dict[str, Any] = {"epoch": 0, "batch": 0, "best_val": -1.0, "best_epoch": -1,
                          "train_seconds": 0.0}
  if resumed and checkpointer.steps():
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tracked)
    restored_step, tracked, meta = checkpointer.restore(abstract)
    if runtime.is_writer:
      truncate_jsonl(log_path, lambda r: r["step"] <= restored_step)
  elif log_path.exists() and runtime.is_writer:
    log_path.unlink()

  def save(epoch: int, batch: int) -> None:
    meta.update(epoch=epoch, batch=batch)
    checkpointer.save(int(tracked["train"].step), tracked, meta)

  log_every = int(train_cfg.get("log_every", 10))
  ckpt_every = int(train_cfg.get("checkpoint_every_steps", 0))
  bar = tqdm(total=epochs * spe, initial=int(tracked["train"].step),
             disable=not (progress and runtime.is_writer),
             desc=cfg["method"]["name"], leave=False)
  t0 = time.perf_counter() - float(meta["train_seconds"])
  stopped = False
  for epoch in range(int(meta["epoch"]), epochs):
    start = int(meta["batch"]) if epoch == int(meta["epoch"]) else 0
    if loss_method is not None and start == 0:
      loss_state = loss_method.update(runtime.local(tracked["train"].loss_state),
                                      epoch_context(tracked["train"], epoch))
      tracked["train"] = tracked["train"].replace(
          loss_state=loss_state if runtime.plan is None else runtime.plan.place(loss_state))
    for b, batch in enumerate(runtime.batches(splits.train, batch_size, seed=seed, epoch=epoch,
                                              start=start), start=start):
      tracked["train"], metrics = train_step(tracked["train"], batch)
      step = int(tracked["train"].step)
      bar.update(1)
      check_finite_step(tracked["train"].opt_state, metrics, step, skip_nonfinite)
      if step % log_every == 0:
        record = {"step": step, "epoch": epoch, **runtime.host(metrics)}
        if skip_nonfinite:
          record["skipped_steps"] = int(runtime.host(tracked["train"].opt_state.total_notfinite))
        record.update({f"diag/{k}": v for k, v in
                       runtime.host(find_diagnostics(tracked["train"].opt_state)).items()})
        if runtime.is_writer:
          append_jsonl(log_path, record)
      stopped = step == max_steps
      if (stopped or (ckpt_every and step % ckpt_every == 0)) and b + 1 < spe:
        meta["train_seconds"] = time.perf_counter() - t0
        save(epoch, b + 1)
      if stopped:
        break
    if stopped and b + 1 < spe:
      break
    val = evaluate(predict, *runtime.local((tracked["train"].params,
                                            tracked["train"].model_state)), splits.val)
    if val["accuracy"] > float(meta["best_val"]):
      meta.update(best_val=val["accuracy"], best_epoch=epoch)
      tracked["best_params"] = jax.tree.map(jnp.copy, tracked["train"].params)
    if runtime.is_writer:
      append_jsonl(log_path, {"step": int(tracked["train"].step), "epoch": epoch,
                              "val/accuracy": val["accuracy"], "val/macro_f1": val["macro_f1"],
                              **{f"val/accuracy/{m}": a
                                 for m, a in val["modality_accuracy"].items()}})
    meta["train_seconds"] = time.perf_counter() - t0
    save(epoch + 1, 0)
    if stopped:
      break
  bar.close()
  checkpointer.close()
  if stopped:
    return None

  state = tracked["train"]
  best_params, params, model_state = runtime.local(
      (tracked["best_params"], state.params, state.model_state))
  test = evaluate(predict, best_params, model_state, splits.test)
  results = {
      "test": test,
      "best_val_accuracy": meta["best_val"],
      "best_epoch": meta["best_epoch"],
      "final_val": evaluate(predict, params, model_state, splits.val),
      "train_seconds": meta["train_seconds"],
      "steps": int(state.step),
      "modalities": list(modalities),
      "method": cfg["method"]["name"],
      "skipped_steps": int(state.opt_state.total_notfinite) if skip_nonfinite else 0,
      "provenance": provenance(),
  }
  if runtime.is_writer:
    write_json(workdir / RESULTS_FILE, results)
    plot_training_curves(read_jsonl(log_path), workdir / "curves.png", cfg["method"]["name"])
  return {**results, "state": state, "best_params": tracked["best_params"], "workdir": workdir}


def check_finite_step(opt_state: Any, metrics: Mapping[str, jax.Array], step: int,
                      skip_nonfinite: int) -> None:
  """Stop on a non-finite gradient (or on more consecutive ones than may be skipped)."""
  if skip_nonfinite:
    consecutive = int(opt_state.notfinite_count)
    if consecutive <= skip_nonfinite:
      return
    problem = f"{consecutive} consecutive steps up to step {step} had non-finite gradients"
  elif np.isfinite(float(metrics["grad_norm"])):
    return
  else:
    losses = {k: float(v) for k, v in metrics.items() if k.startswith("loss/")}
    problem = f"step {step} has a non-finite gradient (losses {losses})"
  raise NonFiniteError(
      f"{problem}; the last checkpoint is kept. Lower optim.learning_rate, check the data, "
      "or set train.skip_nonfinite=N to skip up to N consecutive bad steps.")


def _classification_spec(modalities: tuple[str, ...], loss_cfg: Mapping[str, Any]) -> LossSpec:
  return classification_losses(modalities, **loss_cfg)


def plot_training_curves(log: list[dict[str, Any]], path: Path, title: str) -> Path:
  train = [r for r in log if "loss/total" in r]
  val = [r for r in log if "val/accuracy" in r]
  series = {"train loss": ([r["step"] for r in train], [r["loss/total"] for r in train]),
            "val accuracy": ([r["step"] for r in val], [r["val/accuracy"] for r in val])}
  return plot_curves(series, path, title=title, xlabel="step", ylabel="value")
