"""Holding out part of a Train split as Test, for developing on real data (tests/test_holdout.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dagm_helpers.data.holdout import holdout_split, split_ids
from dagm_helpers.data.layout import scan
from dagm_helpers.data.synth import synthesize
from dagm_helpers.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("src"), classes=[1, 2], images_per_split=40, seed=0)


def test_the_last_ids_of_each_kind_are_held_out(source, tmp_path):
    out = holdout_split(source, classes=[1], fraction=0.3, out=tmp_path / "dev")
    original = scan(source).filter(classes=(1,), split="Train")
    index = scan(out)
    train, test = index.filter(split="Train"), index.filter(split="Test")
    assert len(train) + len(test) == len(original) and {s.class_id for s in index} == {1}
    for defective in (True, False):
        ids = sorted(s.sample_id for s in original if s.defective == defective)
        held = sorted(s.sample_id for s in test if s.defective == defective)
        assert held == ids[len(ids) - len(held) :] and len(held) == -(-len(ids) * 3 // 10)  # ceil(30%)
    assert not {s.sample_id for s in train} & {s.sample_id for s in test}
    for sample in test:  # links to the very same files
        assert (
            sample.image_path.read_bytes()
            == (source / "Class1" / "Train" / f"{sample.sample_id}.PNG").read_bytes()
        )
        if sample.defective:
            assert sample.mask_path.is_file()
    assert f"Class1: Train {len(train)} (" in (out / "HOLDOUT.txt").read_text()


def test_bad_requests_are_clear_errors(source, tmp_path):
    with pytest.raises(ConfigError, match="between 0 and 1"):
        split_ids(list(scan(source)), 1.0)
    with pytest.raises(DatasetError, match="no Train split for class 7"):
        holdout_split(source, classes=[7], fraction=0.3, out=tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("")
    with pytest.raises(DatasetError, match="not empty"):
        holdout_split(source, classes=[1], fraction=0.3, out=tmp_path / "b")


def test_holdout_command(source, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagm_helpers",
            "holdout",
            "--data",
            str(source),
            "--classes",
            "2",
            "--out",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Class2: Train" in proc.stdout and scan(tmp_path / "d").counts()
