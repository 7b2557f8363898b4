"""AVE, Audio-Visual Event localisation (Tian et al., ECCV 2018): 4,143 10-s YouTube clips of
28 event classes, used as a clip classification benchmark by OGM-GE / BalanceBenchmark.

Labels are the indices of the sorted category names (as OGM-GE does); clips annotated with more
than one category in a split file are dropped (OGM-GE drops them too). Audio: 16 kHz, 10 s,
n_fft 512, hop 353; 3 frames per clip.
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

NUM_CLASSES = 28
SPLITS = {"train": "trainSet.txt", "validation": "valSet.txt", "test": "testSet.txt"}

LAYOUT = """\
  <manual_dir>/                the unzipped AVE_Dataset folder
    Annotations.txt            `Category&VideoID&Quality&StartTime&EndTime` per line
    trainSet.txt, valSet.txt, testSet.txt   the same format, one split each
    AVE/<VideoID>.mp4          the videos (with their audio track); or
    audio/<VideoID>.wav + visual/<VideoID>/*.jpg   audio and frames pre-extracted by
                               OGM-GE's scripts (used for clips without a video)"""


class MmregAve(AudioVisualBuilder):
  """AVE audio-visual event classification (28 classes), read from the published layout."""

  name = "mmreg_ave"
  NUM_CLASSES = NUM_CLASSES
  MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT
  BUILDER_CONFIGS = default_and_small(16000, 10.0, 3, "16 kHz, 10 s")

  def _clips(self, manual_dir: Path):
    if not (manual_dir / "Annotations.txt").exists() and (manual_dir / "AVE_Dataset").is_dir():
      manual_dir = manual_dir / "AVE_Dataset"
    required = ["Annotations.txt", *SPLITS.values()]
    missing = [name for name in required if not (manual_dir / name).exists()]
    videos = {video_id_of(stem): path
              for stem, path in index_files(manual_dir / "AVE", (".mp4",)).items()}
    wavs = index_files(manual_dir / "audio", (".wav",))
    frames = index_dirs(manual_dir / "visual")
    if not videos and not (wavs and frames):
      missing.append("AVE/<VideoID>.mp4 (or audio/<VideoID>.wav + visual/<VideoID>/)")
    if missing:
      raise self.missing_layout(manual_dir, missing)
    class_names = sorted({c for c, _ in read_annotations(manual_dir / "Annotations.txt")})
    clips = {}
    for split, file_name in SPLITS.items():
      categories: dict[str, set[str]] = {}
      for category, video_id in read_annotations(manual_dir / file_name):
        if category not in class_names:
          raise ManualLayoutError(f"{manual_dir / file_name}: category {category!r} is not in "
                                  "Annotations.txt")
        categories.setdefault(video_id, set()).add(category)
      clips[split], skipped = [], []
      for video_id, cats in categories.items():
        video = videos.get(video_id)
        sound, visual = (video, video) if video else (wavs.get(video_id), frames.get(video_id))
        if len(cats) > 1:
          continue
        if sound is None or visual is None:
          skipped.append(video_id)
          continue
        clips[split].append(Clip(video_id, class_names.index(cats.pop()), sound, visual))
      if skipped:
        logging.warning("%s: %d %s clips have no files and are skipped (first: %s)", self.name,
                        len(skipped), split, skipped[:3])
    return clips, class_names


def video_id_of(stem: str) -> str:
  """Video files are named `<VideoID>.mp4`, or after the whole annotation `Cat&VideoID&...`."""
  return stem.split("&")[1] if "&" in stem else stem


def read_annotations(path: Path) -> list[tuple[str, str]]:
  """(category, video id) rows of an AVE annotation file, skipping its header line."""
  rows = []
  for line_no, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
    fields = line.strip().split("&")
    if not line.strip() or fields[0] == "Category":
      continue
    if len(fields) != 5:
      raise ManualLayoutError(f"{path}:{line_no}: expected Category&VideoID&Quality&Start&End, "
                              f"got {line!r}")
    rows.append((fields[0], fields[1]))
  return rows


def load_ave(data_dir: str, manual_dir: str | None = None, config: ConfigLike = "default",
             frames: str = "stack", val_fraction: float = 0.1, seed: int = 0,
             streaming: bool = True) -> Splits:
  """AVE splits (modalities "audio", "visual"; 28 classes), built on first use; streamed
  unless `streaming=False` (see `load_splits`)."""
  return load_splits(MmregAve, data_dir=data_dir, manual_dir=manual_dir, config=config,
                     frames=frames, val_fraction=val_fraction, seed=seed,
                     streaming=streaming)
