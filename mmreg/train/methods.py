"""Registry of balancing methods by name, for configs and experiment modules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import optax

from mmreg.models.labels import FUSION, HEAD, ROLE_LABELS
from mmreg.train.config import default_config

Builder = Callable[..., optax.GradientTransformationExtraArgs]
PostUpdate = Callable[[Any, Any, Any], Any]
PostUpdateBuilder = Callable[..., PostUpdate]
LossMethodBuilder = Callable[..., Any]  # (**options) -> mmreg.train.loss_methods.LossMethod


LOSS_GRADS_SCOPES = ("all", "encoders", "fusion_head", "features")
AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class MethodNeeds:
  """What a configured method needs from the run besides its transform.

  `model`: model-config entries it runs on (e.g. `{"modality_logits": "zero_input_shapley"}`);
  `loss_spec`: the losses it trains on, a function of the modalities (it replaces the run's
  classification losses); `loss_grads`: the per-loss gradient stack; `otherwise`: how to run
  the method without these needs, named in the error a conflicting setting raises."""

  model: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  loss_spec: Callable[[tuple[str, ...]], Any] | None = None
  loss_grads: bool = False
  otherwise: str = ""


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
  (`mmreg.train.loss_methods`). `needs`: from the options, the `MethodNeeds` the loop applies
  (model config, loss spec, stack). `takes_loss_weights`: the builder takes the run's loss
  weights as the `loss_weights` option (the stack methods, whose incoming update must be
  Σ_k w_k ∇L_k). `checks_updates`: the builder takes `check_updates` (a run-time check that the
  incoming updates are that sum), turned off by `build_method(..., updates_from_stack=True)`."""

  build: Builder
  needs_loss_grads: bool = False
  post_update: PostUpdateBuilder | None = None
  loss_grads_over: str | tuple[str, ...] = "all"
  needs_total_epochs: bool = False
  loss_method: LossMethodBuilder | None = None
  needs: Callable[[Mapping[str, Any]], MethodNeeds] | None = None
  takes_loss_weights: bool = False
  checks_updates: bool = False


def _joint(param_labels: Any, modalities: tuple[str, ...]) -> optax.GradientTransformation:
  del param_labels, modalities
  return optax.identity()


METHODS: dict[str, Method] = {"joint": Method(_joint)}


def register_method(name: str, build: Builder, *, needs_loss_grads: bool = False,
                    post_update: PostUpdateBuilder | None = None,
                    loss_grads_over: str | tuple[str, ...] = "all",
                    needs_total_epochs: bool = False,
                    loss_method: LossMethodBuilder | None = None,
                    needs: Callable[[Mapping[str, Any]], MethodNeeds] | None = None,
                    takes_loss_weights: bool = False, checks_updates: bool = False) -> None:
  loss_grads_mask({}, loss_grads_over)  # validates the scope
  METHODS[name] = Method(build, needs_loss_grads, post_update, loss_grads_over,
                         needs_total_epochs, loss_method, needs, takes_loss_weights,
                         checks_updates)


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
                 options: Mapping[str, Any] | None = None, *, total_epochs: int | None = None,
                 loss_weights: Mapping[str, float] | None = None,
                 updates_from_stack: bool = False) -> optax.GradientTransformation:
  """The method's gradient transformation; `total_epochs` fills that option for methods
  that schedule over training, `loss_weights` (the run's `LossSpec.weights`) for methods that
  take them, unless the options set them.

  `updates_from_stack=True` says the caller puts the method first in its chain and its step
  hands it updates = Σ_k w_k ∇L_k of the very stack it passes (`make_train_step` does): the
  stack methods' run-time check of that (`check_updates`) is then redundant and is turned off
  unless the options set it, which saves the gradient-sized buffer it needs."""
  method = get_method(name)
  options = dict(options or {})
  if method.takes_loss_weights and loss_weights is not None:
    options.setdefault("loss_weights", dict(loss_weights))
  if method.checks_updates and updates_from_stack:
    options.setdefault("check_updates", False)
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


def method_needs(name: str, options: Mapping[str, Any] | None = None) -> MethodNeeds:
  """What method `name` with `options` needs from the run (`MethodNeeds`); `loss_grads` is
  also set for methods registered with `needs_loss_grads`."""
  method = get_method(name)
  needs = method.needs(dict(options or {})) if method.needs is not None else MethodNeeds()
  return dataclasses.replace(needs, loss_grads=needs.loss_grads or method.needs_loss_grads)


def model_config_for(name: str, model_cfg: Mapping[str, Any],
                     options: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """`model_cfg` with the entries method `name` needs filled in where it leaves them unset or
  "auto"; an entry set to another value raises one error naming the fix."""
  needs = method_needs(name, options)
  out = dict(model_cfg)
  for key, value in needs.model.items():
    given = out.get(key, AUTO)
    if given not in (AUTO, value):
      raise ValueError(f"method {name!r} runs on model.{key}={value!r} but the config sets "
                       f"model.{key}={given!r}: drop that setting"
                       + (f", or {needs.otherwise}" if needs.otherwise else ""))
    out[key] = value
  return out


def method_loss_spec(name: str, modalities: tuple[str, ...],
                     options: Mapping[str, Any] | None = None,
                     loss_cfg: Mapping[str, Any] | None = None) -> Any:
  """The `LossSpec` method `name` trains on, or None where it trains on the run's losses.
  Settings of the run's loss section (`loss_cfg`) other than the defaults would be ignored
  by the method's own losses: they raise one error naming the fix."""
  needs = method_needs(name, options)
  if needs.loss_spec is None:
    return None
  defaults = default_config().loss.to_dict()
  changed = sorted(k for k, v in (loss_cfg or {}).items()
                   if k not in defaults or defaults[k] != v)
  if changed:
    raise ValueError(f"method {name!r} trains on its own losses, which ignore "
                     f"{[f'loss.{k}' for k in changed]}: drop those settings"
                     + (f", or {needs.otherwise}" if needs.otherwise else ""))
  return needs.loss_spec(tuple(modalities))
