"""Streamed splits (`SourceDataset` over a random-access source, read through grain) against
the in-memory path: the same rows, batches and trained parameters, in bounded memory."""

import threading
import tracemalloc
import weakref
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("av")
tfds = pytest.importorskip("tensorflow_datasets")

from test_av_builders import TINY, crema_built, crema_dir  # noqa: E402, F401

from mmreg.data import check_finite, eval_batches, iterate_batches  # noqa: E402
from mmreg.data.dataset import MultimodalDataset, Splits, check_split  # noqa: E402
from mmreg.data.registry import DATASETS, load_dataset  # noqa: E402
from mmreg.data.streaming import SourceDataset  # noqa: E402
from mmreg.train.loop import prepare_data, train_and_evaluate  # noqa: E402

# The ImageNet mean and std that mmreg/data/builders/common.py normalises frames with.
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
CONFIGS = Path(__file__).parents[1] / "experiments" / "configs"


def oracle_split(data_dir: Path, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """The examples of a prepared split in clip-id order, frames normalised and concatenated
  along channels ("stack" layout), written out example by example."""
  source = tfds.data_source("mmreg_crema_d/tiny", data_dir=str(data_dir), split=split)
  examples = sorted((source[i] for i in range(len(source))), key=lambda e: e["clip_id"])
  audio = np.stack([e["audio"] for e in examples])
  visual = np.stack([np.concatenate([(f.astype(np.float32) / np.float32(255) - MEAN) / STD
                                     for f in e["visual"]], axis=-1) for e in examples])
  return {"audio": audio, "visual": visual}, np.array([e["label"] for e in examples])


def assert_same_batch(a: dict, b: dict) -> None:
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert np.asarray(a[k]).dtype == np.asarray(b[k]).dtype, k


def test_streamed_crema_d_matches_the_numpy_oracle_and_the_in_memory_path(crema_built):  # noqa: F811
  _, data_dir = crema_built
  options = {"data_dir": str(data_dir), "config": TINY, "val_fraction": 0.5, "seed": 3}
  streamed = load_dataset("crema_d", options)
  held = load_dataset("crema_d", {**options, "streaming": False})
  assert all(isinstance(s, SourceDataset) for s in (streamed.train, streamed.val, streamed.test))
  assert all(isinstance(s, MultimodalDataset) for s in (held.train, held.val, held.test))
  for name in ("train", "val", "test"):
    s, h = getattr(streamed, name), getattr(held, name)
    assert len(s) == len(h) and s.num_classes == h.num_classes == 6
    assert s.input_shapes == h.input_shapes == {"audio": (126, 33, 1), "visual": (8, 8, 6)}
    assert s.input_dtypes == h.input_dtypes
    np.testing.assert_array_equal(s.labels, h.labels)
    np.testing.assert_array_equal(s.class_counts(), h.class_counts())
    assert_same_batch(s.take(np.arange(len(s))).as_batch(), h.as_batch())
    assert_same_batch(s.select(["visual"]).take([2, 0]).as_batch(),
                      h.select(["visual"]).take([2, 0]).as_batch())
    for (a, va), (b, vb) in zip(eval_batches(s, 4), eval_batches(h, 4), strict=True):
      assert_same_batch(a, b)
      np.testing.assert_array_equal(va, vb)
  # Test split: every example, in clip-id order, as the oracle reads it.
  inputs, labels = oracle_split(data_dir, "test")
  np.testing.assert_array_equal(streamed.test.labels, labels)
  for m, x in inputs.items():
    np.testing.assert_allclose(streamed.test.take(np.arange(6)).inputs[m], x, rtol=1e-6)
  # The release has no validation split: val and train partition the train source, each in
  # clip-id order, one sample of each class in val.
  source = tfds.data_source("mmreg_crema_d/tiny", data_dir=str(data_dir), split="train")
  ids = {name: [source[int(r)]["clip_id"] for r in getattr(streamed, name).rows]
         for name in ("train", "val")}
  assert all(v == sorted(v) for v in ids.values())
  inputs, labels = oracle_split(data_dir, "train")
  clip_ids = sorted(source[i]["clip_id"] for i in range(len(source)))
  assert sorted(ids["train"] + ids["val"]) == clip_ids
  np.testing.assert_array_equal(streamed.val.class_counts(), np.ones(6))
  for name in ("train", "val"):
    rows = [clip_ids.index(c) for c in ids[name]]
    np.testing.assert_array_equal(getattr(streamed, name).labels, labels[rows])
    for m, x in inputs.items():
      np.testing.assert_allclose(getattr(streamed, name).take(np.arange(6)).inputs[m], x[rows],
                                 rtol=1e-6)
  # Training batches: the permutation of (seed, epoch), from a resumed batch index on.
  train = streamed.train.take(np.arange(6))
  for epoch in (0, 1):
    order = np.random.default_rng((5, epoch)).permutation(6)
    got = list(iterate_batches(streamed.train, 2, seed=5, epoch=epoch, start=1))
    assert len(got) == 2
    for b, batch in enumerate(got, start=1):
      assert_same_batch(batch, train.take(order[2 * b:2 * b + 2]).as_batch())


def test_streaming_is_a_config_option_of_the_audio_visual_configs():
  from absl import flags
  from ml_collections import config_flags

  from mmreg import cli

  flag_values, argv = flags.FlagValues(), []
  config = config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
  cli.parse(flag_values, [f"--config={CONFIGS / 'audio_visual.py'}:ave",
                          "--config.data.options.streaming=false"], "", argv)
  assert config.value.data.options.streaming is False
  cli.parse(flag_values, [f"--config={CONFIGS / 'audio_visual.py'}:ave"], "", argv)
  assert config.value.data.options.streaming is True


class CountingSource:
  """Synthetic rows {"a": [5], "b": [6], "label"} that record the rows each read asks for and
  the peak number of rows handed out and still alive (tracked through weak references)."""

  def __init__(self, n: int, seed: int = 0, nan_rows: tuple[int, ...] = (),
               dtype: type = np.float32):
    rng = np.random.default_rng(seed)
    self.a = rng.normal(size=(n, 5)).astype(dtype)
    self.b = rng.normal(size=(n, 6)).astype(np.float32)
    self.a[list(nan_rows)] = np.nan if dtype == np.float32 else 0
    self.labels = (np.arange(n) % 3).astype(np.int32)
    self.calls: list[int] = []
    self.alive = self.peak = 0
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, i: int) -> dict:
    self._record(1)
    return self._row(int(i))

  def __getitems__(self, rows) -> list[dict]:
    rows = list(rows)
    self._record(len(rows))
    return [self._row(int(i)) for i in rows]

  def held(self) -> MultimodalDataset:
    return MultimodalDataset({"a": self.a, "b": self.b}, self.labels, 3)

  def _record(self, rows: int) -> None:
    with self._lock:
      self.calls.append(rows)

  def _row(self, i: int) -> dict:
    a = self.a[i].copy()
    with self._lock:
      self.alive += 1
      self.peak = max(self.peak, self.alive)
    weakref.finalize(a, self._release)
    return {"a": a, "b": self.b[i].copy(), "label": self.labels[i]}

  def _release(self) -> None:
    with self._lock:
      self.alive -= 1


