"""Annotations to masks: LabelMe and COCO exports become one binary mask PNG per image.

Labelling tools save shapes, not pixels. This project trains on masks (a PNG of the image's size,
0 = background, 255 = defect), so the two most common exports are converted:

* **LabelMe** (``labelme`` and the many tools that write its JSON): one ``.json`` per image with
  ``shapes`` of type ``polygon``, ``rectangle`` and ``circle`` (centre, then a point on the
  circle), and the image's ``imageHeight``/``imageWidth``.
* **COCO segmentation** (CVAT, Label Studio, Roboflow...): one JSON with ``images``,
  ``annotations`` whose ``segmentation`` is a list of polygons or run-length encoding (RLE, the
  compressed string form or the uncompressed ``counts`` list), and ``categories``.

Polygons and circles are filled with scikit-image (:func:`skimage.draw.polygon`,
:func:`skimage.draw.disk`), COCO's RLE and polygons are decoded by ``pycocotools`` (the
reference implementation). Every shape of a chosen label (all labels by default) is a defect;
an image with no such shape gets **no** mask file, which the plain folder layout reads as
defect-free. Shapes that enclose no area (``point``, ``line``, ``linestrip``, polygons of fewer
than three points) are skipped with one warning each. Masks are named after the image's file
stem (``images/scratch_01.jpg`` -> ``scratch_01.png``) and written atomically.

    python -m dagm_helpers masks --from labelme path/to/json_folder --out DIR/masks
    python -m dagm_helpers masks --from coco annotations.json --out DIR/masks --label scratch
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError

#: the annotation formats :func:`convert` reads
FORMATS = ("labelme", "coco")
#: LabelMe shape types that enclose an area and become mask pixels
LABELME_AREA_SHAPES = ("polygon", "rectangle", "circle")


class AnnotationWarning(UserWarning):
    """A shape or image of an annotation export was skipped."""


@dataclass(frozen=True)
class MaskSummary:
    """What :func:`convert` did: masks written, images with no defect shape (no mask), shapes skipped."""

    out: Path
    masks: int
    images_without_defect: int
    shapes_skipped: int


# ----------------------------------------------------------------------------- drawing
def _fill_polygon(mask: np.ndarray, xy: np.ndarray) -> None:
    from skimage.draw import polygon

    rr, cc = polygon(xy[:, 1], xy[:, 0], shape=mask.shape)
    mask[rr, cc] = 1


def _labelme_shape(mask: np.ndarray, shape: dict, where: str) -> bool:
    """Draw one LabelMe shape into ``mask``; False (with a warning) when it encloses no area."""
    from skimage.draw import disk

    kind = shape.get("shape_type") or "polygon"  # old LabelMe files have no shape_type: polygons
    try:
        points = np.asarray(shape.get("points"), dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise DatasetError(
            f"{where}: its points are not a list of [x, y] pairs; re-export the file"
        ) from None
    if kind not in LABELME_AREA_SHAPES or (kind == "polygon" and len(points) < 3) or len(points) < 2:
        warnings.warn(
            f"{where}: a {kind!r} shape with {len(points)} point(s) encloses no area and was skipped "
            f"(masks are made of {', '.join(LABELME_AREA_SHAPES)} shapes)",
            AnnotationWarning,
            stacklevel=4,
        )
        return False
    if kind == "rectangle":
        (x0, y0), (x1, y1) = points[0], points[1]
        points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    if kind == "circle":
        (cx, cy), (px, py) = points[0], points[1]
        rr, cc = disk((cy, cx), float(np.hypot(px - cx, py - cy)), shape=mask.shape)
        mask[rr, cc] = 1
    else:
        _fill_polygon(mask, points)
    return True


# ----------------------------------------------------------------------------- readers
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file; pass the annotation export") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable JSON file ({exc}); re-export the annotations") from None


def _size_of(data: dict, path: Path) -> tuple[int, int]:
    """(height, width) of a LabelMe file's image: from the JSON, else from the image beside it."""
    h, w = data.get("imageHeight"), data.get("imageWidth")
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return h, w
    image = path.parent / str(data.get("imagePath") or "")
    if data.get("imagePath") and image.is_file():
        from PIL import Image

        with Image.open(image) as im:
            return im.size[1], im.size[0]
    raise DatasetError(
        f"{path}: no imageHeight/imageWidth and no image at imagePath {data.get('imagePath')!r}; "
        "re-save the file in LabelMe (it writes both) or put the image beside it"
    )


def labelme_masks(
    src: Path, labels: Sequence[str] | None = None
) -> Iterable[tuple[str, np.ndarray | None, int]]:
    """(image stem, 0/1 mask or None when no defect shape, shapes skipped) per LabelMe JSON file."""
    files = sorted(src.glob("*.json")) if src.is_dir() else [src]
    if not files:
        raise DatasetError(
            f"{src}: no .json files in this folder; pass the folder LabelMe saved its JSON files in"
        )
    for path in files:
        data = _read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
            raise DatasetError(
                f"{path}: not a LabelMe file (no 'shapes' list); use --from coco for a COCO export"
            )
        mask = np.zeros(_size_of(data, path), np.uint8)
        drawn = skipped = 0
        for k, shape in enumerate(data["shapes"]):
            if labels and shape.get("label") not in labels:
                continue
            where = f"{path}: shape {k} ({shape.get('label')!r})"
            if _labelme_shape(mask, shape, where):
                drawn += 1
            else:
                skipped += 1
        stem = Path(str(data.get("imagePath") or path.name)).stem or path.stem
        yield stem, (mask if drawn and mask.any() else None), skipped


