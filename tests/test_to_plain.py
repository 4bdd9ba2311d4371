"""`to-plain`: DAGM written in the plain layout of your own images, and proof that both readers
feed the same pixels to the pipeline (on a tiny DAGM folder, and on the real sample when present)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _train_child import make_tiny_dagm

from dagm_helpers.data.export import plain_name, to_plain
from dagm_helpers.data.layout import PLAIN_CLASS, is_plain, scan
from dagm_helpers.data.pipeline import load_arrays, load_tiles
from dagm_helpers.errors import DatasetError

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "dagm_sample"


def test_to_plain_keeps_the_splits_and_the_pixels(tmp_path):
    dagm = scan(make_tiny_dagm(tmp_path / "dagm", n_train=10, n_test=6, size=64))
    written = to_plain(dagm.root, classes=[1], out=tmp_path / "plain")
    assert written == {"train": (10, 5), "test": (6, 3)}
    plain = scan(tmp_path / "plain")
    assert is_plain(plain) and plain.classes == (PLAIN_CLASS,)
    for split in ("Train", "Test"):
        a, b = dagm.filter(split=split), plain.filter(split=split)
        assert [plain_name(s) for s in a] == [s.sample_id for s in b]
        assert [s.defective for s in a] == [s.defective for s in b]
        # the DAGM reader resizes to the image size (a no-op at 64), the plain reader cuts tiles
        x_dagm, y_dagm = load_arrays(list(a), size=64)
        x_plain, y_plain = load_tiles(list(b), 64)
        np.testing.assert_array_equal(x_dagm, x_plain)
        np.testing.assert_array_equal(y_dagm, y_plain)


def test_both_readers_hold_out_the_same_validation_images(tmp_path):
    dagm = scan(make_tiny_dagm(tmp_path / "dagm", n_train=30, n_test=4, size=32, class_id=8))
    to_plain(dagm.root, classes=[8], out=tmp_path / "plain")
    plain = scan(tmp_path / "plain")
    for seed in (0, 1, 7):
        a = dagm.filter(split="Train").train_val_split(0.2, seed=seed)
        b = plain.filter(split="Train").train_val_split(0.2, seed=seed)
        for part_a, part_b in zip(a, b, strict=True):
            assert [plain_name(s) for s in part_a] == [s.sample_id for s in part_b]
        assert len(a[1]) == 6 and sum(s.defective for s in a[1]) == 3


def test_merge_writes_one_folder_and_the_seeded_split_chooses(tmp_path):
    make_tiny_dagm(tmp_path / "dagm", n_train=10, n_test=10, size=32)
    assert to_plain(tmp_path / "dagm", None, tmp_path / "plain", merge=True) == {"images": (20, 10)}
    index = scan(tmp_path / "plain")
    assert [(r["split"], r["images"], r["defective"]) for r in index.counts()] == [
        ("Train", 16, 8),
        ("Test", 4, 2),
    ]


def test_to_plain_refuses_a_used_folder_and_unknown_classes(tmp_path):
    make_tiny_dagm(tmp_path / "dagm", n_train=4, n_test=2, size=32)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        to_plain(tmp_path / "dagm", [1], tmp_path / "used")
    with pytest.raises(DatasetError, match=r"no images for class\(es\) \[7\]"):
        to_plain(tmp_path / "dagm", [7], tmp_path / "new")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagm_helpers",
            "to-plain",
            "--data",
            str(tmp_path / "dagm"),
            "--out",
            str(tmp_path / "used"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "not empty" in proc.stderr


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/dagm_sample is not present")
def test_real_sample_reads_the_same_through_both_layouts(tmp_path):
    to_plain(SAMPLE, None, tmp_path / "plain")
    dagm, plain = scan(SAMPLE), scan(tmp_path / "plain")
    assert len(dagm) == len(plain) and sum(s.defective for s in dagm) == sum(s.defective for s in plain)
    by_name = {s.sample_id: s for s in plain}
    for sample in dagm:
        twin = by_name[plain_name(sample)]
        x_dagm, y_dagm = load_arrays([sample], size=512)
        x_plain, y_plain = load_tiles([twin], 512)
        np.testing.assert_array_equal(x_dagm, x_plain)
        np.testing.assert_array_equal(y_dagm, y_plain)
