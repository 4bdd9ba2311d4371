"""`python -m dagm_helpers info DIR [--json]` on a small data set in the real layout, and on the real sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dagm_helpers.data.layout import LabelRow, format_labels_txt

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "dagm_sample"


def _write_split(folder: Path, flags: dict[str, bool]) -> None:
    (folder / "Label").mkdir(parents=True, exist_ok=True)
    rows = []
    for sid, defective in flags.items():
        Image.fromarray(np.full((16, 16), 90, np.uint8)).save(folder / f"{sid}.PNG")
        mask = None
        if defective:
            mask = f"{sid}_label.PNG"
            Image.fromarray(np.full((16, 16), 255, np.uint8)).save(folder / "Label" / mask)
        rows.append(LabelRow(sid, defective, f"{sid}.PNG", mask))
    (folder / "Label" / "Labels.txt").write_text(format_labels_txt(rows))


def _info(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dagm_helpers", "info", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dagm")
    _write_split(root / "Class1" / "Train", {"0576": True, "0577": False, "0578": False})
    _write_split(root / "Class1" / "Test", {"0001": False, "0002": False})
    _write_split(
        root / "Class3" / "Class3" / "Train", {"1151": True, "1152": True, "1153": False, "1154": False}
    )
    return root


def test_info_json(dataset):
    proc = _info(str(dataset), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [
        {"class": 1, "split": "Train", "images": 3, "defective": 1},
        {"class": 1, "split": "Test", "images": 2, "defective": 0},
        {"class": 3, "split": "Train", "images": 4, "defective": 2},
    ]


def test_info_table(dataset):
    proc = _info(str(dataset))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["class", "split", "images", "defective", "share"]
    body = [line.split() for line in lines if line and line.split()[0].isdigit()]
    assert body == [
        ["1", "Train", "3", "1", "33.3%"],
        ["1", "Test", "2", "0", "0.0%"],
        ["3", "Train", "4", "2", "50.0%"],
    ]
    assert lines[-1].split() == ["total", "9", "3", "33.3%"]


def test_info_bad_labels_is_one_error_line(tmp_path):
    _write_split(tmp_path / "Class1" / "Train", {"0576": False})
    labels = tmp_path / "Class1" / "Train" / "Label" / "Labels.txt"
    labels.write_bytes(labels.read_bytes().replace(b"0576\t0", b"0576\tx"))
    proc = _info(str(tmp_path))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Labels.txt, line 2" in line and "not a number" in line


def test_info_on_real_sample():
    if not (SAMPLE / "Class1").is_dir():
        pytest.skip(f"the real DAGM sample is not present at {SAMPLE}")
    proc = _info(str(SAMPLE), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [
        {"class": c, "split": "Train", "images": 5, "defective": 3} for c in (1, 2, 4)
    ]
    table = _info(str(SAMPLE)).stdout
    assert table.strip().splitlines()[-1].split() == ["total", "15", "9", "60.0%"]
