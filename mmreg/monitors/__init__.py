"""Pure estimators `(state, observation) -> (state, signal)` used by the transforms.

Usable on their own for diagnostics: the Redundancy Phase Monitor (RedReg), the Fisher-trace
prime-learning-window detector (InfoReg), the co-information gate and the dominance test.
"""

from mmreg.monitors.class_centres import (
    ClassCentres,
    alignment_cosine,
    batch_class_means,
    centred_centres,
    ema_centres,
    init_class_centres,
    update_class_centres,
)
from mmreg.monitors.dominance import Dominance, dominance, modality_confidence
from mmreg.monitors.fisher import (
    FisherWindow,
    FisherWindowState,
    fisher_window_add,
    fisher_window_advance,
    fisher_window_init,
    fisher_window_signal,
    fisher_window_update,
)
from mmreg.monitors.gate import (
    coinformation_gate,
    cross_modal_similarity,
    excess_similarity,
    gate_threshold,
    shuffled_similarity,
)
from mmreg.monitors.rpm import (
    RPMSignal,
    RPMState,
    TriggerCalibration,
    calibrated_threshold,
    calibration_init,
    growth_rate,
    noise_redundancy,
    push_confidence,
    push_redundancy,
    push_score,
    rpm_init,
    rpm_score,
    rpm_update,
)

__all__ = [
    "ClassCentres",
    "Dominance",
    "FisherWindow",
    "FisherWindowState",
    "RPMSignal",
    "RPMState",
    "TriggerCalibration",
    "alignment_cosine",
    "batch_class_means",
    "calibrated_threshold",
    "calibration_init",
    "centred_centres",
    "coinformation_gate",
    "cross_modal_similarity",
    "dominance",
    "ema_centres",
    "excess_similarity",
    "fisher_window_add",
    "fisher_window_advance",
    "fisher_window_init",
    "fisher_window_signal",
    "fisher_window_update",
    "gate_threshold",
    "growth_rate",
    "init_class_centres",
    "modality_confidence",
    "noise_redundancy",
    "push_confidence",
    "push_redundancy",
    "push_score",
    "rpm_init",
    "rpm_score",
    "rpm_update",
    "shuffled_similarity",
    "update_class_centres",
]
