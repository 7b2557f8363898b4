"""Losses: classification, the loss spec, and method-specific losses."""

from mmreg.losses.agm import agm_loss_name, agm_losses, agm_score
from mmreg.losses.classification import cross_entropy, true_class_confidence
from mmreg.losses.coherence import correlation_coherence, cosine_coherence, mse_coherence
from mmreg.losses.coherence_recipe import (
    ALIGNMENTS,
    alignment_term,
    coherence_losses,
    distillation_term,
    imputation_term,
    prototype_term,
    prototype_uncertainty,
)
from mmreg.losses.contrastive import check_temperature, clip_loss, info_nce, log_temperature_init
from mmreg.losses.distillation import distillation_loss
from mmreg.losses.dot_regression import dot_regression, dot_regression_loss
from mmreg.losses.evidential import (
    dirichlet_alpha,
    evidential_loss,
    evidential_probs,
    evidential_uncertainty,
    kl_annealing,
    kl_to_uniform_dirichlet,
)
from mmreg.losses.gblending import gblending_weights
from mmreg.losses.geometry import cosine_similarity, cosine_similarity_matrix, l2_normalize
from mmreg.losses.pmr import class_prototypes, distance_logits, pmr_coefficients, pmr_loss
from mmreg.losses.prototypes import class_means, prototype_init, prototype_logits, prototype_loss
from mmreg.losses.spa_reg import spa_reg_loss
from mmreg.losses.spec import (
    FUSED,
    LossSpec,
    LossTerm,
    classification_losses,
    fused_ce,
    unimodal_ce,
)

__all__ = [
    "ALIGNMENTS",
    "FUSED",
    "LossSpec",
    "LossTerm",
    "agm_loss_name",
    "agm_losses",
    "agm_score",
    "alignment_term",
    "check_temperature",
    "class_means",
    "class_prototypes",
    "classification_losses",
    "clip_loss",
    "coherence_losses",
    "correlation_coherence",
    "cosine_coherence",
    "cosine_similarity",
    "cosine_similarity_matrix",
    "cross_entropy",
    "dirichlet_alpha",
    "distance_logits",
    "distillation_loss",
    "distillation_term",
    "dot_regression",
    "dot_regression_loss",
    "evidential_loss",
    "evidential_probs",
    "evidential_uncertainty",
    "fused_ce",
    "gblending_weights",
    "imputation_term",
    "info_nce",
    "kl_annealing",
    "kl_to_uniform_dirichlet",
    "l2_normalize",
    "log_temperature_init",
    "mse_coherence",
    "pmr_coefficients",
    "pmr_loss",
    "prototype_init",
    "prototype_logits",
    "prototype_loss",
    "prototype_term",
    "prototype_uncertainty",
    "spa_reg_loss",
    "true_class_confidence",
    "unimodal_ce",
]
