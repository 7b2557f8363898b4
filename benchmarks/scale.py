"""Step time, samples/s and peak device memory of training methods on 1..N devices.

The model is two ResNet-18-style encoders at CREMA-D-like sizes (a 257×188×1 spectrogram and
224×224×3 frames, 6 classes) with concat fusion; data are random arrays (speed and memory do
not depend on their values). The train step is the library's, jitted on a `data` mesh of n
devices with a per-device batch (weak scaling). Variants name a method and where its per-loss
gradient stack lives: `all` parameters, the `encoders`, `fusion_head`, or the `features`.

Peak memory per device is XLA's compiled estimate (arguments + outputs − aliased + temporaries,
from `compiled.memory_analysis()`); on GPU the device allocator's peak is recorded too.

  python -m benchmarks.scale --small --devices 1,2,4 --out runs/bench_scale   # CPU check
  python -m benchmarks.scale --devices 1,2,4,8 --out runs/bench_scale_gpu     # full size

On CPU, `--devices` up to N creates N fake host devices (a correctness check: they share the
same cores, so step times do not show real speed-ups).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# name: (method, per-loss stack scope; None = the method's registered default)
VARIANTS: dict[str, tuple[str, str | None]] = {
    "joint": ("joint", None),
    "redreg": ("redreg", None),
    "mmpareto": ("mmpareto", None),
    "mmpareto@all": ("mmpareto", "all"),
    "pcgrad@all": ("pcgrad", "all"),
    "pcgrad@fusion_head": ("pcgrad", "fusion_head"),
    "mgda_ub@features": ("mgda_ub", None),
}
SHAPES = {"audio": (257, 188, 1), "visual": (224, 224, 3)}
NUM_CLASSES = 6


def parse_args(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--devices", default="1,2", help="comma-separated device counts")
  p.add_argument("--variants", default="joint,redreg,mmpareto",
                 help=f"comma-separated, from {list(VARIANTS)}, or 'all'")
  p.add_argument("--batch-per-device", type=int, default=8)
  p.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
  p.add_argument("--scale", type=float, default=1.0, help="spatial size factor of the inputs")
  p.add_argument("--width", type=int, default=64, help="ResNet width of the first stage")
  p.add_argument("--blocks", default="2,2,2,2", help="ResNet basic blocks per stage")
  p.add_argument("--small", action="store_true",
                 help="CPU preset: --scale 0.25 --width 8 --blocks 1,1 --batch-per-device 2 "
                      "--steps 2")
  p.add_argument("--out", default="runs/bench_scale")
  args = p.parse_args(argv)
  if args.small:
    args.scale, args.width, args.blocks, args.batch_per_device, args.steps = 0.25, 8, "1,1", 2, 2
  args.devices = [int(d) for d in args.devices.split(",")]
  args.variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
  unknown = [v for v in args.variants if v not in VARIANTS]
  if unknown:
    p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
  args.blocks = tuple(int(b) for b in args.blocks.split(","))
  return args


def fake_cpu_devices(n: int) -> None:
  """Ask XLA for n host devices; only effective before JAX starts."""
  if "jax" in sys.modules:
    return
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def measure(variant: str, n: int, args: argparse.Namespace, data: dict[str, Any]
            ) -> dict[str, Any]:
  import jax
  import optax

  import mmreg
  from mmreg.models import build_model
  from mmreg.train import (
      build_method,
      get_method,
      init_train_state,
      loss_grads_mask,
      make_train_step,
  )
  from mmreg.train.sharding import MeshPlan, make_mesh

  method_name, scope = VARIANTS[variant]
  method = get_method(method_name)
  scope = scope or method.loss_grads_over
  shapes = {m: x.shape[1:] for m, x in data.items() if m != "label"}
  model_cfg = {"encoder": "resnet", "width": args.width, "blocks": args.blocks,
               "feature_dim": 8 * args.width, "fusion": "concat", "latent_dim": 32}
  model = build_model(model_cfg, shapes, NUM_CLASSES, seed=0)
  labels = mmreg.param_labels(model)
  options = {"total_epochs": 1} if method_name == "redreg" else {}
  tx = optax.chain(build_method(method_name, labels, model.modalities, options,
                                updates_from_stack=True),
                   optax.sgd(1e-3, momentum=0.9))
  graphdef, state = init_train_state(model, tx, seed=0)
  by_features = scope == "features"
  step = make_train_step(graphdef, mmreg.classification_losses(model.modalities), tx,
                         steps_per_epoch=100, jit=False,
                         with_loss_grads=method.needs_loss_grads and not by_features,
                         with_feature_grads=method.needs_loss_grads and by_features,
                         loss_grads_mask=loss_grads_mask(labels, scope))
  plan = MeshPlan(make_mesh(n, 1, devices=jax.devices()[:n]))
  batch_size = args.batch_per_device * n
  step, state = plan.jit_step(step, state), plan.place(state)
  batch = plan.shard_batch({k: v[:batch_size] for k, v in data.items()}, batch_size)

  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  stats = jax.devices()[0].memory_stats() or {}
  params = sum(x.size for x in jax.tree.leaves(state.params))
  return {
      "variant": variant, "method": method_name, "stack_over": scope, "devices": n,
      "batch_size": batch_size, "params": int(params), "step_s": step_s,
      "samples_per_s": batch_size / step_s, "compile_s": compile_s,
      "peak_bytes_per_device": int(mem.argument_size_in_bytes + mem.output_size_in_bytes
                                   - mem.alias_size_in_bytes + mem.temp_size_in_bytes),
      "temp_bytes_per_device": int(mem.temp_size_in_bytes),
      "device_peak_bytes": stats.get("peak_bytes_in_use"),
      "loss": float(metrics["loss/total"]), "compiles": step._cache_size(),
  }


def main(argv: list[str] | None = None) -> dict[str, Any]:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  fake_cpu_devices(max(args.devices))
  import jax
  import numpy as np

  from mmreg.train.results import plot_bars, plot_curves, write_json

  available = jax.device_count()
  if max(args.devices) > available:
    raise SystemExit(f"--devices asks for {max(args.devices)} devices but JAX sees {available} "
                     f"({jax.devices()[0].platform}); lower --devices")
  rng = np.random.default_rng(0)
  largest = args.batch_per_device * max(args.devices)
  data = {m: rng.normal(size=(largest, max(8, round(h * args.scale)),
                              max(8, round(w * args.scale)), c)).astype(np.float32)
          for m, (h, w, c) in SHAPES.items()}
  data["label"] = rng.integers(0, NUM_CLASSES, largest).astype(np.int32)
  rows = []
  for variant in args.variants:
    for n in args.devices:
      row = measure(variant, n, args, data)
      rows.append(row)
      print(f"{variant:20s} devices={n} batch={row['batch_size']:4d} "
            f"step={1e3 * row['step_s']:9.1f} ms  {row['samples_per_s']:9.1f} samples/s  "
            f"peak/device={row['peak_bytes_per_device'] / 2**20:8.1f} MiB  "
            f"(temp {row['temp_bytes_per_device'] / 2**20:.1f} MiB)", flush=True)
  out = Path(args.out)
  result = {"platform": jax.devices()[0].platform, "device_kind": jax.devices()[0].device_kind,
            "input_shapes": {m: list(x.shape[1:]) for m, x in data.items() if m != "label"},
            "config": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows}
  write_json(out / "results.json", result)
  plot_curves({v: ([r["devices"] for r in rows if r["variant"] == v],
                   [r["samples_per_s"] for r in rows if r["variant"] == v])
               for v in args.variants}, out / "throughput.png",
              title=f"samples/s ({result['platform']})", xlabel="devices", ylabel="samples/s")
  n = min(args.devices)
  plot_bars({r["variant"]: r["peak_bytes_per_device"] / 2**20 for r in rows if r["devices"] == n},
            None, out / "memory.png", title=f"peak memory per device, {n} device(s)",
            ylabel="MiB")
  print(f"wrote {out.absolute()}")
  return result


if __name__ == "__main__":
  main()
