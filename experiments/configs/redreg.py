"""RedReg with its authors' training recipe (xia-zhe/RedReg, main_RedReg.py).

  python -m experiments.train --config experiments/configs/redreg.py --workdir runs/redreg
  python -m experiments.train --config experiments/configs/redreg.py:crema_d \
      --config.data.options.manual_dir=~/data/CREMA-D --workdir runs/redreg_crema_d

The argument after the colon is the dataset: mfeat (default, bundled), crema_d,
kinetics_sounds or ave (files you placed, see experiments/configs/audio_visual.py).
From the authors' code: 80 epochs, batch 64 (:41-42), SGD lr 2e-3, momentum 0.9, weight decay
1e-4 (:45, :523), ×0.1 at epoch 40 (:46-47, :524), concat fusion (:32), losses CE(fused) +
CE(audio head) + CE(visual head) (:253-257, :303-305), whole-batch modality dropout 0.6 → 0.1
over the first 30% of the epochs (:108-114, :168-184). Encoders: the authors train ResNet-18s
from scratch; the audio-visual configs here use mmreg's ResNet-18 encoder (512-d features),
mfeat its MLPs.
"""

import ml_collections

from experiments.configs.audio_visual import DATASETS as AUDIO_VISUAL
from experiments.configs.audio_visual import get_config as audio_visual_config
from experiments.configs.default import get_config as default_config


def get_config(dataset: str = "mfeat") -> ml_collections.ConfigDict:
  if dataset != "mfeat" and dataset not in AUDIO_VISUAL:
    raise ValueError(f"unknown dataset {dataset!r} for the RedReg recipe; valid: "
                     f"{['mfeat', *AUDIO_VISUAL]}")
  c = default_config() if dataset == "mfeat" else audio_visual_config(dataset)
  if dataset != "mfeat":
    c.model.encoder = "resnet"
    c.model.feature_dim = 512
  c.model.fusion = "concat"
  c.method = ml_collections.ConfigDict({"name": "redreg", "options": {}})
  c.loss = ml_collections.ConfigDict({"fused_weight": 1.0, "unimodal_weight": 1.0,
                                      "label_smoothing": 0.0})
  c.optim = ml_collections.ConfigDict({"name": "sgd", "learning_rate": 2e-3, "momentum": 0.9,
                                       "weight_decay": 1e-4, "schedule": "step",
                                       "warmup_epochs": 0, "decay_epochs": (40,),
                                       "decay_factor": 0.1})
  c.train.epochs = 80
  c.train.batch_size = 64
  c.train.modality_dropout = ml_collections.ConfigDict(
      {"start": 0.6, "end": 0.1, "warm_fraction": 0.3})
  return c
