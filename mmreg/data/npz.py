"""User data from one `.npz` file: `<split>/<modality>`, `<split>/label` for train, val, test."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmreg.data.dataset import MultimodalDataset, Splits, check_finite

SPLITS = ("train", "val", "test")
LABEL_KEY = "label"
PRESENT_PREFIX = "present/"


def load_npz(path: str | Path, *, num_classes: int | None = None) -> Splits:
  """Splits from a `.npz` holding, for each of train, val and test, `<split>/label` (integer
  class ids `[N]`), one array `<split>/<modality>` `[N, ...]` per modality (the same modalities
  and per-sample shapes in every split) and optionally `<split>/present/<modality>` (bool `[N]`).

  `num_classes` defaults to 1 + the largest label over the three splits. Every problem (missing
  file, split or key, mismatched lengths or shapes, non-integer or out-of-range labels, NaN/Inf)
  is one `ValueError` naming the key and the fix; nothing is standardised or reordered.
  """
  path = Path(path)
  if not str(path):
    raise ValueError("the npz dataset needs a path: pass --config.data.path=FILE.npz (or "
                     "options path=...)")
  if not path.is_file():
    raise ValueError(f"no .npz file at {path.absolute()}; pass the path of a file holding "
                     "train/<modality>, train/label, val/..., test/... arrays")
  try:
    with np.load(path, allow_pickle=False) as archive:
      arrays = {key: archive[key] for key in archive.files}
  except (OSError, ValueError) as e:
    raise ValueError(f"{path} is not a readable .npz archive ({e}); write it with "
                     "numpy.savez(path, **{'train/label': ..., ...})") from e
  by_split = {s: {k[len(s) + 1:]: v for k, v in arrays.items() if k.startswith(s + "/")}
              for s in SPLITS}
  missing = [s for s in SPLITS if not by_split[s]]
  if missing:
    raise ValueError(f"{path} has no arrays for splits {missing} (keys: {sorted(arrays)[:8]}); "
                     "it needs train/..., val/... and test/... keys")
  modalities = _modalities(by_split["train"], path, "train")
  labels = {s: _labels(by_split[s], path, s) for s in SPLITS}
  k = num_classes if num_classes is not None else 1 + max(int(y.max(initial=-1))
                                                          for y in labels.values())
  splits = {}
  for s in SPLITS:
    if _modalities(by_split[s], path, s) != modalities:
      raise ValueError(f"{path}: split {s!r} has modalities {_modalities(by_split[s], path, s)} "
                       f"but train has {modalities}; give every split the same modalities")
    inputs = {m: by_split[s][m] for m in modalities}
    for m, x in inputs.items():
      if x.shape[1:] != by_split["train"][m].shape[1:]:
        raise ValueError(f"{path}: {s}/{m} has per-sample shape {x.shape[1:]} but train/{m} has "
                         f"{by_split['train'][m].shape[1:]}; use one shape per modality")
      if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{path}: {s}/{m} has dtype {x.dtype}; store real numbers")
      if len(x) != len(labels[s]):
        raise ValueError(f"{path}: {s}/{m} has {len(x)} samples but {s}/label has "
                         f"{len(labels[s])}; every array of a split has one row per sample")
    present = _present(by_split[s], modalities, len(labels[s]), path, s)
    y = labels[s]
    if len(y) and (y.min() < 0 or y.max() >= k):
      raise ValueError(f"{path}: {s}/label spans [{y.min()}, {y.max()}], outside "
                       f"[0, {k - 1}]; labels are class ids 0..num_classes-1")
    data = MultimodalDataset({m: np.asarray(x, np.float32) for m, x in inputs.items()},
                             y.astype(np.int32), k, present)
    check_finite(data, f"{path} {s} split")
    splits[s] = data
  return Splits(**splits)


def _modalities(arrays: dict[str, np.ndarray], path: Path, split: str) -> tuple[str, ...]:
  names = tuple(sorted(k for k in arrays if k != LABEL_KEY and not k.startswith(PRESENT_PREFIX)))
  if not names:
    raise ValueError(f"{path}: split {split!r} has no modality arrays; add {split}/<modality>")
  return names


def _labels(arrays: dict[str, np.ndarray], path: Path, split: str) -> np.ndarray:
  if LABEL_KEY not in arrays:
    raise ValueError(f"{path} lacks the key {split}/label; add integer class ids [N]")
  y = arrays[LABEL_KEY]
  if y.ndim != 1:
    raise ValueError(f"{path}: {split}/label has shape {y.shape}; labels are one class id per "
                     "sample, shape [N]")
  if not np.issubdtype(y.dtype, np.integer):
    whole = (np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y))
             and np.all(y == np.round(y)))
    hint = " (they are whole numbers: cast with .astype(int))" if whole else ""
    raise ValueError(f"{path}: {split}/label has dtype {y.dtype}; labels must be integers{hint}")
  return y


def _present(arrays: dict[str, np.ndarray], modalities: tuple[str, ...], n: int, path: Path,
             split: str) -> dict[str, np.ndarray] | None:
  masks = {k[len(PRESENT_PREFIX):]: v for k, v in arrays.items() if k.startswith(PRESENT_PREFIX)}
  if not masks:
    return None
  unknown = sorted(set(masks) - set(modalities))
  if unknown:
    raise ValueError(f"{path}: presence masks for unknown modalities {unknown} in {split}; "
                     f"modalities are {list(modalities)}")
  out = {}
  for m in modalities:
    mask = masks.get(m, np.ones(n, bool))
    if mask.shape != (n,) or mask.dtype != np.bool_:
      raise ValueError(f"{path}: {split}/present/{m} must be bool of shape ({n},), got "
                       f"{mask.dtype} {mask.shape}")
    out[m] = mask
  return out
