"""Step time, XLA FLOPs and peak memory of the balancing methods relative to joint training,
and mmreg vs PyTorch eager, over a sweep of model shapes.

For each shape (MLP width × batch × number of modalities, plus one conv encoder), every method
runs in the configuration training uses (its registered per-loss stack scope); all steps of a
shape, mmreg's and PyTorch's, are timed side by side, interleaved round by round in a fresh
random order, so a slow spell of the machine hits every row alike. Each ratio is computed per
round (method ÷ joint, or PyTorch ÷ mmreg, in the same round) and reported as the median and
interquartile range over rounds. Beside each time ratio: the ratio of XLA's FLOP count
(`cost_analysis`) and the compiled step's peak memory (`memory_analysis`: arguments + outputs +
temporaries − donated aliases), so the distance to the FLOP floor is visible. XLA counts a
`lax.cond` at its costliest branch: a RedReg row that probes every k > 1 steps also reports a
step without the probe (FLOP x, mem x) and the mean FLOP x over the k steps. `faults` is the
median number of minor page faults per step (`getrusage`): a step whose buffers the allocator
maps afresh each time (glibc's malloc maps blocks above 32 MiB with mmap and unmaps them on free)
pays for touching every new page. For an MLP shape the rounds also time the encoder's largest
matrix product, `[batch, width] @ [width, width]`, alone in XLA and in PyTorch: the joint step's
GFLOP/s (XLA's FLOP count of the step, over either library's step time) as a fraction of that
product's GFLOP/s says how close a step is to the machine's bound, and so how much faster than
PyTorch it can possibly get.

`stack` is joint training that also computes the per-loss gradient stack over all parameters
(what a stack method pays before its own work); `stack_vmap` the same with the stack as one
VJP vmapped over all losses (`loss_grads_impl="vmap"`, the fallback). PyTorch eager rows
(needs `mmreg[bench]`): joint; each stack method with its per-loss gradients obtained as the
authors' code does (one `torch.autograd.grad` per loss); RedReg as the authors' code runs it
(one backward of the summed loss, plus the redundancy probe every step), against mmreg's
`redreg` (the authors' form, mmreg's default). PyTorch uses as many threads as the machine's
cores, like XLA's CPU backend.

  python -m benchmarks.step_time [--widths 64,256,1024 --batches 64,512 --modalities 2,3]
                                 [--conv] [--rounds 5 --steps 10 --json out.json]
  python -m benchmarks.step_time --tiny      # one small shape, seconds
  python -m benchmarks.step_time --rounds 0  # compile only: FLOP x and mem x, no timing
  python -m benchmarks.step_time --against DIR  # before/after: DIR's mmreg beside this one
  python -m benchmarks.step_time --against . --against-env XLA_FLAGS=...  # an XLA setting

`--against DIR` times the same rows with the mmreg package of another checkout DIR (e.g.
`git worktree add /tmp/base <commit>`) beside the current one: a child process imports DIR's
mmreg, compiles the rows and runs a row's steps when the parent asks, timing them itself, so its
rows join the interleaved rounds (the two processes never run at once). Each row then reports
`against/current`, DIR's step time over the current one's, per round (median and IQR), and
`against x joint`, DIR's ratio to its own joint step: two processes differ by a few percent
even on identical code (memory layout), which the ratios to joint of each process cancel.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
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

try:
  import resource
except ImportError:  # Windows: no page-fault count
  resource = None

# row: (registered method, options)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "joint": ("joint", {}),
    "stack": ("joint", {}),
    "stack_vmap": ("joint", {}),
    "ogm_ge": ("ogm_ge", {}),
    "ogm_ge_no_noise": ("ogm_ge", {"generalization_enhancement": False}),
    "inforeg": ("inforeg", {}),
    "agm": ("agm", {"apply_to": "encoders"}),
    "mmpareto": ("mmpareto", {}),
    "pcgrad": ("pcgrad", {}),
    "mgda": ("mgda", {}),
    "dgl": ("dgl", {}),
    "redreg": ("redreg", {"total_epochs": 10, "probe_every": 1}),
    "redreg_probe10": ("redreg", {"total_epochs": 10, "probe_every": 10}),
    "redreg_subspace": ("redreg_subspace", {"total_epochs": 10, "probe_every": 10}),
}
STACK_ROWS = ("stack", "stack_vmap")  # joint + the stack, although joint does not need it
VMAP_ROWS = ("stack_vmap",)  # the stack as one VJP vmapped over all losses (the fallback)
TORCH_ROWS = ("joint", "mmpareto", "pcgrad", "mgda", "dgl", "redreg")
# InfoReg's default strength is the authors' pair (audio, visual); with more modalities every
# modality takes the pair's first value (the step's cost does not depend on it).
MORE_MODALITIES_OPTIONS: dict[str, dict[str, Any]] = {"inforeg": {"strength": 0.95}}
CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Shape:
  """One point of the sweep: encoder kind, width, batch, number of modalities."""

  encoder: str  # "mlp" or "conv"
  width: int
  batch: int
  modalities: int

  @property
  def names(self) -> tuple[str, ...]:
    return tuple("abcdefgh"[: self.modalities])

  @property
  def input_shape(self) -> tuple[int, ...]:
    return (self.width,) if self.encoder == "mlp" else (16, 16, 3)

  @property
  def feature(self) -> int:
    return max(self.width // 2, 8)

  def label(self) -> str:
    if self.encoder == "mlp":
      return f"MLP w{self.width} b{self.batch} M{self.modalities}"
    return f"conv c{self.width} b{self.batch} M{self.modalities}"


def make_batch(shape: Shape, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  out = {m: rng.normal(size=(shape.batch, *shape.input_shape)).astype(np.float32)
         for m in shape.names}
  out["label"] = rng.integers(0, CLASSES, size=shape.batch).astype(np.int32)
  return out


def mmreg_model(shape: Shape):
  if shape.encoder == "mlp":
    cfg = {"encoder": "mlp", "hidden": (shape.width,), "feature_dim": shape.feature}
  else:
    cfg = {"encoder": "conv2d", "channels": (shape.width, 2 * shape.width),
           "feature_dim": shape.feature}
  return build_model(cfg, {m: shape.input_shape for m in shape.names}, CLASSES, seed=0)


def mmreg_steps(shape: Shape, methods: list[str], loss_grads_impl: str
                ) -> tuple[dict[str, Callable[[int], None]], dict[str, dict[str, float]]]:
  """Runners `steps -> None` per row and each row's compiled FLOPs and peak bytes."""
  model = mmreg_model(shape)
  labels = mmreg.param_labels(model)
  spec = mmreg.classification_losses(model.modalities)
  data = jax.device_put(make_batch(shape))
  runners, compiled = {}, {}

  def compile_row(row: str, options: dict[str, Any]):
    method_name = METHODS[row][0]
    method = get_method(method_name)
    tx = optax.chain(build_method(method_name, labels, model.modalities, options,
                                  updates_from_stack=True),
                     optax.sgd(2e-3, momentum=0.9))
    graphdef, state = init_train_state(model, tx, 0)
    with_stack = method.needs_loss_grads or row in STACK_ROWS
    step = make_train_step(
        graphdef, spec, tx, steps_per_epoch=1000, with_loss_grads=with_stack,
        loss_grads_mask=loss_grads_mask(labels, method.loss_grads_over) if with_stack else None,
        loss_grads_impl="vmap" if row in VMAP_ROWS else loss_grads_impl)
    exe = step.lower(state, data).compile()
    cost = exe.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    mem = exe.memory_analysis()
    return state, exe, {
        "flops": float(cost.get("flops", math.nan)),
        "peak_bytes": float(mem.argument_size_in_bytes + mem.output_size_in_bytes
                            + mem.temp_size_in_bytes - mem.alias_size_in_bytes)}

  for row in methods:
    options = METHODS[row][1]
    if shape.modalities > 2:
      options = {**options, **MORE_MODALITIES_OPTIONS.get(row, {})}
    state, exe, compiled[row] = compile_row(row, options)
    if options.get("probe_every", 0) > 1:  # XLA counts the probe's lax.cond branch every step
      without = compile_row(row, {**options, "probe_every": 0})[2]
      compiled[row].update(flops_without_probe=without["flops"],
                           peak_bytes_without_probe=without["peak_bytes"],
                           probe_every=options["probe_every"])
    holder = {"state": state}

    def run(n, exe=exe, holder=holder):
      for _ in range(n):
        holder["state"], metrics = exe(holder["state"], data)
      jax.block_until_ready(metrics)

    runners[row] = run
  return runners, compiled


