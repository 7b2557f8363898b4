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
from mmreg.monitors.gate import coinformation_gate, cross_modal_similarity, gate_threshold
from mmreg.monitors.rpm import (
    RPMSignal,
    RPMState,
    growth_rate,
    noise_redundancy,
    push_confidence,
    push_redundancy,
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
    "alignment_cosine",
    "batch_class_means",
    "centred_centres",
    "coinformation_gate",
    "cross_modal_similarity",
    "dominance",
    "ema_centres",
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
    "rpm_init",
    "rpm_score",
    "rpm_update",
    "update_class_centres",
]
