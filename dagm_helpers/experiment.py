"""The BCE-vs-Dice experiment: train several losses on identical data, seeds and budget.

The tutorial claims that, against pixel-wise binary cross-entropy, the smoothed
Dice loss converges faster, reaches a better final IoU and gives sharper edges.
:func:`compare` measures that claim instead of repeating it: every loss is trained
with every seed on the same data under the same profile, each run's test metrics
come from :func:`dagm_helpers.infer.evaluate`, and the results are written as

- ``comparison.csv``: one row per loss, mean and standard deviation over seeds;
- ``comparison.md``: the same table in Markdown, with the command that made it;
- ``val_iou_vs_epoch.png``: validation IoU per epoch for every loss on shared
  axes, the line the mean over seeds and the band its min-max spread;
- ``edges.png``: the same test images with the defect edges each loss predicts.

Runs land in ``OUT/runs/<loss>-seed<k>``; a run that already has its
``metrics.json`` is reused, so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import atomic
from .errors import ConfigError

#: test-set metrics reported per loss (keys of :func:`dagm_helpers.infer.evaluate`)
TEST_METRICS: tuple[str, ...] = (
    "iou_defective_mean",
    "dice_defective_mean",
    "pixel_iou",
    "boundary_f1",
    "image_ap",
)
#: the validation IoU whose first crossing measures convergence speed
DEFAULT_TARGET_VAL_IOU = 0.5


@dataclass
class LossResult:
    """Every seed's numbers for one loss."""

    loss: str
    runs: list[Path] = field(default_factory=list)
    test: dict[str, list[float]] = field(default_factory=dict)
    histories: list[list[dict]] = field(default_factory=list)
    epochs_to_target: list[float] = field(default_factory=list)
    seconds_to_target: list[float] = field(default_factory=list)


@dataclass
class Comparison:
    """What :func:`compare` measured, and where it wrote it."""

    out: Path
    results: dict[str, LossResult]
    target_val_iou: float
    command: str

    def rows(self) -> list[dict]:
        """One dict per loss: mean and standard deviation of every number."""
        return [_summary_row(r, self.target_val_iou) for r in self.results.values()]


def first_crossing(history: Sequence[dict], key: str, target: float) -> tuple[float, float]:
    """(epoch, elapsed seconds) of the first epoch whose ``key`` reaches ``target``.

    Epochs count from 1. Returns ``(nan, nan)`` when the run never gets there.
    """
    for i, row in enumerate(history):
        value = _float(row.get(key))
        if value is not None and value >= target:
            epoch = _float(row.get("epoch"))
            seconds = _float(row.get("elapsed_s"))
            return (epoch + 1 if epoch is not None else i + 1, seconds if seconds is not None else math.nan)
    return (math.nan, math.nan)


