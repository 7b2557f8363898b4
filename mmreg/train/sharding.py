"""The train step on a device mesh: data parallelism, optional FSDP, and multi-host input.

A mesh has two axes, `data` and `fsdp`. The batch is split over both (every device sees
`batch_size / (data·fsdp)` samples); parameters and optimizer state are replicated, except
leaves of at least `fsdp_min_size` elements, which are split along their largest dimension
divisible by the `fsdp` size. `make_train_step`'s step is jitted with these shardings, so
the step logic (and every mmreg transform inside it) is unchanged: XLA inserts the gradient
all-reduce, and the per-loss gradient stack stays distributed like the parameters it covers.

Across hosts (`jax.distributed`), each process reads only the rows of every global batch
that its own devices hold and the global array is assembled with
`jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmreg.data.batch import Batch
from mmreg.data.dataset import MultimodalDataset, batch_indices, iterate_batches

PyTree = Any
DATA_AXIS, FSDP_AXIS = "data", "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)
ENV_PREFIX = "MMREG_"
log = logging.getLogger(__name__)


class DistributedInitError(RuntimeError):
  """The multi-host runtime could not be started."""


def make_mesh(data: int = 0, fsdp: int = 1, *, devices: list[jax.Device] | None = None
              ) -> Mesh:
  """A `(data, fsdp)` mesh over `devices` (default: all devices of all processes).

  `data=0` takes every device not used by `fsdp`. The product must equal the device count.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if fsdp < 1 or data < 0:
    raise ValueError(f"mesh shape data={data}, fsdp={fsdp}: sizes must be positive "
                     "(data=0 means all remaining devices)")
  if data == 0:
    if n % fsdp:
      raise ValueError(f"mesh fsdp={fsdp} does not divide the {n} devices; pick an fsdp size "
                       f"that divides {n}")
    data = n // fsdp
  if data * fsdp != n:
    raise ValueError(f"mesh shape data={data} × fsdp={fsdp} = {data * fsdp} does not match the "
                     f"{n} available devices; set mesh.data·mesh.fsdp = {n}, or mesh.data=0 to "
                     "use all devices")
  return jax.make_mesh((data, fsdp), BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto),
                       devices=devices)


@dataclasses.dataclass(frozen=True)
class MeshPlan:
  """Shardings of the batch and of the train state on `mesh`."""

  mesh: Mesh
  fsdp_min_size: int = 2**18

  @property
  def num_batch_shards(self) -> int:
    return self.mesh.shape[DATA_AXIS] * self.mesh.shape[FSDP_AXIS]

  @property
  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P(BATCH_AXES))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def check_batch_size(self, batch_size: int) -> None:
    if batch_size % self.num_batch_shards:
      raise ValueError(
          f"batch size {batch_size} is not divisible by the {self.num_batch_shards} batch shards "
          f"of the mesh (data={self.mesh.shape[DATA_AXIS]} × fsdp={self.mesh.shape[FSDP_AXIS]}); "
          f"use a multiple of {self.num_batch_shards}, e.g. "
          f"{max(1, round(batch_size / self.num_batch_shards)) * self.num_batch_shards}")

  def leaf_sharding(self, x: Any) -> NamedSharding:
    """FSDP: split a large leaf along its largest dimension divisible by the fsdp size."""
    fsdp = self.mesh.shape[FSDP_AXIS]
    shape = np.shape(x)
    if fsdp == 1 or math.prod(shape) < self.fsdp_min_size:
      return self.replicated
    dims = sorted((d for d in range(len(shape)) if shape[d] % fsdp == 0),
                  key=lambda d: -shape[d])
    if not dims:
      return self.replicated
    spec = [None] * len(shape)
    spec[dims[0]] = FSDP_AXIS
    return NamedSharding(self.mesh, P(*spec))

  def state_shardings(self, state: PyTree) -> PyTree:
    return jax.tree.map(self.leaf_sharding, state)

  def place(self, tree: PyTree) -> PyTree:
    """Put a host (or single-device) tree, identical on every process, onto the mesh."""
    def put(x, sharding):
      value = np.asarray(x)
      return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])
    return jax.tree.map(put, tree, self.state_shardings(tree))

  def local_rows(self, batch_size: int) -> slice:
    """The rows of a global batch held by this process's devices."""
    self.check_batch_size(batch_size)
    index = self.batch_sharding.addressable_devices_indices_map((batch_size,))
    starts = [s[0].start or 0 for s in index.values()]
    stops = [batch_size if s[0].stop is None else s[0].stop for s in index.values()]
    blocks = sorted(set(zip(starts, stops, strict=True)))
    if any(a[1] != b[0] for a, b in itertools.pairwise(blocks)):
      raise ValueError("this process's devices do not hold one contiguous block of the batch; "
                       "build the mesh with make_mesh over jax.devices()")
    return slice(blocks[0][0], blocks[-1][1])

  def shard_batch(self, local_batch: Batch, batch_size: int) -> Batch:
    """Global arrays of a batch from this process's rows `local_batch` (see `local_rows`)."""
    sharding = self.batch_sharding

    def put(x):
      x = np.asarray(x)
      return jax.make_array_from_process_local_data(sharding, x, (batch_size, *x.shape[1:]))

    return jax.tree.map(put, local_batch)

  def jit_step(self, step: Callable, state: PyTree) -> Callable:
    """Jit an unjitted `step(state, batch) -> (state, metrics)` with the mesh's shardings;
    metrics come back replicated, i.e. reduced over the global batch."""
    shardings = self.state_shardings(state)
    return jax.jit(step, in_shardings=(shardings, self.batch_sharding),
                   out_shardings=(shardings, self.replicated), donate_argnums=0)


