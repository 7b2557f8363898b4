"""Cross-view retrieval on mfeat from an InfoNCE-trained shared space, against chance and a
closed-form linear CCA baseline.

  mmreg-alignment [--workdir=runs/alignment] [--seeds=5] [--epochs=40] [--views=fou,pix]
  python -m experiments.alignment ...   (in a checkout)

For each seed (its own stratified split and initialisation):
  - "infonce": MLP encoders + linear projectors trained with the symmetric InfoNCE loss and a
    learnable temperature only (no labels), `mmreg.losses.alignment_term(views, "clip")`;
    the epoch is chosen on the validation split by class-level R@1 (early stopping), as
    CCA's hyperparameters are; all seeds train together in one `mmreg.train.train_runs` call
    (Adam 2e-3, `val_score` = validation class-level R@1);
  - "infonce+prototypes": the same plus the shared-prototype cross-entropy (uses labels);
  - "cca": linear CCA in closed form on the standardised training views, its ridge and
    number of canonical directions chosen on the validation split by class-level R@1.
Test-set retrieval in both directions (query view → gallery view): class-level R@1, R@5, mAP
and NDCG@10 (a hit is a gallery item of the query's class; chance R@1 is the class frequency,
≈ 0.10), instance-level R@1 and R@10 (the hit is the query's own pair; chance 1/N), and
paired/unpaired cosine statistics. Writes results.json and retrieval.png into --workdir.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from absl import flags

from mmreg import cli as cli_lib
from mmreg import metrics
from mmreg.data import MFEAT_VIEWS, load_mfeat
from mmreg.losses import LossSpec, alignment_term, prototype_term
from mmreg.train.results import plot_bars, write_json

from .coherence_common import (
    Config,
    Setup,
    cosine,
    plot_bands,
    run_outputs,
    summarize,
    train_seeds,
)

CCA_DIMS = (9, 16, 32)
CCA_RIDGES = (1e-3, 1e-2, 1e-1, 1.0)

FLAGS = flags.FlagValues()
cli_lib.define_workdir(FLAGS, "runs/alignment", "Output folder.")
flags.DEFINE_integer("seeds", 5, "Number of seeds (0..n-1).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("epochs", 40, "Training epochs per run.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1, flag_values=FLAGS)
cli_lib.define_view_pair(FLAGS, ("fou", "pix"), tuple(MFEAT_VIEWS), "The two mfeat views to align.")


def parse_args(argv: Sequence[str] | None = None) -> SimpleNamespace:
  return cli_lib.parse(FLAGS, argv, __doc__)


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh(c)
  return (v / np.sqrt(np.maximum(w, 1e-12))) @ v.T


def fit_cca(x: np.ndarray, y: np.ndarray, dim: int, ridge: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Regularised linear CCA in closed form.

  With centred X, Y, C_xx = XᵀX/(n−1) + r·I, C_yy likewise, C_xy = XᵀY/(n−1), the SVD
  C_xx^{-1/2} C_xy C_yy^{-1/2} = U S Vᵀ gives projections A = C_xx^{-1/2} U_{:k},
  B = C_yy^{-1/2} V_{:k} and canonical correlations S_{:k}. Returns (A, B, S_{:k}).
  """
  n = len(x)
  x, y = x - x.mean(0), y - y.mean(0)
  wx = _inv_sqrt(x.T @ x / (n - 1) + ridge * np.eye(x.shape[1]))
  wy = _inv_sqrt(y.T @ y / (n - 1) + ridge * np.eye(y.shape[1]))
  u, s, vt = np.linalg.svd(wx @ (x.T @ y / (n - 1)) @ wy)
  return wx @ u[:, :dim], wy @ vt.T[:, :dim], s[:dim]


def evaluate(z: dict[str, np.ndarray], labels: np.ndarray, views) -> dict[str, float]:
  rel = metrics.same_label(labels, labels)
  out: dict[str, float] = {}
  for q, g in (views, views[::-1]):
    sim = cosine(z[q], z[g])
    for k, v in metrics.retrieval_metrics(sim, rel, ks=(1, 5)).items():
      out[f"class {q}->{g} {k}"] = v
    out[f"instance {q}->{g} R@1"] = metrics.recall_at_k(sim, 1)
    out[f"instance {q}->{g} R@10"] = metrics.recall_at_k(sim, 10)
  for k, v in metrics.alignment_statistics(z[views[0]], z[views[1]]).items():
    out[f"align {k}"] = v
  return out


def class_r1(z, labels, views) -> float:
  rel = metrics.same_label(labels, labels)
  return float(np.mean([metrics.recall_at_k(cosine(z[q], z[g]), 1, rel)
                        for q, g in (views, views[::-1])]))


def latent_r1(views):
  """`train_runs`'s `val_score`: each run's class-level R@1 of its validation latents."""
  def score(outputs, labels):
    z = outputs["latents"]
    return np.array([class_r1({v: z[v][r] for v in views}, labels[r], views)
                     for r in range(len(labels))])
  return score


