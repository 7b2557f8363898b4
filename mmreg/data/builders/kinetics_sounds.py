"""Kinetics-Sounds (Arandjelović & Zisserman, ICCV 2017): the Kinetics-400 clips of 31 classes
whose sound is informative, as used by OGM-GE / BalanceBenchmark (10 s clips).

Audio: 16 kHz, 10 s, n_fft 512, hop 353 (OGM-GE's STFT; its KS code uses 128-bin Kaldi fbanks
instead — one spectrogram recipe is kept for all three datasets); 3 frames per clip.
"""

from __future__ import annotations

from pathlib import Path

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
from mmreg.data.dataset import Splits

NUM_CLASSES = 31
SPLITS = {"train": "my_train.txt", "validation": "my_val.txt", "test": "my_test.txt"}
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi")

LAYOUT = """\
  <manual_dir>/
    class_list.txt             the 31 class names, one per line; line i is label i
    my_train.txt, my_test.txt  OGM-GE / BalanceBenchmark split files, one clip per line:
                               `<clip>,<frames>,<label>` or `<clip> <label>`, where <label>
                               is a class index or a class name from class_list.txt
    my_val.txt                 optional validation split in the same format
    videos/**/<clip>.mp4       the Kinetics clips (any sub-folders, e.g. per class); or
    audio/<clip>.wav + visual/<clip>/*.jpg   audio and frames pre-extracted by OGM-GE's
                               scripts (used for clips without a video)"""


class MmregKineticsSounds(AudioVisualBuilder):
  """Kinetics-Sounds audio-visual action recognition (31 classes), from a user's Kinetics copy."""

  name = "mmreg_kinetics_sounds"
  NUM_CLASSES = NUM_CLASSES
  MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT
  BUILDER_CONFIGS = default_and_small(16000, 10.0, 3, "16 kHz, 10 s")

  def _clips(self, manual_dir: Path):
    class_file = manual_dir / "class_list.txt"
    required = [class_file, manual_dir / SPLITS["train"], manual_dir / SPLITS["test"]]
    missing = [p.name for p in required if not p.exists()]
    videos = index_files(manual_dir / "videos", VIDEO_SUFFIXES)
    wavs = index_files(manual_dir / "audio", (".wav",))
    frames = index_dirs(manual_dir / "visual")
    if not videos and not (wavs and frames):
      missing.append("videos/**/<clip>.mp4 (or audio/<clip>.wav + visual/<clip>/)")
    if missing:
      raise self.missing_layout(manual_dir, missing)
    class_names = [c.strip() for c in class_file.read_text().splitlines() if c.strip()]
    clips = {}
    for split, file_name in SPLITS.items():
      if not (manual_dir / file_name).exists():
        continue
      clips[split], skipped = [], []
      for clip_id, label in read_split_file(manual_dir / file_name, class_names):
        video = videos.get(clip_id)
        sound, visual = (video, video) if video else (wavs.get(clip_id), frames.get(clip_id))
        if sound is None or visual is None:
          skipped.append(clip_id)
          continue
        clips[split].append(Clip(clip_id, label, sound, visual))
      if skipped:
        logging.warning("%s: %d %s clips have no files and are skipped (first: %s)", self.name,
                        len(skipped), split, skipped[:3])
    return clips, class_names


def read_split_file(path: Path, class_names: list[str]) -> list[tuple[str, int]]:
  """(clip id, label index) rows of a split file; labels may be indices or class names."""
  rows = []
  for line_no, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    fields = [f.strip() for f in (line.split(",") if "," in line else line.split())]
    label = fields[-1]
    if label.isdigit() and int(label) < len(class_names):
      index = int(label)
    elif label in class_names:
      index = class_names.index(label)
    else:
      raise ManualLayoutError(f"{path}:{line_no}: label {label!r} is neither an index below "
                              f"{len(class_names)} nor a name in class_list.txt")
    clip = Path(fields[0])
    rows.append((clip.stem if clip.suffix.lower() in (*VIDEO_SUFFIXES, ".wav") else clip.name,
                 index))
  return rows


def load_kinetics_sounds(data_dir: str, manual_dir: str | None = None,
                         config: ConfigLike = "default", frames: str = "stack",
                         val_fraction: float = 0.1, seed: int = 0,
                         streaming: bool = True) -> Splits:
  """Kinetics-Sounds splits (modalities "audio", "visual"; 31 classes), built on first use;
  streamed unless `streaming=False` (see `load_splits`)."""
  return load_splits(MmregKineticsSounds, data_dir=data_dir, manual_dir=manual_dir,
                     config=config, frames=frames, val_fraction=val_fraction, seed=seed,
                     streaming=streaming)