def compare(
    *,
    losses: Sequence[str] = ("bce", "dice"),
    seeds: int = 3,
    out: str | Path,
    data: str | None = None,
    classes: Sequence[int] | None = None,
    profile: str | None = None,
    target_val_iou: float = DEFAULT_TARGET_VAL_IOU,
    figure_images: int = 4,
    command: str | None = None,
    **train_overrides,
) -> Comparison:
    """Train every loss with seeds ``0 .. seeds-1`` on identical data and budget; write the results.

    ``train_overrides`` are :class:`~dagm_helpers.training.TrainConfig` fields (epochs,
    max_minutes, image_size, crop_size, batch_size, lr, steps_per_epoch, defect_crop_fraction,
    defective_share, model) applied to every run alike.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if not losses or len(set(losses)) != len(losses):
        raise ConfigError(f"--losses needs distinct loss names, got {list(losses)}")
    from .history import read_history
    from .training import TrainConfig, train

    out = Path(out)
    results: dict[str, LossResult] = {}
    for loss in losses:
        result = results[loss] = LossResult(loss)
        for seed in range(seeds):
            run_dir = out / "runs" / f"{loss}-seed{seed}"
            if (run_dir / "metrics.json").exists():
                print(f"[compare] reusing finished run {run_dir}", flush=True)
                history, metrics = (
                    read_history(run_dir / "history.csv"),
                    _read_json(run_dir / "metrics.json"),
                )
            else:
                print(f"[compare] training loss={loss} seed={seed} -> {run_dir}", flush=True)
                cfg = TrainConfig(
                    data=data,
                    classes=tuple(classes) if classes else None,
                    loss=loss,
                    profile=profile,
                    out=run_dir,
                    seed=seed,
                    resume=(run_dir / "last.keras").exists(),
                    **{k: v for k, v in train_overrides.items() if v is not None},
                )
                run = train(cfg)
                history, metrics = list(run.history), dict(run.metrics)
            result.runs.append(run_dir)
            result.histories.append(history)
            for key in TEST_METRICS:
                result.test.setdefault(key, []).append(_nan_if_none(metrics.get(key)))
            epoch, seconds = first_crossing(history, "val_iou", target_val_iou)
            result.epochs_to_target.append(epoch)
            result.seconds_to_target.append(seconds)

    comparison = Comparison(out, results, target_val_iou, command or _default_command(losses, seeds, out))
    write_table(comparison)
    plot_val_iou(comparison, out / "val_iou_vs_epoch.png")
    plot_edges(comparison, out / "edges.png", data=data, classes=classes, profile=profile, n=figure_images)
    return comparison


def compare_cli(args: argparse.Namespace) -> Path:
    """Run :func:`compare` from ``python -m dagm_helpers compare`` arguments."""
    from .training import recipe_overrides

    compare(
        losses=args.losses,
        seeds=args.seeds,
        out=args.out,
        data=args.data,
        classes=args.classes,
        profile=args.profile,
        command="python -m dagm_helpers " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        **recipe_overrides(args),
    )
    return Path(args.out)


# ----------------------------------------------------------------------------- tables
def _summary_row(result: LossResult, target: float) -> dict:
    row: dict = {"loss": result.loss, "seeds": len(result.runs)}
    for key in TEST_METRICS:
        mean, std = _mean_std(result.test.get(key, []))
        row[f"{key}_mean"], row[f"{key}_std"] = mean, std
    reached = [e for e in result.epochs_to_target if not math.isnan(e)]
    row["target_val_iou"] = target
    row["runs_reaching_target"] = len(reached)
    row["epochs_to_target_mean"] = _mean_std(result.epochs_to_target)[0]
    row["seconds_to_target_mean"] = _mean_std(result.seconds_to_target)[0]
    return row


def write_table(comparison: Comparison) -> tuple[Path, Path]:
    """Write ``comparison.csv`` and ``comparison.md`` into ``comparison.out``."""
    rows = comparison.rows()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (_fmt(v) if isinstance(v, float) else v) for k, v in row.items()})
    csv_path = atomic.write_text(comparison.out / "comparison.csv", buf.getvalue())
    md_path = atomic.write_text(comparison.out / "comparison.md", format_markdown(comparison))
    return csv_path, md_path


def format_markdown(comparison: Comparison) -> str:
    """The comparison as a Markdown table, with the command and the definitions."""
    rows = comparison.rows()
    n_seeds = max((r["seeds"] for r in rows), default=0)
    header = (
        "| loss | IoU (defective, per image) | Dice (defective, per image) | pixel IoU | boundary F1 "
        f"| image AP | runs reaching val IoU {comparison.target_val_iou:g} | epochs to it | seconds to it |"
    )
    lines = [
        "# BCE vs Dice: measured",
        "",
        f"Command: `{comparison.command}`",
        "",
        header,
        "|" + "---|" * 9,
    ]
    for r in rows:
        cells = [f"`{r['loss']}`"]
        cells += [_pm(r[f"{k}_mean"], r[f"{k}_std"]) for k in TEST_METRICS]
        cells += [
            f"{r['runs_reaching_target']}/{r['seeds']}",
            _fmt(r["epochs_to_target_mean"], 1),
            _fmt(r["seconds_to_target_mean"], 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Test-split numbers are mean ± standard deviation over {n_seeds} seed(s); each seed trains every",
        "loss on the same data, split and budget. IoU and Dice per image are averaged over defective",
        "test images; pixel IoU pools every pixel of every test image; boundary F1 compares predicted",
        "and true mask edges within 2 px; image AP ranks images by their defect score (the mean of their 100 most confident pixels).",
        "'Epochs/seconds to it' average over the runs that reached the validation IoU target.",
        "",
        "Figures: `val_iou_vs_epoch.png` (convergence), `edges.png` (predicted edges per loss).",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures
def plot_val_iou(comparison: Comparison, path: str | Path) -> Path:
    """Validation IoU against epoch for every loss on shared axes, with the spread over seeds."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    for i, result in enumerate(comparison.results.values()):
        curves = [[_nan_if_none(row.get("val_iou")) for row in h] for h in result.histories if h]
        if not curves:
            continue
        length = max(len(c) for c in curves)
        arr = np.full((len(curves), length), np.nan)
        for j, c in enumerate(curves):
            arr[j, : len(c)] = c
        epochs = np.arange(1, length + 1)
        color = f"C{i}"
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, lo, hi = np.nanmean(arr, 0), np.nanmin(arr, 0), np.nanmax(arr, 0)
        ax.plot(epochs, mean, color=color, marker="o", ms=3, label=f"{result.loss} (mean of {len(curves)})")
        if len(curves) > 1:
            ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, linewidth=0)
    ax.axhline(
        comparison.target_val_iou, color="0.5", ls="--", lw=1, label=f"target {comparison.target_val_iou:g}"
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation IoU (pooled pixels)")
    ax.set_ylim(0, 1)
    ax.set_title("Convergence: validation IoU per epoch (band: min-max over seeds)")
    ax.legend(loc="lower right")
    path = Path(path)
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def plot_edges(
    comparison: Comparison,
    path: str | Path,
    *,
    data: str | None,
    classes: Sequence[int] | None,
    profile: str | None,
    n: int = 4,
) -> Path:
    """The same defective test images with the edges each loss's seed-0 model predicts."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from . import viz
    from .config import resolve_profile
    from .data import resolve_data
    from .data.layout import scan
    from .data.pipeline import load_arrays
    from .infer import load_model, model_channels, predict_proba

    prof = resolve_profile(profile)
    root = resolve_data(data, prof)
    test = scan(root).filter(classes=classes or prof.classes, split="Test", defective=True)
    chosen = (
        [test[i] for i in np.linspace(0, len(test) - 1, num=min(n, len(test))).round().astype(int)]
        if len(test)
        else []
    )
    names = list(comparison.results)
    fig, axes = plt.subplots(
        max(len(chosen), 1),
        len(names),
        figsize=(3.2 * len(names), 3.2 * max(len(chosen), 1)),
        squeeze=False,
        constrained_layout=True,
    )
    if chosen:
        loaded: dict[int, tuple] = {}  # by the channels a model takes (grey, or colour: --channels 3)
        for col, name in enumerate(names):
            model = load_model(comparison.results[name].runs[0] / "model.keras")
            channels = model_channels(model)
            if channels not in loaded:
                loaded[channels] = load_arrays(chosen, size=prof.image_size, channels=channels)
            images, masks = loaded[channels]
            probs = predict_proba(model, images)
            for row in range(len(chosen)):
                ax = axes[row, col]
                ax.imshow(viz.edge_overlay(images[row], probs[row], 0.5, truth=masks[row]))
                ax.set_axis_off()
                if row == 0:
                    ax.set_title(f"{name}: predicted edges", fontsize=10)
    else:
        axes[0, 0].text(0.5, 0.5, "no defective test images", ha="center", va="center")
        for ax in axes.ravel():
            ax.set_axis_off()
    # two short lines: one long line overflows a two-column figure
    fig.suptitle(
        f"Defective test images\ntrue ellipse: {viz.TRUTH_COLOR_NAME}, predicted edges: {viz.PRED_COLOR_NAME}",
        fontsize=11,
    )
    path = Path(path)
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- small utilities
def _read_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


def _float(value) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _nan_if_none(value) -> float:
    f = _float(value)
    return math.nan if f is None else f


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _pm(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def _default_command(losses: Sequence[str], seeds: int, out: Path) -> str:
    return f"python -m dagm_helpers compare --losses {' '.join(losses)} --seeds {seeds} --out {out}"


__all__ = ["Comparison", "LossResult", "compare", "compare_cli", "first_crossing", "format_markdown"]
