"""Parameter labels: which modality (or `fusion`, `head`) owns each parameter leaf."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

PyTree = Any
LabelsOrFn = PyTree | Callable[[PyTree], PyTree]


def _key_name(entry: Any) -> str | None:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      value = getattr(entry, attr)
      return None if attr == "name" and value == "value" else str(value)
  return str(entry)


def leaf_paths(tree: PyTree) -> list[tuple[str, ...]]:
  """Key path of every leaf, ignoring the `.value` hop of `nnx.Variable` leaves."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [tuple(k for k in map(_key_name, path) if k is not None) for path, _ in flat]


def flat_labels(param_labels: LabelsOrFn, updates: PyTree) -> list[str]:
  """Labels aligned with `jax.tree.leaves(updates)`.

  `param_labels` is a tree of strings with the structure of the parameters (a plain
  nested dict, or an `nnx.State`), or a function of the parameters that returns one.
  Raises a ValueError naming the first path that differs.
  """
  labels = param_labels(updates) if callable(param_labels) else param_labels
  label_paths, update_paths = leaf_paths(labels), leaf_paths(updates)
  label_leaves = jax.tree.leaves(labels)
  if label_paths != update_paths:
    only_labels = sorted(set(label_paths) - set(update_paths))[:3]
    only_updates = sorted(set(update_paths) - set(label_paths))[:3]
    raise ValueError(
        "param_labels do not match the parameter tree: "
        f"{len(label_paths)} labelled leaves vs {len(update_paths)} parameter leaves; "
        f"only in labels: {['/'.join(p) for p in only_labels]}, "
        f"only in params: {['/'.join(p) for p in only_updates]}. "
        "Build the labels with mmreg.param_labels(model) (or param_labels(model, rule)) for the "
        "same model.")
  bad = [x for x in label_leaves if not isinstance(x, str)]
  if bad:
    raise TypeError(f"param_labels leaves must be strings, got {type(bad[0]).__name__}")
  return label_leaves


def check_modalities(labels: list[str], modalities: tuple[str, ...], method: str) -> None:
  """Every modality a method balances must own at least one parameter."""
  missing = [m for m in modalities if m not in labels]
  if missing:
    raise ValueError(
        f"{method}: no parameter is labelled {missing}; labels present: {sorted(set(labels))}. "
        "Pass the modality names used as keys of the model's encoders.")
