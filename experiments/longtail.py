"""Neural collapse under long-tailed labels: CE vs fixed ETF + dot-regression vs space alignment.

Datasets: long-tailed mfeat with two views (`fou` + `pix`, multimodal, concat fusion) and one
view (`fou`, unimodal). The training split (60% of each class, n_max = 120) is cut to
n_c = ⌊120·IF^(−c/9)⌋; validation and test stay balanced (30 and 50 per class).

Methods (one linear fused head unless stated), each a method of `mmreg.train`'s registry
(`HPARAMS["methods"]`); the seeds of one (dataset, IF, method) train together in one
`mmreg.train.train_runs` call, each on its own long-tailed split, keeping the last epoch:
  ce         cross-entropy (`joint`);
  etf_dr     fixed simplex-ETF head (`head="etf"`) trained with the dot-regression loss
             (`etf_dr`, `mmreg.train.loss_methods.etf_dot_regression`);
  spa_proj   CE + SpA-Proj on the head's gradient (`mmreg.spa_proj`, the authors' projection);
  spa_slerp  CE + SpA-SLERP after every step (`mmreg.spa_slerp_hook`);
  spa_reg    CE + λ·SpA-Reg (`mmreg.spa_reg`: the gradient of `mmreg.losses.spa_reg_loss`,
             stop-gradient on the centres, added to the head's).
Reported on the balanced test set at the last epoch: overall, many/medium/few-shot accuracy
(`mmreg.data.shot_thresholds(120)`: many > 24, few < 4.8 training samples), and NC metrics of
the training features over training (`mmreg.metrics.neural_collapse`).

  mmreg-longtail [--seeds=5] [--epochs=20] [--ifs=10,50,100] [--workdir=runs/longtail]
  python -m experiments.longtail ...   (in a checkout)
Writes results.json, accuracy.png, alignment.png and nc_curves.png under the output folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import optax
from absl import flags
from flax import nnx

import mmreg
from mmreg import cli as cli_lib
from mmreg.data import (
    Splits,
    group_accuracy,
    load_mfeat,
    longtail_splits,
    shot_groups,
    shot_thresholds,
    steps_per_epoch,
)
from mmreg.losses import FUSED, LossSpec, fused_ce
from mmreg.metrics import neural_collapse
from mmreg.train import (
    build_loss_method,
    build_method,
    build_post_update,
    evaluate_runs,
    make_optimizer,
    method_loss_spec,
    model_config_for,
    predict_runs,
    split_model,
    train_runs,
)
from mmreg.train.results import mean_ci, write_json
from mmreg.train.seeds import unstack_tree

DATASETS = {"mfeat": ("fou", "pix"), "mfeat_fou": ("fou",)}
N_MAX = 120
HPARAMS = {"batch_size": 32, "hidden": (64,), "feature_dim": 32,
           "optim": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9,
                     "weight_decay": 5e-4, "schedule": "cosine"},
           # Each method of the experiment: a method of the registry (`mmreg.train.METHODS`).
           "methods": {"ce": {"name": "joint", "options": {}},
                       "etf_dr": {"name": "etf_dr", "options": {}},
                       "spa_proj": {"name": "spa_proj", "options": {}},
                       "spa_slerp": {"name": "spa_slerp",
                                     "options": {"alpha": 0.1, "threshold": 0.9}},
                       "spa_reg": {"name": "spa_reg", "options": {"weight": 1.0}}}}
METHODS = tuple(HPARAMS["methods"])
NUM_CLASSES = 10

FLAGS = flags.FlagValues()
_SEEDS = flags.DEFINE_integer("seeds", 5, "Seeds per (dataset, IF, method).", lower_bound=1,
                              flag_values=FLAGS)
_EPOCHS = flags.DEFINE_integer("epochs", 20, "Training epochs per run.", lower_bound=1,
                               flag_values=FLAGS)
flags.DEFINE_list("ifs", ["10", "50", "100"], "Imbalance factors.", flag_values=FLAGS)
_DATASETS = cli_lib.define_choices(FLAGS, "datasets", DATASETS, DATASETS, "Datasets to run.")
_METHODS = cli_lib.define_choices(FLAGS, "methods", METHODS, METHODS, "Methods to run.")
_NC_EVERY = flags.DEFINE_integer("nc_every", 5, "Epochs between NC measurements.",
                                 lower_bound=1, flag_values=FLAGS)
_WORKDIR = cli_lib.define_workdir(FLAGS, "runs/longtail", "Output folder.")


class Setup(NamedTuple):
  """One method's arguments of `mmreg.train.train_runs`, built once for every seed of a
  configuration: `build_model(seed)`, the losses, the balancing transform, the optimizer
  factory (`make_optimizer(HPARAMS["optim"], spe, epochs)` at a given learning rate), the
  post-update hook and the loss-side method; `graphdef` is the models' graph."""

  build_model: Callable[[int], nnx.Module]
  loss_spec: LossSpec
  method_tx: optax.GradientTransformationExtraArgs
  optimizer: Callable[..., optax.GradientTransformation]
  post_update: Callable[..., Any] | None
  loss_method: Any
  graphdef: nnx.GraphDef


