"""Figures and the prediction browser used by the notebooks.

Everything here is "too long to inline into a notebook": grids of examples with
mask outlines, training curves on shared axes, predicted edges over images, a
markdown/HTML results table and an ipywidgets browser with a static fallback.

Colours are fixed once for the whole project: the true (ellipse) label is drawn
in :data:`TRUTH_COLOR` (lime), the model's prediction in :data:`PRED_COLOR`
(magenta). Every figure uses ``constrained_layout`` so titles and labels do not
overlap.
"""

from __future__ import annotations

import functools
import html
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .history import HistoryLike, read_history

#: colour of the true label (the coarse DAGM ellipse) in every figure, RGB 0..1
TRUTH_COLOR: tuple[float, float, float] = (0.2, 1.0, 0.2)
#: colour of the model's prediction in every figure, RGB 0..1
PRED_COLOR: tuple[float, float, float] = (1.0, 0.0, 1.0)
#: the colours' names, for titles and legends
TRUTH_COLOR_NAME, PRED_COLOR_NAME = "green", "magenta"
#: the same colours as uint8 RGB, for drawing into image arrays
TRUTH_RGB8: tuple[int, int, int] = tuple(int(round(255 * c)) for c in TRUTH_COLOR)  # type: ignore[assignment]
PRED_RGB8: tuple[int, int, int] = tuple(int(round(255 * c)) for c in PRED_COLOR)  # type: ignore[assignment]
#: line colour per loss, so that BCE and Dice look the same in every curve
MODEL_COLORS: dict[str, str] = {"bce": "tab:blue", "dice": "tab:orange", "bce_dice": "tab:green"}


def _plt():
    """matplotlib.pyplot, imported lazily (keeps ``import dagm_helpers`` light)."""
    import matplotlib.pyplot as plt

    return plt


# ----------------------------------------------------------------------------- arrays
def boundaries(mask: np.ndarray) -> np.ndarray:
    """Boolean (H, W): the pixels on the inner boundary of a 0/1 mask."""
    from skimage.segmentation import find_boundaries

    return find_boundaries(np.asarray(mask) > 0, mode="inner")


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A 2-D uint8 grayscale image as (H, W, 3) uint8 RGB (a colour image is copied as it is)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[-1] == 3:
        return image.copy()
    return np.repeat(image[..., None], 3, axis=-1)


def edge_overlay(
    image: np.ndarray, prob: np.ndarray | None, threshold: float = 0.5, truth: np.ndarray | None = None
) -> np.ndarray:
    """RGB uint8 (H, W, 3): ``image`` with the true outline and the predicted edges drawn on it.

    The boundary of ``truth`` (if given) is drawn in :data:`TRUTH_COLOR`; the
    boundary of ``prob >= threshold`` in :data:`PRED_COLOR`, on top.
    """
    rgb = to_rgb(image)
    if truth is not None:
        rgb[boundaries(_as_plane(truth, rgb.shape[:2], "true mask"))] = TRUTH_RGB8
    if prob is not None:
        rgb[boundaries(_as_plane(prob, rgb.shape[:2], "probability map") >= threshold)] = PRED_RGB8
    return rgb