def process_batches(data: MultimodalDataset, batch_size: int, plan: MeshPlan, *, seed: int,
                    epoch: int, start: int = 0) -> Iterator[Batch]:
  """`iterate_batches` on a mesh: the same global batches, each process reading only its rows.

  The order depends only on (seed, epoch), exactly as in `mmreg.data.iterate_batches`.
  """
  rows = plan.local_rows(batch_size)
  order = batch_indices(len(data), batch_size, seed=seed, epoch=epoch, start=start)
  for batch in data.batches(index[rows] for index in order):
    yield plan.shard_batch(batch, batch_size)


def to_host(tree: PyTree) -> PyTree:
  """NumPy copies of (possibly multi-host) arrays: replicated leaves are read locally, sharded
  ones gathered from every process."""
  def get(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(x)
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(get, tree)


def wait_for_coordinator(address: str, timeout_s: float) -> None:
  """Block until something accepts TCP connections at `host:port`, at most `timeout_s`."""
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise DistributedInitError(f"coordinator address {address!r} is not host:port")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=1.0):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise DistributedInitError(
            f"the jax.distributed coordinator at {address} did not answer within {timeout_s:g}s "
            f"({e}); start process 0 first, check the address and port, or raise "
            "distributed.timeout_s") from e
      time.sleep(0.2)


def initialize_distributed(cfg: Mapping[str, Any] | None = None) -> bool:
  """Start `jax.distributed` from config keys `coordinator_address`, `num_processes`,
  `process_id`, `timeout_s` (env `MMREG_COORDINATOR_ADDRESS`, `MMREG_NUM_PROCESSES`,
  `MMREG_PROCESS_ID`, `MMREG_TIMEOUT_S` fill keys the config leaves empty).

  Returns True if a multi-process runtime is up. Must run before JAX touches a device.
  Processes other than 0 first wait (bounded) for the coordinator to accept connections, so
  a coordinator that never answers gives a DistributedInitError, not a hang; process 0 waits
  at most `timeout_s` for the others, then JAX itself aborts it. CPU collectives use gloo.
  """
  cfg = dict(cfg or {})
  for key in ("coordinator_address", "num_processes", "process_id", "timeout_s"):
    if cfg.get(key) in (None, "") and os.environ.get(ENV_PREFIX + key.upper()):
      cfg[key] = os.environ[ENV_PREFIX + key.upper()]
  num_processes = int(cfg.get("num_processes") or 1)
  if num_processes <= 1:
    return False
  if jax.distributed.is_initialized():
    return True
  address, process_id = cfg.get("coordinator_address"), cfg.get("process_id")
  if not address or process_id in (None, ""):
    raise DistributedInitError(
        f"num_processes={num_processes} needs distributed.coordinator_address (host:port of "
        f"process 0) and distributed.process_id (got {address!r}, {process_id!r})")
  timeout_s = float(cfg.get("timeout_s") or 60)
  process_id = int(process_id)
  if process_id:
    wait_for_coordinator(address, timeout_s)
  else:
    log.warning("jax.distributed: process 0 serves the coordinator at %s and waits up to %gs for "
                "%d processes; if they do not all join, JAX aborts this process with "
                "DEADLINE_EXCEEDED", address, timeout_s, num_processes)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(address, num_processes=num_processes, process_id=process_id,
                             initialization_timeout=max(1, math.ceil(timeout_s)))
  return True