def torch_steps(shape: Shape, rows: list[str]) -> dict[str, Callable[[int], None]]:
  """PyTorch eager steps on the same architecture and batch (see the module docstring)."""
  import torch
  import torch.nn.functional as F  # noqa: N812
  from torch import nn

  mods = list(shape.names)

  def encoder():
    if shape.encoder == "mlp":
      return nn.Sequential(nn.Linear(shape.width, shape.width), nn.ReLU(),
                           nn.Linear(shape.width, shape.feature), nn.ReLU())
    c = shape.width
    return nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.ReLU(), nn.Conv2d(c, 2 * c, 3, 2, 1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2 * c, shape.feature), nn.ReLU())

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      self.enc = nn.ModuleDict({m: encoder() for m in mods})
      self.head = nn.Linear(shape.feature * len(mods), CLASSES)
      self.aux = nn.ModuleDict({m: nn.Linear(shape.feature, CLASSES) for m in mods})

    def forward(self, x):
      h = {m: self.enc[m](x[m]) for m in mods}
      return self.head(torch.cat([h[m] for m in mods], 1)), {m: self.aux[m](h[m]) for m in mods}, h

  np_batch = make_batch(shape)
  to_nchw = (lambda a: a) if shape.encoder == "mlp" else (lambda a: a.transpose(0, 3, 1, 2))
  x = {m: torch.from_numpy(np.ascontiguousarray(to_nchw(np_batch[m]))) for m in mods}
  y = torch.from_numpy(np_batch["label"]).long()

  def build():
    torch.manual_seed(0)
    net = Net()
    return net, torch.optim.SGD(net.parameters(), lr=2e-3, momentum=0.9)

  def losses_of(net):
    out, aux, h = net(x)
    return [F.cross_entropy(out, y)] + [F.cross_entropy(aux[m], y) for m in mods], aux, h

  def per_loss_grads(net, losses):
    """One autograd.grad per loss, as the authors' code obtains them."""
    params = list(net.parameters())
    grads = []
    for loss in losses:
      g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
      grads.append([torch.zeros_like(p) if gi is None else gi
                    for p, gi in zip(params, g, strict=True)])
    return params, grads

  def set_flat_grads(params, total):
    """Hand each parameter its slice of the flat combined gradient `total`."""
    offset = 0
    for p in params:
      p.grad = total[offset:offset + p.numel()].view_as(p)
      offset += p.numel()

  def encoder_params(net, m):
    return {id(p) for p in net.enc[m].parameters()}

  def min_norm(G):
    """Frank–Wolfe on the min-norm point of the convex hull (MGDA's MinNormSolver loop)."""
    L = len(G)
    a = np.full(L, 1.0 / L)
    for _ in range(250):
      t = int(np.argmin(G @ a))
      d = np.eye(L)[t] - a
      denom = d @ G @ d
      step = 1.0 if denom <= 0 else float(np.clip(-(a @ G @ d) / denom, 0.0, 1.0))
      a = a + step * d
      if step * np.abs(d).sum() < 1e-5:
        break
    return a

  def joint(net, opt, n):
    for _ in range(n):
      opt.zero_grad()
      losses, _, _ = losses_of(net)
      sum(losses).backward()
      opt.step()

  def mmpareto(net, opt, n, gamma=1.5):
    for _ in range(n):
      opt.zero_grad()
      losses, _, _ = losses_of(net)
      params, grads = per_loss_grads(net, losses)
      for k, p in enumerate(params):
        owner = next((i for i, m in enumerate(mods) if id(p) in encoder_params(net, m)), None)
        g_sum = sum(g[k] for g in grads)
        if owner is None:
          p.grad = g_sum
          continue
        g_mm, g_uni = grads[0][k], grads[1 + owner][k]
        if F.cosine_similarity(g_mm.flatten(), g_uni.flatten(), dim=0) > 0:
          w1 = 0.5
        else:
          diff = g_mm - g_uni
          w1 = float(torch.clamp(((g_uni - g_mm) * g_uni).sum() / (diff * diff).sum(), 0, 1))
        g_new = 2 * (w1 * g_mm + (1 - w1) * g_uni)
        if g_sum.norm() > g_new.norm():
          g_new = g_new / (g_new.norm() + 1e-12) * g_sum.norm()
        p.grad = gamma * g_new
      opt.step()

  def pcgrad(net, opt, n):
    rng = np.random.default_rng(0)
    for _ in range(n):
      opt.zero_grad()
      losses, _, _ = losses_of(net)
      params, grads = per_loss_grads(net, losses)
      flat = [torch.cat([g.flatten() for g in gs]) for gs in grads]
      projected = [f.clone() for f in flat]
      for i, gi in enumerate(projected):
        for j in rng.permutation(len(flat)):
          dot = (gi * flat[j]).sum()
          if j != i and dot < 0:
            gi -= dot / (flat[j] * flat[j]).sum() * flat[j]
      total = sum(projected)
      set_flat_grads(params, total)
      opt.step()

  def mgda(net, opt, n):
    for _ in range(n):
      opt.zero_grad()
      losses, _, _ = losses_of(net)
      params, grads = per_loss_grads(net, losses)
      flat = torch.stack([torch.cat([g.flatten() for g in gs]) for gs in grads])
      alpha = torch.from_numpy(min_norm((flat @ flat.T).double().numpy())).float()
      total = alpha @ flat  # scale 1, as mmreg's mgda default
      set_flat_grads(params, total)
      opt.step()

  def dgl(net, opt, n):
    for _ in range(n):
      opt.zero_grad()
      losses, _, _ = losses_of(net)
      params, grads = per_loss_grads(net, losses)
      owners = {m: encoder_params(net, m) for m in mods}
      for k, p in enumerate(params):
        owner = next((i for i, m in enumerate(mods) if id(p) in owners[m]), None)
        p.grad = grads[0][k] if owner is None else grads[1 + owner][k]
      opt.step()

  state: dict[str, Any] = {"hist": {m: [] for m in mods}, "ema": {}, "anchor": None}

  def redreg_authors(net, opt, n):
    if state["anchor"] is None:
      state["anchor"] = {k: v.detach().clone() for k, v in net.named_parameters()}
    for _ in range(n):
      opt.zero_grad()
      losses, aux, h = losses_of(net)
      sum(losses).backward()
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

  steps = {"joint": joint, "mmpareto": mmpareto, "pcgrad": pcgrad, "mgda": mgda, "dgl": dgl,
           "redreg": redreg_authors}
  runners = {}
  for row in rows:
    net, opt = build()
    runners[row] = lambda n, f=steps[row], net=net, opt=opt: f(net, opt, n)
  return runners


