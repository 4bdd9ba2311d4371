"""The plain layout of your own images: ``DIR/images/`` + ``DIR/masks/`` (optionally inside
``train/``, ``val/``, ``test/``): what ``scan`` finds, its seeded split, its errors, ``info``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dagm_helpers.data.images import load_sample
from dagm_helpers.data.layout import PLAIN_CLASS, format_counts, is_plain, plain_split, scan
from dagm_helpers.errors import DatasetError


def _image(path: Path, size=(40, 56), value=100, mode="L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full(size, value, np.uint8)
    if mode == "RGB":
        Image.fromarray(np.stack([arr] * 3, axis=-1)).save(path)
    elif mode == "I;16":
        Image.fromarray(arr.astype(np.uint16) * 257).save(path)
    else:
        Image.fromarray(arr).save(path)


def _mask(path: Path, size=(40, 56), box=(5, 15, 5, 20), style="255") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros(size, np.uint8)
    if box:
        arr[box[0] : box[1], box[2] : box[3]] = 1
    if style == "255":
        Image.fromarray(arr * 255).save(path)
    elif style == "01":
        Image.fromarray(arr).save(path)
    elif style == "palette":
        im = Image.fromarray(arr, mode="P")
        im.putpalette(
            [0, 0, 0, 0, 0, 0] + [7] * 762
        )  # index 1 is (nearly) black: indices decide, not colours
        im.save(path)


def make_plain(root: Path, n_defective: int = 10, n_clean: int = 15, size=(40, 56)) -> Path:
    """Images of several formats; masks 0/255, 0/1 and palette; one all-zero mask (a clean image)."""
    suffixes = [".png", ".jpg", ".bmp", ".tif"]
    styles = ["255", "01", "palette"]
    for i in range(n_defective):
        _image(root / "images" / f"def{i:02d}{suffixes[i % 4]}", size)
        _mask(root / "masks" / f"def{i:02d}.png", size, style=styles[i % 3])
    for i in range(n_clean):
        _image(root / "images" / f"ok{i:02d}{suffixes[i % 4]}", size)
    _mask(root / "masks" / "ok00.png", size, box=None)  # an all-zero mask: defect-free
    return root


def test_plain_folder_is_found_counted_and_split_by_stem(tmp_path):
    index = scan(make_plain(tmp_path / "own"))
    assert is_plain(index) and index.classes == (PLAIN_CLASS,)
    assert len(index) == 25 and sum(s.defective for s in index) == 10
    test = index.filter(split="Test")
    # stratified: 20% of each group, the same for every scan
    assert sum(s.defective for s in test) == 2 and sum(not s.defective for s in test) == 3
    assert [s.sample_id for s in scan(tmp_path / "own").filter(split="Test")] == [s.sample_id for s in test]
    ok00 = next(s for s in index if s.sample_id == "ok00")
    assert not ok00.defective and ok00.mask_path is None
    # a class filter (the profiles' default --classes) keeps your own images
    assert len(index.filter(classes=(1,), split="Train")) == 20
    rows = index.counts()
    assert [r["split"] for r in rows] == ["Train", "Test"]
    share = sum(r["defect_pixel_share"] * r["images"] for r in rows) / 25
    assert share == pytest.approx(10 * 150 / (25 * 40 * 56))
    assert "own" in format_counts(rows) and "defect pixels" in format_counts(rows)


def test_plain_split_moves_few_test_images_when_images_are_added(tmp_path):
    index = scan(make_plain(tmp_path / "own", n_defective=20, n_clean=60))
    before = {s.sample_id for s in index.filter(split="Test")}
    make_plain(tmp_path / "own", n_defective=22, n_clean=66)
    after = {s.sample_id for s in scan(tmp_path / "own").filter(split="Test")}
    assert len(before - after) <= 2, "adding 10% more images must keep almost all Test images"
    # and the split never depends on the order of the samples
    samples = list(index)
    assert sorted(plain_split(samples[::-1]), key=lambda s: s.sample_id) == sorted(
        plain_split(samples), key=lambda s: s.sample_id
    )


def test_fixed_split_folders(tmp_path):
    root = tmp_path / "fixed"
    make_plain(root / "train", 4, 4)
    make_plain(root / "val", 2, 2)
    make_plain(root / "test", 2, 3)
    index = scan(root)
    assert index.splits == ("Train", "Val", "Test")
    assert [(r["split"], r["images"], r["defective"]) for r in index.counts()] == [
        ("Train", 8, 4),
        ("Val", 4, 2),
        ("Test", 5, 2),
    ]


def test_masks_of_every_kind_read_as_zero_one(tmp_path):
    root = make_plain(tmp_path / "own", n_defective=3, n_clean=1)
    for sample in scan(root).filter(defective=True):
        image, mask = load_sample(sample, policy="none")
        assert image.shape == mask.shape == (40, 56)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1} and mask.sum() == 150


def test_rgb_and_16_bit_images_become_8_bit_grey_with_a_warning(tmp_path):
    _image(tmp_path / "own" / "images" / "rgb.png", mode="RGB", value=80)
    _image(tmp_path / "own" / "images" / "deep.png", mode="I;16", value=200)
    _mask(tmp_path / "own" / "masks" / "deep.png")
    for sample in scan(tmp_path / "own"):
        with pytest.warns(UserWarning, match=sample.image_path.name):
            image, _ = load_sample(sample, policy="none")
        assert image.dtype == np.uint8 and image.shape == (40, 56)
        assert int(image[0, 0]) == (80 if sample.sample_id == "rgb" else 200)


@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda r: _mask(r / "masks" / "orphan.png"), r"orphan\.png has no image of the same stem"),
        (lambda r: _image(r / "images" / "def00.tif"), r"def00\.[a-z]+ and def00\.[a-z]+ .* same stem"),
        (
            lambda r: _mask(r / "masks" / "def01.png", size=(30, 30)),
            r"def01\.png is 30x30 pixels but its image",
        ),
        (
            lambda r: (r / "masks" / "def02.png").write_bytes(b"not a png"),
            r"def02\.png: cannot read this mask",
        ),
    ],
    ids=["mask-without-image", "duplicate-stem", "size-mismatch", "unreadable-mask"],
)
def test_plain_folder_problems_name_the_files(tmp_path, build, expected):
    root = make_plain(tmp_path / "own", n_defective=4, n_clean=2)
    build(root)
    with pytest.raises(DatasetError, match=expected):
        scan(root)


def test_split_folders_without_train_are_an_error(tmp_path):
    make_plain(tmp_path / "fixed" / "val", 2, 2)
    with pytest.raises(DatasetError, match=r"no train/images/"):
        scan(tmp_path / "fixed")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dagm_helpers", *args], capture_output=True, text=True, timeout=300
    )


def test_info_shows_splits_and_defect_pixel_share(tmp_path):
    root = make_plain(tmp_path / "own")
    proc = _cli("info", str(root), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["class"], r["split"], r["images"], r["defective"]) for r in rows] == [
        (0, "Train", 20, 8),
        (0, "Test", 5, 2),
    ]
    assert all(0 < r["defect_pixel_share"] < 0.1 for r in rows)
    table = _cli("info", str(root))
    assert table.returncode == 0 and "defect pixels" in table.stdout


def test_info_error_is_one_line_with_exit_status_2(tmp_path):
    root = make_plain(tmp_path / "own", n_defective=2, n_clean=1)
    _mask(root / "masks" / "ghost.png")
    proc = _cli("info", str(root))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "ghost.png" in lines[0]