def method_setup(method: str, dims: dict[str, int], spe: int, epochs: int) -> Setup:
  """The experiment's `method` as its registered method (`HPARAMS["methods"]`): model config,
  losses (the method's, else the fused cross-entropy), transform, post-update hook and
  loss-side method all come from `mmreg.train`'s registry, by name."""
  name, options = HPARAMS["methods"][method]["name"], HPARAMS["methods"][method]["options"]
  model_cfg = model_config_for(name, {"hidden": HPARAMS["hidden"],
                                      "feature_dim": HPARAMS["feature_dim"]}, options)

  def build_model(seed: int) -> nnx.Module:
    return mmreg.mlp_classifier(dims, NUM_CLASSES, seed=seed, **model_cfg)

  def optimizer(learning_rate: Any) -> optax.GradientTransformation:
    return make_optimizer({**HPARAMS["optim"], "learning_rate": learning_rate}, spe, epochs)

  model = build_model(0)
  labels, modalities = mmreg.param_labels(model), model.modalities
  loss_spec = (method_loss_spec(name, modalities, options)
               or LossSpec({FUSED: fused_ce()}, {FUSED: 1.0}))
  method_tx = build_method(name, labels, modalities, options, total_epochs=epochs,
                           loss_weights=loss_spec.weights, updates_from_stack=True)
  return Setup(build_model, loss_spec, method_tx, optimizer,
               build_post_update(name, labels, options, total_epochs=epochs),
               build_loss_method(name, options), split_model(model)[0])


def head_weights(graphdef: nnx.GraphDef, params: Any, model_state: Any
                 ) -> tuple[np.ndarray, np.ndarray | None]:
  """One run's fused classifier: (kernel `[d, K]`, bias `[K]` or None)."""
  head = nnx.merge(graphdef, params, model_state).head
  bias = getattr(head, "bias", None)
  return np.asarray(head.kernel[...]), None if bias is None else np.asarray(bias[...])


def train_seeds(setup: Setup, splits: Sequence[Splits], epochs: int,
                nc_every: int) -> list[dict[str, Any]]:
  """Seed s = 0, 1, … trained on `splits[s]` together in one `train_runs` call (the last
  epoch kept), with the NC metrics of each run's training features every `nc_every` epochs
  and at the last, and its test accuracy per shot group; `seconds` is the time of the joint
  `train_runs` call (compilation, training and NC metrics of all seeds)."""
  seeds = list(range(len(splits)))
  trains = [s.train for s in splits]
  nc_history: list[list[dict[str, Any]]] = [[] for _ in seeds]

  def record_nc(epoch: int, params: Any, model_state: Any) -> None:
    if (epoch + 1) % nc_every and epoch + 1 != epochs:
      return
    fused = predict_runs(setup.graphdef, params, model_state, trains, fields=("fused",))
    for r, train in enumerate(trains):
      weights = head_weights(setup.graphdef, *(unstack_tree(t, r)
                                               for t in (params, model_state)))
      nc = neural_collapse(fused["fused"][r], train.labels, *weights)
      nc_history[r].append({"epoch": epoch + 1, **nc.as_dict()})

  result = train_runs(setup.build_model, setup.loss_spec, setup.method_tx, splits,
                      learning_rates=(HPARAMS["optim"]["learning_rate"],), seeds=seeds,
                      batch_size=HPARAMS["batch_size"], max_epochs=epochs, patience=epochs,
                      optimizer=setup.optimizer, post_update=setup.post_update,
                      loss_method=setup.loss_method, keep="last", on_epoch=record_nc)
  logits = evaluate_runs(result, [s.test for s in splits])["logits"]
  out = []
  for r, s in enumerate(splits):
    counts = s.train.class_counts()
    acc = group_accuracy(logits[r].argmax(1), s.test.labels, counts, shot_thresholds(N_MAX))
    out.append({"seed": seeds[r], "accuracy": acc, "nc": nc_history[r],
                "train_counts": counts.tolist(), "seconds": result.seconds})
  return out