def test_streamed_training_holds_a_few_batches_and_matches_in_memory(monkeypatch, tmp_path):
  sources = {name: CountingSource(n, seed) for name, n, seed in
             (("train", 240, 0), ("val", 1100, 1), ("test", 1100, 2))}

  def splits(streaming: bool = True) -> Splits:
    make = ((lambda s: SourceDataset(s, 3, chunk_size=16)) if streaming
            else (lambda s: s.held()))
    return Splits(*(make(sources[name]) for name in ("train", "val", "test")))

  monkeypatch.setitem(DATASETS, "counted", splits)
  from tests.conftest import tiny_config

  cfg = tiny_config(epochs=2)
  cfg.data.name = "counted"
  cfg.data.options = {}
  cfg.train.batch_size = 16
  # Stopped in the middle of epoch 0 (15 steps per epoch), then resumed.
  assert train_and_evaluate(cfg, tmp_path / "streamed", progress=False, max_steps=7) is None
  streamed = train_and_evaluate(cfg, tmp_path / "streamed", progress=False)
  # Training and evaluation (in batches of 512) read at most 16 rows per call (chunk_size),
  # two batches at once, and keep none of the stored rows.
  for source in sources.values():
    assert max(source.calls) <= 16 and sum(source.calls) >= 2 * len(source)
    assert source.peak <= 2 * (16 + 1)
    assert source.alive == 0
  cfg.data.options = {"streaming": False}
  held = train_and_evaluate(cfg, tmp_path / "held", progress=False)
  assert streamed["steps"] == held["steps"] == 30
  for a, b in ((held["state"].params, streamed["state"].params),
               (held["best_params"], streamed["best_params"])):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert held["test"] == streamed["test"]


