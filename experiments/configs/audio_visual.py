"""Joint training on an audio-visual benchmark read by the TFDS builders (mmreg.data.builders).

  mmreg-train --config=audio_visual.py:crema_d \
      --config.data.options.data_dir=~/tensorflow_datasets \
      --config.data.options.manual_dir=~/data/CREMA-D --workdir=runs/crema_d

The argument after the colon is the dataset: crema_d, kinetics_sounds or ave. The first run
builds the array_record copy in data_dir from the files in manual_dir; later runs read it.
`data.options.config` picks the builder config ("small": 64-px frames for CPU, "default": the
literature's 224 px). Optimiser settings follow OGM-GE (SGD 1e-3, momentum 0.9, batch 64).
"""

import ml_collections

from mmreg.train.config import default_config

DATASETS = ("crema_d", "kinetics_sounds", "ave")


def get_config(dataset: str = "crema_d") -> ml_collections.ConfigDict:
  if dataset not in DATASETS:
    raise ValueError(f"unknown audio-visual dataset {dataset!r}; valid: {list(DATASETS)}")
  c = default_config()
  c.data = ml_collections.ConfigDict({"name": dataset, "options": {
      "data_dir": "~/tensorflow_datasets", "manual_dir": "", "config": "small",
      "frames": "stack", "val_fraction": 0.1, "seed": 0, "streaming": True}})
  c.model.encoder = "conv2d"
  c.model.channels = (32, 64)
  c.model.feature_dim = 128
  c.optim.learning_rate = 1e-3
  c.train.batch_size = 64
  return c
