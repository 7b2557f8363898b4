"""Splits read on demand from a random-access source, with grain's threaded prefetch."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mmreg.data.batch import LABEL, Batch
from mmreg.data.dataset import MultimodalDataset, check_labels

if TYPE_CHECKING:
  import grain

Example = Mapping[str, Any]


class SourceDataset:
  """One split whose rows stay in `source` (`len(source)`, `source[i]`, optionally the batched
  `source.__getitems__(rows)`: e.g. `tfds.data_source(...)` or `builder.as_data_source()[split]`)
  until a batch needs them.

  `transform` turns one stored example into `{modality: array, "label": int}` (per sample, no
  batch axis; other keys dropped). `rows` picks and orders the source's examples (an index
  permutation or subset, never a copy of the data); `labels` are those rows' labels, read in
  one chunked pass when not given. The labels and `rows` (O(N) integers) are all a split holds;
  the source is read `chunk_size` rows at a time.

  It offers what training and evaluation use of a `MultimodalDataset` (`len`, `modalities`,
  `input_shapes`, `input_dtypes`, `num_classes`, `labels`, `class_counts`, `select`, `present`
  = None); `take(index)` reads just those rows into a `MultimodalDataset`, and `batches` reads
  a sequence of index batches in order through a `grain.MapDataset` with `read_options`
  (default: 2 threads, 2 batches prefetched), so at most a few batches are in memory.
  """

  present = None

  def __init__(self, source: Any, num_classes: int, *,
               transform: Callable[[Any], Example] = dict, rows: np.ndarray | None = None,
               labels: np.ndarray | None = None,
               read_options: grain.ReadOptions | None = None,
               chunk_size: int = 64) -> None:
    if len(source) == 0:
      raise ValueError("the source holds no examples; a SourceDataset needs at least one to "
                       "learn the modalities and shapes")
    if chunk_size < 1:
      raise ValueError(f"chunk_size={chunk_size} must be a positive number of rows")
    self.source, self.num_classes, self.transform = source, num_classes, transform
    self.rows = np.arange(len(source)) if rows is None else np.asarray(rows, np.int64)
    self.read_options, self.chunk_size = read_options, chunk_size
    first = transform(source[int(self.rows[0]) if len(self.rows) else 0])
    self._spec = {m: (tuple(np.shape(x)), np.asarray(x).dtype)
                  for m, x in first.items() if m != LABEL}
    self.modalities: tuple[str, ...] = tuple(self._spec)
    if labels is None:
      labels = np.asarray([int(transform(e)[LABEL]) for chunk in self._row_chunks()
                           for e in self._stored(chunk)], np.int32)
    self.labels = np.asarray(labels)
    if len(self.labels) != len(self.rows):
      raise ValueError(f"{len(self.labels)} labels for {len(self.rows)} rows; give one label "
                       "per row")
    check_labels(self.labels, num_classes)

  def __len__(self) -> int:
    return len(self.rows)

  def __repr__(self) -> str:
    return (f"SourceDataset({len(self)} rows of {type(self.source).__name__}, modalities "
            f"{list(self.modalities)}, {self.num_classes} classes)")

  @property
  def inputs(self) -> Mapping[str, np.ndarray]:
    raise AttributeError("a SourceDataset holds no input arrays (its rows stay in the source); "
                         "read rows with take(index) or batches(...), or load the split with "
                         "streaming=False to hold it in memory")

  @property
  def input_shapes(self) -> dict[str, tuple[int, ...]]:
    return {m: self._spec[m][0] for m in self.modalities}

  @property
  def input_dtypes(self) -> dict[str, np.dtype]:
    return {m: self._spec[m][1] for m in self.modalities}

  def class_counts(self) -> np.ndarray:
    return np.bincount(self.labels, minlength=self.num_classes)

  def subset(self, index: np.ndarray) -> SourceDataset:
    """The rows `index` (positions in this split), still streamed."""
    index = np.asarray(index)
    return self._derive(rows=self.rows[index], labels=self.labels[index])

  def select(self, modalities: tuple[str, ...] | list[str]) -> SourceDataset:
    """The same rows restricted to some modalities."""
    unknown = [m for m in modalities if m not in self._spec]
    if unknown:
      raise ValueError(f"unknown modalities {unknown}; this dataset has {list(self.modalities)}")
    return self._derive(modalities=tuple(modalities))

  def take(self, index: np.ndarray) -> MultimodalDataset:
    """The rows `index` (positions in this split), read into memory: each distinct row is read
    (`chunk_size` rows per read) and transformed once, straight into the output arrays."""
    index = np.asarray(index, np.int64)
    rows, repeats = np.unique(self.rows[index], return_inverse=True)  # padding repeats rows
    positions: list[list[int]] = [[] for _ in rows]
    for position, j in enumerate(repeats.ravel()):
      positions[j].append(position)
    inputs = {m: np.empty((len(index), *self._spec[m][0]), self._spec[m][1])
              for m in self.modalities}
    for lo in range(0, len(rows), self.chunk_size):  # one chunk of stored rows alive at a time
      for example, where in zip(self._stored(rows[lo:lo + self.chunk_size]),
                                positions[lo:lo + self.chunk_size], strict=True):
        example = self.transform(example)
        for m, x in inputs.items():
          x[where] = example[m]
    return MultimodalDataset(inputs, self.labels[index], self.num_classes)

  def batches(self, indices: Iterable[np.ndarray]) -> Iterator[Batch]:
    """`take(i).as_batch()` for each index array `i`, in order, read ahead by grain threads."""
    import grain

    indices = list(indices)
    if not indices:
      return
    options = self.read_options or grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)
    pipeline = grain.MapDataset.source(indices).map(lambda i: self.take(i).as_batch())
    iterator = iter(pipeline.to_iter_dataset(options))
    try:
      yield from iterator
    finally:
      iterator.close()

  def chunks(self) -> Iterator[tuple[int, Mapping[str, np.ndarray]]]:
    """(first row, `{modality: rows}`) over the whole split, `chunk_size` rows at a time."""
    starts = range(0, len(self), self.chunk_size)
    bounds = [np.arange(lo, min(lo + self.chunk_size, len(self))) for lo in starts]
    for lo, batch in zip(starts, self.batches(bounds), strict=True):
      yield lo, {m: batch[m] for m in self.modalities}

  def _row_chunks(self) -> Iterator[np.ndarray]:
    for lo in range(0, len(self.rows), self.chunk_size):
      yield self.rows[lo:lo + self.chunk_size]

  def _stored(self, rows: np.ndarray) -> list[Any]:
    """The stored examples at source positions `rows`, in one batched read if offered."""
    rows = [int(r) for r in rows]
    read_many = getattr(self.source, "__getitems__", None)
    return read_many(rows) if read_many is not None and rows else [self.source[r] for r in rows]

  def _derive(self, **changes: Any) -> SourceDataset:
    derived = copy.copy(self)
    vars(derived).update(changes)
    return derived
