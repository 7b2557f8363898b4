"""The default configuration of `mmreg.train.loop.train_and_evaluate`: joint training of two
mfeat views with a concat-fusion MLP. `mmreg-train` reads it through its default config file
(experiments/configs/default.py); override any field there, e.g.
  mmreg-train --config.method.name=redreg --config.train.epochs=10 --workdir=runs/redreg
"""

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # data.path: a file for loaders that read one (name="npz": your own train/val/test arrays).
  c.data = ml_collections.ConfigDict({"name": "mfeat", "path": "",
                                      "options": {"views": ("fou", "pix"), "seed": 0}})
  c.model = ml_collections.ConfigDict({"encoder": "auto", "hidden": (128,), "feature_dim": 64,
                                       "fusion": "concat", "latent_dim": 32,
                                       "fusion_options": {}, "modality_logits": "auto",
                                       "name": "multimodal_classifier"})
  # modality_logits "auto": what the method needs (agm: zero_input_shapley), else aux_heads.
  c.loss = ml_collections.ConfigDict({"fused_weight": 1.0, "unimodal_weight": 1.0,
                                      "label_smoothing": 0.0})
  c.method = ml_collections.ConfigDict({"name": "joint", "options": {}})
  c.optim = ml_collections.ConfigDict({"name": "sgd", "learning_rate": 0.02, "momentum": 0.9,
                                       "weight_decay": 1e-4, "schedule": "cosine",
                                       "warmup_epochs": 0, "decay_epochs": (),
                                       "decay_factor": 0.1})
  c.train = ml_collections.ConfigDict({"epochs": 20, "batch_size": 64, "log_every": 10,
                                       "skip_nonfinite": 0,
                                       "checkpoint_every_steps": 0, "max_to_keep": 2})
  # Device mesh: data=0 uses every device (of every process); fsdp > 1 splits parameter leaves
  # of at least fsdp_min_size elements. Multi-host: a `distributed` section or MMREG_* env vars
  # (see mmreg.train.sharding.initialize_distributed).
  c.mesh = ml_collections.ConfigDict({"data": 0, "fsdp": 1, "fsdp_min_size": 2**18})
  return c