def coco_masks(
    src: Path, labels: Sequence[str] | None = None
) -> Iterable[tuple[str, np.ndarray | None, int]]:
    """(image stem, 0/1 mask or None, shapes skipped) per image of a COCO JSON export."""
    from pycocotools import mask as cocomask

    data = _read_json(src)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{src}: not a COCO file (no 'images' list); use --from labelme for LabelMe files")
    names = {c.get("id"): c.get("name") for c in data.get("categories") or [] if isinstance(c, dict)}
    if labels:
        unknown = sorted(set(labels) - set(names.values()))
        if unknown:
            raise DatasetError(
                f"{src}: no category named {', '.join(map(repr, unknown))}; it has "
                f"{', '.join(map(repr, sorted(map(str, names.values())))) or 'none'}"
            )
    by_image: dict[Any, list[dict]] = {}
    for a in data.get("annotations") or []:
        by_image.setdefault(a.get("image_id"), []).append(a)
    for image in data["images"]:
        h, w = int(image.get("height") or 0), int(image.get("width") or 0)
        name = str(image.get("file_name") or "")
        if h <= 0 or w <= 0 or not name:
            raise DatasetError(f"{src}: image entry {image.get('id')!r} lacks file_name, height or width")
        mask = np.zeros((h, w), np.uint8)
        skipped = 0
        for a in by_image.get(image.get("id"), []):
            if labels and names.get(a.get("category_id")) not in labels:
                continue
            seg = a.get("segmentation")
            where = f"{src}: annotation {a.get('id')!r} of {name}"
            if isinstance(seg, list):  # polygons [x0, y0, x1, y1, ...]
                polys = [p for p in seg if isinstance(p, list) and len(p) >= 6]
                if len(polys) < len(seg):
                    skipped += len(seg) - len(polys)
                    warnings.warn(
                        f"{where}: a polygon of fewer than 3 points was skipped",
                        AnnotationWarning,
                        stacklevel=3,
                    )
                if not polys:
                    continue
                rle = cocomask.merge(cocomask.frPyObjects(polys, h, w))
            elif isinstance(seg, dict) and "counts" in seg:
                rle = cocomask.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else dict(seg)
                if isinstance(rle.get("counts"), str):
                    rle["counts"] = rle["counts"].encode("ascii")
                if list(rle.get("size", [])) != [h, w]:
                    raise DatasetError(f"{where}: its RLE is for {rle.get('size')}, the image is {[h, w]}")
            else:
                skipped += 1
                warnings.warn(
                    f"{where}: no polygon or RLE segmentation; skipped", AnnotationWarning, stacklevel=3
                )
                continue
            mask |= cocomask.decode(rle).astype(np.uint8)
        yield Path(name).stem, (mask if mask.any() else None), skipped


# ----------------------------------------------------------------------------- the command
def convert(
    source_format: str, src: str | Path, out: str | Path, labels: Sequence[str] | None = None
) -> MaskSummary:
    """Write one mask PNG (0/255) per annotated image of ``src`` into ``out``; see the module docstring.

    Everything is converted in memory first, so a broken file stops the command before any mask
    is written; two images with the same stem (``a.png`` and ``a.jpg``) are refused, as the plain
    layout pairs images and masks by stem.
    """
    from ..atomic import atomic_path

    if source_format not in FORMATS:
        raise DatasetError(f"unknown annotation format {source_format!r}; choose one of {', '.join(FORMATS)}")
    src, out = Path(src), Path(out)
    if not src.exists():
        raise DatasetError(f"{src}: no such file or folder; pass the annotation export")
    reader = labelme_masks if source_format == "labelme" else coco_masks
    results = list(reader(src, list(labels) if labels else None))
    seen: dict[str, int] = {}
    for stem, _, _ in results:
        seen[stem.lower()] = seen.get(stem.lower(), 0) + 1
    twice = sorted(s for s, n in seen.items() if n > 1)
    if twice:
        raise DatasetError(
            f"{src}: several images share the stem {', '.join(twice[:5])}; masks are matched to images by "
            "stem, so rename the images (e.g. a.png and a.jpg) before converting"
        )
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for stem, mask, _ in results:
        if mask is None:
            continue
        with atomic_path(out / f"{stem}.png") as tmp:
            Image.fromarray(mask * np.uint8(255)).save(tmp, format="PNG")
        written += 1
    return MaskSummary(out, written, sum(m is None for _, m, _ in results), sum(s for _, _, s in results))


__all__ = [
    "FORMATS",
    "LABELME_AREA_SHAPES",
    "AnnotationWarning",
    "MaskSummary",
    "coco_masks",
    "convert",
    "labelme_masks",
]
