"""Metrics: classification, retrieval, alignment, neural collapse, modality contribution."""

from mmreg.metrics.alignment import alignment_statistics
from mmreg.metrics.classification import accuracy, confusion_matrix, macro_f1
from mmreg.metrics.neural_collapse import (
    ClassStats,
    NeuralCollapse,
    class_means,
    init_class_stats,
    nc4_counts,
    neural_collapse,
    neural_collapse_batches,
    neural_collapse_from_stats,
    update_class_stats,
)
from mmreg.metrics.probe import linear_probe_accuracy
from mmreg.metrics.ranking import precision_recall, roc_auc_ovr, roc_auc_per_class
from mmreg.metrics.retrieval import (
    mean_average_precision,
    ndcg_at_k,
    recall_at_k,
    retrieval_metrics,
    same_label,
)
from mmreg.metrics.shapley import modality_subsets, shapley_logits, shapley_values, with_subset
from mmreg.metrics.stats import PairedDifference, holm_bonferroni, paired_difference

__all__ = [
    "ClassStats",
    "NeuralCollapse",
    "PairedDifference",
    "accuracy",
    "alignment_statistics",
    "class_means",
    "confusion_matrix",
    "holm_bonferroni",
    "init_class_stats",
    "linear_probe_accuracy",
    "macro_f1",
    "mean_average_precision",
    "modality_subsets",
    "nc4_counts",
    "ndcg_at_k",
    "neural_collapse",
    "neural_collapse_batches",
    "neural_collapse_from_stats",
    "paired_difference",
    "precision_recall",
    "recall_at_k",
    "retrieval_metrics",
    "roc_auc_ovr",
    "roc_auc_per_class",
    "same_label",
    "shapley_logits",
    "shapley_values",
    "update_class_stats",
    "with_subset",
]
