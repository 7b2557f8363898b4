"""Robustness of joint vs coherence-guided training on two mfeat views.

  mmreg-robustness [--workdir=runs/robustness] [--seeds=5] [--epochs=25]
  python -m experiments.robustness ...   (in a checkout)

Over ≥ 5 seeds (each its own stratified split and initialisation), tiny MLPs are trained
with plain joint training (fused + unimodal cross-entropy) and with the coherence-guided
recipe (`mmreg.losses.coherence_losses`: + InfoNCE alignment + shared prototypes +
distillation from the teacher view + latent imputation). Reported, mean and 95% t-interval:
  (a) test accuracy against Gaussian input-noise severity on both views;
  (b) test accuracy against the fraction of test samples missing one (random) view, with
      zero-, mean- and (coherence only) latent-imputation fill; "joint+dropout" is joint
      training with the same per-sample modality dropout as the coherence run (`--dropout`),
      so that the gain of imputation is not confused with the gain of dropout;
  (c) clean-test accuracy against the symmetric label-noise rate of the training set;
  (d) active learning on a noisily labelled training set: each round the most inconsistent
      samples (student uncertainty × cross-view disagreement) are relabelled from the clean
      labels, against relabelling random samples;
  cross-view retrieval (class-level R@1, R@5, mAP) from the shared latents.
Each configuration trains all its seeds together in one `mmreg.train.train_runs` call (Adam
2e-3, up to --epochs epochs); each run keeps the parameters of its best validation-accuracy
epoch, the protocol of the balancing benchmark. The validation labels stay clean in (c) and
(d): only the training labels are noised. Writes results.json and PNG plots into --workdir.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
from absl import flags

from mmreg import cli as cli_lib
from mmreg import metrics
from mmreg.data import (
    MFEAT_VIEWS,
    Splits,
    acquisition_scores,
    gaussian_noise,
    inputs_of,
    load_mfeat,
    missing_at_test,
    modality_dropout,
    select_top,
    symmetric_label_noise,
)
from mmreg.losses import classification_losses, coherence_losses, prototype_uncertainty
from mmreg.train.results import plot_bars, write_json

from .coherence_common import (
    Config,
    Setup,
    accuracies,
    cosine,
    plot_bands,
    predict,
    run_model,
    run_outputs,
    summarize,
    train_seeds,
    with_train_feature_means,
)

METHODS = ("joint", "joint+dropout", "coherence")
FILLS = {"joint": ("zero", "mean"), "joint+dropout": ("zero",),
         "coherence": ("zero", "mean", "impute")}


FLAGS = flags.FlagValues()
cli_lib.define_workdir(FLAGS, "runs/robustness", "Output folder.")
flags.DEFINE_integer("seeds", 5, "Number of seeds (0..n-1).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("epochs", 25, "Training epochs per run.", lower_bound=1, flag_values=FLAGS)
cli_lib.define_view_pair(FLAGS, ("fou", "pix"), tuple(MFEAT_VIEWS), "The two mfeat views.")
flags.DEFINE_enum("teacher", "pix", list(MFEAT_VIEWS),
                  "The strong view that teaches the other (one of --views).", flag_values=FLAGS)
flags.DEFINE_list("severities", ["0", "0.5", "1", "1.5", "2"],
                  "Gaussian noise severities (x feature std) for (a).", flag_values=FLAGS)
flags.DEFINE_list("missing", ["0", "0.25", "0.5", "0.75", "1"],
                  "Fractions of test samples missing a view for (b).", flag_values=FLAGS)
flags.DEFINE_list("label_noise", ["0", "0.2", "0.4"], "Symmetric label-noise rates for (c).",
                  flag_values=FLAGS)
flags.DEFINE_float("al_noise", 0.4, "Label-noise rate for (d).", lower_bound=0, upper_bound=1,
                   flag_values=FLAGS)
flags.DEFINE_integer("al_rounds", 3, "Relabelling rounds for (d).", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_float("al_budget", 0.1, "Fraction relabelled per round.", lower_bound=0,
                   upper_bound=1, flag_values=FLAGS)
flags.DEFINE_float("dropout", 0.3, "Per-sample modality dropout of joint+dropout and "
                   "coherence training.", lower_bound=0, upper_bound=1, flag_values=FLAGS)


def parse_args(argv: Sequence[str] | None = None) -> SimpleNamespace:
  args = cli_lib.parse(FLAGS, argv, __doc__)
  for name in ("severities", "missing", "label_noise"):
    setattr(args, name, cli_lib.float_list(FLAGS, name))
  if args.teacher not in args.views:
    cli_lib.fail(f"--teacher={args.teacher} must be one of --views={','.join(args.views)}")
  return args


def with_noise(data, severity: float, seed: int):
  noisy = gaussian_noise(jax.random.key(seed), data.as_batch(), severity)
  return data.replace(inputs={m: np.asarray(x) for m, x in inputs_of(noisy).items()})


def retrieval(z: dict[str, np.ndarray], labels: np.ndarray, views) -> dict[str, float]:
  rel = metrics.same_label(labels, labels)
  out = {}
  for q, g in (views, views[::-1]):
    s = cosine(z[q], z[g])
    r = metrics.retrieval_metrics(s, rel, ks=(1, 5))
    out.update({f"{q}->{g} {k}": v for k, v in r.items() if k != "NDCG@10"})
  return out


def configurations(views, teacher: str, dropout: float) -> dict[str, Config]:
  """The compared trainings: name → loss, model options and training-batch augmentation."""
  def drop(key, batch):
    return modality_dropout(key, batch, dropout, per_sample=True)

  joint = classification_losses(views)
  return {"joint": Config(joint),
          "joint+dropout": Config(joint, augment=drop),
          "coherence": Config(coherence_losses(views, teacher=teacher), shared_space=True,
                              missing="impute", augment=drop)}


def with_train_labels(splits: Splits, labels: np.ndarray) -> Splits:
  return dataclasses.replace(splits, train=splits.train.replace(labels=labels))


def active_learning(train_fn, per_seed: Sequence[Splits], seeds: Sequence[int], args,
                    student: str, views, strategy: str) -> list[dict[str, list[float]]]:
  """Relabelling rounds on every seed together; one record per seed."""
  trains = [s.train for s in per_seed]
  noisy = [symmetric_label_noise(t.labels, args.al_noise, t.num_classes, seed=seed)
           for t, seed in zip(trains, seeds, strict=True)]
  labels = [n.copy() for n, _ in noisy]
  relabelled = [np.zeros(len(t), bool) for t in trains]
  budget = round(args.al_budget * len(trains[0]))
  rngs = [np.random.default_rng(seed) for seed in seeds]
  records = [{"accuracy": [], "selected_noisy_fraction": [], "noise_left": []} for _ in seeds]
  for rnd in range(args.al_rounds + 1):
    result = train_fn([with_train_labels(s, y) for s, y in zip(per_seed, labels, strict=True)])
    accuracy = accuracies(result, [s.test for s in per_seed])
    for i, record in enumerate(records):
      record["accuracy"].append(accuracy[i])
      record["noise_left"].append(float(np.mean(labels[i] != trains[i].labels)))
    if rnd == args.al_rounds:
      break
    for i, record in enumerate(records):
      if strategy == "consistency":
        out = predict(run_model(result, i), trains[i])
        scores = np.asarray(acquisition_scores(prototype_uncertainty(out, student),
                                               out.latents[views[0]], out.latents[views[1]]))
      else:
        scores = rngs[i].random(len(labels[i]))
      chosen = select_top(scores, budget, exclude=relabelled[i])
      record["selected_noisy_fraction"].append(float(np.mean(noisy[i][1][chosen])))
      labels[i][chosen] = trains[i].labels[chosen]
      relabelled[i][chosen] = True
  return records


def main(argv: Sequence[str] | None = None) -> dict:
  args = parse_args(argv)
  out_dir = Path(args.workdir)
  out_dir.mkdir(parents=True, exist_ok=True)
  views = tuple(args.views)
  student = next(v for v in views if v != args.teacher)
  setup = Setup(epochs=args.epochs)
  dims = {v: MFEAT_VIEWS[v] for v in views}
  configs = configurations(views, args.teacher, args.dropout)
  seeds = list(range(args.seeds))
  per_seed = [load_mfeat(views, seed=seed) for seed in seeds]
  trains, tests = [s.train for s in per_seed], [s.test for s in per_seed]

  def train(config: Config, splits: Sequence[Splits]):
    return train_seeds(config, setup, dims, 10, splits, seeds)

  raw: dict = {"clean": {}, "noise": {m: {} for m in METHODS},
               "missing": {f"{m}/{fill}": {} for m in METHODS for fill in FILLS[m]},
               "label_noise": {m: {} for m in METHODS}, "retrieval": {}, "active": {}}
  start = time.time()
  for method, config in configs.items():
    result = with_train_feature_means(train(config, per_seed), trains)
    raw["clean"][method] = accuracies(result, tests)
    for s in args.severities:
      raw["noise"][method][s] = accuracies(
          result, [with_noise(t, s, seed) for t, seed in zip(tests, seeds, strict=True)])
    for f in args.missing:
      tests_f = [missing_at_test(t, f, seed=seed) for t, seed in zip(tests, seeds, strict=True)]
      for fill in FILLS[method]:
        raw["missing"][f"{method}/{fill}"][f] = accuracies(result, tests_f, fill)
    latents = run_outputs(result, tests)["latents"]
    raw["retrieval"][method] = [retrieval({v: z[i] for v, z in latents.items()}, t.labels, views)
                                for i, t in enumerate(tests)]
    for rate in args.label_noise:
      if rate == 0.0:
        raw["label_noise"][method][rate] = raw["clean"][method]
        continue
      noisy = [with_train_labels(s, symmetric_label_noise(s.train.labels, rate, 10,
                                                          seed=seed)[0])
               for s, seed in zip(per_seed, seeds, strict=True)]
      raw["label_noise"][method][rate] = accuracies(train(config, noisy), tests)
    print(f"{method} done ({time.time() - start:.0f} s)", flush=True)
  for strategy in ("consistency", "random"):
    raw["active"][strategy] = active_learning(
        lambda splits: train(configs["coherence"], splits), per_seed, seeds, args, student,
        views, strategy)
  print(f"active learning done ({time.time() - start:.0f} s)", flush=True)

  results = summarize_all(raw, args, views, student, setup, time.time() - start)
  write_json(out_dir / "results.json", results)
  make_plots(results, args, out_dir)
  print_summary(results)
  return results


def summarize_all(raw, args, views, student, setup, seconds) -> dict:
  per_x = lambda d: {str(x): summarize(v) for x, v in d.items()}  # noqa: E731
  results = {
      "config": {**vars(args), "views": list(views), "student": student,
                 "setup": setup.__dict__, "seconds": seconds},
      "clean_accuracy": {m: summarize(v) for m, v in raw["clean"].items()},
      "noise": {m: per_x(d) for m, d in raw["noise"].items()},
      "missing": {k: per_x(d) for k, d in raw["missing"].items()},
      "label_noise": {m: per_x(d) for m, d in raw["label_noise"].items()},
      "retrieval": {m: {k: summarize([r[k] for r in rs]) for k in rs[0]}
                    for m, rs in raw["retrieval"].items()},
      "active_learning": {
          s: {key: [summarize([run[key][i] for run in runs]) for i in range(len(runs[0][key]))]
              for key in runs[0]} for s, runs in raw["active"].items()},
  }
  if 0.5 in args.missing and 0.0 in args.missing:
    def loss(key):
      d = raw["missing"][key]
      return summarize(np.array(d[0.0]) - np.array(d[0.5]))
    joint, coherent = loss("joint/zero"), loss("coherence/impute")
    results["target_missing_50pct"] = {
        "accuracy_lost_joint_zero_fill": joint,
        "accuracy_lost_joint_mean_fill": loss("joint/mean"),
        "accuracy_lost_joint_dropout_zero_fill": loss("joint+dropout/zero"),
        "accuracy_lost_coherence_impute": coherent,
        "accuracy_lost_coherence_zero_fill": loss("coherence/zero"),
        "ratio_coherence_impute_to_joint_zero": coherent["mean"] / max(joint["mean"], 1e-12),
        "goal": "coherence-guided loses at most half as much as joint (ratio ≤ 0.5)",
    }
  return results


def make_plots(results, args, out_dir: Path) -> None:
  def bands(section, xs):
    return {k: ([float(x) for x in xs], [d[str(x)] for x in xs])
            for k, d in results[section].items()}

  plot_bands(bands("noise", args.severities), out_dir / "noise.png",
             title="Gaussian noise on both views", xlabel="severity (× feature std)",
             ylabel="test accuracy")
  plot_bands(bands("missing", args.missing), out_dir / "missing.png",
             title="One view missing for a fraction of test samples",
             xlabel="fraction of test samples missing a view", ylabel="test accuracy")
  plot_bands(bands("label_noise", args.label_noise), out_dir / "label_noise.png",
             title="Symmetric label noise in training", xlabel="noise rate",
             ylabel="clean test accuracy")
  al = results["active_learning"]
  plot_bands({s: (list(range(len(d["accuracy"]))), d["accuracy"]) for s, d in al.items()},
             out_dir / "active_learning.png",
             title=f"Relabelling rounds ({args.al_noise:.0%} symmetric label noise)",
             xlabel="round", ylabel="test accuracy")
  keys = [k for k in results["retrieval"]["coherence"] if "R@1" in k or "mAP" in k]
  values = {f"{m} {k}": results["retrieval"][m][k]["mean"] for m in METHODS for k in keys}
  errors = {f"{m} {k}": results["retrieval"][m][k]["ci95"] for m in METHODS for k in keys}
  plot_bars(values, errors, out_dir / "retrieval.png",
            title="Cross-view class retrieval (chance R@1 ≈ 0.10)", ylabel="score")


def print_summary(results) -> None:
  fmt = lambda s: f"{s['mean']:.3f} ± {s['ci95']:.3f}"  # noqa: E731
  print("clean accuracy:", {m: fmt(s) for m, s in results["clean_accuracy"].items()})
  for section in ("noise", "missing", "label_noise"):
    for k, d in results[section].items():
      print(f"{section:12s} {k:18s}", "  ".join(f"{x}: {fmt(s)}" for x, s in d.items()))
  for m, d in results["retrieval"].items():
    print(f"retrieval {m}:", {k: fmt(s) for k, s in d.items()})
  for s, d in results["active_learning"].items():
    print(f"active {s}: acc", [fmt(x) for x in d["accuracy"]], "selected noisy",
          [fmt(x) for x in d["selected_noisy_fraction"]])
  if "target_missing_50pct" in results:
    t = results["target_missing_50pct"]
    print("50% missing, accuracy lost: joint zero", fmt(t["accuracy_lost_joint_zero_fill"]),
          "| joint mean", fmt(t["accuracy_lost_joint_mean_fill"]),
          "| joint+dropout", fmt(t["accuracy_lost_joint_dropout_zero_fill"]),
          "| coherence impute", fmt(t["accuracy_lost_coherence_impute"]),
          "| ratio", f"{t['ratio_coherence_impute_to_joint_zero']:.2f}")


def cli() -> None:
  """The `mmreg-robustness` command."""
  cli_lib.run(main)


if __name__ == "__main__":
  cli()
