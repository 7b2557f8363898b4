"""The resumable training loop: train, evaluate on val each epoch, test the best model."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from mmreg.data.batch import validate_batch
from mmreg.data.batch_dropout import with_modality_dropout
from mmreg.data.dataset import (
  Splits,
  check_finite,
  check_split,
  iterate_batches,
  steps_per_epoch,
)
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
    method_loss_spec,
    method_needs,
    model_config_for,
)
from mmreg.train.optim import learning_rate_schedule, make_optimizer
from mmreg.train.provenance import code_version, provenance
from mmreg.train.results import (
  append_jsonl,
  plot_panels,
  read_jsonl,
  to_jsonable,
  truncate_jsonl,
  write_json,
  write_text_atomic,
)
from mmreg.train.sharding import Runtime, broadcast_from_process_0, to_host
from mmreg.train.step import init_train_state, make_predict, make_train_step
from mmreg.train.validate import validate_config

CONFIG_FILE, LOG_FILE, RESULTS_FILE = "config.json", "log.jsonl", "results.json"
LOCK_FILE = ".lock"


class WorkdirConflictError(RuntimeError):
  """The output folder holds a different run, or cannot be written."""


class WorkdirLockedError(RuntimeError):
  """Another live process is training in the output folder."""


class NonFiniteError(FloatingPointError):
  """Training produced non-finite gradients or parameters and was stopped before saving them."""


class StoppedBySignalError(RuntimeError):
  """SIGTERM or SIGINT stopped the run after its current step was saved.

  `exit_code` is 128 + the signal number (143 for SIGTERM, 130 for SIGINT), the code
  `python -m experiments.train` exits with; rerunning the same command resumes.
  """

  def __init__(self, signum: int, step: int, workdir: Path):
    self.signal, self.step, self.exit_code = signum, step, 128 + signum
    super().__init__(f"{signal.Signals(signum).name}: stopped after step {step}, saved a "
                     f"checkpoint in {workdir}; rerun the same command to resume")


def _say(message: str) -> None:
  """One line to stderr, above any progress bar."""
  tqdm.write(message, file=sys.stderr)


class WorkdirLock:
  """An exclusive `fcntl.flock` on `<workdir>/.lock`, which records the holder's pid and host.

  The operating system drops the lock when its process dies, so a lock file left behind by a
  killed run is stale: it is taken over, and said so. A live holder is refused with
  WorkdirLockedError naming its pid and host.
  """

  def __init__(self, workdir: Path):
    self.path = workdir / LOCK_FILE
    self._fd: int | None = None

  def acquire(self) -> None:
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _lock_holder(fd)
        os.close(fd)
        raise WorkdirLockedError(
            f"{self.path.parent} is in use by pid {holder.get('pid')} on host "
            f"{holder.get('host')} (since {holder.get('since')}); wait for that run to end or "
            "stop it, or pass another --workdir") from None
      try:  # the holder may have released (and unlinked) the file just before our flock
        if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
          break
      except FileNotFoundError:
        pass
      os.close(fd)
    stale = _lock_holder(fd)
    if stale:
      _say(f"took over the stale lock of {self.path.parent} left by pid {stale.get('pid')} on "
           f"host {stale.get('host')} (that process no longer holds it)")
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}).encode(), 0)
    os.fsync(fd)
    self._fd = fd

  def release(self) -> None:
    if self._fd is not None:
      self.path.unlink(missing_ok=True)
      os.close(self._fd)
      self._fd = None


def _lock_holder(fd: int) -> dict[str, Any]:
  try:
    return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
  except (ValueError, UnicodeDecodeError):
    return {"pid": "?", "host": "?"}


class StopSignals:
  """Turns SIGTERM and a first SIGINT into a request (`received`, the signal number) to stop
  after the current step; once one has arrived, SIGINT raises KeyboardInterrupt at once.
  Handlers are installed only in the main thread and restored on exit."""

  def __init__(self):
    self.received: int | None = None
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> StopSignals:
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def requested(self) -> bool:
    """Whether any process received a stop signal (all processes agree, so they stop at the
    same step)."""
    local = self.received is not None
    if jax.process_count() == 1:
      return local
    return bool(np.any(multihost_utils.process_allgather(np.int32(local))))

  def _handle(self, signum: int, frame: Any) -> None:
    if self.received is None:
      self.received = signum
      signal.signal(signal.SIGINT, signal.default_int_handler)

  def __exit__(self, *exc: Any) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, signal.SIG_DFL if handler is None else handler)


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
    try:
      previous = json.loads(path.read_text())
    except json.JSONDecodeError as e:
      raise WorkdirConflictError(f"{path.absolute()} is unreadable ({e}); delete it to start "
                                 "this run afresh, or pass another --workdir") from None
    # Where the processes meet (`distributed`: coordinator address, ids) is not part of a run.
    ours, theirs = _flatten(config), _flatten(previous)
    diff = sorted(k for k in set(ours) | set(theirs)
                  if ours.get(k) != theirs.get(k) and k.split(".")[0] != "distributed")
    if diff:
      raise WorkdirConflictError(
          f"{workdir} holds a run with a different config (differs in {diff[:8]}); pass "
          "another --workdir, or delete the folder to start afresh")
    return True
  if workdir.exists() and any(p.name != LOCK_FILE and not p.name.endswith(".tmp")
                              for p in workdir.iterdir()):
    raise WorkdirConflictError(
        f"{workdir} is not empty and holds no {CONFIG_FILE}; pass an empty or new --workdir")
  write_text_atomic(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
  return False


def check_writable(folder: Path) -> None:
  """Create `folder` if needed and prove it writable, or raise one line naming its absolute
  path."""
  folder = folder.absolute()
  try:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as e:
    raise WorkdirConflictError(f"cannot write to {folder} ({e.strerror or e}); make it "
                               "writable or pass another --workdir") from None


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out: dict[str, Any] = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    out.update(_flatten(v, key + ".") if isinstance(v, Mapping) else {key: v})
  return out


def prepare_data(cfg: Mapping[str, Any]) -> Splits:
  """The config's data splits, checked. A non-empty `path` (`--config.data.path=FILE`, e.g.
  for `name="npz"`) is passed to the loader as its `path` option."""
  options = dict(cfg.get("options", {}))
  if cfg.get("path"):
    options["path"] = cfg["path"]
  splits = load_dataset(cfg["name"], options)
  for name in ("train", "val", "test"):
    split = getattr(splits, name)
    check_split(split, splits.train, f"{cfg['name']} {name} split")
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
                       max_steps: int | None = None,
                       tensorboard: bool = False) -> dict[str, Any] | None:
  """Train `config` in `workdir`, resuming from its last checkpoint, and return results.

  `max_steps` stops the run (after a checkpoint) once the global step reaches it, as a
  pre-empted job would, and returns None; calling again without it finishes the run.
  SIGTERM or a first SIGINT stops it the same way after the current step and raises
  `StoppedBySignalError`; a second SIGINT aborts at once.

  Config, data and model are checked before anything is written. The folder is then locked
  against other writers (`WorkdirLock`). Writes `config.json`, `log.jsonl` (train metrics
  every `train.log_every` steps, with the learning rate, and one record per epoch),
  `checkpoints/`, `results.json` and `curves.png`; with `tensorboard`, the same scalars go to
  `tensorboard/` too (needs `tensorboardX`, the `mmreg[tensorboard]` extra). `progress` shows
  one bar per epoch with the loss and, when the epoch ends, its validation accuracy. The run
  is exactly reproducible: an interrupted run restarted with the same config ends with the
  same parameters as one that was never interrupted.
  """
  with contextlib.ExitStack() as cleanup:
    return _train_and_evaluate(config, Path(workdir), cleanup, loss_spec_fn=loss_spec_fn,
                               progress=progress, max_steps=max_steps, tensorboard=tensorboard)


def _train_and_evaluate(config: Any, workdir: Path, cleanup: contextlib.ExitStack, *,
                        loss_spec_fn: Callable[[tuple[str, ...], Mapping[str, Any]], LossSpec]
                        | None,
                        progress: bool,
                        max_steps: int | None,
                        tensorboard: bool) -> dict[str, Any] | None:
  cfg = config_to_dict(config)
  validate_config(cfg)
  summary_writer = _summary_writer_class() if tensorboard else None
  runtime = Runtime.from_config(cfg)
  splits = prepare_data(cfg["data"])
  train_cfg, seed = cfg["train"], int(cfg["seed"])
  batch_size, epochs = int(train_cfg["batch_size"]), int(train_cfg["epochs"])
  spe = steps_per_epoch(len(splits.train), batch_size)
  if spe == 0:
    raise ValueError(f"batch_size {batch_size} exceeds the {len(splits.train)} train samples")
  runtime.check_batch_size(batch_size)

  method_name, options = cfg["method"]["name"], cfg["method"].get("options", {})
  needs = method_needs(method_name, options)
  model = model_from_config(model_config_for(method_name, cfg["model"], options),
                            splits.train.input_shapes, splits.train.num_classes, seed)
  modalities = model.modalities
  first_batch = next(iterate_batches(splits.train, batch_size, seed=seed, epoch=0))
  validate_batch(first_batch, splits.train.input_shapes, splits.train.num_classes)
  # The unimodal losses of the modalities the model has unimodal logits for.
  heads = tuple(m for m in modalities if m in check_model(model, first_batch).modality_logits)
  loss_cfg = cfg.get("loss", {})
  loss_spec = method_loss_spec(method_name, modalities, options, loss_cfg)
  if loss_spec is not None and loss_spec_fn is not None:
    raise ValueError(f"method {method_name!r} trains on its own losses: drop loss_spec_fn, or "
                     f"{needs.otherwise}")
  if loss_spec is None:
    loss_spec = (loss_spec_fn or _classification_spec)(modalities if loss_spec_fn else heads,
                                                       loss_cfg)
  method = get_method(method_name)
  labels = param_labels(model)
  method_tx = build_method(method_name, labels, modalities, options, total_epochs=epochs,
                           loss_weights=loss_spec.weights, updates_from_stack=True)
  post_update = build_post_update(method_name, labels, options, total_epochs=epochs)
  loss_method = build_loss_method(method_name, options)
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
                            with_loss_grads=needs.loss_grads and not by_features,
                            with_feature_grads=needs.loss_grads and by_features,
                            loss_grads_mask=loss_grads_mask(labels, method.loss_grads_over),
                            post_update=post_update, loss_method=loss_method, jit=False)
  if train_cfg.get("modality_dropout"):  # e.g. RedReg's recipe: experiments/configs/redreg.py
    step_fn = with_modality_dropout(step_fn, steps_per_epoch=spe, total_epochs=epochs,
                                    seed=seed, **train_cfg["modality_dropout"])
  train_step, state = runtime.distribute(step_fn, state)
  predict = make_predict(graphdef)

  if runtime.is_writer:
    check_writable(workdir)
    lock = WorkdirLock(workdir)
    lock.acquire()
    cleanup.callback(lock.release)
  resumed = bool(broadcast_from_process_0(claim_workdir(workdir, cfg) if runtime.is_writer
                                          else False))
  if runtime.is_writer:
    check_writable(workdir / "checkpoints")
  checkpointer = Checkpointer(workdir / "checkpoints", int(train_cfg.get("max_to_keep", 2)))
  cleanup.callback(checkpointer.close)
  stop = cleanup.enter_context(StopSignals())
  log_path = workdir / LOG_FILE
  tracked = {"train": state, "best_params": jax.tree.map(jnp.copy, state.params)}
  code = code_version()
  meta: dict[str, Any] = {"epoch": 0, "batch": 0, "best_val": -1.0, "best_epoch": -1,
                          "train_seconds": 0.0, "code": code}
  if resumed and checkpointer.steps():
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tracked)
    restored_step, tracked, meta = checkpointer.restore(abstract, move_aside=runtime.is_writer)
    if runtime.is_writer:
      truncate_jsonl(log_path, lambda r: r["step"] <= restored_step)
      _say(f"resumed from step {restored_step} (epoch {meta['epoch']}, batch {meta['batch']})")
      if meta.get("code", code) != code:
        _say(f"warning: step {restored_step} was saved by {meta.get('code')}, this is {code}; "
             "the resumed run may differ from an uninterrupted one")
    meta["code"] = code
  elif log_path.exists() and runtime.is_writer:
    log_path.unlink()
  first_step = int(tracked["train"].step)
  board = None
  if summary_writer is not None and runtime.is_writer:
    board = summary_writer(str(workdir / "tensorboard"), purge_step=first_step + 1)
    cleanup.callback(board.close)
  learning_rate = learning_rate_schedule(cfg["optim"], spe, epochs)

  def log(record: dict[str, Any]) -> None:
    if not runtime.is_writer:
      return
    append_jsonl(log_path, record)
    if board is not None:
      for name, value in _scalars(to_jsonable(record)):
        board.add_scalar(name, value, record["step"])

  def save(epoch: int, batch: int) -> None:
    meta.update(epoch=epoch, batch=batch)
    step = int(tracked["train"].step)
    check_saveable(tracked, step)
    checkpointer.save(step, tracked, meta)

  log_every = int(train_cfg.get("log_every", 10))
  ckpt_every = int(train_cfg.get("checkpoint_every_steps", 0))
  t0 = time.perf_counter() - float(meta["train_seconds"])
  stopped = False
  for epoch in range(int(meta["epoch"]), epochs):
    start = int(meta["batch"]) if epoch == int(meta["epoch"]) else 0
    if loss_method is not None and start == 0:
      loss_state = loss_method.update(runtime.local(tracked["train"].loss_state),
                                      epoch_context(tracked["train"], epoch))
      tracked["train"] = tracked["train"].replace(
          loss_state=loss_state if runtime.plan is None else runtime.plan.place(loss_state))
    bar = tqdm(total=spe, initial=start, disable=not (progress and runtime.is_writer),
               desc=f"{cfg['method']['name']} epoch {epoch + 1}/{epochs}", leave=True,
               dynamic_ncols=True)
    cleanup.callback(bar.close)
    postfix: dict[str, str] = {}
    for b, batch in enumerate(runtime.batches(splits.train, batch_size, seed=seed, epoch=epoch,
                                              start=start), start=start):
      tracked["train"], metrics = train_step(tracked["train"], batch)
      step = int(tracked["train"].step)
      bar.update(1)
      check_finite_step(tracked["train"].opt_state, metrics, step, skip_nonfinite)
      if step % log_every == 0:
        record = {"step": step, "epoch": epoch, **runtime.host(metrics),
                  "lr": float(learning_rate(step - 1))}
        if skip_nonfinite:
          record["skipped_steps"] = int(runtime.host(tracked["train"].opt_state.total_notfinite))
        record.update({f"diag/{k}": v for k, v in
                       runtime.host(find_diagnostics(tracked["train"].opt_state)).items()})
        log(record)
        postfix["loss"] = f"{record['loss/total']:.4f}"
        bar.set_postfix(postfix, refresh=False)
      stopped = step == max_steps or stop.requested()
      if (stopped or (ckpt_every and step % ckpt_every == 0)) and b + 1 < spe:
        meta["train_seconds"] = time.perf_counter() - t0
        save(epoch, b + 1)
      if stopped:
        break
    if stopped and b + 1 < spe:
      bar.close()
      break
    val = evaluate(predict, *runtime.local((tracked["train"].params,
                                            tracked["train"].model_state)), splits.val)
    if val["accuracy"] > float(meta["best_val"]):
      meta.update(best_val=val["accuracy"], best_epoch=epoch)
      tracked["best_params"] = jax.tree.map(jnp.copy, tracked["train"].params)
    log({"step": int(tracked["train"].step), "epoch": epoch,
         "val/accuracy": val["accuracy"], "val/macro_f1": val["macro_f1"],
         **{f"val/accuracy/{m}": a for m, a in val["modality_accuracy"].items()}})
    bar.set_postfix({**postfix, "val_acc": f"{val['accuracy']:.4f}"})
    bar.close()
    meta["train_seconds"] = time.perf_counter() - t0
    save(epoch + 1, 0)
    if stopped or stop.requested():
      break
  if stop.requested():
    raise StoppedBySignalError(stop.received or signal.SIGTERM, int(tracked["train"].step),
                               workdir.absolute())
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


_nonfinite_leaves = jax.jit(lambda tree, allow_inf: jax.tree.map(
    lambda x: (jnp.any(jnp.isnan(x) if allow_inf else ~jnp.isfinite(x))
               if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(False)), tree),
    static_argnums=1)


def check_saveable(tracked: Mapping[str, Any], step: int) -> None:
  """Raise NonFiniteError, naming the leaves, if the parameters (current or best) hold NaN/Inf
  or the optimizer state holds NaN (a saturated +inf statistic may be legitimate there)."""
  state = tracked["train"]
  flags = {"params": _nonfinite_leaves(state.params, False),
           "best_params": _nonfinite_leaves(tracked["best_params"], False),
           "opt_state": _nonfinite_leaves(state.opt_state, True)}
  bad = [jax.tree_util.keystr(p, simple=True, separator="/")
         for p, flag in jax.tree_util.tree_leaves_with_path(to_host(flags)) if flag]
  if bad:
    raise NonFiniteError(
        f"after step {step} {bad[:4]} ({len(bad)} arrays) hold NaN/Inf; nothing was saved and "
        "the last checkpoint is kept. Lower optim.learning_rate or optim.weight_decay, or "
        "check the method's options.")


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


def _scalars(record: Mapping[str, Any]) -> list[tuple[str, float]]:
  """The numbers of a JSON-ready log record by name; a list value gives `name/0`, `name/1`…"""
  out = []
  for name, value in record.items():
    values = value if isinstance(value, list) else [value]
    for i, v in enumerate(values):
      if name not in ("step", "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool):
        out.append((f"{name}/{i}" if isinstance(value, list) else name, float(v)))
  return out


def _summary_writer_class() -> Any:
  try:
    from tensorboardX import SummaryWriter
  except ImportError:
    raise ImportError("tensorboard=True needs tensorboardX: pip install tensorboardX (or the "
                      "mmreg[tensorboard] extra)") from None
  return SummaryWriter


def plot_training_curves(log: list[dict[str, Any]], path: Path, title: str) -> Path:
  """Stacked panels over steps: train losses; validation accuracy (fused and per modality);
  learning rate; then one panel per method diagnostic found in the log (`diag/…`)."""
  def series(prefix: str, label: Callable[[str], str]) -> dict[str, tuple[list, list]]:
    found: dict[str, tuple[list, list]] = {}
    for r in log:
      for name, value in _scalars({k: v for k, v in r.items() if k.startswith(prefix)}):
        xs, ys = found.setdefault(label(name), ([], []))
        xs.append(r["step"])
        ys.append(value)
    return found

  panels = [("train loss", series("loss/", lambda n: n.removeprefix("loss/"))),
            ("val accuracy", series("val/accuracy", lambda n: n.removeprefix("val/accuracy/")
                                    if n != "val/accuracy" else "fused")),
            ("learning rate", series("lr", lambda n: n))]
  diagnostics = series("diag/", lambda n: n.removeprefix("diag/"))
  groups: dict[str, dict[str, tuple[list, list]]] = {}
  for name, xy in diagnostics.items():
    groups.setdefault(name.split("/")[0], {})[name] = xy
  panels += [(name, group) for name, group in groups.items()]
  return plot_panels([p for p in panels if p[1]], path, title=title, xlabel="step")