def _as_plane(array: np.ndarray, shape: tuple[int, int], what: str) -> np.ndarray:
    """``array`` as an (H, W) plane of ``shape`` (a trailing channel of 1 is dropped; any size, 1x1 included)."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.shape != tuple(shape):
        raise ValueError(f"{what} {array.shape} and image {tuple(shape)} differ in size")
    return array


def foreground_share(masks: np.ndarray) -> dict[str, float]:
    """How rare defect pixels are: the numbers behind BCE's class-imbalance problem.

    Returns ``pixel_share`` (defect pixels / all pixels), ``defective_images``
    (share of images with any defect pixel), ``share_in_defective`` (mean defect
    share inside defective images) and ``images``.
    """
    masks = np.asarray(masks).reshape(len(masks), -1) > 0
    per_image = masks.mean(axis=1) if masks.size else np.zeros(0)
    defective = per_image > 0
    return {
        "images": int(len(per_image)),
        "pixel_share": float(masks.mean()) if masks.size else 0.0,
        "defective_images": float(defective.mean()) if len(per_image) else 0.0,
        "share_in_defective": float(per_image[defective].mean()) if defective.any() else 0.0,
    }


# ----------------------------------------------------------------------------- data figures
def class_grid(samples: Sequence[Any], per_class: int = 4, size: int = 256, defective_first: bool = True):
    """A grid with ``per_class`` example images per class, the label ellipse outlined.

    ``samples`` is a :class:`~dagm_helpers.data.layout.SampleIndex` (or any
    sequence of samples). Defective images come first in each row, so the
    outlines are visible; titles say the class, id and whether it is defective.
    """
    from .data.images import load_sample

    by_class: dict[int, list[Any]] = {}
    for sample in samples:
        by_class.setdefault(sample.class_id, []).append(sample)
    classes = sorted(by_class)
    if not classes:
        raise ValueError("class_grid needs at least one sample")
    plt = _plt()
    fig, axes = plt.subplots(
        len(classes),
        per_class,
        figsize=(2.4 * per_class, 2.6 * len(classes)),
        squeeze=False,
        constrained_layout=True,
    )
    for row, class_id in enumerate(classes):
        chosen = sorted(by_class[class_id], key=lambda s: (not s.defective) if defective_first else 0)
        for col in range(per_class):
            ax = axes[row, col]
            ax.set_axis_off()
            if col >= len(chosen):
                continue
            sample = chosen[col]
            image, mask = load_sample(sample, size=size)
            ax.imshow(edge_overlay(image, None, truth=mask if sample.defective else None))
            state = "defect" if sample.defective else "clean"
            where = "your images" if class_id == 0 else f"class {class_id}"
            ax.set_title(f"{where} · {sample.sample_id} · {state}", fontsize=8)
    fig.suptitle("Examples per class (label ellipse outlined in green)")
    return fig


def plot_foreground_share(masks: np.ndarray, title: str = "Defect pixels are rare"):
    """Two panels: share of defect vs background pixels (log scale), and per-image defect share."""
    stats = foreground_share(masks)
    per_image = np.asarray(masks).reshape(len(masks), -1).mean(axis=1) if len(masks) else np.zeros(0)
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    shares = [1 - stats["pixel_share"], stats["pixel_share"]]
    left.bar(["background", "defect"], [max(s, 1e-6) for s in shares], color=["0.6", PRED_COLOR])
    left.set_yscale("log")
    left.set_ylabel("share of all pixels (log scale)")
    left.set_title(f"defect pixels: {100 * stats['pixel_share']:.2f}% of all")
    for i, share in enumerate(shares):
        left.text(i, max(share, 1e-6), f"{100 * share:.2f}%", ha="center", va="bottom", fontsize=9)
    defective = per_image[per_image > 0]
    right.hist(100 * defective, bins=min(20, max(len(defective), 1)), color=TRUTH_COLOR, edgecolor="0.3")
    right.set_xlabel("defect share of a defective image (%)")
    right.set_ylabel("images")
    right.set_title(f"{len(defective)} of {len(per_image)} images are defective")
    fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------- training curves
def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def plot_history(
    histories: Mapping[str, HistoryLike],
    metrics: Sequence[str] = ("loss", "val_iou"),
    title: str = "Training curves",
):
    """One panel per metric, every history on the same axes (train solid, validation dashed).

    ``histories`` maps a name (``"bce"``, ``"dice"``) to a list of per-epoch
    dicts, a ``history.csv`` path, a run folder or a ``Run``. For a metric
    without ``val_`` prefix, its ``val_`` twin is drawn dashed when present.
    """
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False, constrained_layout=True
    )
    for (name, source), i in zip(histories.items(), range(len(histories)), strict=True):
        rows = read_history(source)
        color = MODEL_COLORS.get(name, f"C{i + 3}")
        epochs = np.arange(1, len(rows) + 1)
        for ax, metric in zip(axes[0], metrics, strict=True):
            keys = [metric] + ([f"val_{metric}"] if not metric.startswith("val_") else [])
            for key in keys:
                values = [_to_float(r.get(key)) for r in rows]
                if not rows or all(math.isnan(v) for v in values):
                    continue
                split = "validation" if key.startswith("val_") else "train"
                ax.plot(
                    epochs,
                    values,
                    color=color,
                    ls="--" if split == "validation" else "-",
                    marker="o",
                    ms=3,
                    label=f"{name} ({split})",
                )
    for ax, metric in zip(axes[0], metrics, strict=True):
        label = metric.removeprefix("val_").replace("_", " ")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title(("validation " if metric.startswith("val_") else "") + label)
        if ax.lines:
            ax.legend(fontsize=8)
        if "iou" in metric or "dice" in metric:
            ax.set_ylim(0, 1)
    fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------- predictions
def show_predictions(
    images: np.ndarray,
    masks: np.ndarray | None,
    probs: np.ndarray,
    threshold: float = 0.5,
    n: int | None = 4,
    title: str = "Predictions",
):
    """Rows of: the image with its true outline, the probability map, the predicted edges."""
    count = len(images) if n is None else min(n, len(images))
    plt = _plt()
    fig, axes = plt.subplots(count, 3, figsize=(9, 3 * count), squeeze=False, constrained_layout=True)
    for row in range(count):
        truth = None if masks is None else masks[row]
        image_ax, prob_ax, edge_ax = axes[row]
        image_ax.imshow(edge_overlay(images[row], None, truth=truth))
        image_ax.set_title("image, true label (green)", fontsize=9)
        shown = prob_ax.imshow(np.squeeze(probs[row]), vmin=0, vmax=1, cmap="magma")
        prob_ax.set_title("defect probability", fontsize=9)
        fig.colorbar(shown, ax=prob_ax, shrink=0.8)
        edge_ax.imshow(edge_overlay(images[row], probs[row], threshold, truth=truth))
        edge_ax.set_title(f"prediction >= {threshold:.2f} (magenta)", fontsize=9)
        for ax in axes[row]:
            ax.set_axis_off()
    fig.suptitle(title)
    return fig


def static_grid(
    images: np.ndarray,
    truths: np.ndarray | None,
    probs_by_model: Mapping[str, np.ndarray],
    threshold: float | Mapping[str, float] = 0.5,
    n: int = 4,
    title: str = "Predicted edges (magenta) and true label (green) per model",
):
    """The browser's static fallback: ``n`` images as rows, one column of predicted edges per model."""
    names = list(probs_by_model)
    count = min(n, len(images))
    plt = _plt()
    fig, axes = plt.subplots(
        count, len(names), figsize=(3.2 * len(names), 3.2 * count), squeeze=False, constrained_layout=True
    )
    for col, name in enumerate(names):
        t = threshold[name] if isinstance(threshold, Mapping) else threshold
        for row in range(count):
            ax = axes[row, col]
            truth = None if truths is None else truths[row]
            ax.imshow(edge_overlay(images[row], probs_by_model[name][row], t, truth=truth))
            ax.set_axis_off()
            ax.set_title(f"{name} · image {row} · t={t:.2f}", fontsize=9)
    fig.suptitle(title)
    return fig


