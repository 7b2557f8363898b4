"""Datasets, the batch format, splits and pipelines."""

from mmreg.data.av_digits import load_av_digits
from mmreg.data.batch import LABEL, PRESENT, Batch, inputs_of, modality_names, validate_batch
from mmreg.data.cifar_lt import CIFAR_CLASSES, load_cifar_arrays, load_cifar_lt
from mmreg.data.corruptions import (
    gaussian_noise,
    linear_dropout_rate,
    missing_at_test,
    modality_dropout,
    pair_flip_label_noise,
    symmetric_label_noise,
)
from mmreg.data.dataset import (
    MultimodalDataset,
    Splits,
    check_finite,
    eval_batches,
    iterate_batches,
    split_dataset,
    standardize,
    steps_per_epoch,
    stratified_split,
)
from mmreg.data.longtail import (
    ShotThresholds,
    balanced_subset,
    group_accuracy,
    longtail_counts,
    longtail_splits,
    longtail_subset,
    shot_groups,
    shot_thresholds,
)
from mmreg.data.mfeat import MFEAT_VIEWS, load_mfeat, load_mfeat_arrays
from mmreg.data.npz import load_npz
from mmreg.data.selection import acquisition_scores, select_top
from mmreg.data.streaming import SourceDataset
from mmreg.data.synthetic import (
    CompetitionConfig,
    bayes_accuracy,
    load_competition,
    make_competition,
)

__all__ = [
    "CIFAR_CLASSES",
    "LABEL",
    "MFEAT_VIEWS",
    "PRESENT",
    "Batch",
    "CompetitionConfig",
    "MultimodalDataset",
    "ShotThresholds",
    "SourceDataset",
    "Splits",
    "acquisition_scores",
    "balanced_subset",
    "bayes_accuracy",
    "check_finite",
    "eval_batches",
    "gaussian_noise",
    "group_accuracy",
    "inputs_of",
    "iterate_batches",
    "linear_dropout_rate",
    "load_av_digits",
    "load_cifar_arrays",
    "load_cifar_lt",
    "load_competition",
    "load_mfeat",
    "load_mfeat_arrays",
    "load_npz",
    "longtail_counts",
    "longtail_splits",
    "longtail_subset",
    "make_competition",
    "missing_at_test",
    "modality_dropout",
    "modality_names",
    "pair_flip_label_noise",
    "select_top",
    "shot_groups",
    "shot_thresholds",
    "split_dataset",
    "standardize",
    "steps_per_epoch",
    "stratified_split",
    "symmetric_label_noise",
    "validate_batch",
]
