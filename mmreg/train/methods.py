"""Registry of balancing methods by name, for configs and experiment modules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import optax

from mmreg.models.labels import FUSION, HEAD, ROLE_LABELS

Builder = Callable[..., optax.GradientTransformationExtraArgs]
PostUpdate = Callable[[Any, Any, Any], Any]
PostUpdateBuilder = Callable[..., PostUpdate]
LossMethodBuilder = Callable[..., Any]  # (**options) -> mmreg.train.loss_methods.LossMethod


LOSS_GRADS_SCOPES = ("all", "encoders", "fusion_head", "features")


@dataclasses.dataclass(frozen=True)
class Method:
  """How to build a method's transform from `(param_labels, modalities, **options)`, whether
  the train step must compute the per-loss gradient stack for it and over which parameters
  (`loss_grads_over`: one of `LOSS_GRADS_SCOPES` or a tuple of labels; "all" by default;
  "features": the stack w.r.t. the encoders' outputs, `mmreg.train.per_loss_feature_grads`),
  and optionally a step run after `optax.apply_updates`, built from
  `(param_labels, total_epochs=, **options)` as `hook(params, opt_state, epoch) -> params`.
  `needs_total_epochs`: the builder takes the run's length as the `total_epochs` option
  (schedules over training). `loss_method`: for loss-side methods, builds from `**options`
  the `LossMethod` whose epoch-level state the loop keeps in `TrainState.loss_state`
  (`mmreg.train.loss_methods`)."""

  build: Builder
  needs_loss_grads: bool = False
  post_update: PostUpdateBuilder | None = None
  loss_grads_over: str | tuple[str, ...] = "all"
  needs_total_epochs: bool = False
  loss_method: LossMethodBuilder | None = None


def _joint(param_labels: Any, modalities: tuple[str, ...]) -> optax.GradientTransformation:
  del param_labels, modalities
  return optax.identity()


METHODS: dict[str, Method] = {"joint": Method(_joint)}


def register_method(name: str, build: Builder, *, needs_loss_grads: bool = False,
                    post_update: PostUpdateBuilder | None = None,
                    loss_grads_over: str | tuple[str, ...] = "all",
                    needs_total_epochs: bool = False,
                    loss_method: LossMethodBuilder | None = None) -> None:
  loss_grads_mask({}, loss_grads_over)  # validates the scope
  METHODS[name] = Method(build, needs_loss_grads, post_update, loss_grads_over,
                         needs_total_epochs, loss_method)


def loss_grads_mask(param_labels: Any, over: str | Sequence[str]) -> Any:
  """Bool tree (shaped like `param_labels`) of the leaves the per-loss stack must cover:
  "encoders" (every modality-labelled leaf), "fusion_head" (`fusion` and `head`), a sequence
  of labels, or "all"/"features" (returns None: no parameter mask)."""
  if isinstance(over, str):
    if over not in LOSS_GRADS_SCOPES:
      raise ValueError(f"unknown per-loss gradient scope {over!r}; valid: "
                       f"{list(LOSS_GRADS_SCOPES)} or a tuple of parameter labels")
    if over in ("all", "features"):
      return None
    if over == "encoders":
      return jax.tree.map(lambda lab: lab not in ROLE_LABELS, param_labels)
    over = (FUSION, HEAD)
  wanted = set(over)
  return jax.tree.map(lambda lab: lab in wanted, param_labels)


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; valid methods: {sorted(METHODS)}")
  return METHODS[name]


def build_method(name: str, param_labels: Any, modalities: tuple[str, ...],
                 options: Mapping[str, Any] | None = None, *, total_epochs: int | None = None
                 ) -> optax.GradientTransformation:
  """The method's gradient transformation; `total_epochs` fills that option for methods
  that schedule over training, unless the options set it."""
  method = get_method(name)
  options = dict(options or {})
  if method.needs_total_epochs and "total_epochs" not in options:
    if total_epochs is None:
      raise ValueError(f"method {name!r} needs the run's length: pass total_epochs")
    options["total_epochs"] = total_epochs
  try:
    return method.build(param_labels, modalities, **options)
  except TypeError as e:
    raise ValueError(f"bad options {options} for method {name!r}: {e}") from e


def build_post_update(name: str, param_labels: Any, options: Mapping[str, Any] | None = None,
                      *, total_epochs: int) -> PostUpdate | None:
  """The method's post-update hook, or None for methods without one."""
  builder = get_method(name).post_update
  if builder is None:
    return None
  options = dict(options or {})
  try:
    return builder(param_labels, total_epochs=total_epochs, **options)
  except TypeError as e:
    raise ValueError(f"bad options {options} for method {name!r}: {e}") from e


def build_loss_method(name: str, options: Mapping[str, Any] | None = None) -> Any:
  """The method's `LossMethod` (loss-side methods), or None for the others."""
  builder = get_method(name).loss_method
  if builder is None:
    return None
  options = dict(options or {})
  try:
    return builder(**options)
  except TypeError as e:
    raise ValueError(f"bad options {options} for method {name!r}: {e}") from e
