"""A held-out split of a Train split, for developing on real data without touching its Test split.

DAGM's Test split is for the final check. To choose a recipe, a threshold or a loss on real
images, hold out part of the Train split instead: :func:`holdout_split` writes a folder in
the official layout whose ``Train`` is the first part of the ids and whose ``Test`` is the
rest (the last ``fraction`` of the defective ids and the last ``fraction`` of the clean ids:
stratified, and the same every time). Images and masks are symbolic links to the source
(copies where links cannot be made), and each split gets its own ``Labels.txt``, so every
command reads the result like any DAGM folder::

    python -m dagm_helpers holdout --data ~/dagm --classes 8 --fraction 0.3 --out ~/dagm_dev
    python -m dagm_helpers train --data ~/dagm_dev --classes 8 --out runs/dev8
    python -m dagm_helpers evaluate --model runs/dev8/model.keras --data ~/dagm_dev --classes 8 --split Test
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError, DatasetError
from .export import link_or_copy
from .layout import LabelRow, Sample, format_labels_txt, scan

HOLDOUT_NOTE = "HOLDOUT.txt"


def _row(sample_id: str, defective: bool) -> LabelRow:
    """The official ``Labels.txt`` row of an image ``<id>.PNG`` (mask ``<id>_label.PNG``)."""
    return LabelRow(sample_id, defective, f"{sample_id}.PNG", f"{sample_id}_label.PNG" if defective else None)


def split_ids(samples: Sequence[Sample], fraction: float) -> tuple[list[Sample], list[Sample]]:
    """(kept, held out): the last ``fraction`` of the defective and of the clean samples, by id."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    kept, held = [], []
    for defective in (True, False):
        group = sorted((s for s in samples if s.defective == defective), key=lambda s: s.sample_id)
        n_held = math.ceil(len(group) * fraction) if group else 0
        if group and n_held >= len(group):
            n_held = len(group) - 1  # keep at least one of each kind for training
        kept += group[: len(group) - n_held]
        held += group[len(group) - n_held :]
    key = lambda s: s.sample_id  # noqa: E731
    return sorted(kept, key=key), sorted(held, key=key)


def _write_split(folder: Path, samples: Sequence[Sample]) -> None:
    label_dir = folder / "Label"
    label_dir.mkdir(parents=True)
    for s in samples:
        link_or_copy(s.image_path, folder / f"{s.sample_id}.PNG")
        if s.defective and s.mask_path is not None:
            link_or_copy(s.mask_path, label_dir / f"{s.sample_id}_label.PNG")
    rows = [_row(s.sample_id, s.defective) for s in samples]
    (label_dir / "Labels.txt").write_text(format_labels_txt(rows))


def holdout_split(
    source: str | os.PathLike[str], classes: Sequence[int], fraction: float, out: str | os.PathLike[str]
) -> Path:
    """Write ``out/ClassN/{Train,Test}``: the Train split of ``source`` with the last ``fraction``
    of its ids (per kind, defective and clean) moved to ``Test``. Returns ``out``.

    Raises :class:`DatasetError` when ``out`` exists and is not empty, or when a class has no
    Train split in ``source``.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} exists and is not empty; choose a new --out folder")
    index = scan(source)
    written = []
    for class_id in classes:
        train = list(index.filter(classes=(class_id,), split="Train"))
        if not train:
            raise DatasetError(f"{source}: no Train split for class {class_id}; check --classes")
        if any(s.mask_path is None and s.defective for s in train):
            raise DatasetError(f"{source}: class {class_id} has defective images without mask files")
        kept, held = split_ids(train, fraction)
        _write_split(out / f"Class{class_id}" / "Train", kept)
        _write_split(out / f"Class{class_id}" / "Test", held)
        written.append(
            f"Class{class_id}: Train {len(kept)} ({sum(s.defective for s in kept)} defective), "
            f"Test {len(held)} ({sum(s.defective for s in held)} defective)"
        )
    (out / HOLDOUT_NOTE).write_text(
        f"Held out from the Train split of {Path(source).resolve()}: the last {fraction:g} of the "
        "defective and of the clean ids of each class form Test here.\n" + "\n".join(written) + "\n"
    )
    return out


__all__ = ["HOLDOUT_NOTE", "holdout_split", "split_ids"]
