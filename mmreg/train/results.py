"""Machine-readable results (JSON, JSONL) and PNG plots."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(obj: Any) -> Any:
  """Convert arrays and NumPy scalars to plain Python; non-finite floats become None."""
  if isinstance(obj, Mapping):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
    return to_jsonable(obj.tolist())
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def write_text_atomic(path: str | Path, text: str) -> Path:
  """Replace `path` by `text` all at once: write `<path>.tmp`, fsync, rename, fsync the folder.

  A crash or a full disk mid-write leaves the old file (or none) in place, never a part.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  try:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    tmp.replace(path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  folder = os.open(path.parent, os.O_RDONLY)
  try:
    os.fsync(folder)
  finally:
    os.close(folder)
  return path


def write_json(path: str | Path, obj: Any) -> Path:
  return write_text_atomic(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(to_jsonable(record), sort_keys=True) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
  """Records of a JSONL file; a final line cut short by a crash is left out."""
  path = Path(path)
  if not path.exists():
    return []
  lines = [line for line in path.read_text().splitlines() if line.strip()]
  records = [json.loads(line) for line in lines[:-1]]
  if lines:
    with contextlib.suppress(json.JSONDecodeError):
      records.append(json.loads(lines[-1]))
  return records


def truncate_jsonl(path: str | Path, keep: Any) -> None:
  """Keep only the records for which `keep(record)` is true (used when resuming); the file
  is replaced atomically, so a crash mid-rewrite keeps every record."""
  path = Path(path)
  if path.exists():
    kept = [r for r in read_jsonl(path) if keep(r)]
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
  """Mean and half-width of the Student-t confidence interval over seeds."""
  from scipy import stats

  x = np.asarray(values, float)
  n = len(x)
  if n == 0:
    raise ValueError("mean_ci of no values")
  half = (float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / np.sqrt(n))
          if n > 1 else float("nan"))
  return {"mean": float(x.mean()), "ci95": half, "n": n}


def _figure(width: float, height: float, rows: int = 1):
  """A matplotlib Figure drawn without pyplot (no global backend is chosen or changed); rows
  share the x axis."""
  from matplotlib.figure import Figure

  fig = Figure(figsize=(width, height), dpi=110)
  return fig, fig.subplots(rows, 1, squeeze=False, sharex=True)[:, 0]


def plot_curves(series: Mapping[str, tuple[Iterable[float], Iterable[float]]], path: str | Path,
                *, title: str, xlabel: str, ylabel: str) -> Path:
  """Line plot of named (x, y) series into a PNG."""
  return plot_panels([(ylabel, series)], path, title=title, xlabel=xlabel)


def plot_panels(panels: Sequence[tuple[str, Mapping[str, tuple[Iterable[float], Iterable[float]]]]],
                path: str | Path, *, title: str, xlabel: str) -> Path:
  """One axis per `(ylabel, {name: (x, y)})` panel, stacked with a shared x label, into a PNG."""
  fig, axes = _figure(6, 1.2 + 2.6 * len(panels), rows=len(panels))
  for ax, (ylabel, series) in zip(axes, panels, strict=True):
    for name, (x, y) in series.items():
      x, y = list(x), list(y)
      ax.plot(x, y, label=name, marker="o" if len(x) < 20 else None, markersize=3)
    ax.set(ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
      ax.legend(fontsize=7)
  axes[0].set_title(title)
  axes[-1].set_xlabel(xlabel)
  fig.tight_layout()
  path = Path(path)
  fig.savefig(path)
  return path


def plot_bars(values: Mapping[str, float], errors: Mapping[str, float] | None, path: str | Path,
              *, title: str, ylabel: str) -> Path:
  """Bar chart with optional error bars into a PNG."""
  names = list(values)
  fig, (ax,) = _figure(max(4, 0.9 * len(names) + 2), 4)
  yerr = None if errors is None else [np.nan_to_num(errors.get(n, 0.0)) for n in names]
  ax.bar(names, [values[n] for n in names], yerr=yerr, capsize=4, color="tab:blue", alpha=0.8)
  ax.set(title=title, ylabel=ylabel)
  ax.grid(axis="y", alpha=0.3)
  for label in ax.get_xticklabels():
    label.set(rotation=30, ha="right")
  fig.tight_layout()
  path = Path(path)
  fig.savefig(path)
  return path