@dataclasses.dataclass(frozen=True)
class Runtime:
  """How the training loop runs: on one device (`plan=None`, the plain jitted step) or on a
  mesh, possibly across processes. Only process 0 writes files (`is_writer`)."""

  plan: MeshPlan | None = None

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any]) -> Runtime:
    """Config sections `distributed` (see `initialize_distributed`) and `mesh` {data (0: all
    devices), fsdp, fsdp_min_size}. One device and no mesh request give the plain path."""
    initialize_distributed(cfg.get("distributed"))
    mesh_cfg = dict(cfg.get("mesh") or {})
    data, fsdp = int(mesh_cfg.get("data", 0)), int(mesh_cfg.get("fsdp", 1))
    if jax.device_count() == 1 and data in (0, 1) and fsdp == 1:
      return cls(None)
    return cls(MeshPlan(make_mesh(data, fsdp),
                        int(mesh_cfg.get("fsdp_min_size", MeshPlan.fsdp_min_size))))

  @property
  def is_writer(self) -> bool:
    return jax.process_index() == 0

  def check_batch_size(self, batch_size: int) -> None:
    if self.plan is not None:
      self.plan.check_batch_size(batch_size)

  def distribute(self, step: Callable, state: PyTree) -> tuple[Callable, PyTree]:
    """(jitted step, state on the devices) from an unjitted step (`make_train_step(jit=False)`)."""
    if self.plan is None:  # fresh buffers: a transform's init may alias the params
      return jax.jit(step, donate_argnums=0), jax.tree.map(jnp.copy, state)
    return self.plan.jit_step(step, state), self.plan.place(state)

  def batches(self, data: MultimodalDataset, batch_size: int, *, seed: int, epoch: int,
              start: int = 0) -> Iterator[Batch]:
    if self.plan is None:
      return iterate_batches(data, batch_size, seed=seed, epoch=epoch, start=start)
    return process_batches(data, batch_size, self.plan, seed=seed, epoch=epoch, start=start)

  def host(self, tree: PyTree) -> PyTree:
    """Host copies of step outputs (metrics, diagnostics), global over all processes."""
    return jax.device_get(tree) if self.plan is None else to_host(tree)

  def local(self, tree: PyTree) -> PyTree:
    """A tree this process can evaluate on its own (unchanged on the plain path)."""
    return tree if self.plan is None else to_host(tree)


def barrier(name: str) -> None:
  """All processes wait here (no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def broadcast_from_process_0(value: Any) -> Any:
  """Process 0's value on every process (a host pytree of scalars/arrays)."""
  if jax.process_count() == 1:
    return value
  return jax.tree.map(lambda x: np.asarray(x).item() if np.ndim(x) == 0 else np.asarray(x),
                      multihost_utils.broadcast_one_to_all(value))


__all__ = ["BATCH_AXES", "DATA_AXIS", "FSDP_AXIS", "DistributedInitError", "MeshPlan", "Runtime",
           "barrier",
           "broadcast_from_process_0", "initialize_distributed", "make_mesh", "process_batches",
           "to_host", "wait_for_coordinator"]
