"""LabelMe and COCO exports to masks (``python -m dagm_helpers masks``), on files the tests build.

Each expected mask is drawn independently of the converter's code path where it can be (an
axis-aligned rectangle is a slice; a COCO RLE is encoded from a known array by pycocotools).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dagm_helpers import cli
from dagm_helpers.data.annotations import AnnotationWarning, convert
from dagm_helpers.errors import DatasetError


def _mask(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def _labelme(path: Path, shapes: list[dict], image: str, h: int = 40, w: int = 60) -> None:
    path.write_text(
        json.dumps(
            {
                "version": "5.4.1",
                "shapes": shapes,
                "imagePath": image,
                "imageData": None,
                "imageHeight": h,
                "imageWidth": w,
            }
        )
    )


def _shape(kind: str, points: list, label: str = "scratch") -> dict:
    return {"label": label, "points": points, "shape_type": kind, "group_id": None, "flags": {}}


# ----------------------------------------------------------------------------- LabelMe
def test_labelme_polygons_rectangles_and_circles_become_masks(tmp_path):
    src = tmp_path / "json"
    src.mkdir()
    _labelme(src / "a.json", [_shape("rectangle", [[10, 5], [20, 15]])], "../images/a.jpg")
    _labelme(
        src / "b.json",
        [_shape("circle", [[30, 20], [30, 28]]), _shape("polygon", [[0, 0], [9, 0], [0, 9]])],
        "b.png",
    )
    _labelme(src / "c.json", [], "c.png")  # annotated, nothing found: defect-free
    _labelme(src / "d.json", [_shape("rectangle", [[0, 0], [5, 5]], label="dust")], "d.png")
    with pytest.warns(AnnotationWarning, match=r"'point' shape with 1 point\(s\) encloses no area"):
        _labelme(src / "e.json", [_shape("point", [[3, 3]]), _shape("rectangle", [[1, 1], [3, 2]])], "e.bmp")
        summary = convert("labelme", src, tmp_path / "masks", labels=["scratch"])
    assert (summary.masks, summary.images_without_defect, summary.shapes_skipped) == (3, 2, 1)
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["a.png", "b.png", "e.png"]
    a = _mask(tmp_path / "masks/a.png")
    expected = np.zeros((40, 60), np.uint8)
    expected[5:16, 10:21] = 255  # LabelMe's rectangle corners are pixel centres, both included
    assert a.dtype == np.uint8 and np.array_equal(a, expected)
    b = _mask(tmp_path / "masks/b.png") > 0
    yy, xx = np.mgrid[:40, :60]
    inside = (yy - 20) ** 2 + (xx - 30) ** 2 < 8**2 - 8  # well inside the circle of radius 8
    outside = (yy - 20) ** 2 + (xx - 30) ** 2 > 8**2 + 8
    assert b[inside].all() and not b[outside & (yy + xx > 12)].any()
    assert b[2, 2] and not b[8, 8]  # the triangle (0,0) (9,0) (0,9)


def test_labelme_errors_name_the_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"bad.json: not a readable JSON file"):
        convert("labelme", tmp_path / "bad.json", tmp_path / "m")
    (tmp_path / "coco.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DatasetError, match=r"coco.json: not a LabelMe file.*--from coco"):
        convert("labelme", tmp_path / "coco.json", tmp_path / "m")
    (tmp_path / "nosize.json").write_text(json.dumps({"shapes": [], "imagePath": "missing.png"}))
    with pytest.raises(DatasetError, match=r"nosize.json: no imageHeight/imageWidth and no image"):
        convert("labelme", tmp_path / "nosize.json", tmp_path / "m")
    src = tmp_path / "twice"
    src.mkdir()
    for name, image in (("x1.json", "a.png"), ("x2.json", "a.jpg")):
        _labelme(src / name, [_shape("rectangle", [[1, 1], [4, 4]])], image)
    with pytest.raises(DatasetError, match=r"share the stem a; masks are matched to images by stem"):
        convert("labelme", src, tmp_path / "m")
    assert not (tmp_path / "m").exists()  # nothing written before the check


def test_labelme_without_size_reads_the_image_beside_it(tmp_path):
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(tmp_path / "img.png")
    (tmp_path / "img.json").write_text(
        json.dumps(
            {"shapes": [_shape("polygon", [[2, 2], [20, 2], [20, 10], [2, 10]])], "imagePath": "img.png"}
        )
    )
    convert("labelme", tmp_path / "img.json", tmp_path / "m")
    assert _mask(tmp_path / "m/img.png").shape == (24, 32)


# ----------------------------------------------------------------------------- COCO
def _coco(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    from pycocotools import mask as cocomask

    h, w = 30, 50
    blob = np.zeros((h, w), np.uint8)
    blob[4:12, 30:45] = 1
    blob[20:26, 5:9] = 1
    compressed = cocomask.encode(np.asfortranarray(blob))
    compressed["counts"] = compressed["counts"].decode("ascii")  # as JSON exports hold it
    column = blob.flatten(order="F")  # uncompressed RLE: run lengths in column-major order, from 0s
    runs, value, n = [], 0, 0
    for v in column:
        if v != value:
            runs.append(n)
            value, n = v, 0
        n += 1
    runs.append(n)
    square = np.zeros((h, w), np.uint8)
    square[10:20, 10:20] = 1
    data = {
        "images": [
            {"id": 1, "file_name": "imgs/poly.jpg", "height": h, "width": w},
            {"id": 2, "file_name": "rle.png", "height": h, "width": w},
            {"id": 3, "file_name": "raw.png", "height": h, "width": w},
            {"id": 4, "file_name": "clean.png", "height": h, "width": w},
            {"id": 5, "file_name": "other.png", "height": h, "width": w},
        ],
        "annotations": [  # a square whose corners are the pixel edges 10 and 20
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]],
                "iscrowd": 0,
            },
            {"id": 2, "image_id": 2, "category_id": 1, "segmentation": compressed, "iscrowd": 1},
            {
                "id": 3,
                "image_id": 3,
                "category_id": 1,
                "segmentation": {"counts": runs, "size": [h, w]},
                "iscrowd": 1,
            },
            {"id": 4, "image_id": 5, "category_id": 2, "segmentation": [[0, 0, 5, 0, 5, 5]], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "scratch"}, {"id": 2, "name": "dust"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path, {"poly": square, "rle": blob, "raw": blob}


def test_coco_polygons_and_both_rle_forms_become_masks(tmp_path, capsys):
    src, expected = _coco(tmp_path)
    code = cli.main(
        ["masks", "--from", "coco", str(src), "--out", str(tmp_path / "masks"), "--label", "scratch"]
    )
    assert code == 0 and "3 mask(s) written" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["poly.png", "raw.png", "rle.png"]
    for stem in ("rle", "raw"):
        assert np.array_equal(_mask(tmp_path / f"masks/{stem}.png"), expected[stem] * 255), stem
    poly = _mask(tmp_path / "masks/poly.png") > 0
    # pycocotools rasterises a polygon of pixel-edge corners to the square it encloses, give or take its border
    assert poly[11:19, 11:19].all() and poly.sum() <= 121 and not poly[:9].any() and not poly[:, 21:].any()
    assert set(np.unique(_mask(tmp_path / "masks/rle.png"))) == {0, 255}


def test_coco_all_labels_by_default_and_unknown_label_is_an_error(tmp_path, capsys):
    src, _ = _coco(tmp_path)
    convert("coco", src, tmp_path / "all")
    assert (tmp_path / "all/other.png").is_file() and not (tmp_path / "all/clean.png").exists()
    code = cli.main(["masks", "--from", "coco", str(src), "--out", str(tmp_path / "m"), "--label", "crack"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [err[-1]] and "no category named 'crack'; it has 'dust', 'scratch'" in err[-1]
    code = cli.main(["masks", "--from", "coco", str(tmp_path / "nothing.json"), "--out", str(tmp_path / "m")])
    assert code == 2 and "nothing.json: no such file" in capsys.readouterr().err