def product_flops(shape: Shape) -> float:
  """FLOPs of one `[batch, width] @ [width, width]` product, the MLP encoder's largest."""
  return 2.0 * shape.batch * shape.width * shape.width


def product_runners(shape: Shape, has_torch: bool) -> dict[str, Callable[[int], None]]:
  """The MLP encoder's first-layer product alone, chained (a ← a @ w, so no call overlaps the
  next), in XLA and in PyTorch: the machine's rate for the step's dominant work."""
  rng = np.random.default_rng(0)
  a0 = rng.normal(size=(shape.batch, shape.width)).astype(np.float32)
  w0 = (rng.normal(size=(shape.width, shape.width)) / math.sqrt(shape.width)).astype(np.float32)
  a, w = jax.device_put(a0), jax.device_put(w0)
  product = jax.jit(lambda x, y: x @ y).lower(a, w).compile()

  def run_xla(n: int) -> None:
    x = a
    for _ in range(n):
      x = product(x, w)
    jax.block_until_ready(x)

  runners = {"mmreg/product": run_xla}
  if has_torch:
    import torch
    ta, tw = torch.from_numpy(a0), torch.from_numpy(w0)

    def run_torch(n: int) -> None:
      x = ta
      for _ in range(n):
        x = torch.mm(x, tw)

    runners["torch/product"] = run_torch
  return runners


