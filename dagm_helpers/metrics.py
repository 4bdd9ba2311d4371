"""Segmentation and detection metrics: numpy for evaluation, Keras for training curves.

Conventions shared by every function here and by the Keras metrics:

* masks come as ``(N, H, W)`` or ``(N, H, W, 1)`` (a single ``(H, W)`` mask is one image);
* a truth pixel is foreground when it is ``True`` / greater than 0.5 (0/1 and 0/255 both work);
* a probability is foreground when ``y_prob >= threshold`` (as ``keras.metrics.BinaryIoU``);
  boolean predictions are used as they are;
* IoU is ``|A∩B| / |A∪B|`` (Jaccard) and Dice is ``2|A∩B| / (|A|+|B|)`` (F1). The tutorial
  printed its Dice coefficient under the name "IOU"; here each has its own name.

Pooled (``iou``, ``dice``) means the pixels of all images are counted together;
``*_per_image`` gives one value per image. Empty truth and empty prediction agree
perfectly and score 1 everywhere in this module.

Everything is vectorised over the batch (numpy boolean ops, a loop over at most a few
dozen pixel offsets, never over pixels) and processed in chunks of images to bound
memory. On 2 CPU cores, pooled IoU + Dice + per-image IoU/Dice + boundary F1 for
1,000 512x512 masks take a few seconds (see ``docs/model_and_losses.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from .errors import ConfigError

CHUNK = 64  # images processed at once by the numpy metrics (~64 * 512*512 bytes per bool temporary)
DEFAULT_THRESHOLDS = np.linspace(0.05, 0.95, 19)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "confusion_counts",
    "overlap",
    "PixelDice",
    "PixelIoU",
    "THRESHOLD_METRICS",
    "average_precision",
    "best_threshold",
    "boundary_f1",
    "boundary_f1_per_image",
    "defect_scores",
    "dice",
    "dice_per_image",
    "image_level",
    "iou",
    "iou_per_image",
    "mask_boundary",
    "roc_auc",
]


# --------------------------------------------------------------------------- inputs
def _stack(a: Any, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    elif arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ConfigError(f"{what}: expected masks shaped (N, H, W) or (N, H, W, 1), got shape {np.shape(a)}")
    return arr


def _pair(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _stack(y_true, "y_true")
    p = _stack(y_prob, "y_prob")
    if t.shape != p.shape:
        raise ConfigError(
            f"y_true has shape {np.shape(y_true)} but y_prob has {np.shape(y_prob)}; they must match"
        )
    return t, p


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
        raise ConfigError(f"threshold must be a number, got {threshold!r}")
    if not math.isfinite(float(threshold)):
        raise ConfigError(f"threshold must be finite, got {threshold!r}")
    return float(threshold)


def _truth(t: np.ndarray) -> np.ndarray:
    return t if t.dtype == bool else t > 0.5


def _pred(p: np.ndarray, threshold: float) -> np.ndarray:
    return p if p.dtype == bool else p >= threshold


def _count(mask: np.ndarray) -> np.ndarray:
    return np.count_nonzero(mask.reshape(mask.shape[0], -1), axis=1).astype(np.int64)


def _counts(y_true: Any, y_prob: Any, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image (true positives, predicted positives, true positives in truth) as int64."""
    t_all, p_all = _pair(y_true, y_prob)
    threshold = _check_threshold(threshold)
    n = t_all.shape[0]
    tp, pp, tt = (np.zeros(n, np.int64) for _ in range(3))
    for s in range(0, n, CHUNK):
        t = _truth(t_all[s : s + CHUNK])
        p = _pred(p_all[s : s + CHUNK], threshold)
        tp[s : s + CHUNK] = _count(t & p)
        pp[s : s + CHUNK] = _count(p)
        tt[s : s + CHUNK] = _count(t)
    return tp, pp, tt


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num/den with 0/0 = 1 (empty truth and empty prediction agree)."""
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    out = np.ones_like(den)
    np.divide(num, den, out=out, where=den > 0)
    return out


# --------------------------------------------------------------------------- overlap
def confusion_counts(
    y_true: Any, y_prob: Any, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image pixel counts ``(true positives, false positives, false negatives)``, int64, shape (N,).

    The one place the project counts pixels: every overlap score (here, in evaluation and in
    training's validation) is computed from these with :func:`overlap`.
    """
    tp, pp, tt = _counts(y_true, y_prob, threshold)
    return tp, pp - tp, tt - tp