def test_a_streamed_epoch_peaks_at_a_few_batches_of_memory():
  class Wide:  # 1000 rows of 10,000 float32 (40 kB), made when read: 40 MB in all
    def __len__(self) -> int:
      return 1000

    def __getitem__(self, i: int) -> dict:
      return {"x": np.full(10_000, i, np.float32), "label": i % 3}

  split = SourceDataset(Wide(), 3, chunk_size=16)
  batch_bytes = 16 * 40_000
  next(iterate_batches(split, 16, seed=0, epoch=0))  # imports grain before tracing
  order = np.random.default_rng((0, 1)).permutation(1000)
  tracemalloc.start()
  try:
    for b, batch in enumerate(iterate_batches(split, 16, seed=0, epoch=1)):
      np.testing.assert_array_equal(batch["x"][:, 0], order[16 * b:16 * b + 16])
    for b, (batch, valid) in enumerate(eval_batches(split, 16)):
      np.testing.assert_array_equal(batch["x"][valid, -1], np.arange(16 * b, 1000)[:16])
    check_finite(split, "wide")
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  # Two batches being read (each with its stored rows), the one in use and the previous one.
  assert peak < 8 * batch_bytes < 1000 * 40_000 // 5


def test_bad_rows_give_the_in_memory_error_line(monkeypatch):
  source = CountingSource(100, nan_rows=(3, 40, 97))
  streamed = SourceDataset(source, 3, chunk_size=16)
  with pytest.raises(ValueError) as held_error:
    check_finite(source.held(), "counted train split")
  assert str(held_error.value) == ("counted train split: modality 'a' has NaN/Inf in 3 samples "
                                   "(first rows [3, 40, 97]); clean or drop them")
  with pytest.raises(ValueError) as streamed_error:
    check_finite(streamed, "counted train split")
  assert str(streamed_error.value) == str(held_error.value)
  assert max(source.calls) <= 16
  clean = CountingSource(40, seed=1)
  monkeypatch.setitem(DATASETS, "counted", lambda: Splits(
      streamed, SourceDataset(clean, 3), SourceDataset(clean, 3)))
  with pytest.raises(ValueError, match=r"^counted train split: modality 'a' has NaN/Inf in 3 "
                                       r"samples \(first rows \[3, 40, 97\]\)"):
    prepare_data({"name": "counted", "options": {}})
  ints = CountingSource(40, dtype=np.int32)
  for data in (ints.held(), SourceDataset(ints, 3)):
    with pytest.raises(ValueError, match=r"^val: modality 'a' has dtype int32; the model takes "
                                         r"floating-point inputs"):
      check_split(data, clean.held(), "val")


def test_source_dataset_rejects_bad_input():
  source = CountingSource(10)
  with pytest.raises(ValueError, match="source holds no examples"):
    SourceDataset(CountingSource(0), 3)
  with pytest.raises(ValueError, match="3 labels for 10 rows; give one label per row"):
    SourceDataset(source, 3, labels=np.zeros(3, np.int32))
  with pytest.raises(ValueError, match=r"labels span \[0, 2\], outside \[0, 1\]"):
    SourceDataset(source, 2)
  with pytest.raises(ValueError, match=r"unknown modalities \['c'\]; this dataset has"):
    SourceDataset(source, 3).select(["c"])
  with pytest.raises(AttributeError, match="holds no input arrays.*streaming=False"):
    _ = SourceDataset(source, 3).inputs
  part = SourceDataset(source, 3).subset(np.array([7, 2]))
  np.testing.assert_array_equal(part.labels, source.labels[[7, 2]])
  np.testing.assert_array_equal(part.take([1, 0]).inputs["a"], source.a[[2, 7]])
  assert part.take(np.zeros(0, int)).inputs["b"].shape == (0, 6)