def summarize(runs: dict[str, list[dict]], thresholds) -> dict[str, Any]:
  """Per method: mean ± 95% CI over seeds of each accuracy and of the tail alignment, and the
  paired difference to CE (same seeds, same splits)."""
  out: dict[str, Any] = {}
  base = runs.get("ce")
  for method, results in runs.items():
    entry: dict[str, Any] = {}
    for group in ("overall", "many", "medium", "few"):
      values = [r["accuracy"][group] for r in results]
      if not np.isnan(values).any():
        entry[group] = mean_ci(values)
        if base is not None and method != "ce":
          entry[f"{group}_minus_ce"] = mean_ci(
              [v - b["accuracy"][group] for v, b in zip(values, base, strict=True)])
    few = shot_groups(np.asarray(results[0]["train_counts"]), thresholds)["few"]
    tail = few if few.size else np.arange(7, 10)
    entry["tail_classes"] = tail.tolist()
    entry["tail_alignment_cosine"] = mean_ci(
        [float(np.mean(np.asarray(r["nc"][-1]["alignment_cosine"])[tail])) for r in results])
    for name in ("nc1", "nc3", "etf_distance_means", "etf_distance_weights"):
      entry[f"final_{name}"] = mean_ci([r["nc"][-1][name] for r in results])
    out[method] = entry
  return out


def plot(results: dict[str, Any], outdir: Path) -> list[Path]:
  import matplotlib.pyplot as plt

  paths = []
  datasets = list(results)
  ifs = list(results[datasets[0]])
  # Alignment cosine per class against the class's training count (largest IF, seed mean).
  fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), dpi=110,
                           squeeze=False)
  for ax, ds in zip(axes[0], datasets, strict=True):
    runs = results[ds][ifs[-1]]["runs"]
    for method, rs in runs.items():
      cos = np.mean([r["nc"][-1]["alignment_cosine"] for r in rs], axis=0)
      ax.plot(rs[0]["train_counts"], cos, marker="o", label=method)
    ax.set(xscale="log", xlabel="training samples of the class", ylabel="cos(w_c, μ_c − μ_G)",
           title=f"{ds}, IF={ifs[-1]}: alignment at the last epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  paths.append(outdir / "alignment.png")
  fig.savefig(paths[-1])
  plt.close(fig)
  # NC1 and NC3 over epochs.
  fig, axes = plt.subplots(2, len(datasets), figsize=(5.5 * len(datasets), 7), dpi=110,
                           squeeze=False)
  for col, ds in enumerate(datasets):
    runs = results[ds][ifs[-1]]["runs"]
    for row, name in enumerate(("nc1", "nc3")):
      ax = axes[row, col]
      for method, rs in runs.items():
        epochs = [h["epoch"] for h in rs[0]["nc"]]
        ax.plot(epochs, np.mean([[h[name] for h in r["nc"]] for r in rs], axis=0),
                marker=".", label=method)
      ax.set(yscale="log", xlabel="epoch", ylabel=name.upper(),
             title=f"{ds}, IF={ifs[-1]}: {name.upper()} (train features)")
      ax.grid(alpha=0.3)
      ax.legend(fontsize=8)
  fig.tight_layout()
  paths.append(outdir / "nc_curves.png")
  fig.savefig(paths[-1])
  plt.close(fig)
  # Few-shot and overall accuracy per IF.
  fig, axes = plt.subplots(2, len(datasets), figsize=(5.5 * len(datasets), 7), dpi=110,
                           squeeze=False)
  for col, ds in enumerate(datasets):
    for row, group in enumerate(("overall", "few")):
      ax = axes[row, col]
      methods = list(results[ds][ifs[0]]["summary"])
      width = 0.8 / len(methods)
      for i, method in enumerate(methods):
        xs, ys, es = [], [], []
        for j, imb in enumerate(ifs):
          s = results[ds][imb]["summary"][method].get(group)
          if s is not None:
            xs.append(j + i * width)
            ys.append(s["mean"])
            es.append(np.nan_to_num(s["ci95"]))
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=method)
      ax.set_xticks(np.arange(len(ifs)) + 0.4 - width / 2, [f"IF={i}" for i in ifs])
      ax.set(ylabel=f"{group} test accuracy", title=f"{ds}: {group} accuracy (95% CI)")
      ax.grid(axis="y", alpha=0.3)
      ax.legend(fontsize=7)
  fig.tight_layout()
  paths.append(outdir / "accuracy.png")
  fig.savefig(paths[-1])
  plt.close(fig)
  return paths