def minor_faults() -> int:
  """Minor page faults of this process so far (0 where `resource` is missing)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0


Runner = Callable[[int], tuple[float, float]]  # steps -> (seconds, minor page faults)


def timed(run: Callable[[int], None]) -> Runner:
  """`run` as a runner that measures its own seconds and minor page faults."""
  def runner(steps: int) -> tuple[float, float]:
    f0, t0 = minor_faults(), time.perf_counter()
    run(steps)
    return time.perf_counter() - t0, minor_faults() - f0
  return runner


def measure(runners: dict[str, Runner], rounds: int, steps: int
            ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
  """Seconds and minor page faults per step of every runner, one entry per round, rounds
  interleaved."""
  for run in runners.values():  # warm up
    run(2)
  times: dict[str, list[float]] = {k: [] for k in runners}
  faults: dict[str, list[float]] = {k: [] for k in runners}
  order = np.random.default_rng(0)
  for _ in range(rounds):
    for name in order.permutation(list(runners)):  # no row always follows the same one
      seconds, count = runners[name](steps)
      times[name].append(seconds / steps)
      faults[name].append(count / steps)
  return times, faults


PROTOCOL = "step_time:"  # prefix of the lines a `--serve` child answers with


def serve(shape: Shape, methods: list[str], loss_grads_impl: str) -> None:
  """Child side of `--against`: compile the rows with this process's mmreg, answer with their
  compiled figures and the package's folder, then run each `row steps` request read from stdin
  and answer its seconds and minor page faults."""
  runners, compiled = mmreg_steps(shape, methods, loss_grads_impl)
  package = os.path.dirname(os.path.abspath(mmreg.__file__))
  print(PROTOCOL + json.dumps({"compiled": compiled, "package": package}), flush=True)
  for line in sys.stdin:
    row, steps = line.split()
    seconds, faults = timed(runners[row])(int(steps))
    print(f"{PROTOCOL}{seconds} {faults}", flush=True)


class AgainstRows:
  """Parent side of `--against`: this script in a child process that imports the mmreg of the
  checkout `directory` (first on its PYTHONPATH) and serves the rows of one shape; `environment`
  is added to the child's environment only."""

  def __init__(self, directory: str, shape: Shape, methods: list[str], loss_grads_impl: str,
               environment: dict[str, str] | None = None):
    directory = os.path.abspath(directory)
    if not os.path.isfile(os.path.join(directory, "mmreg", "__init__.py")):
      raise SystemExit(f"--against {directory}: no mmreg package there; pass a checkout of this "
                       "repository (git worktree add DIR <commit>)")
    path = os.pathsep.join(p for p in (directory, os.environ.get("PYTHONPATH")) if p)
    self.child = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve",
         json.dumps(dataclasses.asdict(shape)), "--methods", ",".join(methods),
         "--loss-grads-impl", loss_grads_impl],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, **(environment or {}), "PYTHONPATH": path})
    hello = json.loads(self._answer())
    if os.path.dirname(hello["package"]) != directory:
      self.close()
      raise SystemExit(f"--against {directory}: the child imported mmreg from "
                       f"{hello['package']}, not from there; remove what puts that copy ahead "
                       "of PYTHONPATH on sys.path")
    self.compiled: dict[str, dict[str, float]] = hello["compiled"]

  def _answer(self) -> str:
    for line in self.child.stdout:
      if line.startswith(PROTOCOL):
        return line[len(PROTOCOL):]
    raise SystemExit(f"the --against child exited with status {self.child.wait()} before "
                     "answering (its error is printed above)")

  def runner(self, row: str) -> Runner:
    def run(steps: int) -> tuple[float, float]:
      self.child.stdin.write(f"{row} {steps}\n")
      self.child.stdin.flush()
      seconds, faults = map(float, self._answer().split())
      return seconds, faults
    return run

  def close(self) -> None:
    self.child.stdin.close()
    self.child.wait(timeout=60)


