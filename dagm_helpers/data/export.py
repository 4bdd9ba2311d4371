"""DAGM in the plain layout of your own images: the same images and masks, as ``images/`` + ``masks/``.

Shows what the plain layout looks like with data you already have, and proves that both
readers feed the same pipeline (the same pixels reach the network either way)::

    python -m dagm_helpers to-plain --data ~/dagm --classes 8 --out ~/class8_plain
    python -m dagm_helpers info ~/class8_plain
    python -m dagm_helpers train --data ~/class8_plain --out runs/plain8

By default each DAGM split becomes a fixed split folder (``train/``, ``test/``), so the Test
images are DAGM's own; ``merge=True`` (``--merge``) puts every image into one ``images/``
folder and lets the plain layout's seeded split choose. Files are symbolic links to the
source (copies where links cannot be made), named ``class<N>_<split>_<id>.png``. A development-set
class (ellipse labels, no mask files) gets its masks drawn from the ellipses.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..errors import DatasetError
from .layout import Sample, scan


def link_or_copy(src: Path, dest: Path) -> None:
    """A symbolic link ``dest`` -> ``src`` (absolute), or a copy where links cannot be made."""
    if os.path.lexists(dest):
        raise DatasetError(f"{dest} exists already; write into a new folder")
    try:
        os.symlink(Path(src).resolve(), dest)
    except OSError:  # no symlinks here (some Windows setups, some mounts): copy
        shutil.copy2(src, dest)


def plain_name(sample: Sample) -> str:
    """The stem a DAGM sample gets in the plain layout: ``class8_train_0576`` (ids repeat
    between classes and between DAGM's Train and Test)."""
    return f"class{sample.class_id}_{sample.split.lower()}_{sample.sample_id}"


def _write(folder: Path, samples: Sequence[Sample]) -> tuple[int, int]:
    from PIL import Image

    from .images import ellipse_mask, read_image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    defective = 0
    for s in samples:
        name = plain_name(s)
        link_or_copy(s.image_path, folder / "images" / f"{name}{Path(s.image_path).suffix.lower()}")
        if s.mask_path is not None:
            link_or_copy(s.mask_path, folder / "masks" / f"{name}{Path(s.mask_path).suffix.lower()}")
        elif s.ellipse is not None:
            shape = read_image(s.image_path, policy="none").shape
            Image.fromarray(ellipse_mask(shape, s.ellipse) * 255).save(folder / "masks" / f"{name}.png")
        defective += int(s.defective)
    return len(samples), defective


def to_plain(
    source: str | os.PathLike[str],
    classes: Sequence[int] | None,
    out: str | os.PathLike[str],
    merge: bool = False,
) -> dict[str, tuple[int, int]]:
    """Write the DAGM ``classes`` of ``source`` (all when None) to ``out`` in the plain layout.

    Returns ``{folder: (images, defective)}`` per folder written. Raises :class:`DatasetError`
    when ``out`` exists and is not empty, or when the classes hold no images.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} exists and is not empty; choose a new --out folder")
    index = scan(source)
    selected = index.filter(classes=classes) if classes else index
    if not len(selected):
        have = ", ".join(f"class {c}" for c in index.classes) or "nothing"
        raise DatasetError(f"{source}: no images for class(es) {list(classes or [])}; the folder has {have}")
    if merge:
        return {"images": _write(out, list(selected))}
    written = {}
    for split in selected.splits:
        written[split.lower()] = _write(out / split.lower(), list(selected.filter(split=split)))
    return written


__all__ = ["link_or_copy", "plain_name", "to_plain"]
