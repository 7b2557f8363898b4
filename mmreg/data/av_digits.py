"""AV-digits: spoken digits (log-mel spectrograms) paired by label with mfeat's `pix` images.

An audio-visual task with conv encoders on raw signals, bundled offline
(`bundled/av_digits.npz`, built by `python -m mmreg.data.av_digits --out FILE`, which needs the
`espeak-ng` program). Each of the 2000 samples pairs one synthesised utterance of the digit's
English name — an espeak-ng accent and voice variant, speaking rate and pitch drawn at random,
a random onset, then white noise at a random signal-to-noise ratio — with a distinct mfeat `pix`
image (15×16 pixel averages, values 0–6) of the same digit. The audio's noise is set so that
the spoken digit is the weaker modality.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import wave
from importlib import resources
from pathlib import Path

import numpy as np

from mmreg.data.dataset import MultimodalDataset, Splits, check_finite, split_dataset, standardize
from mmreg.data.mfeat import MFEAT_CLASSES, load_mfeat_arrays

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
           "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt",
            "klatt2", "klatt3", "croak", "whisper", "")
SAMPLE_RATE = 22050
CLIP_SECONDS = 1.25
N_FFT, HOP, N_MELS = 512, 512, 32           # 22050 / 512 ≈ 43 frames per second
PIX_SHAPE = (16, 15)                        # mfeat pix: 240 values, 16 rows of 15


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE,
                   fmin: float = 50.0, fmax: float = 8000.0) -> np.ndarray:
  """Triangular filters `[n_mels, n_fft//2 + 1]` equally spaced on the HTK mel scale
  (mel = 2595·log10(1 + f/700))."""
  to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
  to_hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
  edges = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
  freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
  lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  rising = (freqs - lower) / (centre - lower)
  falling = (upper - freqs) / (upper - centre)
  return np.maximum(0.0, np.minimum(rising, falling))


def log_mel(signal: np.ndarray, *, n_fft: int = N_FFT, hop: int = HOP,
            filters: np.ndarray | None = None) -> np.ndarray:
  """`[n_mels, frames]` log(mel power + 1e-6) of a mono signal, Hann-windowed frames."""
  filters = mel_filterbank(n_fft=n_fft) if filters is None else filters
  frames = 1 + (len(signal) - n_fft) // hop
  index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
  power = np.abs(np.fft.rfft(signal[index] * np.hanning(n_fft), axis=1)) ** 2
  return np.log(filters @ power.T + 1e-6)


def synthesise(word: str, voice: str, rate: int, pitch: int) -> np.ndarray:
  """One utterance from espeak-ng as float32 samples in [-1, 1] at SAMPLE_RATE."""
  wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout",
                        word], check=True, capture_output=True).stdout
  with wave.open(io.BytesIO(wav)) as w:
    if w.getframerate() != SAMPLE_RATE or w.getsampwidth() != 2:
      raise RuntimeError(f"espeak-ng wrote {w.getframerate()} Hz, {8 * w.getsampwidth()}-bit "
                         f"audio; expected {SAMPLE_RATE} Hz 16-bit")
    return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0


def place_in_clip(speech: np.ndarray, onset: float, snr_db: float, rng: np.random.Generator
                  ) -> np.ndarray:
  """The utterance at `onset` (fraction of the free room) inside a CLIP_SECONDS clip, plus white
  noise whose power is the speech power divided by 10^(snr_db/10)."""
  length = int(CLIP_SECONDS * SAMPLE_RATE)
  speech = speech[:length]
  start = int(onset * (length - len(speech)))
  clip = np.zeros(length, np.float32)
  clip[start:start + len(speech)] = speech
  power = float(np.mean(speech ** 2)) if len(speech) else 0.0
  return clip + rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), length).astype(np.float32)


def generate(out: Path, *, seed: int = 0, snr_db: tuple[float, float] = (-6.0, 6.0)) -> Path:
  """Build the bundle: one utterance per mfeat image, paired within each class."""
  if shutil.which("espeak-ng") is None:
    raise RuntimeError("espeak-ng is not installed; on Debian: apt-get install espeak-ng")
  rng = np.random.default_rng(seed)
  labels = load_mfeat_arrays(("pix",)).labels
  filters = mel_filterbank()
  spectrograms, speakers = [], []
  for y in labels:
    accent, variant = rng.choice(ACCENTS), rng.choice(VARIANTS)
    voice = f"{accent}+{variant}" if variant else accent
    speech = synthesise(DIGIT_WORDS[y], voice, int(rng.integers(110, 221)),
                        int(rng.integers(20, 81)))
    clip = place_in_clip(speech, rng.uniform(), rng.uniform(*snr_db), rng)
    spectrograms.append(log_mel(clip, filters=filters))
    speakers.append(voice)
  audio = np.stack(spectrograms)
  lo, hi = float(audio.min()), float(audio.max())
  out.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(out, audio=quantise(audio, lo, hi), audio_range=np.asarray([lo, hi]),
                      label=labels.astype(np.int8), voice=np.asarray(speakers),
                      seed=np.int64(seed), snr_db=np.asarray(snr_db, np.float32))
  return out


def quantise(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
  """Values in [lo, hi] to uint8 levels 0..255 (rounded)."""
  return np.round((x - lo) / (hi - lo) * 255.0).astype(np.uint8)


def dequantise(q: np.ndarray, lo: float, hi: float) -> np.ndarray:
  return (lo + q.astype(np.float32) * np.float32((hi - lo) / 255.0)).astype(np.float32)


def load_av_digits_arrays(path: str | Path | None = None) -> MultimodalDataset:
  """All 2000 samples: `audio` `[N, 53, 32]` log-mel frames (time first, the mel bands as
  channels), `image` `[N, 16, 15, 1]` pixels (from the bundled file, or from `path` as written
  by `generate`)."""
  source = resources.files("mmreg.data").joinpath("bundled/av_digits.npz") if path is None \
      else Path(path)
  with source.open("rb") as f:
    bundle = np.load(f)
    audio = dequantise(bundle["audio"], *bundle["audio_range"])
    labels = bundle["label"].astype(np.int32)
  pix = load_mfeat_arrays(("pix",))
  if not np.array_equal(pix.labels, labels):
    raise RuntimeError("the bundled av_digits.npz does not match mfeat's label order; rebuild "
                       "it with python -m mmreg.data.av_digits")
  images = pix.inputs["pix"].reshape(len(labels), *PIX_SHAPE, 1).astype(np.float32)
  frames = np.ascontiguousarray(np.swapaxes(audio, 1, 2))
  data = MultimodalDataset({"audio": frames, "image": images}, labels, MFEAT_CLASSES)
  check_finite(data, "av_digits")
  return data


def load_av_digits(*, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.25,
                   standardized: bool = True, path: str | None = None) -> Splits:
  """Stratified splits of AV-digits; standardised per feature on train statistics."""
  splits = split_dataset(load_av_digits_arrays(path), val_fraction=val_fraction,
                         test_fraction=test_fraction, seed=seed)
  return standardize(splits) if standardized else splits


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=Path, default=Path("mmreg/data/bundled/av_digits.npz"))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--snr_db", type=float, nargs=2, default=(-6.0, 6.0))
  args = parser.parse_args()
  print(generate(args.out, seed=args.seed, snr_db=tuple(args.snr_db)))


if __name__ == "__main__":
  main()
