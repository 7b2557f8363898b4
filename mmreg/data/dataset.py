"""In-memory multimodal datasets, stratified splits and standardisation."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from mmreg.data.batch import LABEL, PRESENT, Batch


@dataclasses.dataclass(frozen=True)
class MultimodalDataset:
  """Arrays of one split: `inputs[m]` is `[N, *shape_m]`, `labels` is `[N]` int."""

  inputs: Mapping[str, np.ndarray]
  labels: np.ndarray
  num_classes: int
  present: Mapping[str, np.ndarray] | None = None

  def __post_init__(self) -> None:
    n = len(self.labels)
    for m, x in self.inputs.items():
      if len(x) != n:
        raise ValueError(f"modality {m!r} has {len(x)} samples but there are {n} labels")
    check_labels(self.labels, self.num_classes)

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def modalities(self) -> tuple[str, ...]:
    return tuple(self.inputs)

  @property
  def input_shapes(self) -> dict[str, tuple[int, ...]]:
    return {m: tuple(x.shape[1:]) for m, x in self.inputs.items()}

  @property
  def input_dtypes(self) -> dict[str, np.dtype]:
    return {m: x.dtype for m, x in self.inputs.items()}

  def take(self, index: np.ndarray) -> MultimodalDataset:
    present = None if self.present is None else {m: p[index] for m, p in self.present.items()}
    return MultimodalDataset({m: x[index] for m, x in self.inputs.items()}, self.labels[index],
                             self.num_classes, present)

  def select(self, modalities: tuple[str, ...] | list[str]) -> MultimodalDataset:
    """The same samples restricted to some modalities."""
    unknown = [m for m in modalities if m not in self.inputs]
    if unknown:
      raise ValueError(f"unknown modalities {unknown}; this dataset has {list(self.inputs)}")
    present = None if self.present is None else {
        m: p for m, p in self.present.items() if m in modalities}
    return MultimodalDataset({m: self.inputs[m] for m in modalities}, self.labels,
                             self.num_classes, present)

  def replace(self, **changes) -> MultimodalDataset:
    return dataclasses.replace(self, **changes)

  def as_batch(self) -> Batch:
    batch: Batch = dict(self.inputs)
    batch[LABEL] = self.labels
    if self.present is not None:
      batch[PRESENT] = dict(self.present)
    return batch

  def class_counts(self) -> np.ndarray:
    return np.bincount(self.labels, minlength=self.num_classes)

  def batches(self, indices: Iterable[np.ndarray]) -> Iterator[Batch]:
    """`take(i).as_batch()` for each index array `i`, in order."""
    return (self.take(i).as_batch() for i in indices)

  def chunks(self) -> Iterator[tuple[int, Mapping[str, np.ndarray]]]:
    """(first row, `{modality: rows}`) over the whole split: here one chunk, no copy."""
    yield 0, self.inputs


def check_labels(labels: np.ndarray, num_classes: int) -> None:
  """Raise unless `labels` are integers in [0, num_classes)."""
  if len(labels) and not np.issubdtype(np.asarray(labels).dtype, np.integer):
    raise ValueError(f"labels have dtype {np.asarray(labels).dtype}; class labels must be "
                     "integers: pass labels.astype(np.int32)")
  if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels span [{labels.min()}, {labels.max()}], outside "
                     f"[0, {num_classes - 1}]")


@dataclasses.dataclass(frozen=True)
class Splits:
  train: MultimodalDataset
  val: MultimodalDataset
  test: MultimodalDataset

  def map(self, fn) -> Splits:
    return Splits(fn(self.train), fn(self.val), fn(self.test))

  def select(self, modalities) -> Splits:
    return self.map(lambda d: d.select(tuple(modalities)))


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int
                     ) -> list[np.ndarray]:
  """Split indices class by class into parts of the given fractions (summing to 1)."""
  if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
    raise ValueError(f"split fractions {fractions} must be non-negative and sum to 1")
  rng = np.random.default_rng(seed)
  parts: list[list[np.ndarray]] = [[] for _ in fractions]
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    bounds = np.round(np.cumsum(fractions) * len(idx)).astype(int)
    for i, chunk in enumerate(np.split(idx, bounds[:-1])):
      parts[i].append(chunk)
  return [rng.permutation(np.concatenate(p)) for p in parts]


def split_dataset(data: MultimodalDataset, *, val_fraction: float, test_fraction: float,
                  seed: int) -> Splits:
  train_idx, val_idx, test_idx = stratified_split(
      data.labels, (1 - val_fraction - test_fraction, val_fraction, test_fraction), seed)
  return Splits(data.take(train_idx), data.take(val_idx), data.take(test_idx))


def standardize(splits: Splits, eps: float = 1e-6) -> Splits:
  """Zero mean, unit variance per feature, with statistics fitted on train only."""
  stats = {m: (x.mean(axis=0), x.std(axis=0) + eps) for m, x in splits.train.inputs.items()}

  def apply(d: MultimodalDataset) -> MultimodalDataset:
    return d.replace(inputs={m: ((x - stats[m][0]) / stats[m][1]).astype(np.float32)
                             for m, x in d.inputs.items()})

  return splits.map(apply)


def check_finite(data: MultimodalDataset, source: str) -> None:
  """Raise if any modality holds NaN/Inf, naming the modality and the sample count; reads the
  split chunk by chunk (`data.chunks()`), so a streamed split stays out of memory."""
  bad: dict[str, list[np.ndarray]] = {m: [] for m in data.modalities}
  for lo, chunk in data.chunks():
    for m, x in chunk.items():
      bad[m].append(lo + np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
  for m, rows in bad.items():
    rows = np.concatenate(rows) if rows else np.zeros(0, int)
    if rows.size:
      raise ValueError(f"{source}: modality {m!r} has NaN/Inf in {rows.size} samples "
                       f"(first rows {rows[:5].tolist()}); clean or drop them")


def check_split(data: MultimodalDataset, reference: MultimodalDataset, source: str) -> None:
  """Raise if `data` does not fit a model built for `reference` (the train split): the same
  modalities, per-sample shapes and class count, floating-point inputs, and presence masks
  (if any) of one bool per sample that leave every sample at least one modality."""
  if data.modalities != reference.modalities:
    raise ValueError(f"{source}: modalities {list(data.modalities)} differ from the train "
                     f"split's {list(reference.modalities)}; every split needs the same ones")
  for m, shape in data.input_shapes.items():
    if shape != reference.input_shapes[m]:
      raise ValueError(f"{source}: modality {m!r} has per-sample shape {shape}, the model is "
                       f"built for the train split's {reference.input_shapes[m]}; give every "
                       "split the same features")
    if not np.issubdtype(data.input_dtypes[m], np.floating):
      raise ValueError(f"{source}: modality {m!r} has dtype {data.input_dtypes[m]}; the model "
                       "takes floating-point inputs: convert with .astype(np.float32)")
  if data.num_classes != reference.num_classes:
    raise ValueError(f"{source}: {data.num_classes} classes, the train split has "
                     f"{reference.num_classes}; every split needs the same class count")
  if data.present is None:
    return
  unknown = sorted(set(data.present) - set(data.modalities))
  if unknown:
    raise ValueError(f"{source}: presence mask names unknown modalities {unknown}; "
                     f"valid: {list(data.modalities)}")
  for m, mask in data.present.items():
    if np.shape(mask) != (len(data),) or np.asarray(mask).dtype != np.bool_:
      raise ValueError(f"{source}: presence mask of {m!r} has shape {np.shape(mask)} and dtype "
                       f"{np.asarray(mask).dtype}; it needs one bool per sample, ({len(data)},)")
  present = np.stack([np.asarray(data.present.get(m, np.ones(len(data), bool)))
                      for m in data.modalities])
  empty = np.flatnonzero(~present.any(axis=0))
  if empty.size:
    raise ValueError(f"{source}: {empty.size} samples (rows {empty[:5].tolist()}) have every "
                     "modality marked missing in the presence mask; drop them or mark one "
                     "modality present")


def iterate_batches(data: MultimodalDataset, batch_size: int, *, seed: int, epoch: int,
                    start: int = 0) -> Iterator[Batch]:
  """Shuffled full batches of one epoch, from batch index `start` on.

  The order depends only on (seed, epoch), so a run resumed at (epoch, start) sees
  exactly the batches an uninterrupted run would. The incomplete last batch is dropped
  so every step has the same shapes.
  """
  yield from data.batches(batch_indices(len(data), batch_size, seed=seed, epoch=epoch,
                                        start=start))


def batch_indices(num_samples: int, batch_size: int, *, seed: int, epoch: int, start: int = 0
                  ) -> Iterator[np.ndarray]:
  """The sample indices of each batch of `iterate_batches`, from batch index `start` on."""
  if batch_size > num_samples:
    raise ValueError(f"batch_size {batch_size} exceeds the {num_samples} training samples")
  order = np.random.default_rng((seed, epoch)).permutation(num_samples)
  for b in range(start, steps_per_epoch(num_samples, batch_size)):
    yield order[b * batch_size:(b + 1) * batch_size]


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
  return num_samples // batch_size


def eval_batches(data: MultimodalDataset, batch_size: int) -> Iterator[tuple[Batch, np.ndarray]]:
  """Batches in order, the last padded to full size; yields (batch, valid mask)."""
  n = len(data)
  valid = [np.arange(lo, lo + batch_size) < n for lo in range(0, n, batch_size)]
  index = [np.where(v, np.arange(lo, lo + batch_size), n - 1)
           for lo, v in zip(range(0, n, batch_size), valid, strict=True)]
  yield from zip(data.batches(index), valid, strict=True)
