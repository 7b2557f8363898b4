"""Optax gradient transformations for modality balancing, one method per file.

Importing this package registers every method in `mmreg.train.methods`.
"""

from mmreg.transforms import registry as _registry  # noqa: F401  (registers the methods)
from mmreg.transforms.agm import AGMState, agm, agm_coefficients
from mmreg.transforms.class_centres import (
    ClassCentresState,
    find_class_centres,
    track_class_centres,
)
from mmreg.transforms.dgl import DGLState, dgl
from mmreg.transforms.inforeg import InfoRegState, inforeg
from mmreg.transforms.mgda import MGDAState, mgda, min_norm_weights
from mmreg.transforms.mgda_ub import MGDAUBState, mgda_ub
from mmreg.transforms.mmpareto import MMParetoState, mmpareto, two_task_min_norm
from mmreg.transforms.ogm_ge import OGMGEState, ogm_coefficients, ogm_ge
from mmreg.transforms.pcgrad import PCGradState, pcgrad, pcgrad_coefficients
from mmreg.transforms.redreg import RedRegState, redreg
from mmreg.transforms.spa_proj import SpAProjState, project_toward_centres, spa_proj
from mmreg.transforms.spa_reg import SpARegState, spa_reg
from mmreg.transforms.spa_slerp import (
    slerp_rate,
    slerp_toward_centres,
    spa_slerp,
    spa_slerp_hook,
)

__all__ = [
    "AGMState",
    "ClassCentresState",
    "DGLState",
    "InfoRegState",
    "MGDAState",
    "MGDAUBState",
    "MMParetoState",
    "OGMGEState",
    "PCGradState",
    "RedRegState",
    "SpAProjState",
    "SpARegState",
    "agm",
    "agm_coefficients",
    "dgl",
    "find_class_centres",
    "inforeg",
    "mgda",
    "mgda_ub",
    "min_norm_weights",
    "mmpareto",
    "ogm_coefficients",
    "ogm_ge",
    "pcgrad",
    "pcgrad_coefficients",
    "project_toward_centres",
    "redreg",
    "slerp_rate",
    "slerp_toward_centres",
    "spa_proj",
    "spa_reg",
    "spa_slerp",
    "spa_slerp_hook",
    "track_class_centres",
    "two_task_min_norm",
]