def run_longtail(outdir: Path, *, seeds: int, epochs: int, ifs: list[float],
                 datasets: list[str], methods: list[str], nc_every: int) -> dict[str, Any]:
  unknown = [m for m in methods if m not in METHODS] + [d for d in datasets if d not in DATASETS]
  if unknown:
    raise ValueError(f"unknown methods/datasets {unknown}; methods: {METHODS}, "
                     f"datasets: {list(DATASETS)}")
  outdir.mkdir(parents=True, exist_ok=True)
  thresholds = shot_thresholds(N_MAX)
  results: dict[str, Any] = {}
  for ds in datasets:
    views = DATASETS[ds]
    base = {seed: load_mfeat(views, seed=seed) for seed in range(seeds)}
    results[ds] = {}
    dims = {v: base[0].train.input_shapes[v][0] for v in views}
    for imb in ifs:
      lt = {seed: longtail_splits(base[seed], imb, seed=seed, n_max=N_MAX)
            for seed in range(seeds)}
      spe = steps_per_epoch(len(lt[0].train), HPARAMS["batch_size"])
      runs: dict[str, list[dict]] = {}
      for method in methods:
        runs[method] = train_seeds(method_setup(method, dims, spe, epochs),
                                   [lt[seed] for seed in range(seeds)], epochs, nc_every)
        for r in runs[method]:
          a = r["accuracy"]
          print(f"{ds:9s} IF={imb:<4g} {method:9s} seed {r['seed']}: overall "
                f"{a['overall']:.3f} many {a['many']:.3f} medium {a['medium']:.3f} few "
                f"{a['few']:.3f} NC1 {r['nc'][-1]['nc1']:.3f}", flush=True)
        print(f"{ds:9s} IF={imb:<4g} {method:9s} {seeds} seeds trained together in "
              f"{runs[method][0]['seconds']:.1f} s", flush=True)
      results[ds][f"{imb:g}"] = {"train_counts": lt[0].train.class_counts().tolist(),
                                 "summary": summarize(runs, thresholds), "runs": runs}
  payload = {"config": {"seeds": seeds, "epochs": epochs, "ifs": ifs, "datasets": datasets,
                        "methods": methods, "n_max": N_MAX, "shot_thresholds":
                        thresholds._asdict(), "hparams": HPARAMS},
             "results": results}
  write_json(outdir / "results.json", payload)
  plot(results, outdir)
  return payload


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  cli_lib.parse(FLAGS, argv, __doc__)
  payload = run_longtail(Path(_WORKDIR.value), seeds=_SEEDS.value, epochs=_EPOCHS.value,
                         ifs=cli_lib.float_list(FLAGS, "ifs"), datasets=_DATASETS.value,
                         methods=_METHODS.value, nc_every=_NC_EVERY.value)
  for ds, by_if in payload["results"].items():
    for imb, entry in by_if.items():
      for method, s in entry["summary"].items():
        cells = [f"{g} {s[g]['mean']:.3f}±{s[g]['ci95']:.3f}"
                 for g in ("overall", "many", "medium", "few") if g in s]
        print(f"{ds:9s} IF={imb:<4s} {method:9s} " + "  ".join(cells) +
              f"  tail-cos {s['tail_alignment_cosine']['mean']:.3f}")
  return payload


def cli() -> None:
  """The `mmreg-longtail` command."""
  cli_lib.run(main)


if __name__ == "__main__":
  cli()