def ratio_stats(num: list[float], den: list[float]) -> dict[str, float]:
  """Median and interquartile range of the per-round ratios num/den."""
  r = sorted(a / b for a, b in zip(num, den, strict=True))
  q = statistics.quantiles(r, n=4, method="inclusive") if len(r) > 1 else [r[0], r[0], r[0]]
  return {"median": statistics.median(r), "q1": q[0], "q3": q[2]}


def probe_flops(compiled: dict[str, float], joint: dict[str, float]) -> dict[str, float]:
  """For a RedReg row that probes every k > 1 steps: XLA's cost analysis counts a `lax.cond`
  at its costliest branch, so `flops_x_joint` is a probed step's; beside it, a step without
  the probe (the same step compiled with probe_every=0: FLOPs and peak memory) and the mean
  FLOPs over the k steps."""
  if "flops_without_probe" not in compiled:
    return {}
  k, between = compiled["probe_every"], compiled["flops_without_probe"]
  return {"flops_x_joint_without_probe": between / joint["flops"],
          "flops_x_joint_mean": ((k - 1) * between + compiled["flops"]) / k / joint["flops"],
          "peak_x_joint_without_probe": compiled["peak_bytes_without_probe"] / joint["peak_bytes"]}


def run_shape(shape: Shape, methods: list[str], args: argparse.Namespace, has_torch: bool
              ) -> dict[str, Any]:
  runners, compiled = mmreg_steps(shape, methods, args.loss_grads_impl)
  if args.rounds == 0:  # compile only: the load-independent columns
    rows = {name: {"flops_x_joint": compiled[name]["flops"] / compiled["joint"]["flops"],
                   "peak_mib": compiled[name]["peak_bytes"] / 2**20,
                   "peak_x_joint": compiled[name]["peak_bytes"] / compiled["joint"]["peak_bytes"],
                   **probe_flops(compiled[name], compiled["joint"])}
            for name in methods}
    return {"shape": dataclasses.asdict(shape), "label": shape.label(), "rows": rows}
  runners = {f"mmreg/{k}": timed(v) for k, v in runners.items()}
  torch_rows = [r for r in TORCH_ROWS if r in methods] if has_torch else []
  if torch_rows:
    runners.update({f"torch/{k}": timed(v) for k, v in torch_steps(shape, torch_rows).items()})
  if shape.encoder == "mlp":
    runners.update({k: timed(v) for k, v in product_runners(shape, bool(torch_rows)).items()})
  against = None
  if args.against:
    against = AgainstRows(args.against, shape, methods, args.loss_grads_impl, args.against_env)
    runners.update({f"against/{k}": against.runner(k) for k in methods})
  try:
    times, faults = measure(runners, args.rounds, args.steps)
  finally:
    if against:
      against.close()
  joint = times["mmreg/joint"]
  rows = {}
  for name in methods:
    t = times[f"mmreg/{name}"]
    row = {"ms": 1e3 * statistics.median(t), "x_joint": ratio_stats(t, joint),
           "flops_x_joint": compiled[name]["flops"] / compiled["joint"]["flops"],
           "peak_mib": compiled[name]["peak_bytes"] / 2**20,
           "peak_x_joint": compiled[name]["peak_bytes"] / compiled["joint"]["peak_bytes"],
           "faults_per_step": statistics.median(faults[f"mmreg/{name}"]),
           **probe_flops(compiled[name], compiled["joint"])}
    if name in torch_rows:
      tt = times[f"torch/{name}"]
      row["torch_ms"] = 1e3 * statistics.median(tt)
      row["torch_over_mmreg"] = ratio_stats(tt, t)
      row["torch_faults_per_step"] = statistics.median(faults[f"torch/{name}"])
    if against:
      ta = times[f"against/{name}"]
      row["against_ms"] = 1e3 * statistics.median(ta)
      row["against_over_current"] = ratio_stats(ta, t)
      row["against_x_joint"] = ratio_stats(ta, times["against/joint"])
      row["against_flops_x"] = against.compiled[name]["flops"] / compiled[name]["flops"]
    rows[name] = row
  result = {"shape": dataclasses.asdict(shape), "label": shape.label(), "rows": rows}
  if shape.encoder == "mlp":
    result["rates"] = flop_rates(times, compiled["joint"]["flops"], product_flops(shape))
  return result