def run_cca(splits, views) -> tuple[dict[str, float], dict[str, float]]:
  a, b = views
  best = None
  for ridge in CCA_RIDGES:  # one decomposition per ridge; a dimension keeps its leading columns
    full_a, full_b, _ = fit_cca(splits.train.inputs[a], splits.train.inputs[b], max(CCA_DIMS),
                                ridge)
    for dim in CCA_DIMS:
      pa, pb = full_a[:, :dim], full_b[:, :dim]
      val = {a: splits.val.inputs[a] @ pa, b: splits.val.inputs[b] @ pb}
      score = class_r1(val, splits.val.labels, views)
      if best is None or score > best[0] or (score == best[0] and (dim, ridge) < best[1:3]):
        best = (score, dim, ridge, pa, pb)
  _, dim, ridge, pa, pb = best
  test = {a: splits.test.inputs[a] @ pa, b: splits.test.inputs[b] @ pb}
  return evaluate(test, splits.test.labels, views), {"dim": dim, "ridge": ridge}


def main(argv: Sequence[str] | None = None) -> dict:
  args = parse_args(argv)
  out_dir = Path(args.workdir)
  out_dir.mkdir(parents=True, exist_ok=True)
  views = tuple(args.views)
  dims = {v: MFEAT_VIEWS[v] for v in views}
  setup = Setup(epochs=args.epochs, batch_size=args.batch_size)
  align = alignment_term(views, "clip")
  configs = {
      "infonce": Config(LossSpec({"align": align}, {"align": 1.0}), shared_space=True),
      "infonce+prototypes": Config(
          LossSpec({"align": align, "prototype": prototype_term(views)},
                   {"align": 1.0, "prototype": 1.0}), shared_space=True),
  }
  seeds = list(range(args.seeds))
  per_seed = [load_mfeat(views, seed=seed) for seed in seeds]
  tests = [s.test for s in per_seed]
  raw: dict[str, list[dict[str, float]]] = {}
  start = time.time()
  for name, config in configs.items():
    result = train_seeds(config, setup, dims, 10, per_seed, seeds, val_score=latent_r1(views))
    latents = run_outputs(result, tests)["latents"]
    raw[name] = [evaluate({v: z[i] for v, z in latents.items()}, t.labels, views)
                 for i, t in enumerate(tests)]
    print(f"{name} done ({time.time() - start:.0f} s)", flush=True)
  raw["cca"], cca_choice = map(list, zip(*(run_cca(s, views) for s in per_seed), strict=True))
  chance = [float(np.mean(metrics.same_label(t.labels, t.labels))) for t in tests]
  labels = tests[0].labels

  results = {
      "config": {**vars(args), "views": list(views), "setup": setup.__dict__,
                 "cca_grid": {"dims": CCA_DIMS, "ridges": CCA_RIDGES},
                 "cca_chosen_on_val": cca_choice, "seconds": time.time() - start},
      "chance_class_R@1": summarize(chance),
      "chance_instance_R@1": 1.0 / len(labels),
      "methods": {m: {k: summarize([r[k] for r in rs]) for k in rs[0]} for m, rs in raw.items()},
  }
  write_json(out_dir / "results.json", results)
  keys = [f"class {views[0]}->{views[1]} R@1", f"class {views[1]}->{views[0]} R@1",
          f"instance {views[0]}->{views[1]} R@1"]
  values = {f"{m}\n{k}": results["methods"][m][k]["mean"] for m in raw for k in keys}
  errors = {f"{m}\n{k}": results["methods"][m][k]["ci95"] for m in raw for k in keys}
  plot_bars(values, errors, out_dir / "retrieval.png",
            title=f"Cross-view retrieval on mfeat (chance class R@1 "
                  f"{results['chance_class_R@1']['mean']:.2f})", ylabel="recall")
  ks = [f"class {views[0]}->{views[1]} {k}" for k in ("R@1", "R@5")]
  plot_bands({m: ([1, 5], [results["methods"][m][k] for k in ks]) for m in raw},
             out_dir / "recall_at_k.png", title=f"{views[0]} → {views[1]} class retrieval",
             xlabel="K", ylabel="Recall@K",
             hline=(results["chance_class_R@1"]["mean"], "chance R@1"))
  fmt = lambda s: f"{s['mean']:.3f} ± {s['ci95']:.3f}"  # noqa: E731
  print("chance class R@1:", fmt(results["chance_class_R@1"]),
        f"| chance instance R@1: {results['chance_instance_R@1']:.4f}")
  for m, d in results["methods"].items():
    print(m)
    for k, s in d.items():
      print(f"  {k:28s} {fmt(s)}")
  print("CCA (dim, ridge) chosen on val:", [(c["dim"], c["ridge"]) for c in cca_choice])
  return results


def cli() -> None:
  """The `mmreg-alignment` command."""
  cli_lib.run(main)


if __name__ == "__main__":
  cli()
