"""A run's ``history.csv``: the one reader and writer (no TensorFlow here, so figures and the
benchmark's orchestrator can read histories without importing it).

One row per completed epoch (``epoch`` counts from 0, as Keras' ``CSVLogger``):
``epoch, loss, iou, dice, val_loss, val_iou, val_dice, val_dice_defective, lr, elapsed_s``.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HISTORY_FILE = "history.csv"
HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch",
    "loss",
    "iou",
    "dice",
    "val_loss",
    "val_iou",
    "val_dice",
    "val_dice_defective",
    "lr",
    "elapsed_s",
)

HistoryLike = Sequence[Mapping[str, Any]] | str | os.PathLike


def read_history(source: HistoryLike) -> list[dict]:
    """The rows of a history: from a ``history.csv`` (or the run folder holding one; a missing file
    is an empty history), a :class:`~dagm_helpers.training.Run`, or a list of dicts (copied).
    Numbers are floats (``epoch`` an int); an unreadable value is NaN."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.is_dir():
            path = path / HISTORY_FILE
        if not path.exists():
            return []
        with open(path, newline="", encoding="utf-8") as fh:
            return [{k: _number(k, v) for k, v in row.items()} for row in csv.DictReader(fh)]
    if hasattr(source, "history") and not isinstance(source, Sequence):  # a Run
        return read_history(source.history)  # type: ignore[attr-defined]
    return [dict(row) for row in source]


def _number(key: str, value: Any) -> float | int:
    try:
        return int(value) if key == "epoch" else float(value)
    except (TypeError, ValueError):
        return math.nan


def format_history(rows: Sequence[Mapping[str, Any]]) -> str:
    """``history.csv``'s text for ``rows`` (the columns above; a missing value is ``nan``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(HISTORY_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in HISTORY_COLUMNS})
    return buf.getvalue()


def _csv_value(v: Any) -> Any:
    if v is None:
        return "nan"
    if isinstance(v, int | np.integer):
        return int(v)
    return repr(float(v))


__all__ = ["HISTORY_COLUMNS", "HISTORY_FILE", "format_history", "read_history"]
