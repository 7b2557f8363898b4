"""CREMA-D (Cao et al., IEEE TAC 2014): 7,442 acted clips of 91 actors, 6 emotions, audio + video.

Audio follows OGM-GE's CREMA-D recipe (22050 Hz, 3 s, n_fft 512, hop 353 → 188 × 257); the
split is OGM-GE's / BalanceBenchmark's `train.csv` / `test.csv` when present in `manual_dir`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from absl import logging

from mmreg.data.builders.common import (
  AudioVisualBuilder,
  Clip,
  ConfigLike,
  ManualLayoutError,
  default_and_small,
  index_dirs,
  index_files,
  load_splits,
)
from mmreg.data.dataset import Splits, stratified_split

EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")  # OGM-GE's class order
TEST_FRACTION = 0.1
SPLIT_SEED = 0

LAYOUT = """\
  <manual_dir>/
    AudioWAV/<clip>.wav        the published release, e.g. AudioWAV/1001_DFA_ANG_XX.wav
    VideoFlash/<clip>.flv      the published release (or visual/<clip>/*.jpg: frames
                               pre-extracted by OGM-GE's scripts, used when no .flv exists)
    train.csv, test.csv        optional: OGM-GE / BalanceBenchmark split files, one
                               `<clip>,<EMOTION>` per line; without them a stratified
                               90/10 split of all clips (seed 0) is used
  Clip names are ActorID_Sentence_Emotion_Level; emotions NEU HAP SAD FEA DIS ANG."""


class MmregCremaD(AudioVisualBuilder):
  """CREMA-D audio-visual emotion recognition (6 classes), read from the published layout."""

  name = "mmreg_crema_d"
  NUM_CLASSES = len(EMOTIONS)
  MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT
  BUILDER_CONFIGS = default_and_small(22050, 3.0, 2, "OGM-GE recipe: 22050 Hz, 3 s")

  def _clips(self, manual_dir: Path):
    wavs = index_files(manual_dir / "AudioWAV", (".wav",))
    videos = index_files(manual_dir / "VideoFlash", (".flv", ".mp4"))
    frames = index_dirs(manual_dir / "visual")
    if not wavs or not (videos or frames):
      missing = [str(p) for p, found in ((Path("AudioWAV/*.wav"), wavs),
                                         (Path("VideoFlash/*.flv"), videos or frames)) if not found]
      raise self.missing_layout(manual_dir, missing)
    splits = self._split_ids(manual_dir, sorted(wavs))
    clips: dict[str, list[Clip]] = {}
    for split, items in splits.items():
      clips[split], skipped = [], []
      for clip_id, emotion in items:
        visual = videos.get(clip_id) or frames.get(clip_id)
        if clip_id not in wavs or visual is None:
          skipped.append(clip_id)
          continue
        clips[split].append(Clip(clip_id, EMOTIONS.index(emotion), wavs[clip_id], visual))
      if skipped:
        logging.warning("%s: %d %s clips lack a WAV or a video and are skipped (first: %s)",
                        self.name, len(skipped), split, skipped[:3])
    return clips, EMOTIONS

  def _split_ids(self, manual_dir: Path, clip_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    files = {split: manual_dir / f"{split}.csv" for split in ("train", "test")}
    present = [p.exists() for p in files.values()]
    if all(present):
      return {split: read_split_csv(path) for split, path in files.items()}
    if any(present):
      raise self.missing_layout(manual_dir, [str(p.name) for p in files.values()
                                             if not p.exists()])
    labelled = [(c, emotion_of(c)) for c in clip_ids]
    labels = np.array([EMOTIONS.index(e) for _, e in labelled])
    train, test = stratified_split(labels, (1 - TEST_FRACTION, TEST_FRACTION), SPLIT_SEED)
    return {"train": [labelled[i] for i in np.sort(train)],
            "test": [labelled[i] for i in np.sort(test)]}


def emotion_of(clip_id: str) -> str:
  """The emotion code of a CREMA-D clip name ActorID_Sentence_Emotion_Level."""
  parts = clip_id.split("_")
  if len(parts) != 4 or parts[2] not in EMOTIONS:
    raise ManualLayoutError(f"CREMA-D clip name {clip_id!r} is not ActorID_Sentence_Emotion_Level "
                            f"with an emotion in {EMOTIONS}")
  return parts[2]


def read_split_csv(path: Path) -> list[tuple[str, str]]:
  """Rows `<clip>,<EMOTION>` of an OGM-GE split file."""
  rows = []
  with open(path, encoding="utf-8-sig") as f:
    for line, row in enumerate(csv.reader(f), 1):
      if not row:
        continue
      if len(row) < 2 or row[1].strip() not in EMOTIONS:
        raise ManualLayoutError(f"{path}:{line}: expected `<clip>,<EMOTION>` with an emotion in "
                                f"{EMOTIONS}, got {row}")
      rows.append((Path(row[0].strip()).stem, row[1].strip()))
  return rows


def load_crema_d(data_dir: str, manual_dir: str | None = None, config: ConfigLike = "default",
                 frames: str = "stack", val_fraction: float = 0.1, seed: int = 0,
                 streaming: bool = True) -> Splits:
  """CREMA-D splits (modalities "audio", "visual"; 6 classes), building them on first
  use; streamed unless `streaming=False` (see `load_splits`)."""
  return load_splits(MmregCremaD, data_dir=data_dir, manual_dir=manual_dir, config=config,
                     frames=frames, val_fraction=val_fraction, seed=seed,
                     streaming=streaming)
