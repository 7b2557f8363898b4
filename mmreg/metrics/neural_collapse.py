"""Neural-collapse metrics NC1–NC4 (Papyan, Han & Donoho, PNAS 2020).

Notation: penultimate features h_i ∈ R^d with labels y_i ∈ {0..K-1}; class means μ_c; global
mean μ_G; M̃ = [μ_c − μ_G]_c ∈ R^{d×K}; classifier W ∈ R^{K×d} (rows w_c) and bias b.

* Orientation: `weights` is the Flax kernel `[d, K]` (what `nnx.Linear(d, K).kernel` holds,
  i.e. Wᵀ, one column per class), the same layout as M̃.
* μ_G = (1/K)·Σ_c μ_c (`global_mean="classes"`, default) or the sample mean
  Σ_c n_c μ_c / N (`global_mean="samples"`); the two differ under class imbalance.

The statistics are sums, so a dataset can be read in batches: fold batches into `ClassStats`
with `update_class_stats`, finish with `neural_collapse_from_stats`, and count NC4 in a second
pass with `nc4_counts` once the class means are known (`neural_collapse_batches` does both).
Accumulation is in float64 NumPy, shifted by the first batch's mean for stability.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple

import numpy as np

GlobalMean = Literal["classes", "samples"]
MissingClasses = Literal["raise", "skip"]


class ClassStats(NamedTuple):
  """Running sums of features, shifted by `shift`: counts n_c `[K]`, Σ_{y_i=c}(h_i − s) `[K, d]`
  and Σ_i (h_i − s)(h_i − s)ᵀ `[d, d]`."""

  counts: np.ndarray
  sums: np.ndarray
  scatter: np.ndarray
  shift: np.ndarray


class NeuralCollapse(NamedTuple):
  """NC metrics over the classes in `classes` (all K unless some were skipped).

  nc1: (1/K)·Tr(Σ_W Σ_B^†).
  equinorm_means / equinorm_weights: std/mean of ‖μ_c − μ_G‖ and of ‖w_c‖ (NC2).
  equiangular_means / equiangular_weights: std of the pairwise cosines, c ≠ c' (NC2).
  Every std has ddof = 1 (the sample std, torch.std's default, as the public NC code uses).
  max_angle_means / max_angle_weights: mean over c ≠ c' of |cos + 1/(K−1)| (NC2).
  etf_distance_means / etf_distance_weights: ‖G/‖G‖_F − (I − 11ᵀ/K)/√(K−1)‖_F for
    G = M̃ᵀM̃ and G = WWᵀ (NC2).
  nc3: ‖Wᵀ/‖W‖_F − M̃/‖M̃‖_F‖_F² (self-duality distance).
  alignment_cosine: cos(w_c, μ_c − μ_G) per class `[K']` (NC3).
  nc4: fraction of samples with argmax_c(w_cᵀh + b_c) ≠ argmin_c ‖h − μ_c‖ (NaN if not counted).
  classes: the class indices the metrics cover.

  Ratios whose denominator is 0 (‖μ_c − μ_G‖ when all class means coincide, ‖w_c‖ of a zero
  classifier) are NaN: undefined, not an error, so a degenerate network can still be logged.
  """

  nc1: float
  equinorm_means: float
  equinorm_weights: float
  equiangular_means: float
  equiangular_weights: float
  max_angle_means: float
  max_angle_weights: float
  etf_distance_means: float
  etf_distance_weights: float
  nc3: float
  alignment_cosine: np.ndarray
  nc4: float
  classes: np.ndarray

  def as_dict(self) -> dict[str, Any]:
    """JSON-ready: floats and lists."""
    return {k: (v.tolist() if isinstance(v, np.ndarray) else float(v))
            for k, v in self._asdict().items()}


def _as_features(features: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
  h = np.asarray(features, np.float64)
  y = np.asarray(labels)
  if h.ndim != 2 or y.shape != (h.shape[0],):
    raise ValueError(f"features must be [N, d] and labels [N]; got {h.shape} and {y.shape}")
  if not np.issubdtype(y.dtype, np.integer):
    raise TypeError(f"labels must be integers, got {y.dtype}")
  return h, y


def init_class_stats(num_classes: int, dim: int) -> ClassStats:
  return ClassStats(np.zeros(num_classes), np.zeros((num_classes, dim)), np.zeros((dim, dim)),
                    np.zeros(dim))


def update_class_stats(stats: ClassStats, features: Any, labels: Any) -> ClassStats:
  """Fold one batch `[B, d]`, `[B]` into the running sums."""
  h, y = _as_features(features, labels)
  num_classes, dim = stats.sums.shape
  if h.shape[1] != dim:
    raise ValueError(f"features have dimension {h.shape[1]}, the statistics {dim}")
  if len(y) and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f"labels span [{y.min()}, {y.max()}], outside [0, {num_classes - 1}]")
  shift = stats.shift
  if not stats.counts.any() and len(h):
    shift = h.mean(axis=0)
  hs = h - shift
  sums = stats.sums.copy()
  np.add.at(sums, y, hs)
  counts = stats.counts + np.bincount(y, minlength=num_classes)
  return ClassStats(counts, sums, stats.scatter + hs.T @ hs, shift)


def _present_classes(counts: np.ndarray, missing_classes: MissingClasses) -> np.ndarray:
  if missing_classes not in ("raise", "skip"):
    raise ValueError(f"missing_classes={missing_classes!r}; use 'raise' or 'skip'")
  absent = np.flatnonzero(counts == 0)
  if absent.size and missing_classes == "raise":
    raise ValueError(f"classes {absent.tolist()} have no samples in the features; pass "
                     "missing_classes='skip' to compute the metrics over the other classes")
  present = np.flatnonzero(counts > 0)
  if present.size < 2:
    raise ValueError(f"neural-collapse metrics need at least 2 classes with samples, got "
                     f"{present.tolist()}")
  return present


def _check_weights(weights: Any, dim: int, num_classes: int | None = None) -> np.ndarray:
  """The kernel as float64 `[d, K]`; a clear error for any other shape."""
  w = np.asarray(weights, np.float64)
  if w.ndim != 2 or w.shape[0] != dim or (num_classes is not None and w.shape[1] != num_classes):
    k = "K" if num_classes is None else str(num_classes)
    hint = (" — that looks like W with one row per class; pass its transpose (the Flax kernel "
            "layout [d, K])" if w.ndim == 2 and w.shape[-1] == dim else "")
    raise ValueError(f"weights must be the classifier kernel [d, K] = [{dim}, {k}], "
                     f"got {w.shape}{hint}")
  return w


def class_means(stats: ClassStats) -> np.ndarray:
  """μ_c `[K, d]` (NaN rows for classes with no samples)."""
  with np.errstate(invalid="ignore", divide="ignore"):
    return stats.sums / stats.counts[:, None] + stats.shift


def _gram_stats(vectors: np.ndarray) -> tuple[float, float, float, float]:
  """(equinorm, equiangular, max-angle, ETF distance) of the columns of `vectors` [d, K]."""
  k = vectors.shape[1]
  norms = np.linalg.norm(vectors, axis=0)
  unit = vectors / np.maximum(norms, 1e-300)
  cos = (unit.T @ unit)[~np.eye(k, dtype=bool)]
  gram = vectors.T @ vectors
  etf = (np.eye(k) - np.ones((k, k)) / k) / np.sqrt(k - 1)
  with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 → NaN when every vector is 0
    etf_distance = np.linalg.norm(gram / np.linalg.norm(gram) - etf)
    equinorm = norms.std(ddof=1) / norms.mean()
  return (float(equinorm), float(cos.std(ddof=1)), float(np.abs(cos + 1.0 / (k - 1)).mean()),
          float(etf_distance))


def _trace_pinv_product(sigma_w: np.ndarray, m_tilde: np.ndarray) -> float:
  """Tr(Σ_W Σ_B^†) with Σ_B = M̃M̃ᵀ/K, through the SVD of M̃ (never forming Σ_B): singular
  values below s_max·max(d, K)·eps are treated as zero."""
  u, s, _ = np.linalg.svd(m_tilde, full_matrices=False)
  keep = s > s.max(initial=0.0) * max(m_tilde.shape) * np.finfo(np.float64).eps
  u, s = u[:, keep], s[keep]
  k = m_tilde.shape[1]
  return float(k * np.sum(np.einsum("di,de,ei->i", u, sigma_w, u) / s**2))


def nc4_counts(features: Any, weights: Any, bias: Any, means: np.ndarray,
               classes: np.ndarray | None = None) -> tuple[int, int]:
  """(disagreements, samples) between argmax_c(w_cᵀh + b_c) and argmin_c ‖h − μ_c‖ over
  `classes` (default all), for one batch. `means` is `[K, d]`, `weights` the `[d, K]` kernel."""
  h = np.asarray(features, np.float64)
  w = np.asarray(weights, np.float64)
  classes = np.arange(w.shape[1]) if classes is None else classes
  logits = h @ w[:, classes]
  if bias is not None:
    logits = logits + np.asarray(bias, np.float64)[classes]
  mu = means[classes]
  dist = (h**2).sum(1)[:, None] - 2 * h @ mu.T + (mu**2).sum(1)[None, :]
  return int(np.sum(logits.argmax(1) != dist.argmin(1))), len(h)


def neural_collapse_from_stats(stats: ClassStats, weights: Any, bias: Any = None, *,
                               global_mean: GlobalMean = "classes",
                               missing_classes: MissingClasses = "raise",
                               nc4: tuple[int, int] | None = None) -> NeuralCollapse:
  """NC1–NC3 from accumulated statistics; NC4 from `nc4 = (disagreements, samples)` if given.

  With `missing_classes="skip"`, classes without samples are left out everywhere (their
  classifier columns too, and K becomes the number of classes present).
  """
  if global_mean not in ("classes", "samples"):
    raise ValueError(f"global_mean={global_mean!r}; use 'classes' or 'samples'")
  num_classes, dim = stats.sums.shape
  w = _check_weights(weights, dim, num_classes)
  present = _present_classes(stats.counts, missing_classes)
  counts = stats.counts[present]
  n = counts.sum()
  sums = stats.sums[present]
  means_shifted = sums / counts[:, None]
  # Σ_W·N = Σ_i (h_i−μ_y)(h_i−μ_y)ᵀ = scatter − Σ_c n_c m_c m_cᵀ (shifted means m_c), over the
  # present classes only (a skipped class has no samples, so the scatter holds none of it).
  sigma_w = (stats.scatter - (means_shifted.T * counts) @ means_shifted) / n
  mu_g = means_shifted.mean(axis=0) if global_mean == "classes" else sums.sum(axis=0) / n
  m_tilde = (means_shifted - mu_g).T
  k = len(present)
  w = w[:, present]
  eq_m, ang_m, max_m, etf_m = _gram_stats(m_tilde)
  eq_w, ang_w, max_w, etf_w = _gram_stats(w)
  with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 → NaN when M̃ = 0
    nc3 = np.linalg.norm(w / np.linalg.norm(w) - m_tilde / np.linalg.norm(m_tilde)) ** 2
  alignment = (w * m_tilde).sum(0) / (np.linalg.norm(w, axis=0) *
                                      np.maximum(np.linalg.norm(m_tilde, axis=0), 1e-300))
  nc1 = _trace_pinv_product(sigma_w, m_tilde) / k
  nc4_value = float("nan") if nc4 is None else nc4[0] / max(nc4[1], 1)
  return NeuralCollapse(nc1, eq_m, eq_w, ang_m, ang_w, max_m, max_w, etf_m, etf_w, float(nc3),
                        alignment, nc4_value, present)


def neural_collapse(features: Any, labels: Any, weights: Any, bias: Any = None, *,
                    global_mean: GlobalMean = "classes",
                    missing_classes: MissingClasses = "raise") -> NeuralCollapse:
  """NC1–NC4 of features `[N, d]` with labels `[N]` and a classifier kernel `[d, K]` (+ bias
  `[K]`). See the module docstring for the definitions and options."""
  h, y = _as_features(features, labels)
  num_classes = _check_weights(weights, h.shape[1]).shape[1]
  stats = update_class_stats(init_class_stats(num_classes, h.shape[1]), h, y)
  present = _present_classes(stats.counts, missing_classes)
  counts = nc4_counts(h, weights, bias, class_means(stats), present)
  return neural_collapse_from_stats(stats, weights, bias, global_mean=global_mean,
                                    missing_classes=missing_classes, nc4=counts)


def neural_collapse_batches(batches: Callable[[], Iterable[tuple[Any, Any]]], weights: Any,
                            bias: Any = None, *, global_mean: GlobalMean = "classes",
                            missing_classes: MissingClasses = "raise") -> NeuralCollapse:
  """NC metrics over a dataset read in batches. `batches()` returns a fresh iterable of
  `(features [B, d], labels [B])`; it is read twice (statistics, then NC4)."""
  stats = None
  for h, y in batches():
    if stats is None:
      num_classes = _check_weights(weights, np.shape(h)[1]).shape[1]
      stats = init_class_stats(num_classes, np.shape(h)[1])
    stats = update_class_stats(stats, h, y)
  if stats is None:
    raise ValueError("batches() yielded no batch")
  present = _present_classes(stats.counts, missing_classes)
  means = class_means(stats)
  wrong = total = 0
  for h, _ in batches():
    a, b = nc4_counts(h, weights, bias, means, present)
    wrong, total = wrong + a, total + b
  return neural_collapse_from_stats(stats, weights, bias, global_mean=global_mean,
                                    missing_classes=missing_classes, nc4=(wrong, total))
