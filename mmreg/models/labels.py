"""Parameter labels: which modality (or `fusion`, `head`, ...) owns each parameter leaf, from a
rule over parameter paths."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
from flax import nnx

from mmreg.tree import leaf_paths

FUSION, HEAD, AUX_HEAD, PROJECTOR = "fusion", "head", "aux_head", "projector"
ROLE_LABELS = (FUSION, HEAD, AUX_HEAD, PROJECTOR)
_ROLE_OF = {"fusion": FUSION, "head": HEAD, "aux_heads": AUX_HEAD, "projectors": PROJECTOR,
            "shared": PROJECTOR}

Path = tuple[str, ...]
LabelRule = Mapping[str | re.Pattern, str] | Callable[[Path], str | None]


def param_labels(model: nnx.Module | Any, rules: LabelRule | None = None, *,
                 pure: bool = True) -> Any:
  """Label tree of a model's `nnx.Param`s (or of a parameter pytree): who owns each leaf.

  Labels mmreg's methods read: a modality's name for its encoder's parameters, `"fusion"`,
  `"head"` (the fused classifier), `"aux_head"` (unimodal heads), `"projector"` (shared-latent
  projections, prototypes, temperature, imputers).

  Args:
    model: an NNX module (its `nnx.Param`s are labelled) or a parameter pytree (a nested dict,
      an `nnx.State`, ...; the labels get its structure).
    rules: how a parameter path (its keys, e.g. `("audio_net", "layers", 0, "kernel")` as
      strings) maps to a label. Either a mapping, tried in order, first match wins, whose keys
      are path prefixes (`"audio_net"`, `"heads/audio"`: whole keys joined by "/") or compiled
      regular expressions (`re.compile(r"^video_")`, searched in the path joined by "/"); or a
      function of the path tuple returning a label or None. None (default): the module's
      `param_label_rule` attribute if it has one (so the loop labels a registered model), else
      the structure of a `MultimodalClassifier` (`encoders/<m>` → m, fusion, head, aux_heads,
      projectors, shared).
    pure: for a module, `True` gives labels shaped like
      `nnx.to_pure_dict(nnx.state(model, nnx.Param))` (what `mmreg.train` optimises); `False`
      like `nnx.as_pure(nnx.state(model, nnx.Param))`, the `nnx.State` that
      `nnx.Optimizer.update` hands to the transform.

  Raises a ValueError listing every parameter the rule leaves unlabelled, with a rule that
  would fix it.
  """
  if isinstance(model, nnx.Module):
    if rules is None:
      rules = getattr(model, "param_label_rule", None)
    params = nnx.state(model, nnx.Param)
    tree = nnx.to_pure_dict(params) if pure else nnx.as_pure(params)
  else:
    tree = model
  rule = _classifier_rule if rules is None else _as_rule(rules)
  paths = leaf_paths(tree)
  labels = [rule(path) for path in paths]
  for path, label in zip(paths, labels, strict=True):
    if label is not None and not isinstance(label, str):
      raise TypeError(f"the label rule gave {label!r} for parameter {'/'.join(path)}; a rule "
                      "returns a label string, or None for no label")
  unlabelled = [path for path, label in zip(paths, labels, strict=True) if label is None]
  if unlabelled:
    raise ValueError(_unlabelled_message(unlabelled, rules))
  return jax.tree.unflatten(jax.tree.structure(tree), labels)


def _classifier_rule(path: Path) -> str | None:
  if path[0] == "encoders" and len(path) > 1:
    return path[1]
  return _ROLE_OF.get(path[0])


def _as_rule(rules: LabelRule) -> Callable[[Path], str | None]:
  if not isinstance(rules, Mapping):
    if callable(rules):
      return rules
    raise TypeError(f"rules is {type(rules).__name__}; pass a mapping {{path prefix or "
                    "re.compile(regex): label}} or a function path -> label")
  matchers: list[tuple[Callable[[Path], bool], str]] = []
  for key, label in rules.items():
    if not isinstance(label, str):
      raise TypeError(f"rule {key!r} maps to {label!r}; labels are strings")
    if isinstance(key, re.Pattern):
      matchers.append((lambda path, key=key: key.search("/".join(path)) is not None, label))
    elif isinstance(key, str) and key.strip("/"):
      prefix = tuple(key.strip("/").split("/"))
      matchers.append((lambda path, prefix=prefix: path[:len(prefix)] == prefix, label))
    else:
      raise TypeError(f"rule key {key!r}: use a path prefix string (e.g. 'audio_net') or a "
                      "compiled regular expression (re.compile(...))")

  def rule(path: Path) -> str | None:
    return next((label for matches, label in matchers if matches(path)), None)

  return rule


def _unlabelled_message(unlabelled: list[Path], rules: LabelRule | None) -> str:
  shown = ", ".join("/".join(p) for p in unlabelled[:8])
  more = f" and {len(unlabelled) - 8} more" if len(unlabelled) > 8 else ""
  tops = dict.fromkeys(p[0] for p in unlabelled)
  example = ", ".join(f"'{t}': '<label>'" for t in tops)
  if rules is None:
    what = ("The default rule labels only the parts of a MultimodalClassifier (encoders/<m>, "
            f"{', '.join(_ROLE_OF)}); for another model pass a rule (or set it as the "
            "model's `param_label_rule`)")
    fix = f"{{{example}}}"
  elif isinstance(rules, Mapping):
    what, fix = "Add rules for them", f"{{**rules, {example}}}"
  else:
    what, fix = "The rule returned None for them; return a label or use a mapping", f"{{{example}}}"
  return (f"{len(unlabelled)} parameters have no label: {shown}{more}. {what}, e.g. "
          f"mmreg.param_labels(model, {fix}), with a modality name for an encoder's "
          f"parameters or one of {list(ROLE_LABELS)}.")
