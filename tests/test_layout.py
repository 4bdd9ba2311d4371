"""Layout scanning and label parsing on small data sets written in the real DAGM formats."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dagm_helpers.data.layout import (
    Ellipse,
    LabelRow,
    Sample,
    SampleIndex,
    format_counts,
    format_ellipse_labels,
    format_labels_txt,
    parse_ellipse_labels,
    parse_labels_txt,
    scan,
)
from dagm_helpers.errors import DatasetError, LabelsFormatError

SIZE = 32  # tiny images: the layout code never decodes them


def _png(path: Path, value: int = 100, size: int = SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)


def write_split(
    folder: Path,
    flags: dict[str, bool],
    newline: str = "\n",
    ext: str = ".PNG",
) -> None:
    """One split folder in the official layout: NNNN.PNG, Label/NNNN_label.PNG, Label/Labels.txt."""
    rows = []
    for sid, defective in flags.items():
        _png(folder / f"{sid}{ext}")
        mask = None
        if defective:
            mask = f"{sid}_label{ext}"
            m = np.zeros((SIZE, SIZE), np.uint8)
            m[8:20, 8:20] = 255
            (folder / "Label").mkdir(parents=True, exist_ok=True)
            Image.fromarray(m).save(folder / "Label" / mask)
        rows.append(LabelRow(sid, defective, f"{sid}{ext}", mask))
    (folder / "Label").mkdir(parents=True, exist_ok=True)
    (folder / "Label" / "Labels.txt").write_bytes(format_labels_txt(rows, newline).encode())


def write_official(root: Path, classes=(1, 2), nested: bool = False) -> Path:
    """Classes with Train (ids 0576..) and Test (ids 0001..): 6 images each, 2 defective."""
    for c in classes:
        base = root / f"Class{c}" / f"Class{c}" if nested else root / f"Class{c}"
        write_split(base / "Train", {f"{576 + i:04d}": i in (1, 4) for i in range(6)})
        write_split(base / "Test", {f"{1 + i:04d}": i in (0, 3) for i in range(6)}, newline="\r\n")
    return root


def write_dev(root: Path, class_id: int = 3, n: int = 4) -> Path:
    folder = root / f"Class{class_id}_def"
    for i in range(1, n + 1):
        _png(folder / f"{i}.png", size=64)
    ellipses = {i: Ellipse(10.0 + i, 5.0, 0.5 * i, 30.0, 20.0 + i) for i in range(1, n + 1)}
    (folder / "labels.txt").write_text(format_ellipse_labels(ellipses))
    return folder


# ----------------------------------------------------------------------------- Labels.txt
SHIPPED_LF = "1\n0593\t0\t0593.PNG\t0\t0\t\n0595\t1\t0595.PNG\t0\t0595_label.PNG\n"
EXPECTED = [
    LabelRow("0593", False, "0593.PNG", None),
    LabelRow("0595", True, "0595.PNG", "0595_label.PNG"),
]


@pytest.mark.parametrize(
    "text",
    [
        SHIPPED_LF,
        SHIPPED_LF.replace("\n", "\r\n"),  # CRLF (Class2 of the real sample)
        SHIPPED_LF + "\n",  # trailing empty line
        SHIPPED_LF + "\r\n\r\n",
        SHIPPED_LF.rstrip("\n"),  # no final newline
        "\ufeff" + SHIPPED_LF,  # UTF-8 byte-order mark
        SHIPPED_LF.split("\n", 1)[1],  # header missing: tolerated
    ],
    ids=["lf", "crlf", "trailing-blank", "crlf-blank-lines", "no-final-newline", "bom", "no-header"],
)
def test_labels_txt_quirks(tmp_path, text):
    path = tmp_path / "Labels.txt"
    path.write_bytes(text.encode())
    rows = parse_labels_txt(path)
    assert rows == EXPECTED
    assert [r.line for r in rows][0] in (1, 2)


def test_labels_txt_keeps_line_numbers(tmp_path):
    path = tmp_path / "Labels.txt"
    path.write_text(SHIPPED_LF)
    assert [r.line for r in parse_labels_txt(path)] == [2, 3]


@pytest.mark.parametrize(
    "body, needle",
    [
        ("0593\t0\t0593.PNG\t0\n", "expected 5 columns, found 4"),
        ("0593\t0\t0593.PNG\t0\t0\textra\n", "expected 5 columns, found 6"),
        ("0593\tx\t0593.PNG\t0\t0\t\n", "defect flag 'x' is not a number"),
        ("0593\t2\t0593.PNG\t0\t0\t\n", "defect flag is 2, not 0 or 1"),
        ("0595\t1\t0595.PNG\t0\t0\t\n", "flagged defective (1) but names no mask"),
        ("0593\t0\t0593.PNG\t0\t0593_label.PNG\n", "flagged defect-free (0) but names the mask"),
        ("abc\t0\t0593.PNG\t0\t0\t\n", "the id 'abc' is not a number"),
        ("0593\t0\t../0593.PNG\t0\t0\t\n", "is a path, not a file name"),
        ("0593\t0\t0593.PNG\tz\t0\t\n", "fourth column 'z' is not a number"),
        ("0593\t0\t0593.PNG\t0\t0\t\n0593\t0\t0594.PNG\t0\t0\t\n", "already used on line 2"),
    ],
    ids=[
        "4-cols",
        "6-cols",
        "flag-nan",
        "flag-2",
        "defect-no-mask",
        "clean-with-mask",
        "id",
        "path",
        "col4",
        "dup",
    ],
)
def test_malformed_labels_txt(tmp_path, body, needle):
    path = tmp_path / "Labels.txt"
    path.write_text("1\n" + body)
    with pytest.raises(LabelsFormatError) as exc:
        parse_labels_txt(path)
    msg = str(exc.value)
    assert needle in msg
    assert str(path) in msg and ("line 2" in msg or "line 3" in msg)


def test_labels_txt_header_wrong(tmp_path):
    path = tmp_path / "Labels.txt"
    path.write_text("x\n0593\t0\t0593.PNG\t0\t0\t\n")
    with pytest.raises(LabelsFormatError, match="line 1: expected the header line '1'"):
        parse_labels_txt(path)


def test_labels_txt_not_utf8(tmp_path):
    path = tmp_path / "Labels.txt"
    path.write_bytes(b"1\n0593\t0\t0593.PNG\t0\t0\t\n\xff\xfe\x00garbage\n")
    with pytest.raises(LabelsFormatError) as exc:
        parse_labels_txt(path)
    assert "line 3" in str(exc.value) and "0xff" in str(exc.value) and "UTF-8" in str(exc.value)


def test_labels_txt_empty(tmp_path):
    path = tmp_path / "Labels.txt"
    path.write_bytes(b"")
    with pytest.raises(LabelsFormatError, match="empty"):
        parse_labels_txt(path)


_ids = st.integers(min_value=1, max_value=9999).map(lambda i: f"{i:04d}")


@st.composite
def _label_files(draw):
    ids = draw(st.lists(_ids, min_size=0, max_size=30, unique=True))
    ext = draw(st.sampled_from([".PNG", ".png"]))
    rows = [
        LabelRow(i, d, f"{i}{ext}", f"{i}_label{ext}" if d else None)
        for i, d in zip(ids, draw(st.lists(st.booleans(), min_size=len(ids), max_size=len(ids))), strict=True)
    ]
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    blank_tail = draw(st.sampled_from(["", "\n", "\r\n", "\n\n"]))
    drop_trailing_tabs = draw(st.booleans())
    text = format_labels_txt(rows, newline)
    if drop_trailing_tabs:
        text = text.replace("\t" + newline, newline)
    return rows, text + blank_tail


@settings(max_examples=60, deadline=None)
@given(_label_files())
def test_labels_txt_round_trip_property(tmp_path_factory, case):
    rows, text = case
    path = tmp_path_factory.mktemp("labels") / "Labels.txt"
    path.write_bytes(text.encode())
    assert parse_labels_txt(path) == rows


_finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)
_axis = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False)
_ellipses = st.dictionaries(
    st.integers(min_value=1, max_value=500),
    st.builds(Ellipse, a=_axis, b=_axis, angle=_finite, cx=_finite, cy=_finite),
    min_size=1,
    max_size=20,
)


@settings(max_examples=60, deadline=None)
@given(_ellipses, st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_ellipse_labels_round_trip_property(tmp_path_factory, ellipses, newline, trailing_tab):
    text = format_ellipse_labels(ellipses, newline)
    if trailing_tab:
        text = text.replace(newline, "\t" + newline)
    path = tmp_path_factory.mktemp("dev") / "labels.txt"
    path.write_bytes(text.encode())
    assert parse_ellipse_labels(path) == ellipses


def test_ellipse_labels_real_style(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("1\t108.864\t33.1926\t2.08073\t208.738\t297.913\n2\t40\t20\t0\t100\t50\n")
    got = parse_ellipse_labels(path)
    assert got[1] == Ellipse(108.864, 33.1926, 2.08073, 208.738, 297.913)
    assert got[2].cx == 100 and got[2].cy == 50


@pytest.mark.parametrize(
    "body, needle",
    [
        ("1\t10\t5\t0\t30\n", "expected 6 columns, found 5"),
        ("1\t10\tfive\t0\t30\t20\n", "semi-minor axis 'five' is not a number"),
        ("1\t10\t5\tnan\t30\t20\n", "not a finite number"),
        ("1\t-10\t5\t0\t30\t20\n", "axes must be positive"),
        ("x\t10\t5\t0\t30\t20\n", "image index 'x'"),
        ("1\t10\t5\t0\t30\t20\n1\t10\t5\t0\t30\t20\n", "appears twice"),
    ],
)
def test_malformed_ellipse_labels(tmp_path, body, needle):
    path = tmp_path / "labels.txt"
    path.write_text(body)
    with pytest.raises(LabelsFormatError) as exc:
        parse_ellipse_labels(path)
    assert needle in str(exc.value) and str(path) in str(exc.value)


# ----------------------------------------------------------------------------- scan: layouts
def _expected_counts(classes):
    return [
        row
        for c in classes
        for row in (
            {"class": c, "split": "Train", "images": 6, "defective": 2},
            {"class": c, "split": "Test", "images": 6, "defective": 2},
        )
    ]


def test_scan_official(tmp_path):
    index = scan(write_official(tmp_path / "dagm", classes=(2, 1)))
    assert len(index) == 24 and index.classes == (1, 2)
    assert index.counts() == _expected_counts((1, 2))
    first = index[0]
    assert (first.class_id, first.split, first.sample_id) == (1, "Train", "0576")
    assert first.image_path == tmp_path / "dagm" / "Class1" / "Train" / "0576.PNG"
    assert first.mask_path is None and not first.defective and first.ellipse is None
    second = index[1]
    assert (
        second.defective
        and second.mask_path == tmp_path / "dagm" / "Class1" / "Train" / "Label" / "0577_label.PNG"
    )


def test_scan_nested_mirror(tmp_path):
    index = scan(write_official(tmp_path / "mirror", classes=(3,), nested=True))
    assert index.counts() == _expected_counts((3,))
    assert index[0].image_path.parent == tmp_path / "mirror" / "Class3" / "Class3" / "Train"


def test_scan_single_class_folder(tmp_path):
    root = write_official(tmp_path / "dagm", classes=(1, 2))
    index = scan(root / "Class2")
    assert index.classes == (2,) and len(index) == 12


def test_scan_wrapper_folder(tmp_path):
    write_official(tmp_path / "archive" / "DAGM_KaggleUpload", classes=(5,))
    assert scan(tmp_path / "archive").classes == (5,)


def test_scan_dev_set(tmp_path):
    write_dev(tmp_path / "dev", class_id=3, n=4)
    (tmp_path / "dev" / "Class3_def" / "Thumbs.db").write_bytes(b"junk")
    index = scan(tmp_path / "dev")
    assert [s.sample_id for s in index] == ["1", "2", "3", "4"]
    assert all(s.split == "Train" and s.defective and s.mask_path is None for s in index)
    assert index[1].ellipse == Ellipse(12.0, 5.0, 1.0, 30.0, 22.0)
    assert index.counts() == [{"class": 3, "split": "Train", "images": 4, "defective": 4}]
    assert scan(tmp_path / "dev" / "Class3_def") == index  # a single development folder works too


def test_scan_mixed_layouts_and_numeric_order(tmp_path):
    root = write_official(tmp_path / "d", classes=(10, 2))
    write_dev(root, class_id=1, n=12)
    index = scan(root)
    assert index.classes == (1, 2, 10)
    assert [s.sample_id for s in index.filter(classes=1)][:3] == ["1", "2", "3"]
    assert [s.sample_id for s in index.filter(classes=1)][-1] == "12"  # numeric, not "2" < "12" text order
    assert [(r["class"], r["split"]) for r in index.counts()] == [
        (1, "Train"),
        (2, "Train"),
        (2, "Test"),
        (10, "Train"),
        (10, "Test"),
    ]


def test_scan_ignores_stray_files_and_is_case_insensitive(tmp_path):
    root = tmp_path / "d"
    write_split(root / "class1" / "train", {"0576": True, "0577": False}, ext=".png")
    for junk in ("Thumbs.db", ".DS_Store", "notes.txt", "0576.PNG.bak"):
        (root / "class1" / "train" / junk).write_bytes(b"x")
    (root / "class1" / "train" / "Label" / "Thumbs.db").write_bytes(b"x")
    (root / "README.md").write_text("hello")
    index = scan(root)
    assert [(s.split, s.sample_id, s.defective) for s in index] == [
        ("Train", "0576", True),
        ("Train", "0577", False),
    ]


def test_scan_rows_name_png_but_files_are_lowercase(tmp_path):
    folder = tmp_path / "Class1" / "Train"
    write_split(folder, {"0576": True}, ext=".png")
    text = (folder / "Label" / "Labels.txt").read_text().replace(".png", ".PNG")
    (folder / "Label" / "Labels.txt").write_text(text)
    (sample,) = scan(tmp_path)
    assert sample.image_path.name == "0576.png" and sample.mask_path.name == "0576_label.png"


# ----------------------------------------------------------------------------- scan: errors
def test_scan_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as exc:
        scan(tmp_path / "nope")
    assert "ClassN_def" in str(exc.value) and str(tmp_path / "nope") in str(exc.value)


def test_scan_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match="the folder is empty") as exc:
        scan(tmp_path)
    assert "ClassN/Train|Test" in str(exc.value)


def test_scan_no_dagm_layout(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match="no DAGM class folders") as exc:
        scan(tmp_path)
    assert "nested mirror" in str(exc.value) and "development set" in str(exc.value)


def test_scan_split_folder_given(tmp_path):
    write_official(tmp_path, classes=(1,))
    with pytest.raises(DatasetError, match="this is a split folder; point at the ClassN folder"):
        scan(tmp_path / "Class1" / "Train")


def test_scan_file_not_folder(tmp_path):
    f = tmp_path / "x.zip"
    f.write_bytes(b"PK")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        scan(f)


def test_scan_class_without_splits(tmp_path):
    (tmp_path / "Class1" / "stuff").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no Train or Test folder"):
        scan(tmp_path)


def test_scan_split_without_labels_txt(tmp_path):
    folder = tmp_path / "Class1" / "Train"
    write_split(folder, {"0576": False})
    (folder / "Label" / "Labels.txt").unlink()
    with pytest.raises(DatasetError, match=r"no Label/Labels\.txt") as exc:
        scan(tmp_path)
    assert str(folder) in str(exc.value)


def test_scan_empty_split_folder(tmp_path):
    (tmp_path / "Class1" / "Test").mkdir(parents=True)
    with pytest.raises(DatasetError, match="split folder is empty"):
        scan(tmp_path)


def test_scan_class_twice(tmp_path):
    write_official(tmp_path, classes=(1,))
    write_dev(tmp_path, class_id=1)
    with pytest.raises(DatasetError, match="class 1 was found twice"):
        scan(tmp_path)


def test_scan_listed_image_missing(tmp_path):
    write_official(tmp_path, classes=(1,))
    (tmp_path / "Class1" / "Train" / "0578.PNG").unlink()
    with pytest.raises(LabelsFormatError) as exc:
        scan(tmp_path)
    msg = str(exc.value)
    assert "0578.PNG is listed on line 4" in msg and "but missing" in msg and "1 label/file mismatch" in msg


def test_scan_listed_mask_missing(tmp_path):
    write_official(tmp_path, classes=(1,))
    (tmp_path / "Class1" / "Test" / "Label" / "0004_label.PNG").unlink()
    with pytest.raises(LabelsFormatError, match=r"0004_label\.PNG is listed on line 5 .* but missing"):
        scan(tmp_path)


def test_scan_mask_without_row(tmp_path):
    write_official(tmp_path, classes=(1,))
    _png(tmp_path / "Class1" / "Train" / "Label" / "0999_label.PNG")
    with pytest.raises(LabelsFormatError, match=r"0999_label\.PNG has no row in .*Labels\.txt"):
        scan(tmp_path)


def test_scan_image_without_row(tmp_path):
    write_official(tmp_path, classes=(1,))
    _png(tmp_path / "Class1" / "Train" / "0999.PNG")
    with pytest.raises(LabelsFormatError, match=r"0999\.PNG has no row"):
        scan(tmp_path)


def test_scan_dev_mismatches(tmp_path):
    folder = write_dev(tmp_path, class_id=2, n=3)
    (folder / "2.png").unlink()
    _png(folder / "9.png")
    with pytest.raises(LabelsFormatError) as exc:
        scan(tmp_path)
    assert "2 label/file mismatch" in str(exc.value)
    assert "2.png is listed" in str(exc.value) and "9.png has no row" in str(exc.value)


def test_scan_dev_without_labels(tmp_path):
    folder = write_dev(tmp_path, class_id=2, n=2)
    (folder / "labels.txt").unlink()
    with pytest.raises(DatasetError, match="no labels.txt"):
        scan(tmp_path)


def test_scan_many_problems_are_summarised(tmp_path):
    write_official(tmp_path, classes=(1, 2))
    for p in sorted(tmp_path.glob("Class*/*/0*.PNG")):
        p.unlink()
    with pytest.raises(LabelsFormatError) as exc:
        scan(tmp_path)
    assert "24 label/file mismatch" in str(exc.value) and "(and 19 more)" in str(exc.value)


def test_scan_malformed_labels_reports_file_and_line(tmp_path):
    write_official(tmp_path, classes=(1,))
    labels = tmp_path / "Class1" / "Train" / "Label" / "Labels.txt"
    labels.write_text(labels.read_text().replace("0578\t0", "0578\t7"))
    with pytest.raises(LabelsFormatError, match=r"Labels\.txt, line 4: the defect flag is 7"):
        scan(tmp_path)


# ----------------------------------------------------------------------------- the index
def _index(n_clean: int, n_defect: int, classes=(1,)) -> SampleIndex:
    samples = []
    for c in classes:
        for i in range(n_clean + n_defect):
            d = i < n_defect
            samples.append(
                Sample(c, "Train", f"{i:04d}", Path(f"{i}.PNG"), Path(f"{i}_l.PNG") if d else None, d)
            )
    return SampleIndex(samples)


def test_filter():
    index = _index(8, 2, classes=(1, 2))
    assert len(index.filter(classes=1)) == 10 and len(index.filter(classes=[1, 2])) == 20
    assert len(index.filter(defective=True)) == 4 and len(index.filter(classes=2, defective=False)) == 8
    assert len(index.filter(split="test")) == 0 and len(index.filter(split="train")) == 20
    assert isinstance(index.filter(), SampleIndex) and isinstance(index[2:5], SampleIndex)
    with pytest.raises(ValueError, match="unknown split"):
        index.filter(split="valid")


def test_train_val_split_deterministic_and_stratified():
    index = _index(87, 13, classes=(1, 2))
    a_train, a_val = index.train_val_split(0.2, seed=3)
    b_train, b_val = index.train_val_split(0.2, seed=3)
    assert a_train == b_train and a_val == b_val
    assert index.train_val_split(0.2, seed=4)[1] != a_val
    assert len(a_val) == 40 and len(a_train) == 160
    assert set(a_train).isdisjoint(a_val) and set(a_train) | set(a_val) == set(index)
    for c in (1, 2):
        assert len(a_val.filter(classes=c, defective=True)) == 3  # round(13 * 0.2)
        assert len(a_train.filter(classes=c, defective=True)) == 10
    # order is kept
    positions = {s: i for i, s in enumerate(index)}
    assert [positions[s] for s in a_val] == sorted(positions[s] for s in a_val)


@pytest.mark.parametrize("n_defect", [2, 3])
def test_train_val_split_each_part_gets_a_defect(n_defect):
    train, val = _index(20, n_defect).train_val_split(0.1, seed=0)
    assert len(val.filter(defective=True)) >= 1 and len(train.filter(defective=True)) >= 1


def test_train_val_split_tiny_and_bad_fraction():
    train, val = _index(1, 1).train_val_split(0.2, seed=0)
    assert len(train) == 1 and len(val) == 1 and train[0].defective != val[0].defective
    train, val = _index(5, 1).train_val_split(0.0)
    assert len(val) == 0 and len(train) == 6
    with pytest.raises(ValueError, match="val_fraction"):
        _index(5, 1).train_val_split(1.0)


def test_counts_and_format():
    rows = SampleIndex(
        [
            Sample(2, "Test", "0001", Path("a"), None, False),
            Sample(2, "Train", "0576", Path("b"), Path("m"), True),
            Sample(1, "Test", "0002", Path("c"), Path("m"), True),
        ]
    ).counts()
    assert rows == [
        {"class": 1, "split": "Test", "images": 1, "defective": 1},
        {"class": 2, "split": "Train", "images": 1, "defective": 1},
        {"class": 2, "split": "Test", "images": 1, "defective": 0},
    ]
    assert all(type(r["class"]) is int for r in rows)
    table = format_counts(rows).splitlines()
    assert table[0].split() == ["class", "split", "images", "defective", "share"]
    assert table[2].split() == ["1", "Test", "1", "1", "100.0%"]
    assert table[-1].split() == ["total", "3", "2", "66.7%"]
    assert format_counts([]) == "no images"


def test_ellipse_dataclass_is_plain():
    e = Ellipse(1.0, 2.0, math.pi, 3.0, 4.0)
    assert (e.a, e.b, e.angle, e.cx, e.cy) == (1.0, 2.0, math.pi, 3.0, 4.0)
