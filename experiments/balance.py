"""Modality balancing benchmark: every method vs joint and unimodal training.

Datasets: imbalanced view pairs of the bundled mfeat data and the synthetic competition task at
several imbalance levels (the easy modality's scale). Per method and dataset, over seeds:
mean ± 95% CI (Student t) of test accuracy and macro-F1, per-modality accuracy (auxiliary
heads), the exact Shapley contribution of each modality to test accuracy (missing modality
zero-filled through the model's presence mask), step time, and the paired difference to joint
training on the same seeds (a method "beats joint" when that interval lies above zero). Model
selection uses the validation split only (best validation epoch); the test split is read once.

  mmreg-balance                        # default: small, a few minutes on 2 cores
  mmreg-balance --methods=joint,redreg,ogm_ge --datasets=mfeat:pix+mor \\
      --seeds=5 --epochs=10 --workdir=runs/balance
  mmreg-balance --dataset=crema_d --data_dir=~/tensorflow_datasets \\
      --encoder=resnet --methods=joint,ogm_ge,mmpareto,redreg   # files you placed
  python -m experiments.balance ...    # in a checkout

Writes results.json, results.md, accuracy.png and redreg_diagnostics.png under --workdir.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

import mmreg
from mmreg import cli as cli_lib
from mmreg.data import (
  CompetitionConfig,
  eval_batches,
  iterate_batches,
  load_competition,
  load_mfeat,
)
from mmreg.data.dataset import MultimodalDataset, Splits
from mmreg.data.registry import load_dataset
from mmreg.losses import classification_losses
from mmreg.metrics import accuracy, macro_f1, modality_subsets, shapley_values, with_subset
from mmreg.models import build_model
from mmreg.train import (
  EpochContext,
  build_loss_method,
  build_method,
  init_train_state,
  make_predict,
  make_train_step,
  method_loss_spec,
  method_needs,
  model_config_for,
)
from mmreg.train.diagnostics import find_diagnostics
from mmreg.train.results import mean_ci, write_json

# Registered methods (mmreg.train.METHODS) compared here, plus "unimodal" (joint training of
# each modality alone).
REGISTERED_METHODS = ("joint", "ogm_ge", "inforeg", "agm", "mmpareto", "pcgrad", "mgda", "dgl",
                      "redreg", "redreg_subspace", "pmr", "gblending")
ALL_METHODS = ("unimodal", *REGISTERED_METHODS)
DEFAULT_DATASETS = ("mfeat:pix+mor", "mfeat:fac+zer", "competition:3", "competition:6")


AUDIO_VISUAL = ("crema_d", "kinetics_sounds", "ave")


def load(name: str, seed: int, args=None) -> Splits:
  """`mfeat:<view>+<view>`, `competition:<easy_scale>`, or an audio-visual dataset a user
  placed (`crema_d`, `kinetics_sounds`, `ave`; read from --data_dir / --manual_dir)."""
  kind, _, arg = name.partition(":")
  if kind in AUDIO_VISUAL:
    if args is None or not args.data_dir:
      raise ValueError(f"{kind} is read from files you place: pass --data_dir (and --manual_dir "
                       "if the release is not in <data_dir>/downloads/manual); see "
                       "docs/datasets.md")
    return load_dataset(kind, {"data_dir": args.data_dir, "manual_dir": args.manual_dir,
                               "config": args.av_config, "val_fraction": args.val_fraction,
                               "seed": seed})
  if kind == "mfeat":
    return load_mfeat(tuple(arg.split("+")), seed=seed)
  if kind == "competition":
    cfg = CompetitionConfig(easy_scale=float(arg or 3.0))
    return load_competition(cfg, num_samples=2000, seed=seed)
  raise ValueError(f"unknown dataset {name!r}; use mfeat:<v>+<v>, competition:<easy_scale> or "
                   f"one of {list(AUDIO_VISUAL)}")


def method_options(name: str, epochs: int) -> dict[str, Any]:
  return {"redreg": {"total_epochs": epochs}, "redreg_subspace": {"total_epochs": epochs},
          "inforeg": {"window": 2}}.get(name, {})


def gather(predict, params, model_state, data: MultimodalDataset, subset=None
           ) -> dict[str, np.ndarray]:
  logits, mod = [], {m: [] for m in data.modalities}
  for batch, valid in eval_batches(data, 512):
    if subset is not None:
      batch = with_subset(batch, subset)
    out = predict(params, model_state, batch)
    logits.append(np.asarray(out.logits)[valid])
    for m in data.modalities:
      mod[m].append(np.asarray(out.modality_logits[m])[valid])
  return {"logits": np.concatenate(logits), **{m: np.concatenate(v) for m, v in mod.items()}}


class Trainer:
  """One (method, dataset) pair: builds and compiles the step once, trains every seed.

  A loss-side method (PMR, G-Blending) keeps its epoch-level state in `TrainState.loss_state`,
  updated at the start of every epoch (`mmreg.train.loss_methods`)."""

  def __init__(self, method: str, splits: Splits, modalities: tuple[str, ...], args):
    self.method, self.args, self.modalities = method, args, modalities
    self.splits = splits.select(modalities)
    self.spe = len(self.splits.train) // args.batch_size
    name = "joint" if method == "unimodal" else method
    options = method_options(name, args.epochs)
    self.model_cfg = model_config_for(
        name, {"encoder": args.encoder, "hidden": (64,), "feature_dim": 32}, options)
    model = self.build_model(0)
    self.spec = (method_loss_spec(name, modalities, options)
                 or classification_losses(modalities))
    self.optimizer = optax.sgd(args.lr, momentum=0.9)
    self.loss_method = build_loss_method(name, options)
    self.tx = optax.chain(build_method(name, mmreg.param_labels(model), modalities, options,
                                       loss_weights=self.spec.weights, updates_from_stack=True),
                          self.optimizer)
    graphdef, _ = init_train_state(model, self.tx, 0)
    self.graphdef = graphdef
    self.predict = make_predict(graphdef)
    self.step = make_train_step(graphdef, self.spec, self.tx, steps_per_epoch=self.spe,
                                with_loss_grads=method_needs(name, options).loss_grads,
                                loss_method=self.loss_method)
    self.warm = False

  def build_model(self, seed: int):
    shapes = {m: self.splits.train.input_shapes[m] for m in self.modalities}
    return build_model(self.model_cfg, shapes, self.splits.train.num_classes, seed)

  def context(self, state, seed: int, epoch: int) -> EpochContext:
    return EpochContext(self.graphdef, state.params, state.model_state, self.splits.train,
                        self.splits.val, self.spec, self.optimizer, self.args.batch_size, seed,
                        epoch)

  def train(self, seed: int) -> dict[str, Any]:
    args, data = self.args, self.splits
    _, state = init_train_state(self.build_model(seed), self.tx, seed)
    if self.loss_method is not None:
      state = state.replace(loss_state=self.loss_method.init(self.context(state, seed, 0)))
    best = (-1.0, state.params)
    epoch_times, trace = [], []
    for epoch in range(args.epochs):
      if self.loss_method is not None:
        state = state.replace(loss_state=self.loss_method.update(
            state.loss_state, self.context(state, seed, epoch)))
      t0 = time.perf_counter()
      for batch in iterate_batches(data.train, args.batch_size, seed=seed, epoch=epoch):
        state, metrics = self.step(state, batch)
        if self.method.startswith("redreg") and seed == args.seeds[0]:
          d = find_diagnostics(state.opt_state)
          trace.append({k: np.asarray(d[k]).tolist()
                        for k in ("r", "gate", "beta", "applied_strength", "dominant")})
      jax.block_until_ready(metrics)
      if self.warm:  # the epoch that compiled the step is not timed
        epoch_times.append((time.perf_counter() - t0) / self.spe)
      self.warm = True
      val = gather(self.predict, state.params, state.model_state, data.val)
      val_acc = accuracy(data.val.labels, val["logits"].argmax(-1))
      if val_acc > best[0]:
        best = (val_acc, jax.tree.map(jnp.copy, state.params))
    return self._evaluate(best[1], state.model_state, epoch_times, trace)

  def _evaluate(self, params, model_state, epoch_times, trace) -> dict[str, Any]:
    test = self.splits.test
    out = gather(self.predict, params, model_state, test)
    pred = out["logits"].argmax(-1)
    result = {"accuracy": accuracy(test.labels, pred),
              "macro_f1": macro_f1(test.labels, pred, test.num_classes),
              "modality_accuracy": {m: accuracy(test.labels, out[m].argmax(-1))
                                    for m in self.modalities},
              "step_ms": 1e3 * float(np.median(epoch_times)) if epoch_times else float("nan")}
    if len(self.modalities) > 1:
      value = {}
      for s in modality_subsets(self.modalities):
        sub = gather(self.predict, params, model_state, test, s)
        value[s] = accuracy(test.labels, sub["logits"].argmax(-1))
      result["shapley"] = shapley_values(value, self.modalities)
    if trace:
      result["redreg_trace"] = trace
    return result


def run(args) -> dict[str, Any]:
  results: dict[str, Any] = {"args": vars(args), "datasets": {}}
  for ds in args.datasets:
    per_method: dict[str, Any] = {}
    probe = load(ds, 0, args)
    modalities = probe.train.modalities
    for method in args.methods:
      configs = ([(f"unimodal:{m}", (m,)) for m in modalities] if method == "unimodal"
                 else [(method, modalities)])
      for label, mods in configs:
        trainer = None
        runs = []
        for seed in args.seeds:
          splits = load(ds, seed, args)
          if trainer is None:
            trainer = Trainer(method, splits, mods, args)
          else:
            trainer.splits = splits.select(mods)
          runs.append(trainer.train(seed))
        per_method[label] = summarise(runs)
        r = per_method[label]
        print(f"{ds:<18}{label:<18} acc {fmt(r['accuracy'])}  f1 {fmt(r['macro_f1'])}  "
              f"step {r['step_ms']:.2f} ms", flush=True)
    if "joint" in per_method:
      joint = per_method["joint"]["runs_accuracy"]
      for label, r in per_method.items():
        if label != "joint" and len(r["runs_accuracy"]) == len(joint):
          diff = mean_ci(np.asarray(r["runs_accuracy"]) - np.asarray(joint))
          r["vs_joint"] = {**diff, "beats_joint": bool(diff["mean"] - diff["ci95"] > 0),
                           "worse_than_joint": bool(diff["mean"] + diff["ci95"] < 0)}
    results["datasets"][ds] = per_method
  return results


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
  out = {"accuracy": mean_ci([r["accuracy"] for r in runs]),
         "macro_f1": mean_ci([r["macro_f1"] for r in runs]),
         "runs_accuracy": [r["accuracy"] for r in runs],
         "step_ms": float(np.nanmedian([r["step_ms"] for r in runs])),
         "modality_accuracy": {m: mean_ci([r["modality_accuracy"][m] for r in runs])
                               for m in runs[0]["modality_accuracy"]}}
  if "shapley" in runs[0]:
    out["shapley"] = {m: mean_ci([r["shapley"][m] for r in runs]) for m in runs[0]["shapley"]}
  if "redreg_trace" in runs[0]:
    out["redreg_trace"] = runs[0]["redreg_trace"]
  return out


def fmt(s: Mapping[str, float]) -> str:
  return f"{100 * s['mean']:.2f} ± {100 * np.nan_to_num(s['ci95']):.2f}"


def write_markdown(results: dict[str, Any], path: Path) -> None:
  args = results["args"]
  lines = ["# Modality balancing benchmark", "",
           f"Seeds {args['seeds']}, {args['epochs']} epochs, batch {args['batch_size']}, SGD lr "
           f"{args['lr']} (momentum 0.9), MLP encoders (64 hidden, 32 features), concat fusion. "
           "Accuracy and macro-F1 in %, mean ± 95% CI over seeds; Δ joint is the paired "
           "difference to joint training on the same seeds; Shapley = exact Shapley "
           "contribution of each modality to test accuracy (missing modality zero-filled).", ""]
  for ds, per_method in results["datasets"].items():
    mods = next((list(r["modality_accuracy"]) for k, r in per_method.items()
                 if not k.startswith("unimodal")), [])
    lines += [f"## {ds}", "",
              "| method | accuracy | macro-F1 | Δ joint | beats joint? | "
              + " | ".join(f"acc {m}" for m in mods) + " | "
              + " | ".join(f"Shapley {m}" for m in mods) + " | step ms |",
              "|---" * (6 + 2 * len(mods)) + "|"]
    for label, r in per_method.items():
      vs = r.get("vs_joint")
      delta = "" if vs is None else fmt(vs)
      verdict = ("" if vs is None else "yes" if vs["beats_joint"] else
                 "worse" if vs["worse_than_joint"] else "no (CI includes 0)")
      accs = [fmt(r["modality_accuracy"][m]) if m in r["modality_accuracy"] else ""
              for m in mods]
      shap = [fmt(r["shapley"][m]) if "shapley" in r else "" for m in mods]
      lines.append(f"| {label} | {fmt(r['accuracy'])} | {fmt(r['macro_f1'])} | {delta} | "
                   f"{verdict} | " + " | ".join(accs) + " | " + " | ".join(shap)
                   + f" | {r['step_ms']:.2f} |")
    lines.append("")
  path.write_text("\n".join(lines))


def plot(results: dict[str, Any], out: Path) -> None:
  import matplotlib.pyplot as plt

  datasets = list(results["datasets"])
  fig, axes = plt.subplots(len(datasets), 1, figsize=(10, 3.2 * len(datasets)), dpi=100,
                           squeeze=False)
  for ax, ds in zip(axes[:, 0], datasets, strict=True):
    per = results["datasets"][ds]
    names = list(per)
    means = [100 * per[n]["accuracy"]["mean"] for n in names]
    errs = [100 * np.nan_to_num(per[n]["accuracy"]["ci95"]) for n in names]
    colors = ["tab:gray" if n.startswith("unimodal") else "tab:orange" if n == "joint"
              else "tab:blue" for n in names]
    ax.bar(names, means, yerr=errs, capsize=3, color=colors)
    lo = min(m - e for m, e in zip(means, errs, strict=True))
    ax.set_ylim(max(0, lo - 5), 100)
    ax.set_title(f"{ds}: test accuracy (mean ± 95% CI)")
    ax.grid(axis="y", alpha=0.3)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
  fig.tight_layout()
  fig.savefig(out / "accuracy.png")
  plt.close(fig)

  traces = [(ds, n, r["redreg_trace"]) for ds, per in results["datasets"].items()
            for n, r in per.items() if "redreg_trace" in r]
  if not traces:
    return
  fig, axes = plt.subplots(len(traces), 3, figsize=(12, 2.6 * len(traces)), dpi=100,
                           squeeze=False)
  for row, (ds, name, trace) in zip(axes, traces, strict=True):
    steps = np.arange(1, len(trace) + 1)
    dom = np.array([t["dominant"] for t in trace])
    r = np.array([t["r"] for t in trace])
    r_dom = np.where(dom >= 0, r[np.arange(len(r)), np.maximum(dom, 0).astype(int)], np.nan)
    row[0].plot(steps, r_dom, lw=0.8)
    row[0].axhline(0.15, color="k", ls="--", lw=0.6)
    row[0].set_title(f"{ds} {name}: r of dominant", fontsize=8)
    row[1].plot(steps, [t["gate"] for t in trace], lw=0.8)
    row[1].set_title("co-information gate", fontsize=8)
    row[2].plot(steps, [t["applied_strength"] for t in trace], lw=0.8)
    row[2].set_title("applied strength β·gate·trigger", fontsize=8)
  for ax in axes[-1]:
    ax.set_xlabel("step")
  fig.tight_layout()
  fig.savefig(out / "redreg_diagnostics.png")
  plt.close(fig)


FLAGS = flags.FlagValues()
cli_lib.define_choices(FLAGS, "methods", ALL_METHODS, ALL_METHODS, "Methods to run.")
flags.DEFINE_list("datasets", list(DEFAULT_DATASETS), "Comma-separated mfeat:<view>+<view>, "
                  f"competition:<easy_scale>, {', '.join(AUDIO_VISUAL)}.", flag_values=FLAGS)
flags.DEFINE_alias("dataset", "datasets", flag_values=FLAGS)
flags.DEFINE_string("data_dir", "", "TFDS data folder of an audio-visual dataset.",
                    flag_values=FLAGS)
flags.DEFINE_string("manual_dir", None, "Where the release's files were placed.",
                    flag_values=FLAGS)
flags.DEFINE_string("av_config", "small", "Audio-visual builder config: 'small' (64-px "
                    "frames), 'default' (224 px), or a JSON dict of AVConfig fields.",
                    flag_values=FLAGS)
flags.DEFINE_float("val_fraction", 0.1, "Validation share carved from train when a release "
                   "has no val split.", lower_bound=0, upper_bound=1, flag_values=FLAGS)
flags.DEFINE_string("encoder", "auto", "Encoder kind: auto (MLP for vectors, conv for "
                    "spectrograms/frames), mlp, conv1d, conv2d, resnet.", flag_values=FLAGS)
flags.DEFINE_integer("seeds", 5, "Number of seeds (0..n-1); at least 2 for a confidence "
                     "interval.", lower_bound=2, flag_values=FLAGS)
flags.DEFINE_integer("epochs", 6, "Training epochs per run.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 64, "Batch size.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_float("lr", 0.02, "SGD learning rate (momentum 0.9).", flag_values=FLAGS)
cli_lib.define_workdir(FLAGS, "runs/balance", "Output folder.")


def parse_args(argv: Sequence[str] | None = None) -> SimpleNamespace:
  args = cli_lib.parse(FLAGS, argv, __doc__)
  if args.av_config.startswith("{"):
    try:
      args.av_config = json.loads(args.av_config)
    except json.JSONDecodeError as e:
      cli_lib.fail(f"--av_config is not valid JSON ({e})")
  args.seeds = list(range(args.seeds))
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  out = Path(args.workdir)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  results = run(args)
  results["seconds"] = time.perf_counter() - t0
  write_json(out / "results.json", results)
  write_markdown(results, out / "results.md")
  plot(results, out)
  print(f"wrote {out}/results.json, results.md, accuracy.png, redreg_diagnostics.png "
        f"in {results['seconds']:.0f} s")
  return results


def cli() -> None:
  """The `mmreg-balance` command."""
  cli_lib.run(main)


if __name__ == "__main__":
  cli()
