"""Audio-visual TFDS builders on tiny fake files laid out like the real releases."""

import wave
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
tfds = pytest.importorskip("tensorflow_datasets")

from mmreg.data import builders  # noqa: E402
from mmreg.data.builders import AVConfig, ManualLayoutError  # noqa: E402
from mmreg.data.registry import load_dataset  # noqa: E402

RATE = 8000
TINY = {"name": "tiny", "sample_rate": RATE, "clip_seconds": 0.5, "n_fft": 64, "hop_length": 32,
        "num_frames": 2, "image_size": 8}
N_FRAMES = 6  # frames per fake video; frame j is grey level GREY[j]
GREY = 20 + 30 * np.arange(N_FRAMES)
EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")


def sine(freq: float, seconds: float, rate: int) -> np.ndarray:
  return 0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)


def write_wav(path: Path, x: np.ndarray, rate: int, channels: int = 1) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  pcm = np.round(np.repeat(x[:, None], channels, axis=1) * 32767).astype("<i2")
  with wave.open(str(path), "wb") as f:
    f.setnchannels(channels)
    f.setsampwidth(2)
    f.setframerate(rate)
    f.writeframes(pcm.tobytes())


def write_video(path: Path, audio: np.ndarray | None = None, audio_rate: int = 16000) -> None:
  """N_FRAMES solid grey 16×16 frames at 10 fps; flv1 for .flv, mpeg4 (+ AAC audio) for .mp4."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with av.open(str(path), "w") as c:
    vs = c.add_stream("flv" if path.suffix == ".flv" else "mpeg4", rate=10)
    vs.width, vs.height, vs.pix_fmt = 16, 16, "yuv420p"
    if audio is not None:
      aus = c.add_stream("aac", rate=audio_rate)
      aus.layout = "mono"
    for g in GREY:
      frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), g, np.uint8), format="rgb24")
      for p in vs.encode(frame):
        c.mux(p)
    for p in vs.encode():
      c.mux(p)
    if audio is not None:
      frame = av.AudioFrame.from_ndarray(audio.astype(np.float32)[None], format="flt",
                                         layout="mono")
      frame.sample_rate = audio_rate
      for p in [*aus.encode(frame), *aus.encode(None)]:
        c.mux(p)


def write_frames(folder: Path) -> None:
  from PIL import Image

  folder.mkdir(parents=True, exist_ok=True)
  for j, g in enumerate(GREY):
    Image.fromarray(np.full((12, 12, 3), g, np.uint8)).save(folder / f"frame_{j + 1:05d}.jpg")


def reference_log_spectrogram(x: np.ndarray, cfg: dict) -> np.ndarray:
  """Direct DFT of Hann-windowed, centred frames of the tiled clip, written out in loops."""
  n_fft, hop = cfg["n_fft"], cfg["hop_length"]
  length = int(cfg["sample_rate"] * cfg["clip_seconds"])
  tiled = np.array([x[i % len(x)] for i in range(length)], np.float64)
  padded = np.concatenate([np.zeros(n_fft // 2), tiled, np.zeros(n_fft // 2)])
  n = np.arange(n_fft)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
  dft = np.exp(-2j * np.pi * np.outer(np.arange(n_fft // 2 + 1), n) / n_fft)
  rows = []
  t = 0
  while t * hop + n_fft <= len(padded):
    rows.append(np.abs(dft @ (padded[t * hop:t * hop + n_fft] * window)))
    t += 1
  return np.log(np.array(rows) + 1e-7)


def crema_clip(actor: int, emotion: str) -> str:
  return f"10{actor:02d}_DFA_{emotion}_XX"


def crema_freq(emotion: str) -> float:
  return 250.0 * (1 + EMOTIONS.index(emotion))


@pytest.fixture(scope="module")
def crema_dir(tmp_path_factory) -> Path:
  """3 clips per emotion, one with a frame folder instead of a .flv, one listed without files."""
  root = tmp_path_factory.mktemp("crema")
  train, test = [], []
  for e in EMOTIONS:
    for actor in range(3):
      clip = crema_clip(actor, e)
      write_wav(root / "AudioWAV" / f"{clip}.wav", sine(crema_freq(e), 0.3, RATE), RATE)
      if clip == crema_clip(0, "SAD"):
        write_frames(root / "visual" / clip)
      else:
        write_video(root / "VideoFlash" / f"{clip}.flv")
      (test if actor == 2 else train).append(f"{clip},{e}")
  train.append(f"{crema_clip(9, 'ANG')},ANG")  # listed but absent: skipped
  (root / "train.csv").write_text("\n".join(train) + "\n")
  (root / "test.csv").write_text("\n".join(test) + "\n")
  return root


@pytest.fixture(scope="module")
def crema_built(crema_dir, tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("crema_data")
  builder = builders.MmregCremaD(data_dir=str(data_dir), config=AVConfig(**TINY))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(crema_dir)))
  return builder, data_dir


def test_crema_d_read_back_through_tfds_data_source(crema_built):
  builder, data_dir = crema_built
  source = tfds.data_source("mmreg_crema_d/tiny", data_dir=str(data_dir), split="test")
  assert len(source) == 6
  assert builder.info.splits["train"].num_examples == 12
  assert builder.info.metadata["class_names"] == list(EMOTIONS)
  seen = {}
  for i in range(len(source)):
    ex = source[i]
    clip = ex["clip_id"].decode()
    seen[clip] = int(ex["label"])
    assert ex["audio"].shape == (1 + 4000 // 32, 33, 1) and ex["audio"].dtype == np.float32
    assert ex["visual"].shape == (2, 8, 8, 3) and ex["visual"].dtype == np.uint8
  assert seen == {crema_clip(2, e): k for k, e in enumerate(EMOTIONS)}


def test_crema_d_spectrogram_matches_numpy_dft(crema_built):
  builder, _ = crema_built
  source = builder.as_data_source(split="test")
  for i in range(len(source)):
    ex = source[i]
    emotion = EMOTIONS[int(ex["label"])]
    x = np.round(sine(crema_freq(emotion), 0.3, RATE) * 32767) / 32768  # 16-bit WAV round trip
    expected = reference_log_spectrogram(x, TINY)
    assert ex["audio"].shape[0] == expected.shape[0]
    np.testing.assert_allclose(np.exp(ex["audio"][..., 0]), np.exp(expected), rtol=1e-3,
                               atol=1e-4)
    assert np.argmax(expected.mean(0)) == round(crema_freq(emotion) / (RATE / 64))


def test_crema_d_frames_are_segment_centres(crema_built):
  builder, _ = crema_built
  source = builder.as_data_source(split="train")
  clips = {source[i]["clip_id"].decode(): source[i]["visual"] for i in range(len(source))}
  expected = GREY[[1, 4]]  # floor((i + 1/2) · 6 / 2) = 1, 4
  assert crema_clip(0, "SAD") in clips  # read from the frame folder
  for clip, frames in clips.items():
    np.testing.assert_allclose(frames.reshape(2, -1).mean(1), expected, atol=4, err_msg=clip)


def test_crema_d_registry_splits_and_model(crema_dir, crema_built):
  _, data_dir = crema_built
  splits = load_dataset("crema_d", {"data_dir": str(data_dir), "manual_dir": str(crema_dir),
                                    "config": TINY, "val_fraction": 0.5, "seed": 3})
  assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 6, 6)
  assert splits.train.input_shapes == {"audio": (126, 33, 1), "visual": (8, 8, 6)}
  assert np.array_equal(splits.train.class_counts(), np.ones(6))
  assert np.array_equal(splits.val.class_counts(), np.ones(6))
  grey = (GREY[1] / 255.0 - builders.common.IMAGENET_MEAN) / builders.common.IMAGENET_STD
  np.testing.assert_allclose(splits.test.take([0]).inputs["visual"][0, :, :, :3].mean((0, 1)),
                             grey, atol=0.1)
  again = load_dataset("crema_d", {"data_dir": str(data_dir), "config": TINY,
                                   "val_fraction": 0.5, "seed": 3})
  np.testing.assert_array_equal(again.val.labels, splits.val.labels)
  np.testing.assert_array_equal(again.val.take(np.arange(6)).inputs["audio"],
                                splits.val.take(np.arange(6)).inputs["audio"])
  time_major = load_dataset("crema_d", {"data_dir": str(data_dir), "config": TINY,
                                        "frames": "time"})
  assert time_major.test.input_shapes["visual"] == (2, 8, 8, 3)

  from mmreg.models import build_model

  model = build_model({"encoder": "conv2d", "channels": (4,), "feature_dim": 8,
                       "latent_dim": 4}, splits.train.input_shapes, 6, seed=0)
  out = model(splits.train.take(np.arange(2)).as_batch())
  assert out.logits.shape == (2, 6) and set(out.modality_logits) == {"audio", "visual"}


def test_crema_d_deterministic_split_without_csv(tmp_path):
  root = tmp_path / "manual"
  for e in EMOTIONS:
    for actor in range(10):
      clip = crema_clip(actor, e)
      write_wav(root / "AudioWAV" / f"{clip}.wav", sine(300, 0.05, RATE), RATE)
      (root / "visual" / clip).mkdir(parents=True)
  builder = builders.MmregCremaD(data_dir=str(tmp_path / "data"), config=AVConfig(**TINY))
  with pytest.raises(ManualLayoutError, match="VideoFlash"):  # frame folders hold no images yet
    builder._clips(root)
  write_frames(root / "visual" / crema_clip(0, "NEU"))
  for folder in (root / "visual").iterdir():
    for frame in (root / "visual" / crema_clip(0, "NEU")).iterdir():
      if not (folder / frame.name).exists():
        (folder / frame.name).symlink_to(frame)
  clips, _ = builder._clips(root)
  assert sorted(len(v) for v in clips.values()) == [6, 54]
  assert sorted(c.label for c in clips["test"]) == list(range(6))
  assert not {c.clip_id for c in clips["test"]} & {c.clip_id for c in clips["train"]}
  again, _ = builder._clips(root)
  assert [c.clip_id for c in again["test"]] == [c.clip_id for c in clips["test"]]


def test_kinetics_sounds_build_and_load(tmp_path):
  root = tmp_path / "manual"
  classes = [f"class_{k:02d}" for k in range(31)]
  (root / "videos").mkdir(parents=True)
  (root / "class_list.txt").write_text("\n".join(classes) + "\n")
  clips = {"aaa_1": (0, 500.0), "bbb_2": (0, 1000.0), "ccc_3": (30, 1500.0),
           "ddd_4": (30, 500.0), "eee_5": (7, 1000.0)}
  for clip, (label, freq) in clips.items():
    if clip == "ddd_4":  # pre-extracted audio and frames instead of a video
      write_wav(root / "audio" / f"{clip}.wav", sine(freq, 1.0, 16000), 16000)
      write_frames(root / "visual" / clip)
    else:
      write_video(root / "videos" / classes[label] / f"{clip}.mp4", sine(freq, 1.0, 16000))
  (root / "my_train.txt").write_text("aaa_1,10,0\nbbb_2,10,0\nccc_3,10,30\nddd_4,10,30\n")
  (root / "my_test.txt").write_text("eee_5.mp4 class_07\n")  # `<clip> <class name>` form
  splits = load_dataset("kinetics_sounds", {"data_dir": str(tmp_path / "data"),
                                            "manual_dir": str(root), "config": TINY,
                                            "val_fraction": 0.5})
  assert (len(splits.train), len(splits.val), len(splits.test)) == (2, 2, 1)
  assert splits.test.labels.tolist() == [7] and splits.train.num_classes == 31
  source = tfds.data_source("mmreg_kinetics_sounds/tiny", data_dir=str(tmp_path / "data"),
                            split="train")
  for i in range(len(source)):
    ex = source[i]
    freq = clips[ex["clip_id"].decode()][1]
    # decoded (AAC) and resampled 16 kHz → 8 kHz audio keeps its tone: peak in bin f / 125 Hz
    assert np.argmax(ex["audio"][..., 0].mean(0)) == round(freq / (RATE / 64))
    np.testing.assert_allclose(ex["visual"].reshape(2, -1).mean(1), GREY[[1, 4]], atol=4)


def test_ave_build_and_load(tmp_path):
  root = tmp_path / "AVE_Dataset"
  categories = sorted(f"Event {k:02d}" for k in range(28))
  ann = ["Category&VideoID&Quality&StartTime&EndTime"]
  ann += [f"{c}&vid{k:02d}&good&0&10" for k, c in enumerate(categories)]
  ann += [f"{categories[5]}&vid03&good&2&6"]  # vid03 has two events: dropped
  (root / "AVE").mkdir(parents=True)
  (root / "Annotations.txt").write_text("\n".join(ann) + "\n")
  splits = {"trainSet.txt": [0, 1, 3], "valSet.txt": [2], "testSet.txt": [4]}
  for name, ks in splits.items():
    lines = [f"{categories[k]}&vid{k:02d}&good&0&10" for k in ks]
    if 3 in ks:
      lines.append(f"{categories[5]}&vid03&good&2&6")
    (root / name).write_text("\n".join(lines) + "\n")
    for k in ks:
      write_video(root / "AVE" / f"vid{k:02d}.mp4", sine(1000, 1.0, 16000))
  data = load_dataset("ave", {"data_dir": str(tmp_path / "data"), "manual_dir": str(tmp_path),
                              "config": TINY})
  assert (len(data.train), len(data.val), len(data.test)) == (2, 1, 1)
  assert data.train.labels.tolist() == [0, 1] and data.val.labels.tolist() == [2]
  assert data.test.labels.tolist() == [4] and data.test.num_classes == 28
  assert data.test.input_shapes == {"audio": (126, 33, 1), "visual": (8, 8, 6)}


def test_missing_or_wrong_layout_names_the_expected_layout(tmp_path, crema_dir):
  def build(cls, manual):
    builder = cls(data_dir=str(tmp_path / "data"), config=AVConfig(**TINY))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=None if manual is None else str(manual)))

  with pytest.raises(ManualLayoutError, match=r"(?s)does not exist.*AudioWAV/<clip>\.wav"):
    build(builders.MmregCremaD, tmp_path / "nowhere")
  empty = tmp_path / "empty"
  (empty / "junk").mkdir(parents=True)
  with pytest.raises(ManualLayoutError, match=r"(?s)missing under .*AudioWAV.*Expected layout"):
    build(builders.MmregCremaD, empty)
  with pytest.raises(ManualLayoutError, match=r"(?s)class_list\.txt.*my_train\.txt"):
    build(builders.MmregKineticsSounds, empty)
  with pytest.raises(ManualLayoutError, match=r"(?s)Annotations\.txt.*AVE/<VideoID>\.mp4"):
    build(builders.MmregAve, empty)
  partial = tmp_path / "partial"
  (partial / "AudioWAV").mkdir(parents=True)
  (partial / "AudioWAV" / "x.wav").symlink_to(
      crema_dir / "AudioWAV" / f"{crema_clip(0, 'NEU')}.wav")
  with pytest.raises(ManualLayoutError, match=r"VideoFlash"):
    build(builders.MmregCremaD, partial)
  few = tmp_path / "few_classes"
  (few / "videos").mkdir(parents=True)
  write_video(few / "videos" / "a_1.mp4", sine(500, 0.5, 16000))
  (few / "class_list.txt").write_text("only\ntwo\n")
  (few / "my_train.txt").write_text("a_1,10,0\n")
  (few / "my_test.txt").write_text("a_1,10,1\n")
  with pytest.raises(ManualLayoutError, match=r"found 2 classes .* expected 31"):
    build(builders.MmregKineticsSounds, few)
  (few / "class_list.txt").write_text("\n".join(f"c{k}" for k in range(31)) + "\n")
  (few / "my_test.txt").write_text("a_1,10,99\n")
  with pytest.raises(ManualLayoutError, match=r"my_test\.txt:1: label '99'"):
    build(builders.MmregKineticsSounds, few)
  broken = tmp_path / "broken"
  for actor in range(2):
    for e in EMOTIONS:
      clip = crema_clip(actor, e)
      write_wav(broken / "AudioWAV" / f"{clip}.wav", sine(300, 0.05, RATE), RATE)
      (broken / "VideoFlash").mkdir(exist_ok=True)
      (broken / "VideoFlash" / f"{clip}.flv").write_bytes(b"FLV garbage")
    (broken / f"{'test' if actor else 'train'}.csv").write_text(
        "".join(f"{crema_clip(actor, e)},{e}\n" for e in EMOTIONS))
  write_video(broken / "VideoFlash" / f"{crema_clip(1, 'HAP')}.flv")
  with pytest.raises(ValueError, match=r"none of 6 clips could be read; first error: .*flv"):
    build(builders.MmregCremaD, broken)
  write_video(broken / "VideoFlash" / f"{crema_clip(0, 'NEU')}.flv")
  build(builders.MmregCremaD, broken)  # one readable clip per split: the others are skipped
  data = load_dataset("crema_d", {"data_dir": str(tmp_path / "data"), "config": TINY})
  assert data.test.labels.tolist() == [1] and len(data.train) + len(data.val) == 1
  with pytest.raises(ValueError, match="unknown frames layout"):
    builders.frames_to_model_input(np.zeros((1, 2, 4, 4, 3), np.uint8), "channels")


def test_read_wav_averages_channels_and_resample_keeps_the_tone(tmp_path):
  x = sine(440, 0.25, 16000)
  write_wav(tmp_path / "s.wav", x, 16000, channels=2)
  y, rate = builders.read_wav(tmp_path / "s.wav")
  assert rate == 16000
  np.testing.assert_allclose(y, np.round(x * 32767) / 32768, atol=1e-6)
  z = builders.resample(y, 16000, 22050)
  assert abs(len(z) - round(len(y) * 22050 / 16000)) <= 1
  spectrum = np.abs(np.fft.rfft(z))
  assert abs(np.argmax(spectrum) * 22050 / len(z) - 440) < 5
  (tmp_path / "bad.wav").write_bytes(b"not a wav")
  with pytest.raises(ValueError, match="not a readable PCM WAV"):
    builders.read_wav(tmp_path / "bad.wav")
  with pytest.raises(ValueError, match="non-empty mono"):
    builders.log_spectrogram(np.zeros(0), 8000, sample_rate=8000, clip_seconds=0.1, n_fft=64,
                             hop_length=32)


def test_audio_visual_config_trains_on_fake_crema_d(crema_dir, crema_built, tmp_path):
  from experiments.configs.audio_visual import get_config
  from mmreg.train.loop import train_and_evaluate

  _, data_dir = crema_built
  cfg = get_config("crema_d")
  cfg.data.options = {**cfg.data.options.to_dict(), "data_dir": str(data_dir),
                      "manual_dir": str(crema_dir), "config": TINY, "val_fraction": 0.5}
  cfg.model.update({"channels": (4,), "feature_dim": 8, "latent_dim": 4})
  cfg.train.update({"epochs": 1, "batch_size": 3})
  results = train_and_evaluate(cfg, tmp_path / "run", progress=False)
  assert 0.0 <= results["test"]["accuracy"] <= 1.0
  assert set(results["test"]["modality_accuracy"]) == {"audio", "visual"}
  assert (tmp_path / "run" / "results.json").exists()
  with pytest.raises(ValueError, match="unknown audio-visual dataset"):
    get_config("vggsound")


def test_balance_experiment_runs_on_placed_crema_d(crema_dir, crema_built, tmp_path):
  import json

  from experiments import balance

  _, data_dir = crema_built
  results = balance.main([
      "--dataset", "crema_d", "--data_dir", str(data_dir), "--manual_dir", str(crema_dir),
      "--av_config", json.dumps(TINY), "--methods", "joint,ogm_ge", "--seeds", "2",
      "--tune_seeds", "1", "--max_epochs", "1", "--patience", "1", "--learning_rates",
      "0.01,0.02", "--method_learning_rates", "0.01", "--nounimodal", "--batch_size", "3",
      "--val_fraction", "0.5", "--workdir", str(tmp_path)])
  assert set(results["datasets"]["crema_d"]) >= {"joint", "ogm_ge"}
  assert (tmp_path / "results.json").exists()
  with pytest.raises(ValueError, match="pass --data_dir"):
    balance.main(["--dataset", "crema_d", "--seeds", "2", "--workdir", str(tmp_path / "x")])
