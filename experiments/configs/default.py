"""Default training config: joint training of two mfeat views with a concat-fusion MLP
(`mmreg.train.config.default_config`; the fields are listed there).

Override any field from the command line, e.g.
  mmreg-train --config=default.py --config.method.name=joint --config.train.epochs=10 \
      --workdir=runs/joint
"""

import ml_collections

from mmreg.train.config import default_config


def get_config() -> ml_collections.ConfigDict:
  return default_config()