def comparison_table(
    results: Mapping[str, Mapping[str, Any]],
    keys: Sequence[str] = ("pixel_iou", "dice_defective_mean", "boundary_f1", "image_ap"),
    fmt: str = "markdown",
    digits: int = 3,
) -> str:
    """A table with one row per model and one column per metric, as markdown or HTML text."""
    header = ["model", *keys]
    rows = [[name, *(_fmt(values.get(k), digits) for k in keys)] for name, values in results.items()]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    if fmt == "html":
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    raise ValueError(f"fmt must be 'markdown' or 'html', not {fmt!r}")


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float | np.floating):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


# ----------------------------------------------------------------------------- the browser
@functools.cache
def _browser_class():
    """:class:`PredictionBrowser`'s base, ``ipywidgets.VBox``, imported on first use.

    The browser *is* a widget (not an object that forwards to one), so it displays
    through ipywidgets' own machinery: ``_ipython_display_`` in ipywidgets 7 (what
    Colab ships, 7.7.1) and ``_repr_mimebundle_`` in ipywidgets 8.
    """
    import ipywidgets as widgets

    class PredictionBrowser(widgets.VBox):
        """An ipywidgets browser: a slider over test images, a threshold slider and a model choice.

        Display it as the last expression of a cell. The figure is a PNG in an
        ``Image`` widget under an ``HTML`` caption (plain widgets that every
        front end renders, Colab's included); ``update()`` redraws both, and
        ``shown`` records what is currently displayed.
        """

        def __init__(
            self,
            images: np.ndarray,
            truths: np.ndarray | None,
            probs_by_model: Mapping[str, np.ndarray],
            threshold: float = 0.5,
        ) -> None:
            if not probs_by_model:
                raise ValueError("prediction_browser needs at least one model's probabilities")
            index = widgets.IntSlider(value=0, min=0, max=len(images) - 1, description="image")
            thresh = widgets.FloatSlider(
                value=threshold, min=0.05, max=0.95, step=0.05, description="threshold", readout_format=".2f"
            )
            model = widgets.ToggleButtons(options=list(probs_by_model), description="model")
            caption = widgets.HTML()
            picture = widgets.Image(format="png")
            super().__init__([widgets.HBox([index, thresh]), model, caption, picture])
            self.add_class("dagm-prediction-browser")
            self.images, self.truths, self.probs_by_model = images, truths, dict(probs_by_model)
            self.index, self.threshold, self.model = index, thresh, model
            self.caption, self.picture = caption, picture
            self.shown: dict[str, Any] = {}
            for control in (index, thresh, model):
                control.observe(lambda _change: self.update(), names="value")
            self.update()

        def figure(self):
            """The figure for the current image, model and threshold."""
            i, name, t = self.index.value, self.model.value, self.threshold.value
            prob = np.squeeze(self.probs_by_model[name][i])
            truth = None if self.truths is None else self.truths[i]
            plt = _plt()
            fig, (left, right) = plt.subplots(1, 2, figsize=(8, 4), constrained_layout=True)
            shown = left.imshow(prob, vmin=0, vmax=1, cmap="magma")
            fig.colorbar(shown, ax=left, shrink=0.8)
            left.set_title(f"{name}: defect probability")
            right.imshow(edge_overlay(self.images[i], prob, t, truth=truth))
            right.set_title(f"edges at {t:.2f} (magenta), truth (green)")
            for ax in (left, right):
                ax.set_axis_off()
            fig.suptitle(self.title())
            return fig

        def title(self) -> str:
            """The figure's title: which image, model and threshold, and the predicted area."""
            i, name, t = self.index.value, self.model.value, self.threshold.value
            area = int((np.squeeze(self.probs_by_model[name][i]) >= t).sum())
            return f"test image {i}, {name} model at threshold {t:.2f}: predicted defect area {area} px"

        def update(self) -> None:
            """Redraw the figure and its caption."""
            import io

            fig = self.figure()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=80)
            _plt().close(fig)
            title = self.title()
            self.picture.value = buffer.getvalue()
            self.caption.value = f"<b class='dagm-browser-title'>{html.escape(title)}</b>"
            self.shown = {
                "index": self.index.value,
                "model": self.model.value,
                "threshold": self.threshold.value,
                "title": title,
            }

    return PredictionBrowser