def flop_rates(times: dict[str, list[float]], joint_flops: float, flops_per_product: float
               ) -> dict[str, float]:
  """GFLOP/s of the joint step (XLA's FLOP count over the median step time, for mmreg and for
  PyTorch's step of the same model) and of the encoder's largest product alone, and the joint
  step's rate as a fraction of the product's: how far the step is from the machine's bound."""
  rates = {}
  for lib in ("mmreg", "torch"):
    if f"{lib}/joint" in times and f"{lib}/product" in times:
      step = joint_flops / statistics.median(times[f"{lib}/joint"]) / 1e9
      product = flops_per_product / statistics.median(times[f"{lib}/product"]) / 1e9
      rates.update({f"{lib}_joint_gflops": step, f"{lib}_product_gflops": product,
                    f"{lib}_joint_of_product": step / product})
  return rates


def print_shape(result: dict[str, Any]) -> None:
  print(f"\n{result['label']}")
  print(f"{'row':<18}{'ms':>9}{'x joint [IQR]':>22}{'FLOP x':>8}{'peak MiB':>10}{'mem x':>7}"
        f"{'faults':>8}{'torch ms':>10}{'torch/mmreg [IQR]':>22}"
        f"{'against ms':>12}{'against/current [IQR]':>24}{'against x joint':>17}")
  for name, r in result["rows"].items():
    x = r.get("x_joint")
    line = (f"{name:<18}{r['ms']:>9.3f}{x['median']:>8.2f} [{x['q1']:.2f}, {x['q3']:.2f}]"
            if x else f"{name:<18}{'-':>9}{'-':>22}")
    line += f"{r['flops_x_joint']:>8.2f}{r['peak_mib']:>10.2f}{r['peak_x_joint']:>7.2f}"
    line += f"{r['faults_per_step']:>8.0f}" if "faults_per_step" in r else f"{'-':>8}"
    if "torch_ms" in r:
      t = r["torch_over_mmreg"]
      line += f"{r['torch_ms']:>10.3f}{t['median']:>8.2f} [{t['q1']:.2f}, {t['q3']:.2f}]"
    elif "against_ms" in r:
      line += f"{'-':>10}{'-':>22}"
    if "against_ms" in r:
      a = r["against_over_current"]
      line += f"{r['against_ms']:>12.3f}{a['median']:>10.2f} [{a['q1']:.2f}, {a['q3']:.2f}]"
      line += f"{r['against_x_joint']['median']:>17.2f}"
    print(line)
  rates = result.get("rates", {})
  for lib in ("mmreg", "torch"):
    if f"{lib}_joint_gflops" in rates:
      print(f"  {lib}: joint step {rates[f'{lib}_joint_gflops']:.1f} GFLOP/s, the encoder's "
            f"largest product alone {rates[f'{lib}_product_gflops']:.1f} GFLOP/s (the step at "
            f"{rates[f'{lib}_joint_of_product']:.0%} of it)")
  for name, r in result["rows"].items():
    if "flops_x_joint_mean" in r:
      print(f"  {name}: FLOP x {r['flops_x_joint']:.2f} is a probed step (lax.cond counted at its "
            f"costliest branch); without the probe {r['flops_x_joint_without_probe']:.2f}, "
            f"mean over the probe period {r['flops_x_joint_mean']:.2f}; mem x without the probe "
            f"{r['peak_x_joint_without_probe']:.2f}")


