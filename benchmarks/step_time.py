"""Step time of every balancing method relative to joint training, and mmreg vs PyTorch eager.

All steps are measured side by side in one run, interleaved round by round in a fresh random
order (so a slow spell of the machine, or PyTorch's spinning thread pool, hits every method
alike): each round times `--steps` consecutive steps of every method; the figure is the
median over rounds of the mean step time, divided by joint training's. `joint_with_stack` is
joint training that also computes the per-loss gradient stack (what every stack method pays
before its own work); the last column divides by it.
PyTorch eager versions of the joint, OGM-GE and RedReg(reference) steps, written the way the
reference code does them (separate backward passes per loss for RedReg), run on the same MLP
and batch in the same rounds; their ratio PyTorch / mmreg is printed (needs `mmreg[bench]`).

  python -m benchmarks.step_time [--rounds 7 --steps 20 --batch 128 --json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

import mmreg
from mmreg.train import build_method, get_method, init_train_state, make_train_step

# name: (registered method, options, description)
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "joint": ("joint", {}),
    "joint_with_stack": ("joint", {}),
    "ogm_ge": ("ogm_ge", {}),
    "ogm_ge_no_noise": ("ogm_ge", {"generalization_enhancement": False}),
    "ogm_ge_reference": ("ogm_ge", {"modulated": "all"}),
    "inforeg": ("inforeg", {}),
    "agm": ("agm", {}),
    "mmpareto": ("mmpareto", {}),
    "pcgrad": ("pcgrad", {}),
    "mgda": ("mgda", {}),
    "dgl": ("dgl", {}),
    "redreg": ("redreg_subspace", {"total_epochs": 10, "probe_every": 1}),
    "redreg_probe10": ("redreg_subspace", {"total_epochs": 10, "probe_every": 10}),
    "redreg_no_probe": ("redreg_subspace", {"total_epochs": 10, "probe_every": 0}),
    "redreg_reference": ("redreg", {"total_epochs": 10, "probe_every": 1}),
}
# Rows that need the per-loss gradient stack although their method does not.
WITH_STACK = ("joint_with_stack",)


def make_batch(batch: int, dims: dict[str, int], classes: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  out = {m: rng.normal(size=(batch, d)).astype(np.float32) for m, d in dims.items()}
  out["label"] = rng.integers(0, classes, size=batch).astype(np.int32)
  return out


def mmreg_steps(dims, classes, hidden, feature, batch, steps_per_epoch
                ) -> dict[str, Callable[[], None]]:
  model = mmreg.mlp_classifier(dims, classes, hidden=hidden, feature_dim=feature)
  spec = mmreg.classification_losses(model.modalities)
  data = jax.device_put(make_batch(batch, dims, classes))
  runners = {}
  for name, (method_name, options) in CONFIGS.items():
    method = get_method(method_name)
    tx = optax.chain(build_method(method_name, mmreg.param_labels(model), model.modalities,
                                  options), optax.sgd(2e-3, momentum=0.9))
    graphdef, state = init_train_state(model, tx, 0)
    step = make_train_step(graphdef, spec, tx, steps_per_epoch=steps_per_epoch,
                           with_loss_grads=method.needs_loss_grads or name in WITH_STACK)
    holder = {"state": state}

    def run(n, step=step, holder=holder):
      for _ in range(n):
        holder["state"], metrics = step(holder["state"], data)
      jax.block_until_ready(metrics)

    runners[name] = run
  return runners


def torch_steps(dims, classes, hidden, feature, batch) -> dict[str, Callable[[int], None]]:
  import torch
  import torch.nn.functional as F  # noqa: N812
  from torch import nn

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      def enc(d):
        layers, prev = [], d
        for h in (*hidden, feature):
          layers += [nn.Linear(prev, h), nn.ReLU()]
          prev = h
        return nn.Sequential(*layers)
      self.enc = nn.ModuleDict({m: enc(d) for m, d in dims.items()})
      self.head = nn.Linear(feature * len(dims), classes)
      self.aux = nn.ModuleDict({m: nn.Linear(feature, classes) for m in dims})

    def forward(self, x):
      h = {m: self.enc[m](x[m]) for m in dims}
      return self.head(torch.cat([h[m] for m in dims], 1)), {m: self.aux[m](h[m]) for m in dims}, h

  np_batch = make_batch(batch, dims, classes)
  x = {m: torch.from_numpy(np_batch[m]) for m in dims}
  y = torch.from_numpy(np_batch["label"]).long()
  mods = list(dims)

  def build():
    torch.manual_seed(0)
    net = Net()
    return net, torch.optim.SGD(net.parameters(), lr=2e-3, momentum=0.9)

  models = {k: build() for k in ("joint", "ogm_ge", "redreg")}
  state: dict[str, Any] = {"hist": {m: [] for m in mods}, "ema": {}, "anchor": None}

  def joint(n):
    net, opt = models["joint"]
    for _ in range(n):
      opt.zero_grad()
      out, aux, _ = net(x)
      loss = F.cross_entropy(out, y) + sum(F.cross_entropy(aux[m], y) for m in mods)
      loss.backward()
      opt.step()

  def ogm_ge(n, alpha=0.8):
    net, opt = models["ogm_ge"]
    for _ in range(n):
      opt.zero_grad()
      out, aux, _ = net(x)
      loss = F.cross_entropy(out, y) + sum(F.cross_entropy(aux[m], y) for m in mods)
      loss.backward()
      score = {m: F.softmax(aux[m], 1)[torch.arange(len(y)), y].sum().item() for m in mods}
      ratio = {mods[0]: score[mods[0]] / score[mods[1]], mods[1]: score[mods[1]] / score[mods[0]]}
      coeff = {m: 1 - math.tanh(alpha * max(ratio[m], 0)) if ratio[m] > 1 else 1.0 for m in mods}
      for m in mods:
        for p in net.enc[m].parameters():
          if p.grad is not None:
            p.grad = p.grad * coeff[m] + torch.zeros_like(p.grad).normal_(
                0, p.grad.std().item() + 1e-8)
      opt.step()

  def redreg_reference(n):
    net, opt = models["redreg"]
    if state["anchor"] is None:
      state["anchor"] = {k: v.detach().clone() for k, v in net.named_parameters()}
    for _ in range(n):
      opt.zero_grad()
      out, aux, h = net(x)
      losses = [F.cross_entropy(out, y)] + [F.cross_entropy(aux[m], y) for m in mods]
      for i, loss in enumerate(losses):  # separate backward passes per loss
        loss.backward(retain_graph=i < len(losses) - 1)
      with torch.no_grad():
        p = {m: F.softmax(aux[m], 1)[torch.arange(len(y)), y].mean().item() for m in mods}
        r = {}
        for m in mods:
          hist = state["hist"][m]
          hist.append(p[m])
          del hist[:-11]
          s = 1.0 if len(hist) < 11 else (np.mean(hist[-10:]) - np.mean(hist[-11:-1])) / (
              abs(np.mean(hist[-11:-1])) + 1e-8)
          x1 = x[m] + 0.03 * torch.randn_like(x[m])
          x2 = x[m] + 0.03 * torch.randn_like(x[m])
          red = ((net.enc[m](x1) - net.enc[m](x2)) ** 2).mean().item() / (
              ((x1 - x2) ** 2).mean().item() + 1e-8)
          ema = 0.9 * state["ema"].get(m, 0.0) + 0.1 * red
          state["ema"][m] = ema
          r[m] = red / (ema + 1e-8) - 0.6 * max(s, 0.0)
        sim = F.cosine_similarity(h[mods[0]], h[mods[1]], dim=1).mean().item()
        dom = max(mods, key=lambda m: p[m])
        weak = min(mods, key=lambda m: p[m])
        if p[dom] > p[weak] and r[dom] > 0.15 and sim > 0.2:
          beta = math.exp(0.9 * math.tanh(p[dom] - p[weak]))
          for name, param in net.enc[dom].named_parameters():
            g = param.grad
            d = param - state["anchor"][f"enc.{dom}.{name}"]
            d_perp = d - (d * g).sum() / ((g * g).sum() + 1e-12) * g
            param.grad = g + beta * d_perp
      opt.step()

  return {"joint": joint, "ogm_ge_reference": ogm_ge, "redreg_reference": redreg_reference}


def measure(runners: dict[str, Callable[[int], None]], rounds: int, steps: int
            ) -> dict[str, float]:
  for run in runners.values():  # compile / warm up
    run(2)
  times: dict[str, list[float]] = {k: [] for k in runners}
  order = np.random.default_rng(0)
  for _ in range(rounds):
    for name in order.permutation(list(runners)):  # no method always follows the same one
      run = runners[name]
      t0 = time.perf_counter()
      run(steps)
      times[name].append((time.perf_counter() - t0) / steps)
  return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--dim", type=int, default=256, help="input width of each modality")
  parser.add_argument("--hidden", type=int, default=256)
  parser.add_argument("--feature", type=int, default=128)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
  args = parser.parse_args(argv)
  dims = {"a": args.dim, "b": args.dim}
  shape = (dims, args.classes, (args.hidden,), args.feature, args.batch)
  runners = {f"mmreg/{k}": v for k, v in mmreg_steps(*shape, steps_per_epoch=1000).items()}
  has_torch = False
  if not args.no_torch:
    try:
      import torch
      runners.update({f"torch/{k}": v for k, v in torch_steps(*shape).items()})
      has_torch = True
    except ImportError:
      print("torch is not installed (pip install 'mmreg[bench]'); skipping the PyTorch rows")
  med = measure(runners, args.rounds, args.steps)
  joint = med["mmreg/joint"]
  print(f"device: {jax.devices()[0].platform} ({platform.processor() or platform.machine()}), "
        f"batch {args.batch}, MLP {args.dim}->{args.hidden}->{args.feature} x2 modalities, "
        f"3 losses, {args.rounds} rounds x {args.steps} steps")
  stack = med["mmreg/joint_with_stack"]
  print(f"{'method':<22}{'ms/step':>10}{'x joint':>10}{'x joint+stack':>15}")
  for name in CONFIGS:
    t = med[f"mmreg/{name}"]
    print(f"{name:<22}{1e3 * t:>10.3f}{t / joint:>10.2f}{t / stack:>15.2f}")
  result: dict[str, Any] = {"ms_per_step": {k: 1e3 * v for k, v in med.items()},
                            "ratio_to_joint": {k: med[f"mmreg/{k}"] / joint for k in CONFIGS},
                            "args": vars(args), "device": jax.devices()[0].platform}
  if has_torch:
    import torch
    print(f"\nPyTorch eager {torch.__version__} ({torch.get_num_threads()} threads) vs mmreg")
    print(f"{'step':<22}{'torch ms':>10}{'mmreg ms':>10}{'torch/mmreg':>13}")
    result["torch_over_mmreg"] = {}
    for name in ("joint", "ogm_ge_reference", "redreg_reference"):
      t, j = med[f"torch/{name}"], med[f"mmreg/{name}"]
      result["torch_over_mmreg"][name] = t / j
      print(f"{name:<22}{1e3 * t:>10.3f}{1e3 * j:>10.3f}{t / j:>13.2f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  main()
