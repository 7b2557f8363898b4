"""AV-digits: mel filterbank and log-mel against independent NumPy computations; the bundle."""

import shutil

import numpy as np
import pytest

from mmreg.data.av_digits import (
    HOP,
    N_FFT,
    SAMPLE_RATE,
    dequantise,
    load_av_digits,
    log_mel,
    mel_filterbank,
    place_in_clip,
    quantise,
    synthesise,
)
from mmreg.data.registry import load_dataset
from mmreg.models import Conv1DEncoder, Conv2DEncoder, build_model


def test_mel_filters_are_unit_peaked_triangles_at_htk_mel_centres():
  fb = mel_filterbank(n_mels=8, n_fft=512, sample_rate=16000, fmin=0.0, fmax=8000.0)
  freqs = np.linspace(0, 8000, 257)
  # HTK mel scale written out: centre k at mel = (k + 1)·mel(8000)/9.
  mel_max = 2595 * np.log10(1 + 8000 / 700)
  centres = 700 * (10 ** (np.arange(1, 9) * mel_max / 9 / 2595) - 1)
  for k in range(8):
    peak = freqs[np.argmax(fb[k])]
    assert abs(peak - centres[k]) <= 8000 / 256  # within one FFT bin
    assert 0.5 < fb[k].max() <= 1.0 and fb[k].min() == 0.0


def test_log_mel_of_a_tone_peaks_in_the_band_holding_it():
  t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
  tone = np.sin(2 * np.pi * 1000.0 * t)
  spec = log_mel(tone)
  assert spec.shape == (32, 1 + (SAMPLE_RATE - N_FFT) // HOP)
  fb = mel_filterbank()
  bin_1k = round(1000.0 * N_FFT / SAMPLE_RATE)
  assert np.all(np.argmax(spec, axis=0) == np.argmax(fb[:, bin_1k]))
  # Power of one frame by a direct DFT sum (no rfft), through the filterbank.
  frame = tone[:N_FFT] * np.hanning(N_FFT)
  n = np.arange(N_FFT)
  dft = np.array([np.sum(frame * np.exp(-2j * np.pi * k * n / N_FFT))
                  for k in range(N_FFT // 2 + 1)])
  np.testing.assert_allclose(spec[:, 0], np.log(fb @ np.abs(dft) ** 2 + 1e-6), rtol=1e-6,
                             atol=1e-6)


def test_noise_is_added_at_the_requested_snr():
  rng = np.random.default_rng(0)
  speech = np.sin(np.arange(8000) / 5.0).astype(np.float32)
  clip = place_in_clip(speech, 0.0, 10.0, rng)
  noise = clip.copy()
  noise[:8000] -= speech
  snr = 10 * np.log10(np.mean(speech ** 2) / np.mean(noise ** 2))
  assert abs(snr - 10.0) < 0.2


def test_quantisation_round_trip_within_half_a_level():
  x = np.linspace(-3.0, 5.0, 1000)
  back = dequantise(quantise(x, -3.0, 5.0), -3.0, 5.0)
  assert np.max(np.abs(back - x)) <= 0.5 * 8.0 / 255 + 1e-6


def test_bundled_task_pairs_each_utterance_with_an_image_of_its_digit():
  splits = load_dataset("av_digits", {"seed": 0})
  assert splits.train.input_shapes == {"audio": (53, 32), "image": (16, 15, 1)}
  assert len(splits.train) + len(splits.val) + len(splits.test) == 2000
  assert np.all(splits.train.class_counts() == splits.train.class_counts()[0])
  raw = load_av_digits(standardized=False).train
  assert raw.inputs["image"].min() >= 0 and raw.inputs["image"].max() <= 6


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_synthesis_gives_audible_speech():
  speech = synthesise("seven", "en", 150, 50)
  assert 0.2 * SAMPLE_RATE < len(speech) < 1.25 * SAMPLE_RATE
  assert np.mean(speech ** 2) > 1e-4
  assert np.abs(speech).max() <= 1.0


def test_auto_encoders_convolve_the_audio_over_time():
  shapes = load_dataset("av_digits", {"seed": 0}).train.input_shapes
  model = build_model({"encoder": "auto", "channels": (4, 8), "feature_dim": 8}, shapes, 10, 0)
  assert isinstance(model.encoders["audio"], Conv1DEncoder)
  assert model.encoders["audio"].convs[0].in_features == 32  # the mel bands are the channels
  assert isinstance(model.encoders["image"], Conv2DEncoder)
