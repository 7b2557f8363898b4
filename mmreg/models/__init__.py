"""Flax NNX encoders, fusion modules and the multimodal classifier."""

from mmreg.models.classifier import (
    MISSING_MODES,
    MODALITY_LOGITS,
    ModelOutput,
    MultimodalClassifier,
    mlp_classifier,
)
from mmreg.models.encoders import Conv1DEncoder, Conv2DEncoder, MLPEncoder
from mmreg.models.etf import ETFHead, FixedKernel, simplex_etf
from mmreg.models.factory import (
    CLASSIFIER,
    ENCODERS,
    MODELS,
    build_model,
    make_encoder,
    model_from_config,
    register_model,
)
from mmreg.models.fusion import (
    FUSIONS,
    AttentionFusion,
    ConcatFusion,
    FiLMFusion,
    GatedFusion,
    LateFusion,
    SumFusion,
    make_fusion,
)
from mmreg.models.head_slices import concat_head_slices
from mmreg.models.interface import MultimodalModel, check_model, check_output
from mmreg.models.labels import AUX_HEAD, FUSION, HEAD, PROJECTOR, ROLE_LABELS, param_labels
from mmreg.models.monomodal import zero_input_shapley_logits
from mmreg.models.resnet import BasicBlock, ResNetEncoder
from mmreg.models.shared import FeatureMean, SharedSpace, SharedSpaceOutput

__all__ = [
    "AUX_HEAD",
    "CLASSIFIER",
    "ENCODERS",
    "FUSION",
    "FUSIONS",
    "HEAD",
    "MISSING_MODES",
    "MODALITY_LOGITS",
    "MODELS",
    "PROJECTOR",
    "ROLE_LABELS",
    "AttentionFusion",
    "BasicBlock",
    "ConcatFusion",
    "Conv1DEncoder",
    "Conv2DEncoder",
    "ETFHead",
    "FeatureMean",
    "FiLMFusion",
    "FixedKernel",
    "GatedFusion",
    "LateFusion",
    "MLPEncoder",
    "ModelOutput",
    "MultimodalClassifier",
    "MultimodalModel",
    "ResNetEncoder",
    "SharedSpace",
    "SharedSpaceOutput",
    "SumFusion",
    "build_model",
    "check_model",
    "check_output",
    "concat_head_slices",
    "make_encoder",
    "make_fusion",
    "mlp_classifier",
    "model_from_config",
    "param_labels",
    "register_model",
    "simplex_etf",
    "zero_input_shapley_logits",
]