def __getattr__(name: str):
    # ``viz.PredictionBrowser`` without importing ipywidgets when the module is imported
    if name == "PredictionBrowser":
        return _browser_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: set by headless runs (the series): widgets are replaced by a note
HEADLESS_ENV = "DAGM_HEADLESS"


def prediction_browser(
    images: np.ndarray,
    truths: np.ndarray | None,
    probs_by_model: Mapping[str, np.ndarray],
    threshold: float = 0.5,
) -> Any:
    """Build a :class:`PredictionBrowser` (display it as the last expression of a cell).

    In a headless run (``$DAGM_HEADLESS`` set, as ``python -m dagm_helpers series`` does) no
    widget is created and a one-line note stands in for it: nobody can move a slider there,
    and nbclient can block on a cell that creates widgets (jupyter/nbclient#312; it hung the
    series once). The static grid after the browser shows the same images either way.
    """
    if not probs_by_model:
        raise ValueError("prediction_browser needs at least one model's probabilities")
    if os.environ.get(HEADLESS_ENV, "").strip() not in ("", "0"):
        return HeadlessNote(  # type: ignore[return-value]
            f"(interactive browser over {len(images)} test images and {len(probs_by_model)} model(s): "
            "open this notebook in Jupyter or Colab to use it; the static grid below shows the same images)"
        )
    return _browser_class()(images, truths, probs_by_model, threshold=threshold)


class HeadlessNote:
    """What a widget shows in a headless run: one line of text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


__all__ = [
    "MODEL_COLORS",
    "PRED_COLOR",
    "PRED_RGB8",
    "TRUTH_COLOR",
    "TRUTH_RGB8",
    "HEADLESS_ENV",
    "HeadlessNote",
    "boundaries",
    "class_grid",
    "comparison_table",
    "edge_overlay",
    "foreground_share",
    "plot_foreground_share",
    "plot_history",
    "prediction_browser",
    "read_history",
    "show_predictions",
    "static_grid",
    "to_rgb",
]
