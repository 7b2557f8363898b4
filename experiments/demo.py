"""The main job: unimodal vs joint training on two imbalanced mfeat views.

Trains a unimodal model on each of the six mfeat views (so the pair's imbalance is
measured, not assumed) and joint training on the pair `fou` + `pix`, over several seeds,
and reports test accuracy, macro-F1, per-modality accuracy (auxiliary heads) and wall time.

  mmreg-demo [--seeds=3] [--epochs=20] [--workdir=runs/demo]
  python -m experiments.demo ...   (in a checkout)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from absl import flags, logging

from mmreg import cli as cli_lib
from mmreg.data.mfeat import MFEAT_VIEWS
from mmreg.train.loop import train_and_evaluate
from mmreg.train.results import mean_ci, plot_bars, plot_curves, read_jsonl, write_json

from .configs.default import get_config

PAIR = ("fou", "pix")
FLAGS = flags.FlagValues()
_SEEDS = flags.DEFINE_integer("seeds", 3, "Number of seeds per configuration.", lower_bound=1,
                              flag_values=FLAGS)
_EPOCHS = flags.DEFINE_integer("epochs", 20, "Training epochs per run.", lower_bound=1,
                               flag_values=FLAGS)
_WORKDIR = cli_lib.define_workdir(FLAGS, "runs/demo", "Parent output folder; each run of the "
                                  "demo writes a new time-stamped folder inside it.")


def run_demo(outdir: Path, seeds: int, epochs: int) -> dict:
  runs: dict[str, list[dict]] = {}
  jobs = [(f"unimodal:{v}", (v,)) for v in MFEAT_VIEWS] + [("joint:" + "+".join(PAIR), PAIR)]
  for name, views in jobs:
    for seed in range(seeds):
      cfg = get_config()
      cfg.seed = seed
      cfg.data.options.views = views
      cfg.data.options.seed = seed
      cfg.train.epochs = epochs
      result = train_and_evaluate(cfg, outdir / name.replace(":", "_") / f"seed{seed}",
                                  progress=False)
      runs.setdefault(name, []).append(result)
      print(f"{name:16s} seed {seed}: test acc {result['test']['accuracy']:.4f}  "
            f"({result['train_seconds']:.1f} s)", flush=True)

  summary = {}
  for name, results in runs.items():
    summary[name] = {
        "test_accuracy": mean_ci([r["test"]["accuracy"] for r in results]),
        "test_macro_f1": mean_ci([r["test"]["macro_f1"] for r in results]),
        "modality_accuracy": {m: mean_ci([r["test"]["modality_accuracy"][m] for r in results])
                              for m in results[0]["modalities"]},
        "train_seconds": mean_ci([r["train_seconds"] for r in results]),
    }
  return summary


def write_report(outdir: Path, summary: dict, seeds: int, epochs: int, wall: float) -> None:
  joint = "joint:" + "+".join(PAIR)
  write_json(outdir / "results.json", {"pair": PAIR, "seeds": seeds, "epochs": epochs,
                                       "wall_seconds": wall, "runs": summary})
  acc = {n: s["test_accuracy"]["mean"] for n, s in summary.items()}
  err = {n: s["test_accuracy"]["ci95"] for n, s in summary.items()}
  plot_bars(acc, err, outdir / "test_accuracy.png",
            title=f"mfeat test accuracy ({seeds} seeds, 95% CI)", ylabel="accuracy")
  per_mod = {}
  for m in PAIR:
    per_mod[f"{m} alone"] = summary[f"unimodal:{m}"]["test_accuracy"]["mean"]
    per_mod[f"{m} head in joint"] = summary[joint]["modality_accuracy"][m]["mean"]
  plot_bars(per_mod, None, outdir / "modality_accuracy.png",
            title="unimodal model vs the same modality inside joint training", ylabel="accuracy")
  log = read_jsonl(outdir / joint.replace(":", "_") / "seed0" / "log.jsonl")
  val = [r for r in log if "val/accuracy" in r]
  plot_curves({m: ([r["epoch"] for r in val], [r[f"val/accuracy/{m}"] for r in val])
               for m in PAIR} | {"fused": ([r["epoch"] for r in val],
                                           [r["val/accuracy"] for r in val])},
              outdir / "joint_val_accuracy.png", title="joint training, seed 0",
              xlabel="epoch", ylabel="val accuracy")


def main(argv: Sequence[str] | None = None) -> dict:
  cli_lib.parse(FLAGS, argv, __doc__)
  logging.set_verbosity(logging.WARNING)
  outdir = Path(_WORKDIR.value) / time.strftime("%Y%m%d-%H%M%S")
  start = time.perf_counter()
  summary = run_demo(outdir, _SEEDS.value, _EPOCHS.value)
  wall = time.perf_counter() - start
  write_report(outdir, summary, _SEEDS.value, _EPOCHS.value, wall)
  print("\nmodel                 test accuracy      macro-F1   per-modality accuracy")
  for name, s in summary.items():
    mods = "  ".join(f"{m} {v['mean']:.3f}" for m, v in s["modality_accuracy"].items())
    print(f"{name:20s}  {s['test_accuracy']['mean']:.4f} ± {s['test_accuracy']['ci95']:.4f}"
          f"   {s['test_macro_f1']['mean']:.4f}   {mods}")
  print(f"\nwall time {wall:.1f} s")
  print(f"output folder: {outdir.absolute()}")
  return summary


def cli() -> None:
  """The `mmreg-demo` command."""
  cli_lib.run(main)


if __name__ == "__main__":
  cli()
