"""Training: jitted steps, optimizers, method registry, checkpoints and the loop."""

from mmreg.train.checkpoint import Checkpointer, CheckpointError
from mmreg.train.feature_grads import per_loss_feature_grads
from mmreg.train.loss_methods import (
    EpochContext,
    GBlendingState,
    LossMethod,
    PMRState,
    gblending,
    pmr,
)
from mmreg.train.methods import (
    LOSS_GRADS_SCOPES,
    METHODS,
    Method,
    MethodNeeds,
    build_loss_method,
    build_method,
    build_post_update,
    get_method,
    loss_grads_mask,
    method_loss_spec,
    method_needs,
    model_config_for,
    register_method,
)
from mmreg.train.optim import learning_rate_schedule, make_optimizer
from mmreg.train.runs import (
    RunsResult,
    evaluate_runs,
    predict_runs,
    take_runs,
    train_runs,
    validation_accuracy,
)
from mmreg.train.step import (
    TrainState,
    init_train_state,
    make_predict,
    make_train_step,
    model_apply,
    split_model,
)

__all__ = [
    "LOSS_GRADS_SCOPES",
    "METHODS",
    "CheckpointError",
    "Checkpointer",
    "EpochContext",
    "GBlendingState",
    "LossMethod",
    "Method",
    "MethodNeeds",
    "PMRState",
    "RunsResult",
    "TrainState",
    "build_loss_method",
    "build_method",
    "build_post_update",
    "evaluate_runs",
    "gblending",
    "get_method",
    "init_train_state",
    "learning_rate_schedule",
    "loss_grads_mask",
    "make_optimizer",
    "make_predict",
    "make_train_step",
    "method_loss_spec",
    "method_needs",
    "model_apply",
    "model_config_for",
    "per_loss_feature_grads",
    "pmr",
    "predict_runs",
    "register_method",
    "split_model",
    "take_runs",
    "train_runs",
    "validation_accuracy",
]
