"""Atomic writes never leave a half-written file under the real name."""

import pytest

from dagm_helpers import atomic


def test_write_replaces_whole_file(tmp_path):
    dest = tmp_path / "a" / "f.txt"
    atomic.write_text(dest, "old")
    atomic.write_text(dest, "new")
    assert dest.read_text() == "new"
    assert [p.name for p in dest.parent.iterdir()] == ["f.txt"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    dest = tmp_path / "model.keras"
    dest.write_bytes(b"good")
    with pytest.raises(RuntimeError), atomic.atomic_path(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert dest.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_temp_path_keeps_suffix(tmp_path):
    with atomic.atomic_path(tmp_path / "x.keras") as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_bytes(b"1")


def test_json(tmp_path):
    import json

    atomic.write_json(tmp_path / "m.json", {"a": 1})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}


def test_mode_follows_umask_like_open(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "f.txt", "x")
        (tmp_path / "g.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == (tmp_path / "g.txt").stat().st_mode & 0o777 == 0o644
