"""Shared pieces of the audio-visual TFDS builders: config, features, layout checks, loading.

Examples are written as array_record and read back without TensorFlow through
`tfds.data_source` / `builder.as_data_source()` (random access; grain can wrap the same source).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import inspect
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from mmreg.data.builders import audio, video
from mmreg.data.dataset import Splits, stratified_split
from mmreg.data.streaming import SourceDataset

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
FRAME_LAYOUTS = ("stack", "time")


class ManualLayoutError(FileNotFoundError):
  """The files a builder reads from `manual_dir` are missing or not in the published layout."""


@dataclasses.dataclass(eq=False)
class AVConfig(tfds.core.BuilderConfig):
  """Preprocessing of one builder config (see `audio.py` and `video.py` for the recipes)."""

  sample_rate: int = 22050
  clip_seconds: float = 3.0
  n_fft: int = 512
  hop_length: int = 353
  num_frames: int = 2
  image_size: int = 224

  @property
  def audio_shape(self) -> tuple[int, int, int]:
    frames = audio.num_spectrogram_frames(self.sample_rate, self.clip_seconds, self.hop_length)
    return (frames, self.n_fft // 2 + 1, 1)

  @property
  def visual_shape(self) -> tuple[int, int, int, int]:
    return (self.num_frames, self.image_size, self.image_size, 3)

  def spectrogram(self, samples: np.ndarray, rate: int) -> np.ndarray:
    return audio.log_spectrogram(samples, rate, sample_rate=self.sample_rate,
                                 clip_seconds=self.clip_seconds, n_fft=self.n_fft,
                                 hop_length=self.hop_length)


def default_and_small(sample_rate: int, clip_seconds: float, num_frames: int,
                      recipe: str) -> list[AVConfig]:
  """The two configs every builder offers: `default` (224-px frames) and the CPU-sized
  `small` (64-px frames), with the same audio."""
  return [AVConfig(name=name, description=f"{prefix}{recipe}, {num_frames} frames at {size} px",
                   sample_rate=sample_rate, clip_seconds=clip_seconds, num_frames=num_frames,
                   image_size=size)
          for name, prefix, size in (("default", "", 224), ("small", "CPU-sized: ", 64))]


ConfigLike = str | AVConfig | Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Clip:
  """One example to build: its id, label index and where its audio and frames come from."""

  clip_id: str
  label: int
  audio: Path
  visual: Path


class AudioVisualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the builders: features `audio [T, F, 1] float32`, `visual [K, S, S, 3] uint8`,
  `label`, `clip_id`; subclasses list their clips per split from `manual_dir`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
  NUM_CLASSES: ClassVar[int]
  MANUAL_DOWNLOAD_INSTRUCTIONS: ClassVar[str]  # the expected manual_dir layout

  def __init__(self, *, file_format: str = "array_record", **kwargs: Any) -> None:
    super().__init__(file_format=file_format, **kwargs)

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """The builder's source file (TFDS's lookup needs the `importlib_resources` backport)."""
    return epath.Path(inspect.getfile(cls))

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "audio": tfds.features.Tensor(shape=cfg.audio_shape, dtype=np.float32),
            "visual": tfds.features.Tensor(shape=cfg.visual_shape, dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=self.NUM_CLASSES),
            "clip_id": tfds.features.Text(),
        }),
        supervised_keys=None,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = self._manual_dir(dl_manager)
    clips, class_names = self._clips(manual_dir)
    if len(class_names) != self.NUM_CLASSES:
      raise self.layout_error(f"found {len(class_names)} classes in {manual_dir}, expected "
                              f"{self.NUM_CLASSES}")
    self.info.metadata["class_names"] = list(class_names)
    for split, items in clips.items():
      if not items:
        raise self.layout_error(f"split {split!r} has no clips whose files exist under "
                                f"{manual_dir}")
    return {split: self._generate_examples(items) for split, items in clips.items()}

  def _manual_dir(self, dl_manager: tfds.download.DownloadManager) -> Path:
    try:
      return Path(dl_manager.manual_dir)
    except (AssertionError, ValueError) as e:
      problem = str(e).split(". Create it")[0]  # TFDS's message, without its copy of the layout
      raise self.layout_error(f"{problem}. Download the dataset yourself and pass its folder as "
                              "manual_dir (default: <data_dir>/downloads/manual)") from None

  @abc.abstractmethod
  def _clips(self, manual_dir: Path) -> tuple[dict[str, list[Clip]], Sequence[str]]:
    """The clips of each split whose files exist, and the class names in label order."""

  def _generate_examples(self, clips: list[Clip]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Preprocessed examples; undecodable clips are skipped with a warning (not all of them)."""
    failed = []
    for clip in clips:
      try:
        example = {"audio": self._read_audio(clip.audio), "visual": self._read_visual(clip.visual),
                   "label": clip.label, "clip_id": clip.clip_id}
      except ValueError as e:
        failed.append(str(e))
        continue
      yield clip.clip_id, example
    if len(failed) == len(clips):
      raise ValueError(f"{self.name}: none of {len(clips)} clips could be read; first error: "
                       f"{failed[0]}")
    if failed:
      logging.warning("%s: skipped %d of %d clips that could not be read (first: %s)",
                      self.name, len(failed), len(clips), failed[0])

  def _read_audio(self, path: Path) -> np.ndarray:
    cfg = self.builder_config
    if path.suffix.lower() == ".wav":
      samples, rate = audio.read_wav(path)
    else:
      samples, rate = video.read_video_audio(path)
    return cfg.spectrogram(samples, rate)

  def _read_visual(self, path: Path) -> np.ndarray:
    cfg = self.builder_config
    if path.is_dir():
      return video.read_frame_folder(path, cfg.num_frames, cfg.image_size)
    return video.read_video_frames(path, cfg.num_frames, cfg.image_size)

  def layout_error(self, problem: str) -> ManualLayoutError:
    return ManualLayoutError(f"{self.name}: {problem}.\nExpected layout:\n"
                             f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")

  def missing_layout(self, manual_dir: Path, missing: Sequence[str]) -> ManualLayoutError:
    shown = ", ".join(str(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
    return self.layout_error(f"missing under {manual_dir}: {shown}")


def index_files(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
  """Map file stem → path for files with the given suffixes anywhere under `folder`."""
  if not folder.is_dir():
    return {}
  return {p.stem: p for p in sorted(folder.rglob("*")) if p.suffix.lower() in suffixes}


def index_dirs(folder: Path) -> dict[str, Path]:
  """Map clip id → frame folder for the sub-folders of `folder` that hold images."""
  if not folder.is_dir():
    return {}
  return {p.name: p for p in sorted(folder.rglob("*")) if p.is_dir() and any(
      q.suffix.lower() in video.FRAME_SUFFIXES for q in p.iterdir())}


def frames_to_model_input(frames: np.ndarray, layout: str) -> np.ndarray:
  """uint8 `[N, K, S, S, 3]` → ImageNet-normalised float32, `[N, S, S, 3K]` ("stack": frames
  along channels, fits any 2-D conv encoder) or `[N, K, S, S, 3]` ("time")."""
  if layout not in FRAME_LAYOUTS:
    raise ValueError(f"unknown frames layout {layout!r}; valid layouts: {list(FRAME_LAYOUTS)}")
  x = (frames.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
  if layout == "stack":
    n, k, s, _, c = x.shape
    x = x.transpose(0, 2, 3, 1, 4).reshape(n, s, s, k * c)
  return x


def model_example(example: Mapping[str, Any], frames: str) -> dict[str, Any]:
  """One stored example as the model takes it: audio as stored, frames through
  `frames_to_model_input`, the label; the clip id is dropped."""
  return {"audio": example["audio"],
          "visual": frames_to_model_input(example["visual"][None], frames)[0],
          "label": np.int32(example["label"])}


def clip_order(source: Any, chunk_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
  """(the permutation that puts a data source's examples in clip-id order, their labels in that
  order), read in one pass of `chunk_size` examples at a time."""
  ids, labels = [], []
  for lo in range(0, len(source), chunk_size):
    for e in source.__getitems__(range(lo, min(lo + chunk_size, len(source)))):
      ids.append(e["clip_id"].decode() if isinstance(e["clip_id"], bytes) else str(e["clip_id"]))
      labels.append(int(e["label"]))
  order = np.argsort(ids, kind="stable")
  return order, np.asarray(labels, np.int32)[order]


def load_splits(builder_cls: type[AudioVisualBuilder], *, data_dir: str | Path,
                manual_dir: str | Path | None = None, config: ConfigLike = "default",
                frames: str = "stack", val_fraction: float = 0.1, seed: int = 0,
                streaming: bool = True) -> Splits:
  """Build the dataset if `data_dir` does not hold it yet, then read it TF-free into `Splits`.

  Modalities: "audio" `[T, F, 1]` log spectrogram, "visual" frames (see
  `frames_to_model_input`). Releases without a validation split get one carved from train,
  stratified by class, with `seed`. `config` names one of the builder's configs ("default":
  the literature's sizes, "small": 64-px frames for CPU runs) or gives an `AVConfig` (or the
  dict of its fields, as JSON configs do). An empty `manual_dir` means TFDS's default,
  `<data_dir>/downloads/manual`.

  `streaming=True` (the default: CREMA-D at the default size is about 10 GB as float32) gives
  `SourceDataset` splits over the array_record files, which hold only labels and row indices
  and read a few batches at a time; `streaming=False` reads every split into a
  `MultimodalDataset`. Both give the same rows in the same (clip-id) order, so training on
  either gives the same parameters.
  """
  if isinstance(config, Mapping):
    config = AVConfig(**config)
  builder = builder_cls(data_dir=str(Path(data_dir).expanduser()), config=config)
  if not builder.is_prepared():
    download_config = tfds.download.DownloadConfig(
        manual_dir=str(Path(manual_dir).expanduser()) if manual_dir else None)
    builder.download_and_prepare(download_config=download_config)
  parts: dict[str, Any] = {}
  for split, source in builder.as_data_source().items():
    order, labels = clip_order(source)
    parts[split] = SourceDataset(source, builder_cls.NUM_CLASSES,
                                 transform=functools.partial(model_example, frames=frames),
                                 rows=order, labels=labels)
  if "validation" not in parts:
    train = parts["train"]
    train_idx, val_idx = stratified_split(train.labels, (1 - val_fraction, val_fraction), seed)
    parts["train"], parts["validation"] = (train.subset(np.sort(train_idx)),
                                           train.subset(np.sort(val_idx)))
  if not streaming:
    parts = {split: part.take(np.arange(len(part))) for split, part in parts.items()}
  return Splits(parts["train"], parts["validation"], parts["test"])