def parse_environment(pairs: list[str]) -> dict[str, str]:
  """`NAME=VALUE` strings as environment variables."""
  env = {}
  for pair in pairs:
    name, sep, value = pair.partition("=")
    if not sep or not name:
      raise SystemExit(f"--against-env {pair!r}: expected NAME=VALUE, e.g. "
                       "XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false")
    env[name] = value
  return env


def shapes_of(args: argparse.Namespace) -> list[Shape]:
  if args.tiny:
    return [Shape("mlp", 16, 8, 2)]
  ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
  out = [Shape("mlp", w, b, m) for w in ints(args.widths) for b in ints(args.batches)
         for m in ints(args.modalities)]
  if args.conv:
    out.append(Shape("conv", 16, 64, 2))
  return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--widths", default="64,256,1024", help="MLP widths (input and hidden)")
  parser.add_argument("--batches", default="64,512")
  parser.add_argument("--modalities", default="2,3", help="numbers of modalities")
  parser.add_argument("--conv", action="store_true", help="add a 2-D conv encoder shape")
  parser.add_argument("--methods", default=",".join(METHODS),
                      help=f"rows (joint is always measured); any of {list(METHODS)}")
  parser.add_argument("--loss-grads-impl", default="auto", choices=("auto", "structured", "vmap"),
                      help="how make_train_step computes the per-loss stack")
  parser.add_argument("--rounds", type=int, default=5,
                      help="timed rounds; 0 compiles only (FLOP x and mem x, no timing, no torch)")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--tiny", action="store_true", help="one small shape, 2 rounds of 2 steps")
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
  parser.add_argument("--against", default=None, metavar="DIR",
                      help="also time the rows with the mmreg of the checkout DIR, side by side")
  parser.add_argument("--against-env", action="append", default=[], metavar="NAME=VALUE",
                      help="set this environment variable in the --against child only "
                           "(repeatable): `--against . --against-env XLA_FLAGS=...` times an "
                           "XLA setting against the default on the same code")
  parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)  # --against's child
  args = parser.parse_args(argv)
  args.against_env = parse_environment(args.against_env)
  if args.tiny:
    args.rounds, args.steps = min(args.rounds, 2), 2
  methods = ["joint", *[m for m in args.methods.split(",") if m and m != "joint"]]
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    raise SystemExit(f"unknown rows {unknown}; valid: {list(METHODS)}")
  if args.serve:
    serve(Shape(**json.loads(args.serve)), methods, args.loss_grads_impl)
    return {}
  has_torch = False
  threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  if args.rounds < 0:
    raise SystemExit(f"--rounds must be ≥ 0 (0: compile only), got {args.rounds}")
  if args.against_env and not args.against:
    raise SystemExit("--against-env sets the --against child's environment: pass --against too")
  if args.against and args.rounds == 0:
    raise SystemExit("--against times the rows: it needs --rounds ≥ 1")
  if not args.no_torch and args.rounds > 0:
    try:
      import torch
      torch.set_num_threads(threads)
      has_torch = True
    except ImportError:
      print("torch is not installed (pip install 'mmreg[bench]'); skipping the PyTorch rows")
  header = {"device": jax.devices()[0].platform,
            "cpu": platform.processor() or platform.machine(), "cores": threads,
            "jax": jax.__version__, "loss_grads_impl": args.loss_grads_impl,
            "against_env": args.against_env,
            "rounds": args.rounds, "steps": args.steps}
  if has_torch:
    import torch
    header["torch"] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
  print(" ".join(f"{k}={v}" for k, v in header.items()))
  results = []
  for shape in shapes_of(args):
    results.append(run_shape(shape, methods, args, has_torch))
    print_shape(results[-1])
  out = {"header": header, "args": vars(args), "shapes": results}
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=2)
  return out


if __name__ == "__main__":
  main()