def overlap(tp: Any, fp: Any, fn: Any, kind: str = "dice") -> Any:
    """Dice ``2tp / (2tp + fp + fn)`` or IoU ``tp / (tp + fp + fn)`` from counts (arrays or sums);
    an empty truth predicted empty (0/0) scores 1."""
    tp, fp, fn = (np.asarray(v, np.float64) for v in (tp, fp, fn))
    if kind == "dice":
        out = _ratio(2 * tp, 2 * tp + fp + fn)
    elif kind == "iou":
        out = _ratio(tp, tp + fp + fn)
    else:
        raise ConfigError(f"overlap: kind must be 'dice' or 'iou', got {kind!r}")
    return float(out) if out.ndim == 0 else out


def iou(y_true: Any, y_prob: Any, threshold: float = 0.5) -> float:
    """Pooled IoU (Jaccard) over all pixels of all images; 1.0 when both are empty everywhere."""
    tp, pp, tt = _counts(y_true, y_prob, threshold)
    return float(_ratio(tp.sum(), pp.sum() + tt.sum() - tp.sum()))


def dice(y_true: Any, y_prob: Any, threshold: float = 0.5) -> float:
    """Pooled Dice (F1) over all pixels of all images; 1.0 when both are empty everywhere."""
    tp, pp, tt = _counts(y_true, y_prob, threshold)
    return float(_ratio(2 * tp.sum(), pp.sum() + tt.sum()))


def iou_per_image(y_true: Any, y_prob: Any, threshold: float = 0.5) -> np.ndarray:
    """IoU of every image, shape (N,). An image with empty truth and empty prediction scores 1."""
    tp, pp, tt = _counts(y_true, y_prob, threshold)
    return _ratio(tp, pp + tt - tp)


def dice_per_image(y_true: Any, y_prob: Any, threshold: float = 0.5) -> np.ndarray:
    """Dice of every image, shape (N,). An image with empty truth and empty prediction scores 1."""
    tp, pp, tt = _counts(y_true, y_prob, threshold)
    return _ratio(2 * tp, pp + tt)


# --------------------------------------------------------------------------- boundaries
def _shift_combine(a: np.ndarray, offsets: Sequence[tuple[int, int]], op: Callable) -> np.ndarray:
    """``op``-combine ``a`` with copies of itself shifted by each (dy, dx); outside pixels are ignored."""
    out = a.copy()
    h, w = a.shape[1:]
    for dy, dx in offsets:
        if dy == 0 and dx == 0:
            continue
        if abs(dy) >= h or abs(dx) >= w:
            continue
        src = (slice(None), slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0)))
        dst = (slice(None), slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0)))
        op(out[dst], a[src], out=out[dst])
    return out


_CROSS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def _disk(radius: int) -> list[tuple[int, int]]:
    r = int(radius)
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= r * r]


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """Inner boundary of boolean masks (N, H, W): the mask minus its erosion by a 3x3 cross.

    A foreground pixel is on the boundary when one of its 4 neighbours is background.
    The image frame is not an edge (pixels outside the image count as foreground), so a
    defect cut by the image border is not given an artificial edge there.
    """
    mask = np.asarray(mask, bool)
    eroded = _shift_combine(mask, _CROSS, np.logical_and)
    return mask & ~eroded


