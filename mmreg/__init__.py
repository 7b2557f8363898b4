"""mmreg: balanced and aligned multimodal learning in JAX.

Gradient transformations that keep one modality from dominating joint training, losses
that build a shared latent space, and tools for neural collapse under long-tailed labels.
The public API is flat, like optax: `mmreg.redreg`, `mmreg.per_loss_grads`, ...
"""

from mmreg import data, losses, metrics, models, monitors, train, transforms
from mmreg.grads import LossGrads, per_loss_grads
from mmreg.losses import LossSpec, classification_losses
from mmreg.models import (
    ModelOutput,
    MultimodalClassifier,
    concat_head_slices,
    mlp_classifier,
    param_labels,
    simplex_etf,
)
from mmreg.train.loss_methods import gblending, pmr
from mmreg.transforms import *  # noqa: F403
from mmreg.transforms import __all__ as _transforms_all

__version__ = "0.1.0"

__all__ = [
    "LossGrads",
    "LossSpec",
    "ModelOutput",
    "MultimodalClassifier",
    "classification_losses",
    "concat_head_slices",
    "data",
    "gblending",
    "losses",
    "metrics",
    "mlp_classifier",
    "models",
    "monitors",
    "param_labels",
    "per_loss_grads",
    "pmr",
    "simplex_etf",
    "train",
    "transforms",
    *_transforms_all,
]
