"""Modality balancing benchmark: every method against two baselines, tuned with equal budgets.

Protocol, per task:
- Baselines: `joint` (the fused cross-entropy only, on a concat head whose slices give the
  per-modality logits) and `joint+heads` (fused + one cross-entropy per modality's auxiliary
  head). Each method runs in its authors' loss configuration (`ENTRIES`).
- Converged runs: every run trains until its validation accuracy has not improved for
  `--patience` epochs (at most `--max_epochs`) and keeps its best validation epoch.
- Equal budgets: every method gets a grid of 6 configurations, learning rate × its own
  strength (3 `--method_learning_rates` × 2 strengths) or, without a strength parameter, the
  6 learning rates of `--learning_rates` (the baselines' grid), each trained on the
  `--tune_seeds` seeds. The configuration with the best mean validation accuracy is trained
  again on `--seeds` fresh seeds; those runs are reported, the test split read once for them.
- Learning-rate-matched controls: where a method's encoders move more than 1.2× as far over
  the first epoch as joint+heads' at the same learning rate and seeds (MMPareto's boost, PMR's
  extra loss), joint+heads is re-run at the learning rate scaled by that ratio.
- Statistics: paired differences over the fresh seeds, Student-t 95% intervals, Holm–Bonferroni
  across the methods of one task for each baseline; `significant` is the adjusted decision.
- Imbalance evidence: each modality alone (joint+heads on that modality, same grid), the weak
  modality's head inside each model, and a linear probe on each frozen encoder.
The runs of one grid (or of the fresh seeds) train together in one program
(`mmreg.train.train_runs`: the library's step, vmapped over runs).

  mmreg-balance                                   # default tasks; prints its time
  mmreg-balance --datasets=mfeat:fou+mor,npz:/path/to/data.npz --methods=joint,joint+heads,mmpareto
  mmreg-balance --dataset=crema_d --data_dir=~/tensorflow_datasets --methods=joint,ogm_ge
  python -m experiments.balance ...               # in a checkout

Writes results.json, results.md and accuracy.png under --workdir.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from absl import flags

import mmreg
from mmreg import cli as cli_lib
from mmreg.data.dataset import Splits
from mmreg.data.registry import load_dataset
from mmreg.losses import classification_losses
from mmreg.losses.spec import FUSED, LossSpec, fused_ce
from mmreg.metrics import (
  accuracy,
  holm_bonferroni,
  linear_probe_accuracy,
  macro_f1,
  paired_difference,
)
from mmreg.models import build_model
from mmreg.train import (
  build_loss_method,
  build_method,
  evaluate_runs,
  method_loss_spec,
  method_needs,
  model_config_for,
  train_runs,
)
from mmreg.train.provenance import provenance
from mmreg.train.results import mean_ci, write_json, write_text_atomic


@dataclasses.dataclass(frozen=True)
class Entry:
  """How the benchmark runs one method: the registered method, the losses it trains on
  ("fused": the fused CE alone; "fused+heads": plus one CE per auxiliary head; "own": the
  method's own loss spec), where the model's per-modality logits come from, and the option
  its strength grid varies (with the two values, the first the authors' default)."""

  method: str
  losses: str
  modality_logits: str = "auto"
  strength: str | None = None
  strength_values: tuple[Any, ...] = ()


# The authors' loss configurations (shared/REFERENCES.md): OGM-GE, InfoReg and PMR train the
# fused CE with modality scores from the fused head's slices; AGM its own losses on the
# zero-input Shapley model; MMPareto, PCGrad, MGDA, DGL, RedReg and G-Blending the fused loss
# plus one per unimodal head. Strength grids: the authors' default and one other value.
ENTRIES: dict[str, Entry] = {
    "joint": Entry("joint", "fused", "head_slices"),
    "joint+heads": Entry("joint", "fused+heads"),
    "ogm_ge": Entry("ogm_ge", "fused", "head_slices", "alpha", (0.8, 0.1)),
    "inforeg": Entry("inforeg", "fused", "head_slices", "strength",
                     ((0.95, 0.1), (0.475, 0.05))),
    "agm": Entry("agm", "own", "auto", "alpha", (1.0, 0.5)),
    "mmpareto": Entry("mmpareto", "fused+heads", "auto", "gamma", (1.5, 1.0)),
    "pcgrad": Entry("pcgrad", "fused+heads"),
    "mgda": Entry("mgda", "fused+heads"),
    "dgl": Entry("dgl", "fused+heads", "auto", "alpha", (4.0, 1.0)),
    "redreg": Entry("redreg", "fused+heads", "auto", "beta_scale", (1.0, 0.5)),
    "pmr": Entry("pmr", "fused", "head_slices", "alpha", (1.0, 0.5)),
    "gblending": Entry("gblending", "fused+heads"),
}
BASELINES = ("joint", "joint+heads")
CONTROL_RATIO = 1.2
DEFAULT_DATASETS = ("mfeat:fou+mor", "av_digits", "competition:3")
AUDIO_VISUAL = ("crema_d", "kinetics_sounds", "ave")


def load(name: str, args: SimpleNamespace) -> Splits:
  """`mfeat:<view>+<view>`, `av_digits`, `competition:<easy_scale>`, `npz:<path>` (your own
  splits), or an audio-visual dataset you placed (`crema_d`, `kinetics_sounds`, `ave`), read
  through the dataset registry. One fixed split (seed 0) for every run: the seeds vary
  initialisation and data order."""
  kind, _, arg = name.partition(":")
  if kind in AUDIO_VISUAL:
    if not args.data_dir:
      raise ValueError(f"{kind} is read from files you place: pass --data_dir (and --manual_dir "
                       "if the release is not in <data_dir>/downloads/manual); see "
                       "docs/datasets.md")
    options = {"data_dir": args.data_dir, "manual_dir": args.manual_dir,
               "config": args.av_config, "val_fraction": args.val_fraction, "seed": 0}
  elif kind == "mfeat":
    options = {"views": tuple(arg.split("+")), "seed": 0}
  elif kind == "av_digits":
    options = {"seed": 0}
  elif kind == "competition":
    options = {"easy_scale": float(arg or 3.0), "num_samples": 2000, "seed": 0}
  elif kind == "npz":
    if not arg:
      raise ValueError("npz needs a path: --datasets=npz:/path/to/data.npz")
    options = {"path": arg}
  else:
    raise ValueError(f"unknown dataset {name!r}; use mfeat:<v>+<v>, av_digits, "
                     f"competition:<easy_scale>, npz:<path> or one of {list(AUDIO_VISUAL)}")
  return load_dataset(kind, options)


def loss_spec_for(entry: Entry, modalities: tuple[str, ...], options: Mapping[str, Any]
                  ) -> LossSpec:
  if entry.losses == "own":
    return method_loss_spec(entry.method, modalities, options)
  if entry.losses == "fused":
    return LossSpec({FUSED: fused_ce()}, {FUSED: 1.0})
  return classification_losses(modalities)


def train_entry(entry: Entry, options: Mapping[str, Any], splits: Splits,
                learning_rates: Sequence[float], seeds: Sequence[int], args: SimpleNamespace):
  """All (learning rate, seed) runs of one method configuration, trained together."""
  modalities = splits.train.modalities
  model_cfg = model_config_for(entry.method, {
      "encoder": args.encoder, "hidden": (64,), "feature_dim": 32, "channels": (8, 16),
      "modality_logits": entry.modality_logits}, options)
  shapes = {m: splits.train.input_shapes[m] for m in modalities}

  def build(seed: int):
    return build_model(model_cfg, shapes, splits.train.num_classes, seed)

  spec = loss_spec_for(entry, modalities, options)
  method_tx = build_method(entry.method, mmreg.param_labels(build(0)), modalities, options,
                           total_epochs=args.max_epochs, loss_weights=spec.weights,
                           updates_from_stack=True)
  return train_runs(build, spec, method_tx, splits, learning_rates=learning_rates, seeds=seeds,
                    batch_size=args.batch_size, max_epochs=args.max_epochs,
                    patience=args.patience,
                    with_loss_grads=method_needs(entry.method, options).loss_grads,
                    loss_method=build_loss_method(entry.method, options))


def tune(entry: Entry, splits: Splits, args: SimpleNamespace,
         learning_rates: Sequence[float] | None = None) -> dict[str, Any]:
  """Train the method's grid on the tuning seeds, select the configuration with the best mean
  validation accuracy, and train it on the fresh seeds: `runs` are those fresh runs, `all` the
  tuning runs of the selected strength."""
  if learning_rates is None:
    learning_rates = args.method_learning_rates if entry.strength else args.learning_rates
  strengths = entry.strength_values if entry.strength else (None,)
  best: dict[str, Any] | None = None
  epochs, seconds = [], 0.0
  for value in strengths:
    options = {entry.strength: value} if entry.strength else {}
    result = train_entry(entry, options, splits, learning_rates, args.tune_seeds, args)
    epochs.append(result.epochs)
    seconds += result.seconds
    for lr in learning_rates:
      score = float(result.best_val_accuracy[result.learning_rates == lr].mean())
      if best is None or score > best["val_accuracy"]:
        best = {"val_accuracy": score, "learning_rate": float(lr), "options": options,
                "all": result}
  assert best is not None
  fresh = train_entry(entry, best["options"], splits, (best["learning_rate"],), args.seeds,
                      args)
  best.update(runs=fresh, epochs=[*epochs, fresh.epochs], seconds=seconds + fresh.seconds)
  return best


def report(selected: dict[str, Any], splits: Splits) -> dict[str, Any]:
  """Test metrics of the selected runs (one per fresh seed), the weak-modality evidence (each
  head's accuracy, a linear probe on each frozen encoder) and the selected configuration."""
  runs = selected["runs"]
  test, train = splits.test, splits.train
  out = evaluate_runs(runs, test)
  features = evaluate_runs(runs, train)["features"]
  pred = out["logits"].argmax(-1)
  acc = [accuracy(test.labels, p) for p in pred]
  f1 = [macro_f1(test.labels, p, test.num_classes) for p in pred]
  heads = {m: [accuracy(test.labels, z.argmax(-1)) for z in logits]
           for m, logits in out["modality_logits"].items()}
  probes = {m: linear_probe_accuracy(features[m], train.labels, out["features"][m],
                                     test.labels, test.num_classes).tolist()
            for m in out["features"]}
  return {"accuracy": {**mean_ci(acc), "runs": acc},
          "macro_f1": {**mean_ci(f1), "runs": f1},
          "head_accuracy": {m: {**mean_ci(v), "runs": v} for m, v in heads.items()},
          "probe_accuracy": {m: {**mean_ci(v), "runs": v} for m, v in probes.items()},
          "config": {"learning_rate": selected["learning_rate"],
                     **{k: list(v) if isinstance(v, tuple) else v
                        for k, v in selected["options"].items()},
                     "val_accuracy": selected["val_accuracy"],
                     "best_epoch": runs.best_epoch.tolist(), "epochs_trained": selected["epochs"],
                     "diverged_runs": int(selected["all"].diverged.sum()
                                          + selected["runs"].diverged.sum())},
          "seconds": selected["seconds"]}


def step_ratio(selected: dict[str, Any], reference: Any) -> float:
  """Median over the tuning seeds of the method's first-epoch encoder step over joint+heads' at
  the same learning rate and seeds."""
  runs, lr = selected["all"], selected["learning_rate"]  # the tuning runs
  ratios = []
  for seed in runs.seeds[runs.learning_rates == lr]:
    mine = runs.first_epoch_encoder_step[(runs.learning_rates == lr) & (runs.seeds == seed)]
    ref = reference.first_epoch_encoder_step[(reference.learning_rates == lr)
                                             & (reference.seeds == seed)]
    if len(ref):
      ratios.append(float(mine[0] / ref[0]))
  return float(np.median(ratios)) if ratios else float("nan")


def compare(per_method: dict[str, dict[str, Any]]) -> None:
  """Paired differences to each baseline, Holm-adjusted across the task's methods, and to each
  method's learning-rate-matched control; written into `per_method[name]["delta"]`."""
  for baseline in BASELINES:
    if baseline not in per_method:
      continue
    base = per_method[baseline]["accuracy"]["runs"]
    diffs = {name: paired_difference(r["accuracy"]["runs"], base)
             for name, r in per_method.items()
             if name != baseline and not name.startswith(("unimodal:", "control:"))}
    adjusted = holm_bonferroni({k: d.p_value for k, d in diffs.items()}) if diffs else {}
    for name, d in diffs.items():
      per_method[name].setdefault("delta", {})[baseline] = {
          "mean": d.mean, "ci95": d.ci, "p": d.p_value, "p_holm": adjusted[name][0],
          "significant": adjusted[name][1]}
  controls = {name: paired_difference(per_method[name]["accuracy"]["runs"],
                                      per_method[f"control:{name}"]["accuracy"]["runs"])
              for name in per_method if f"control:{name}" in per_method}
  adjusted = holm_bonferroni({k: d.p_value for k, d in controls.items()}) if controls else {}
  for name, d in controls.items():
    per_method[name].setdefault("delta", {})["lr_matched_control"] = {
        "mean": d.mean, "ci95": d.ci, "p": d.p_value, "p_holm": adjusted[name][0],
        "significant": adjusted[name][1]}


def run_task(name: str, args: SimpleNamespace
             ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
  """`({method: results}, {"modalities", "weak_modality"})` of one task."""
  splits = load(name, args)
  modalities = splits.train.modalities
  per_method: dict[str, dict[str, Any]] = {}
  say = lambda label, r: print(  # noqa: E731
      f"{name:<16}{label:<20} acc {fmt(r['accuracy'])}  lr {r['config']['learning_rate']:g}  "
      f"epochs {r['config']['epochs_trained']}  {r['seconds']:.0f} s", flush=True)
  if args.unimodal:
    for m in modalities:
      selected = tune(ENTRIES["joint+heads"], splits.select((m,)), args, args.learning_rates)
      per_method[f"unimodal:{m}"] = report(selected, splits.select((m,)))
      say(f"unimodal:{m}", per_method[f"unimodal:{m}"])
  reference = None
  order = sorted(args.methods, key=lambda n: n != "joint+heads")
  for method in order:
    selected = tune(ENTRIES[method], splits, args)
    per_method[method] = report(selected, splits)
    say(method, per_method[method])
    if method == "joint+heads":
      reference = selected["all"]
    elif reference is not None and method not in BASELINES:
      ratio = step_ratio(selected, reference)
      per_method[method]["config"]["first_epoch_step_ratio"] = ratio
      if ratio > CONTROL_RATIO:
        lr = selected["learning_rate"] * ratio
        control = train_entry(ENTRIES["joint+heads"], {}, splits, (lr,), args.seeds, args)
        per_method[f"control:{method}"] = report(
            {"runs": control, "all": control, "learning_rate": lr, "options": {},
             "val_accuracy": float(control.best_val_accuracy.mean()),
             "epochs": [control.epochs], "seconds": control.seconds}, splits)
        say(f"control:{method}", per_method[f"control:{method}"])
  compare(per_method)
  weak = None
  if args.unimodal and len(modalities) > 1:
    weak = min(modalities, key=lambda m: per_method[f"unimodal:{m}"]["accuracy"]["mean"])
  return per_method, {"modalities": list(modalities), "weak_modality": weak}


def fmt(s: Mapping[str, float], scale: float = 100) -> str:
  return f"{scale * s['mean']:.2f} ± {scale * np.nan_to_num(s['ci95']):.2f}"


def verdict(delta: Mapping[str, Any] | None) -> str:
  if delta is None:
    return ""
  sign = "+" if delta["mean"] >= 0 else "−"
  decision = (" **better**" if delta["significant"] and delta["mean"] > 0 else
              " **worse**" if delta["significant"] else "")
  return (f"{sign}{abs(100 * delta['mean']):.2f} ± {100 * delta['ci95']:.2f} "
          f"(p_Holm {delta['p_holm']:.2g}){decision}")


def config_text(config: Mapping[str, Any]) -> str:
  skip = {"val_accuracy", "best_epoch", "epochs_trained", "diverged_runs",
          "first_epoch_step_ratio"}
  return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                   for k, v in config.items() if k not in skip)


def markdown(results: dict[str, Any]) -> str:
  a = results["args"]
  lines = ["# Modality balancing benchmark", "",
           f"Fresh seeds {a['seeds']} (tuning seeds {a['tune_seeds']}); runs stop after "
           f"{a['patience']} epochs without a better validation accuracy (at most "
           f"{a['max_epochs']}); batch {a['batch_size']}, SGD with momentum 0.9. Grid per "
           f"method: {len(a['learning_rates'])} configurations (learning rates "
           f"{a['method_learning_rates']} × 2 strengths, or learning rates "
           f"{a['learning_rates']}). Accuracy in %, mean ± 95% "
           "Student-t interval over the fresh seeds; Δ = paired difference in points, "
           "p_Holm adjusted across the methods of the task; **better**/**worse** = the "
           "adjusted decision at 0.05. Head: the weak modality's own head (its slice of the "
           "fused head for `joint`); probe: a linear probe on its frozen encoder. Step ratio: "
           "the encoders' first-epoch parameter change over joint+heads' at the same learning "
           "rate and seeds. Best epoch: median over the fresh seeds (1-based).", ""]
  for ds, per_method in results["datasets"].items():
    weak = results["tasks"][ds]["weak_modality"]
    lines += [f"## {ds}", "", f"Weak modality: {weak or 'n/a'}.", "",
              "| method | selected config | accuracy | macro-F1 | Δ joint | Δ joint+heads | "
              "Δ LR-matched control | weak head | weak probe | step ratio | best epoch / trained |",
              "|---" * 11 + "|"]
    for label, r in per_method.items():
      delta = r.get("delta", {})
      head = r["head_accuracy"].get(weak) if weak else None
      probe = r["probe_accuracy"].get(weak) if weak else None
      ratio = r["config"].get("first_epoch_step_ratio")
      lines.append(
          f"| {label} | {config_text(r['config'])} | {fmt(r['accuracy'])} | "
          f"{fmt(r['macro_f1'])} | {verdict(delta.get('joint'))} | "
          f"{verdict(delta.get('joint+heads'))} | {verdict(delta.get('lr_matched_control'))} | "
          f"{fmt(head) if head else ''} | {fmt(probe) if probe else ''} | "
          f"{'' if ratio is None else f'{ratio:.2f}'} | "
          f"{np.median(r['config']['best_epoch']) + 1:g} / "
          f"{'/'.join(map(str, r['config']['epochs_trained']))} |")
    lines.append("")
  lines.append(f"Total time: {results['seconds']:.0f} s.")
  return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
  """Top row: test accuracy per method (mean ± 95% CI, no whisker above 100%); bottom row:
  the paired difference to joint+heads (mean ± 95% CI; filled: Holm-adjusted decision)."""
  import matplotlib.pyplot as plt

  datasets = list(results["datasets"])
  fig, axes = plt.subplots(2, len(datasets), figsize=(4.2 * len(datasets), 10), dpi=100,
                           squeeze=False)
  for column, ds in enumerate(datasets):
    per = results["datasets"][ds]
    names = list(per)[::-1]
    means = np.array([100 * per[n]["accuracy"]["mean"] for n in names])
    half = np.array([100 * np.nan_to_num(per[n]["accuracy"]["ci95"]) for n in names])
    upper = np.minimum(means + half, 100) - means  # no whisker above 100%
    colors = ["tab:gray" if n.startswith(("unimodal", "control")) else
              "tab:orange" if n in BASELINES else "tab:blue" for n in names]
    ax = axes[0, column]
    for y, (mean, lo, hi, color) in enumerate(zip(means, half, upper, colors, strict=True)):
      ax.errorbar(mean, y, xerr=[[lo], [hi]], fmt="o", color=color, capsize=3)
    ax.set_yticks(np.arange(len(names)), names, fontsize=8)
    ax.set_xlabel("test accuracy (%), mean ± 95% CI")
    ax.set_title(ds, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax = axes[1, column]
    compared = [n for n in names if "joint+heads" in per[n].get("delta", {})]
    for y, n in enumerate(compared):
      d = per[n]["delta"]["joint+heads"]
      ax.errorbar(100 * d["mean"], y, xerr=100 * d["ci95"], capsize=3,
                  fmt="o", mfc=None if d["significant"] else "w",
                  color="tab:orange" if n in BASELINES else "tab:blue")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(np.arange(len(compared)), compared, fontsize=8)
    ax.set_xlabel("Δ accuracy vs joint+heads (points),\npaired 95% CI")
    ax.set_title(f"{ds}\nfilled: Holm-adjusted difference", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


FLAGS = flags.FlagValues()
cli_lib.define_choices(FLAGS, "methods", tuple(ENTRIES), tuple(ENTRIES), "Methods to run.")
flags.DEFINE_list("datasets", list(DEFAULT_DATASETS), "Comma-separated mfeat:<view>+<view>, "
                  "av_digits, competition:<easy_scale>, npz:<path>, "
                  f"{', '.join(AUDIO_VISUAL)}.", flag_values=FLAGS)
flags.DEFINE_alias("dataset", "datasets", flag_values=FLAGS)
flags.DEFINE_string("data_dir", "", "TFDS data folder of an audio-visual dataset.",
                    flag_values=FLAGS)
flags.DEFINE_string("manual_dir", None, "Where the release's files were placed.",
                    flag_values=FLAGS)
flags.DEFINE_string("av_config", "small", "Audio-visual builder config: 'small', 'default', or "
                    "a JSON dict of AVConfig fields.", flag_values=FLAGS)
flags.DEFINE_float("val_fraction", 0.1, "Validation share carved from train when a release "
                   "has no val split.", lower_bound=0, upper_bound=1, flag_values=FLAGS)
flags.DEFINE_string("encoder", "mlp", "Encoder kind: mlp (on flattened inputs), auto (MLP "
                    "for vectors, 1-D conv for [frames, bands] spectrograms, 2-D conv for "
                    "images), conv1d, conv2d, resnet. Conv encoders take longer: AV-digits "
                    "alone took 45 minutes with auto on 2 CPU cores.", flag_values=FLAGS)
flags.DEFINE_integer("seeds", 10, "Fresh seeds reported (0..n-1).", lower_bound=2,
                     flag_values=FLAGS)
flags.DEFINE_integer("tune_seeds", 2, "Seeds selecting the configuration (100..100+n-1).",
                     lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("max_epochs", 30, "Most epochs per run.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("patience", 5, "Stop after this many epochs without a better validation "
                     "accuracy.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 64, "Batch size.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_list("learning_rates", ["0.005", "0.01", "0.02", "0.03", "0.05", "0.1"],
                  "Learning-rate grid of the baselines and of methods without a strength.",
                  flag_values=FLAGS)
flags.DEFINE_list("method_learning_rates", ["0.01", "0.03", "0.1"], "Learning rates crossed "
                  "with a method's two strengths.", flag_values=FLAGS)
flags.DEFINE_bool("unimodal", True, "Also train each modality alone.", flag_values=FLAGS)
cli_lib.define_workdir(FLAGS, "runs/balance", "Output folder.")


def parse_args(argv: Sequence[str] | None = None) -> SimpleNamespace:
  args = cli_lib.parse(FLAGS, argv, __doc__)
  if args.av_config.startswith("{"):
    try:
      args.av_config = json.loads(args.av_config)
    except json.JSONDecodeError as e:
      cli_lib.fail(f"--av_config is not valid JSON ({e})")
  args.learning_rates = tuple(cli_lib.float_list(FLAGS, "learning_rates"))
  args.method_learning_rates = tuple(cli_lib.float_list(FLAGS, "method_learning_rates"))
  missing = sorted(set(args.method_learning_rates) - set(args.learning_rates))
  if missing:
    cli_lib.fail(f"--method_learning_rates {missing} are not in --learning_rates: the "
                 "baselines' grid must hold them, for the step-size comparison")
  if 2 * len(args.method_learning_rates) != len(args.learning_rates):
    cli_lib.fail(f"{len(args.learning_rates)} --learning_rates but "
                 f"{len(args.method_learning_rates)} --method_learning_rates: equal budgets "
                 "need twice as many learning rates as method learning rates")
  args.seeds = tuple(range(args.seeds))
  args.tune_seeds = tuple(range(100, 100 + args.tune_seeds))
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  out = Path(args.workdir)
  out.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  results: dict[str, Any] = {"args": vars(args), "provenance": provenance(), "datasets": {},
                             "tasks": {}}
  for name in args.datasets:
    results["datasets"][name], results["tasks"][name] = run_task(name, args)
  results["seconds"] = time.perf_counter() - start
  write_json(out / "results.json", results)
  write_text_atomic(out / "results.md", markdown(results))
  plot(results, out / "accuracy.png")
  print(f"wrote {out}/results.json, results.md, accuracy.png in {results['seconds']:.0f} s")
  return results


def cli() -> None:
  """The `mmreg-balance` command."""
  cli_lib.run(main)


if __name__ == "__main__":
  cli()