def boundary_f1_per_image(y_true: Any, y_prob: Any, threshold: float = 0.5, tolerance: int = 2) -> np.ndarray:
    """Boundary F1 of every image, shape (N,).

    Boundaries are ``mask_boundary`` of truth and thresholded prediction. A predicted
    boundary pixel is correct when a true boundary pixel lies within ``tolerance``
    pixels (Euclidean, i.e. inside a disk of that radius), and vice versa for recall;
    F1 = 2PR/(P+R). Both masks empty: 1. Exactly one empty: 0.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, np.integer)) or tolerance < 0:
        raise ConfigError(f"tolerance must be an integer number of pixels >= 0, got {tolerance!r}")
    threshold = _check_threshold(threshold)
    t_all, p_all = _pair(y_true, y_prob)
    disk = _disk(tolerance)
    n = t_all.shape[0]
    out = np.zeros(n, np.float64)
    for s in range(0, n, CHUNK):
        t = _truth(t_all[s : s + CHUNK])
        p = _pred(p_all[s : s + CHUNK], threshold)
        t_any = t.reshape(len(t), -1).any(axis=1)
        p_any = p.reshape(len(p), -1).any(axis=1)
        scores = np.where(t_any | p_any, 0.0, 1.0)  # empty/empty = 1, one empty = 0
        both = np.flatnonzero(t_any & p_any)
        if both.size:
            tb = mask_boundary(t[both])
            pb = mask_boundary(p[both])
            n_t = _count(tb)
            n_p = _count(pb)
            hit_p = _count(pb & _shift_combine(tb, disk, np.logical_or))
            hit_t = _count(tb & _shift_combine(pb, disk, np.logical_or))
            precision = _ratio(hit_p, n_p)
            recall = _ratio(hit_t, n_t)
            f1 = _ratio(2 * precision * recall, precision + recall)
            # both non-empty masks but all-zero precision and recall -> 0, not 0/0 = 1
            f1[(precision + recall) == 0] = 0.0
            # exactly one boundary empty (a mask filling the whole image) -> 0
            f1[(n_t == 0) ^ (n_p == 0)] = 0.0
            scores[both] = f1
        out[s : s + CHUNK] = scores
    return out


def boundary_f1(y_true: Any, y_prob: Any, threshold: float = 0.5, tolerance: int = 2) -> float:
    """Mean of ``boundary_f1_per_image`` (NaN for zero images)."""
    values = boundary_f1_per_image(y_true, y_prob, threshold, tolerance)
    return float(values.mean()) if values.size else float("nan")


# --------------------------------------------------------------------------- image level
#: pixels averaged by the ``"topk"`` image score (a 10x10 patch; DAGM's defects are larger)
TOP_K = 100


def defect_scores(y_prob: Any, method: str = "max", threshold: float = 0.5, top_k: int = TOP_K) -> np.ndarray:
    """One defect score per image, shape (N,), float64.

    ``"max"``: the largest pixel probability (threshold unused).
    ``"area"``: the number of pixels with probability >= threshold (the predicted defect area).
    ``"topk"``: the mean of the ``top_k`` largest pixel probabilities: like ``"max"``, but a
    few stray confident pixels on a clean image no longer make it look defective (an image
    scores above a threshold only when about ``top_k`` pixels do).
    """
    p = _stack(y_prob, "y_prob")
    if method == "max":
        if p.shape[0] == 0:
            return np.zeros(0, np.float64)
        return p.reshape(p.shape[0], -1).max(axis=1).astype(np.float64)
    if method == "area":
        threshold = _check_threshold(threshold)
        out = np.zeros(p.shape[0], np.float64)
        for s in range(0, p.shape[0], CHUNK):
            out[s : s + CHUNK] = _count(_pred(p[s : s + CHUNK], threshold))
        return out
    if method == "topk":
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ConfigError(f"defect_scores: top_k must be a positive integer, got {top_k!r}")
        flat = p.reshape(p.shape[0], -1)
        k = min(int(top_k), flat.shape[1]) if flat.shape[1] else 1
        out = np.zeros(p.shape[0], np.float64)
        for i, row in enumerate(flat):
            out[i] = np.partition(row, row.size - k)[row.size - k :].mean(dtype=np.float64)
        return out
    raise ConfigError(f"defect_scores: method must be 'max', 'area' or 'topk', got {method!r}")


def _flags_scores(y_true_flags: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true_flags).reshape(-1)
    s = np.asarray(scores, np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ConfigError(f"got {y.size} defect flags but {s.size} scores; they must match")
    if not np.all(np.isfinite(s)):
        raise ConfigError("scores contain NaN or infinity; check the model's predictions")
    return (y > 0.5) if y.dtype != bool else y, s


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid = ends - (counts - 1) / 2.0  # average of ranks ends-counts+1 .. ends
    return mid[inverse]


def roc_auc(y_true_flags: Any, scores: Any) -> float:
    """ROC AUC via the Mann-Whitney rank statistic (ties count 1/2); NaN if a class is absent."""
    y, s = _flags_scores(y_true_flags, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y_true_flags: Any, scores: Any) -> float:
    """Average precision as scikit-learn's ``average_precision_score``: Σ (R_n - R_{n-1}) P_n.

    Precision and recall are taken at every distinct score (descending); NaN without positives.
    """
    y, s = _flags_scores(y_true_flags, scores)
    if not y.any():
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order].astype(np.float64)
    distinct = np.flatnonzero(np.diff(s_sorted)) if s_sorted.size > 1 else np.zeros(0, int)
    last = np.r_[distinct, s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = (last + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def image_level(y_true_flags: Any, scores: Any, threshold: float = 0.5) -> dict[str, float]:
    """Image-level detection quality from per-image defect scores.

    Returns ``auroc`` (rank statistic), ``ap`` (average precision as scikit-learn),
    ``tpr`` (share of defective images with score >= threshold) and ``tnr`` (share of
    defect-free images with score < threshold). A value that needs a class the data
    lacks (e.g. AUROC with no defect-free image) is NaN.
    """
    threshold = _check_threshold(threshold)
    y, s = _flags_scores(y_true_flags, scores)
    flagged = s >= threshold
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    return {
        "auroc": roc_auc(y, s),
        "ap": average_precision(y, s),
        "tpr": float((flagged & y).sum() / n_pos) if n_pos else float("nan"),
        "tnr": float((~flagged & ~y).sum() / n_neg) if n_neg else float("nan"),
    }


# --------------------------------------------------------------------------- threshold sweep
def _mean(f: Callable[..., np.ndarray]) -> Callable[..., float]:
    def g(y_true: Any, y_prob: Any, threshold: float) -> float:
        v = f(y_true, y_prob, threshold)
        return float(v.mean()) if v.size else float("nan")

    return g


THRESHOLD_METRICS: dict[str, Callable[..., float]] = {
    "dice": dice,
    "iou": iou,
    "dice_per_image": _mean(dice_per_image),
    "iou_per_image": _mean(iou_per_image),
    "boundary_f1": boundary_f1,
}


def best_threshold(
    y_true: Any, y_prob: Any, metric: str = "dice", thresholds: Any = DEFAULT_THRESHOLDS
) -> tuple[float, float]:
    """Sweep ``thresholds`` and return ``(threshold, value)`` maximising ``metric``.

    ``metric``: ``"dice"`` or ``"iou"`` (pooled), ``"dice_per_image"`` or ``"iou_per_image"``
    (mean over images), ``"boundary_f1"``. Ties go to the lowest threshold. Use a
    validation split, never the test split.
    """
    fn = THRESHOLD_METRICS.get(metric) if isinstance(metric, str) else None
    if fn is None:
        raise ConfigError(
            f"best_threshold: unknown metric {metric!r}; choose one of: {', '.join(THRESHOLD_METRICS)}"
        )
    ts = np.asarray(thresholds, np.float64).reshape(-1)
    if ts.size == 0 or not np.all(np.isfinite(ts)):
        raise ConfigError("best_threshold: thresholds must be a non-empty list of finite numbers")
    t, p = _pair(y_true, y_prob)
    if metric in _SWEEP_FORMULAS and p.dtype != bool:
        values = _sweep_overlap(t, p, ts, metric)
    else:
        values = np.array([fn(t, p, float(x)) for x in ts])
    i = int(np.argmax(values))
    return float(ts[i]), float(values[i])


_SWEEP_FORMULAS = {
    "dice": lambda tp, pp, tt: _ratio(2 * tp, pp + tt),
    "iou": lambda tp, pp, tt: _ratio(tp, pp + tt - tp),
}
_SWEEP_FORMULAS["dice_per_image"] = _SWEEP_FORMULAS["dice"]
_SWEEP_FORMULAS["iou_per_image"] = _SWEEP_FORMULAS["iou"]


def _sweep_overlap(t_all: np.ndarray, p_all: np.ndarray, ts: np.ndarray, metric: str) -> np.ndarray:
    """Dice/IoU at every threshold in one pass over the data (same values as calling them in a loop).

    Per chunk: predicted positives per image and threshold by counting, true positives from the
    (few) probabilities under the truth only.
    """
    n = t_all.shape[0]
    pp = np.zeros((len(ts), n), np.int64)
    tp = np.zeros((len(ts), n), np.int64)
    tt = np.zeros(n, np.int64)
    for s in range(0, n, CHUNK):
        t = _truth(t_all[s : s + CHUNK])
        p = p_all[s : s + CHUNK]
        flat = p.reshape(p.shape[0], -1)
        img, _ = np.nonzero(t.reshape(t.shape[0], -1))
        under_truth = flat[t.reshape(t.shape[0], -1)]
        tt[s : s + CHUNK] = _count(t)
        for j, th in enumerate(ts):
            pp[j, s : s + CHUNK] = np.count_nonzero(flat >= th, axis=1)
            tp[j, s : s + CHUNK] = np.bincount(img, weights=under_truth >= th, minlength=t.shape[0])
    formula = _SWEEP_FORMULAS[metric]
    if metric.endswith("_per_image"):
        return np.array([formula(tp[j], pp[j], tt).mean() if n else np.nan for j in range(len(ts))])
    return np.array([formula(tp[j].sum(), pp[j].sum(), tt.sum()) for j in range(len(ts))])


# --------------------------------------------------------------------------- Keras metrics
class _PooledPixelMetric(keras.metrics.Metric):
    """Accumulates |A∩B|, |A| and |B| over an epoch (pooled pixels), thresholded like the numpy twins."""

    def __init__(self, threshold: float = 0.5, name: str | None = None, dtype: Any = None):
        super().__init__(name=name, dtype=dtype)
        self.threshold = _check_threshold(threshold)
        self.intersection = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="intersection"
        )
        self.pred_sum = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="pred_sum")
        self.true_sum = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="true_sum")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        t = ops.cast(y_true, "float32") > 0.5
        p = ops.cast(y_pred, "float32") >= self.threshold
        both = ops.logical_and(t, p)
        if sample_weight is None:
            # exact integer counts per batch, accumulated in float32 (relative error ~1e-7 per epoch)
            def total(m: Any) -> Any:
                return ops.cast(ops.sum(ops.cast(m, "int32")), "float32")
        else:
            w = ops.cast(sample_weight, "float32")
            while len(w.shape) < len(t.shape):
                w = ops.expand_dims(w, -1)
            w = ops.broadcast_to(w, ops.shape(t))

            def total(m: Any) -> Any:
                return ops.sum(ops.cast(m, "float32") * w)

        self.intersection.assign_add(total(both))
        self.pred_sum.assign_add(total(p))
        self.true_sum.assign_add(total(t))

    def reset_state(self) -> None:
        for v in (self.intersection, self.pred_sum, self.true_sum):
            v.assign(0.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="dagm")
class PixelIoU(_PooledPixelMetric):
    """Pooled pixel IoU over the epoch; equals ``metrics.iou`` on the same data (1 when all empty)."""

    def __init__(self, threshold: float = 0.5, name: str = "pixel_iou", dtype: Any = None):
        super().__init__(threshold=threshold, name=name, dtype=dtype)

    def result(self) -> Any:
        union = self.pred_sum + self.true_sum - self.intersection
        return ops.where(union > 0, ops.divide_no_nan(self.intersection, union), 1.0)


@keras.saving.register_keras_serializable(package="dagm")
class PixelDice(_PooledPixelMetric):
    """Pooled pixel Dice over the epoch; equals ``metrics.dice`` on the same data (1 when all empty)."""

    def __init__(self, threshold: float = 0.5, name: str = "pixel_dice", dtype: Any = None):
        super().__init__(threshold=threshold, name=name, dtype=dtype)

    def result(self) -> Any:
        total = self.pred_sum + self.true_sum
        return ops.where(total > 0, ops.divide_no_nan(2.0 * self.intersection, total), 1.0)
