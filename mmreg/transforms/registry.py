"""Registers every balancing transform in `mmreg.train.methods` by name.

Builders take `(param_labels, modalities, **options)`. The loss-side PMR, G-Blending and
ETF + dot-regression (`etf_dr`) are registered in `mmreg.train.loss_methods`. `agm` declares
the model, losses and stack of its authors' configuration (`MethodNeeds`), which the training
loop applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmreg.losses.agm import agm_losses
from mmreg.train.methods import MethodNeeds, register_method
from mmreg.transforms.agm import agm
from mmreg.transforms.class_centres import track_class_centres
from mmreg.transforms.dgl import dgl
from mmreg.transforms.inforeg import inforeg
from mmreg.transforms.mgda import mgda
from mmreg.transforms.mgda_ub import mgda_ub
from mmreg.transforms.mmpareto import mmpareto
from mmreg.transforms.ogm_ge import ogm_ge
from mmreg.transforms.pcgrad import pcgrad
from mmreg.transforms.redreg import redreg
from mmreg.transforms.spa_proj import spa_proj
from mmreg.transforms.spa_reg import spa_reg
from mmreg.transforms.spa_slerp import spa_slerp_hook


def _with_modalities(factory):
  def build(param_labels: Any, modalities: tuple[str, ...], **options):
    return factory(param_labels, modalities=modalities, **options)
  return build


def _on_stack(factory):
  def build(param_labels: Any, modalities: tuple[str, ...], **options):
    del modalities
    return factory(param_labels, **options)
  return build


def _redreg_subspace(param_labels: Any, modalities: tuple[str, ...], **options):
  return redreg(param_labels, modalities=modalities, variant="subspace", **options)


def _agm_needs(options: Mapping[str, Any]) -> MethodNeeds:
  """The authors' configuration (see `mmreg.transforms.agm`): zero-input Shapley outputs of a
  concat-fusion model with a linear head, the fused loss split by them, the per-loss stack."""
  if options.get("apply_to", "monomodal_outputs") != "monomodal_outputs":
    return MethodNeeds()
  return MethodNeeds(
      model={"modality_logits": "zero_input_shapley", "fusion": "concat", "head": "linear"},
      loss_spec=agm_losses, loss_grads=True,
      otherwise="set method.options.apply_to='encoders' (mmreg's per-encoder AGM, which runs "
                "on any model and losses)")


def _spa_proj(param_labels: Any, modalities: tuple[str, ...], **options: Any
              ) -> Any:
  del modalities
  return spa_proj(param_labels, **options)


def _spa_slerp(param_labels: Any, modalities: tuple[str, ...], *, momentum: float = 0.9,
               alpha: float = 0.1, threshold: float = 0.9) -> Any:
  del modalities, alpha, threshold
  return track_class_centres(param_labels, momentum=momentum)


def _spa_slerp_post(param_labels: Any, *, total_epochs: int, momentum: float = 0.9,
                    alpha: float = 0.1, threshold: float = 0.9) -> Any:
  del momentum
  return spa_slerp_hook(param_labels, total_epochs=total_epochs, alpha=alpha,
                        threshold=threshold)


register_method("ogm_ge", _with_modalities(ogm_ge))
register_method("inforeg", _with_modalities(inforeg))
register_method("agm", _with_modalities(agm), needs=_agm_needs)
register_method("redreg", _with_modalities(redreg), needs_total_epochs=True)
register_method("redreg_subspace", _redreg_subspace, needs_loss_grads=True,
                loss_grads_over="encoders", needs_total_epochs=True)
register_method("mmpareto", _with_modalities(mmpareto), needs_loss_grads=True,
                loss_grads_over="encoders", takes_loss_weights=True,
                checks_updates=True)
register_method("dgl", _with_modalities(dgl), needs_loss_grads=True, takes_loss_weights=True,
                checks_updates=True)
register_method("pcgrad", _on_stack(pcgrad), needs_loss_grads=True, takes_loss_weights=True,
                checks_updates=True)
register_method("mgda", _on_stack(mgda), needs_loss_grads=True, takes_loss_weights=True,
                checks_updates=True)
register_method("spa_proj", _spa_proj)
register_method("spa_reg", _on_stack(spa_reg))
register_method("spa_slerp", _spa_slerp, post_update=_spa_slerp_post)
register_method("mgda_ub", _on_stack(mgda_ub), needs_loss_grads=True, loss_grads_over="features")
