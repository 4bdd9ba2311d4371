"""Find the samples in a folder: the DAGM 2007 layouts, or a plain folder of your own images.

Four layouts are recognised (folder and file names case-insensitively):

* **official**: ``ClassN/{Train,Test}/NNNN.PNG`` with ``Label/NNNN_label.PNG`` masks
  and one ``Label/Labels.txt`` per split folder (the Zenodo / HCI release);
* **nested mirror**: ``ClassN/ClassN/{Train,Test}/...`` (some mirrors, e.g. Kaggle);
* **development set** (2007): ``ClassN_def/{1.png ... 150.png, labels.txt}``; every
  image is defective and ``labels.txt`` holds one ellipse per image. Its samples get
  split ``"Train"``, no mask file, and an :class:`Ellipse`;
* **plain** (your own images): ``DIR/images/`` with PNG, JPEG, BMP or TIFF files and
  ``DIR/masks/`` with a mask of the same stem for each defective image (any of those
  formats; an image without a mask, or with an all-zero mask, is defect-free). Optionally
  ``DIR/train/``, ``DIR/val/``, ``DIR/test/``, each with ``images/`` and ``masks/``, fix
  the splits; otherwise :func:`plain_split` holds out a stratified, seeded
  :data:`PLAIN_TEST_FRACTION` of the images as ``"Test"``, the same for every command.
  Its samples have class :data:`PLAIN_CLASS` (0), which every class filter accepts.

The root may be a folder of class folders, a single class folder, or a folder that
holds one of those one level down (an extracted archive). Stray files (``Thumbs.db``,
``.DS_Store``...) are ignored.

``Labels.txt`` as shipped: a header line ``1``, then one tab-separated row per image,
``<id> <defect 0|1> <image file> 0 <mask file, or 0>``; defect-free rows end in a
trailing tab; LF or CRLF line endings; possibly a trailing empty line.
:func:`parse_labels_txt` accepts all of that, rejects anything else with a
:class:`~dagm_helpers.errors.LabelsFormatError` naming the file and line, and
:func:`scan` cross-checks the rows against the files on disk.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

import numpy as np

from ..errors import ConfigError, DatasetError, LabelsFormatError

#: every split a sample can be in: DAGM has Train and Test, the plain layout may add Val
SPLITS: tuple[str, ...] = ("Train", "Val", "Test")
DAGM_SPLITS: tuple[str, ...] = ("Train", "Test")
#: image files the plain layout (and ``predict``) reads
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: the class id of the plain layout's samples; a class filter (``--classes``) always keeps them
PLAIN_CLASS = 0
#: share of a plain folder's images (per defective/clean group) held out as "Test"
#: when the folder has no train/val/test sub-folders
PLAIN_TEST_FRACTION = 0.2
#: the fixed seed of that split: every command and every run sees the same Test images
PLAIN_SPLIT_SEED = "dagm_helpers-plain-split-v1"
_PLAIN_SPLIT_DIRS = {"train": "Train", "val": "Val", "test": "Test"}
#: how many problems a cross-check error lists before summarising the rest
MAX_LISTED_PROBLEMS = 5

_CLASS_RE = re.compile(r"^class(\d+)$", re.IGNORECASE)
_DEV_RE = re.compile(r"^class(\d+)_def$", re.IGNORECASE)
_IMAGE_RE = re.compile(r"^(\d+)\.png$", re.IGNORECASE)
_MASK_RE = re.compile(r"^(\d+)_label\.png$", re.IGNORECASE)

EXPECTED_LAYOUTS = (
    "expected one of: ClassN/Train|Test/ with NNNN.PNG images and Label/Labels.txt (official release), "
    "ClassN/ClassN/Train|Test/... (nested mirror), or ClassN_def/ with 1.png ... and labels.txt "
    "(2007 development set), or images/ with masks/ (your own images; optionally inside train/, val/ "
    "and test/); the folder may also be a single ClassN folder. Get the data with "
    "`python -m dagm_helpers download --dest DIR`, or generate a stand-in with "
    "`python -m dagm_helpers synth --out DIR`"
)
_ROW_HELP = (
    "each row must read <id> TAB <defect 0|1> TAB <image file> TAB 0 TAB <mask file, or 0>, "
    "after a first line '1'; fix the file or re-download the class"
)
_ELLIPSE_HELP = (
    "each row must read <index> TAB <semi-major> TAB <semi-minor> TAB <angle, radians> TAB <x centre> "
    "TAB <y centre>; fix the file or re-download the ClassN_def archive"
)


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Ellipse:
    """A development-set defect label: a filled ellipse, in pixels of the original image.

    ``a``/``b`` are the semi-major/semi-minor axes, ``cx``/``cy`` the centre (x = column,
    y = row, 0-based). ``angle`` (radians) turns the ``a`` axis from the +x axis towards
    +y; since image y points down, a positive angle turns clockwise on screen.
    """

    a: float
    b: float
    angle: float
    cx: float
    cy: float


@dataclass(frozen=True)
class Sample:
    """One image of the data set, with where its label comes from."""

    class_id: int
    split: str  # "Train" or "Test"
    sample_id: str  # "0576" (official) or "17" (development set)
    image_path: Path
    mask_path: Path | None
    defective: bool
    ellipse: Ellipse | None = None  # development set only
    #: plain layout: pixels of the image and defect pixels of its mask (None: not counted)
    pixels: int | None = field(default=None, compare=False)
    defect_pixels: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class LabelRow:
    """One data row of a ``Labels.txt``. ``line`` (1-based) is kept for messages only."""

    sample_id: str
    defective: bool
    image_file: str
    mask_file: str | None
    line: int = field(default=0, compare=False)


# ----------------------------------------------------------------------------- parsing
def _read_text(path: Path) -> str:
    """Read a label file as UTF-8 (a BOM is allowed), with a clear error on bad bytes."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LabelsFormatError(f"{path}: the label file does not exist; re-download the class") from None
    except IsADirectoryError:
        raise LabelsFormatError(f"{path} is a folder, not a label file") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LabelsFormatError(
            f"{path}, line {line}: byte 0x{data[exc.start]:02x} is not valid UTF-8 text "
            "(the file is damaged or not a DAGM label file); re-download the class"
        ) from None


def _lines(text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (1-based line number, fields) of the non-blank lines; LF, CRLF and CR all work."""
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()  # tabs, trailing tabs, stray spaces and CR all vanish here
        if fields:
            yield number, fields


def _safe_name(path: Path, number: int, name: str, what: str) -> str:
    if "/" in name or "\\" in name or name in (".", ".."):
        raise LabelsFormatError(
            f"{path}, line {number}: the {what} {name!r} is a path, not a file name in the folder; {_ROW_HELP}"
        )
    return name


def parse_labels_txt(path: str | Path) -> list[LabelRow]:
    """Parse an official ``Labels.txt`` into rows, in file order.

    Accepts the file exactly as shipped (header ``1``, tabs, trailing tab on defect-free
    rows, LF or CRLF, blank lines at the end). A missing header is tolerated when the
    first line is already a data row. Raises :class:`LabelsFormatError` with the file,
    line number and the fix for: non-UTF-8 bytes, a wrong column count, a flag that is
    not 0 or 1, a defect row without a mask (or a clean row with one), a non-numeric id,
    a duplicated id, or a file name that is a path.
    """
    path = Path(path)
    lines = list(_lines(_read_text(path)))
    if not lines:
        raise LabelsFormatError(f"{path}: the file is empty; expected a first line '1' and one row per image")
    first_number, first = lines[0]
    if len(first) == 1:
        if not first[0].isdigit():
            raise LabelsFormatError(
                f"{path}, line {first_number}: expected the header line '1', found {first[0]!r}; {_ROW_HELP}"
            )
        lines = lines[1:]
    rows: list[LabelRow] = []
    seen: dict[str, int] = {}
    for number, fields in lines:
        if len(fields) != 5:
            raise LabelsFormatError(
                f"{path}, line {number}: expected 5 columns, found {len(fields)} ({' | '.join(fields)}); "
                f"{_ROW_HELP}"
            )
        sample_id, flag, image, zero, mask = fields
        if not sample_id.isdigit():
            raise LabelsFormatError(
                f"{path}, line {number}: the id {sample_id!r} is not a number; {_ROW_HELP}"
            )
        if not flag.lstrip("+-").isdigit():
            raise LabelsFormatError(
                f"{path}, line {number}: the defect flag {flag!r} is not a number; {_ROW_HELP}"
            )
        if flag not in ("0", "1"):
            raise LabelsFormatError(
                f"{path}, line {number}: the defect flag is {flag}, not 0 or 1; {_ROW_HELP}"
            )
        if not zero.lstrip("+-").isdigit():
            raise LabelsFormatError(
                f"{path}, line {number}: the fourth column {zero!r} is not a number (DAGM writes 0); {_ROW_HELP}"
            )
        defective = flag == "1"
        image = _safe_name(path, number, image, "image file")
        mask_file: str | None = None if mask == "0" else _safe_name(path, number, mask, "mask file")
        if defective and mask_file is None:
            raise LabelsFormatError(
                f"{path}, line {number}: image {image} is flagged defective (1) but names no mask file (0); "
                "set the flag to 0 or name its NNNN_label.PNG mask"
            )
        if not defective and mask_file is not None:
            raise LabelsFormatError(
                f"{path}, line {number}: image {image} is flagged defect-free (0) but names the mask "
                f"{mask_file}; set the flag to 1 or the mask column to 0"
            )
        if sample_id in seen:
            raise LabelsFormatError(
                f"{path}, line {number}: id {sample_id} was already used on line {seen[sample_id]}; "
                "each image must have exactly one row"
            )
        seen[sample_id] = number
        rows.append(LabelRow(sample_id, defective, image, mask_file, line=number))
    return rows


def format_labels_txt(rows: Iterable[LabelRow], newline: str = "\n") -> str:
    """Write rows as DAGM ships them: header ``1``, tabs, trailing tab on defect-free rows."""
    out = ["1"]
    for row in rows:
        if row.defective:
            out.append(f"{row.sample_id}\t1\t{row.image_file}\t0\t{row.mask_file}")
        else:
            out.append(f"{row.sample_id}\t0\t{row.image_file}\t0\t0\t")
    return newline.join(out) + newline


def _number(path: Path, line: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LabelsFormatError(
            f"{path}, line {line}: the {what} {text!r} is not a number; {_ELLIPSE_HELP}"
        ) from None
    if not math.isfinite(value):
        raise LabelsFormatError(
            f"{path}, line {line}: the {what} is {text}, not a finite number; {_ELLIPSE_HELP}"
        )
    return value


def parse_ellipse_labels(path: str | Path) -> dict[int, Ellipse]:
    """Parse a development-set ``labels.txt``: image index -> :class:`Ellipse`.

    Rows are ``<index> <semi-major> <semi-minor> <angle rad> <x centre> <y centre>``,
    tab (or space) separated, LF or CRLF; blank lines and a single-token header line
    are skipped. Wrong column counts, non-numeric or non-finite values, axes <= 0 and
    repeated indices raise :class:`LabelsFormatError` naming the file and line.
    """
    path = Path(path)
    lines = list(_lines(_read_text(path)))
    if lines and len(lines[0][1]) == 1:
        lines = lines[1:]  # tolerate a count/header line
    if not lines:
        raise LabelsFormatError(f"{path}: the file has no ellipse rows; {_ELLIPSE_HELP}")
    result: dict[int, Ellipse] = {}
    for number, fields in lines:
        if len(fields) != 6:
            raise LabelsFormatError(
                f"{path}, line {number}: expected 6 columns, found {len(fields)} ({' | '.join(fields)}); "
                f"{_ELLIPSE_HELP}"
            )
        if not fields[0].isdigit():
            raise LabelsFormatError(
                f"{path}, line {number}: the image index {fields[0]!r} is not a whole number; {_ELLIPSE_HELP}"
            )
        index = int(fields[0])
        a, b, angle, cx, cy = (
            _number(path, number, text, what)
            for text, what in zip(
                fields[1:],
                ("semi-major axis", "semi-minor axis", "angle", "x centre", "y centre"),
                strict=True,
            )
        )
        if a <= 0 or b <= 0:
            raise LabelsFormatError(
                f"{path}, line {number}: the ellipse axes must be positive, found {fields[1]} and {fields[2]}"
            )
        if index in result:
            raise LabelsFormatError(f"{path}, line {number}: image index {index} appears twice")
        result[index] = Ellipse(a=a, b=b, angle=angle, cx=cx, cy=cy)
    return result


def format_ellipse_labels(ellipses: dict[int, Ellipse], newline: str = "\n") -> str:
    """Write a development-set ``labels.txt`` (exact round trip with :func:`parse_ellipse_labels`)."""
    return "".join(
        f"{i}\t{e.a!r}\t{e.b!r}\t{e.angle!r}\t{e.cx!r}\t{e.cy!r}{newline}"
        for i, e in sorted(ellipses.items())
    )


# ----------------------------------------------------------------------------- the index
def _id_key(sample_id: str) -> tuple[int, str]:
    return (int(sample_id), sample_id) if sample_id.isdigit() else (1 << 62, sample_id)


def _sort_key(s: Sample) -> tuple:
    return (s.class_id, SPLITS.index(s.split) if s.split in SPLITS else 9, _id_key(s.sample_id))


def _normalise_split(split: str) -> str:
    for name in SPLITS:
        if split.lower() == name.lower():
            return name
    raise ConfigError(f"unknown split {split!r}; use {', '.join(map(repr, SPLITS))}")


class SampleIndex(Sequence[Sample]):
    """An immutable, sorted list of samples that filters, splits and counts itself."""

    def __init__(self, samples: Iterable[Sample] = (), root: Path | None = None) -> None:
        self._samples: tuple[Sample, ...] = tuple(samples)
        self.root = root

    @overload
    def __getitem__(self, i: int) -> Sample: ...
    @overload
    def __getitem__(self, i: slice) -> SampleIndex: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return SampleIndex(self._samples[i], self.root)
        return self._samples[i]

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._samples)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SampleIndex):
            return self._samples == other._samples
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._samples)

    def __repr__(self) -> str:
        defective = sum(s.defective for s in self._samples)
        return f"SampleIndex({len(self)} images, {defective} defective, classes={list(self.classes)})"

    @property
    def classes(self) -> tuple[int, ...]:
        """The class ids present, ascending."""
        return tuple(sorted({s.class_id for s in self._samples}))

    def filter(
        self,
        classes: int | Iterable[int] | None = None,
        split: str | None = None,
        defective: bool | None = None,
    ) -> SampleIndex:
        """Samples of the given class(es), split ("Train"/"Test") and defect flag; None = any."""
        wanted: set[int] | None = None
        if classes is not None:
            wanted = {int(classes)} if isinstance(classes, (int, np.integer)) else {int(c) for c in classes}
            wanted.add(PLAIN_CLASS)  # your own images have no DAGM class: every class filter keeps them
        split_name = _normalise_split(split) if split is not None else None
        return SampleIndex(
            (
                s
                for s in self._samples
                if (wanted is None or s.class_id in wanted)
                and (split_name is None or s.split == split_name)
                and (defective is None or s.defective == bool(defective))
            ),
            self.root,
        )

    def train_val_split(self, val_fraction: float = 0.2, seed: int = 0) -> tuple[SampleIndex, SampleIndex]:
        """Split into (train, validation), deterministic for a seed, stratified by class and defect flag.

        Within each (class, defect flag) group, ``round(n * val_fraction)`` samples go to
        validation; a group of two or more defective samples always leaves at least one
        on each side. Each group is shuffled by a generator derived from the seed and the defect
        flag (not the class), so adding a class does not change the other classes' split, and a
        class read through another layout (``to-plain``: your-own-images class 0, the same images
        in the same order) is split exactly alike. Both parts keep the index order.
        """
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
        groups: dict[tuple[int, bool], list[int]] = defaultdict(list)
        for i, s in enumerate(self._samples):
            groups[(s.class_id, s.defective)].append(i)
        val: set[int] = set()
        for (_, defective), members in sorted(groups.items()):
            n = len(members)
            n_val = math.floor(n * val_fraction + 0.5)
            if defective and n >= 2 and val_fraction > 0:
                n_val = min(max(n_val, 1), n - 1)
            n_val = min(n_val, n - 1) if n >= 2 else n_val
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(defective)])
            order = rng.permutation(n)
            val.update(members[j] for j in order[:n_val])
        if not val and val_fraction > 0 and len(self) >= 2:
            # tiny sets: still give validation one sample, from the largest clean group if any
            key = max(sorted(groups), key=lambda k: (not k[1], len(groups[k])))
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(key[1])])
            val.add(groups[key][int(rng.integers(len(groups[key])))])
        train = [s for i, s in enumerate(self._samples) if i not in val]
        valid = [s for i, s in enumerate(self._samples) if i in val]
        return SampleIndex(train, self.root), SampleIndex(valid, self.root)

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits present, in the order of :data:`SPLITS`."""
        present = {s.split for s in self._samples}
        return tuple(name for name in SPLITS if name in present)

    def counts(self) -> list[dict]:
        """Per class and split: ``{"class": int, "split": str, "images": int, "defective": int}``.

        Where the pixels were counted (the plain layout), a row also has ``defect_pixel_share``:
        defect pixels over all pixels of the split's images.
        """
        table: dict[tuple[int, str], list[int]] = {}
        for s in self._samples:
            row = table.setdefault((s.class_id, s.split), [0, 0, 0, 0])
            row[0] += 1
            row[1] += int(s.defective)
            if s.pixels is not None:
                row[2] += s.pixels
                row[3] += s.defect_pixels or 0
        keys = sorted(table, key=lambda k: (k[0], SPLITS.index(k[1]) if k[1] in SPLITS else 9, k[1]))
        rows = []
        for c, sp in keys:
            images, defective, pixels, defect_pixels = table[(c, sp)]
            row = {"class": c, "split": sp, "images": images, "defective": defective}
            if pixels:
                row["defect_pixel_share"] = defect_pixels / pixels
            rows.append(row)
        return rows


def format_counts(rows: Sequence[dict]) -> str:
    """A plain-text table of :meth:`SampleIndex.counts` rows with a total line."""
    if not rows:
        return "no images"
    pixels = any("defect_pixel_share" in r for r in rows)
    header = f"{'class':>5}  {'split':<5}  {'images':>6}  {'defective':>9}  {'share':>6}"
    if pixels:
        header += f"  {'defect pixels':>13}"
    out = [header, "-" * len(header)]

    def share(images: int, defective: int) -> str:
        return f"{100.0 * defective / images:5.1f}%" if images else "     -"

    for r in rows:
        line = (
            f"{'own' if r['class'] == PLAIN_CLASS else r['class']:>5}  {r['split']:<5}  {r['images']:>6}  "
            f"{r['defective']:>9}  {share(r['images'], r['defective'])}"
        )
        if pixels:
            line += f"  {100.0 * r.get('defect_pixel_share', 0.0):12.3f}%"
        out.append(line)
    total_images = sum(r["images"] for r in rows)
    total_defective = sum(r["defective"] for r in rows)
    out.append("-" * len(header))
    out.append(
        f"{'total':>5}  {'':<5}  {total_images:>6}  {total_defective:>9}  {share(total_images, total_defective)}"
    )
    return "\n".join(out)


# ----------------------------------------------------------------------------- scanning
def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise DatasetError(
            f"{folder}: cannot list the folder ({exc.strerror or exc}); check its permissions"
        ) from None


def _child_dir(folder: Path, name: str) -> Path | None:
    """The sub-folder called ``name`` (any case), or None."""
    for child in _children(folder):
        if child.name.lower() == name.lower() and child.is_dir():
            return child
    return None


def _files_by_lower_name(folder: Path) -> dict[str, Path]:
    return {c.name.lower(): c for c in _children(folder) if c.is_file()}


def _class_folders(root: Path) -> list[tuple[int, str, Path]]:
    """(class id, "official"|"dev", folder) for every class folder at ``root`` or directly below it."""
    own = _classify(root)
    if own is not None:
        return [own]
    found = [c for c in (_classify(child) for child in _children(root) if child.is_dir()) if c is not None]
    if not found:  # an extracted archive may wrap the class folders in one more folder
        for child in _children(root):
            if child.is_dir() and not child.name.startswith((".", "__")):
                found.extend(
                    c for c in (_classify(g) for g in _children(child) if g.is_dir()) if c is not None
                )
    return found


def _classify(folder: Path) -> tuple[int, str, Path] | None:
    m = _CLASS_RE.match(folder.name)
    if m:
        return int(m.group(1)), "official", folder
    m = _DEV_RE.match(folder.name)
    if m:
        return int(m.group(1)), "dev", folder
    return None


def _split_parent(class_dir: Path) -> Path:
    """The folder holding Train/Test: the class folder itself, or its nested twin."""
    if any(_child_dir(class_dir, s) for s in DAGM_SPLITS):
        return class_dir
    nested = _child_dir(class_dir, class_dir.name)
    if nested is not None and any(_child_dir(nested, s) for s in DAGM_SPLITS):
        return nested
    raise DatasetError(f"{class_dir}: this class folder has no Train or Test folder; {EXPECTED_LAYOUTS}")


def _scan_split(class_id: int, split: str, folder: Path, problems: list[str]) -> list[Sample]:
    files = _files_by_lower_name(folder)
    images = {name: p for name, p in files.items() if _IMAGE_RE.match(name)}
    label_dir = _child_dir(folder, "Label")
    labels_txt = None
    if label_dir is not None:
        labels_txt = _files_by_lower_name(label_dir).get("labels.txt")
    if labels_txt is None:
        if not images and label_dir is None:
            raise DatasetError(
                f"{folder}: the split folder is empty; the download or extraction is incomplete: "
                "re-download the class"
            )
        raise DatasetError(
            f"{folder}: no Label/Labels.txt; every DAGM split folder ships one (it says which images are "
            "defective), so the download or extraction is incomplete: re-download the class"
        )
    label_files = _files_by_lower_name(label_dir)
    masks = {name: p for name, p in label_files.items() if _MASK_RE.match(name)}
    rows = parse_labels_txt(labels_txt)
    samples: list[Sample] = []
    listed_images: set[str] = set()
    listed_masks: set[str] = set()
    for row in rows:
        image_path = files.get(row.image_file.lower())
        listed_images.add(row.image_file.lower())
        if row.mask_file is not None:
            listed_masks.add(row.mask_file.lower())
        if image_path is None:
            problems.append(
                f"{folder / row.image_file} is listed on line {row.line} of {labels_txt} but missing"
            )
            continue
        mask_path = None
        if row.mask_file is not None:
            mask_path = label_files.get(row.mask_file.lower())
            if mask_path is None:
                problems.append(
                    f"{label_dir / row.mask_file} is listed on line {row.line} of {labels_txt} but missing"
                )
                continue
        samples.append(Sample(class_id, split, row.sample_id, image_path, mask_path, row.defective))
    for name in sorted(set(masks) - listed_masks):
        problems.append(f"{masks[name]} has no row in {labels_txt}")
    for name in sorted(set(images) - listed_images):
        problems.append(f"{images[name]} has no row in {labels_txt}")
    return samples


def _scan_dev(class_id: int, folder: Path, problems: list[str]) -> list[Sample]:
    files = _files_by_lower_name(folder)
    labels_txt = files.get("labels.txt")
    if labels_txt is None:
        raise DatasetError(
            f"{folder}: no labels.txt; the 2007 development archive ClassN_def.zip ships one with the "
            "ellipse of every image: re-download or re-extract it"
        )
    ellipses = parse_ellipse_labels(labels_txt)
    images: dict[int, Path] = {}
    for name, p in files.items():
        m = _IMAGE_RE.match(name)
        if m:
            images[int(m.group(1))] = p
    samples = []
    for index in sorted(set(images) | set(ellipses)):
        if index not in ellipses:
            problems.append(f"{images[index]} has no row in {labels_txt}")
        elif index not in images:
            problems.append(f"{folder / f'{index}.png'} is listed in {labels_txt} but missing")
        else:
            samples.append(Sample(class_id, "Train", str(index), images[index], None, True, ellipses[index]))
    return samples


# ----------------------------------------------------------------------------- plain layout
_PLAIN_HELP = (
    "the plain layout is DIR/images/ with your image files and DIR/masks/ with one mask of the same "
    "stem per defective image (optionally inside DIR/train/, DIR/val/ and DIR/test/)"
)


def _plain_folders(root: Path) -> dict[str, Path] | None:
    """``{"": root}`` for ``root/images``; ``{"Train": .., "Val": .., "Test": ..}`` for fixed
    split folders that hold ``images/``; None when ``root`` is not in the plain layout."""
    if _child_dir(root, "images") is not None:
        return {"": root}
    found = {}
    for name, split in _PLAIN_SPLIT_DIRS.items():
        folder = _child_dir(root, name)
        if folder is not None and _child_dir(folder, "images") is not None:
            found[split] = folder
    if not found:
        return None
    if "Train" not in found:
        have = ", ".join(f"{found[k].name}/" for k in found)
        raise DatasetError(
            f"{root}: found {have} but no train/images/; fixed splits need a train folder to learn from: "
            f"add {root / 'train' / 'images'} (and masks/), or put every image in {root / 'images'} and "
            "let the split be chosen"
        )
    return found


def _image_files(folder: Path, what: str, problems: list[str]) -> dict[str, Path]:
    """stem -> file of the images in ``folder`` (non-recursive); a stem used twice is a problem."""
    by_stem: dict[str, Path] = {}
    for child in _children(folder):
        if not child.is_file() or child.name.startswith(".") or child.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        other = by_stem.get(child.stem.lower())
        if other is not None:
            problems.append(
                f"{other.name} and {child.name} in {folder} are two {what} with the same stem "
                f"{child.stem!r}; keep one (the stem pairs images with masks)"
            )
            continue
        by_stem[child.stem.lower()] = child
    return by_stem


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:  # noqa: BLE001 - any reason is the same to the user
        raise DatasetError(
            f"{path}: cannot read this file as an image ({' '.join(str(exc).split())[:200]}); "
            "re-export it as PNG, JPEG, BMP or TIFF, or remove it"
        ) from None


def _count_mask(path: Path) -> tuple[tuple[int, int], int]:
    """((width, height), defect pixels) of a mask file: every non-zero pixel (palette index) counts."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            size = im.size
            arr = np.asarray(im)
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(
            f"{path}: cannot read this mask ({' '.join(str(exc).split())[:200]}); re-export it as a PNG "
            "with 0 for background and 255 (or 1) for defect pixels"
        ) from None
    if arr.ndim == 3:
        arr = arr.any(axis=-1)
    return size, int(np.count_nonzero(arr))


def _scan_plain_folder(folder: Path, split: str, problems: list[str]) -> list[Sample]:
    image_dir = _child_dir(folder, "images")
    assert image_dir is not None
    mask_dir = _child_dir(folder, "masks")
    images = _image_files(image_dir, "images", problems)
    masks = _image_files(mask_dir, "masks", problems) if mask_dir is not None else {}
    for stem in sorted(set(masks) - set(images)):
        problems.append(
            f"{masks[stem]} has no image of the same stem in {image_dir}; add the image or remove the mask"
        )
    from concurrent.futures import ThreadPoolExecutor

    def check(stem: str) -> tuple[str, int, int] | str:
        try:
            iw, ih = header_size(images[stem])
            if stem not in masks:
                return stem, iw * ih, 0
            (mw, mh), defect = _count_mask(masks[stem])
        except DatasetError as exc:
            return str(exc)
        if (mw, mh) != (iw, ih):
            return (
                f"{masks[stem]} is {mw}x{mh} pixels but its image {images[stem]} is {iw}x{ih}; "
                "a mask must have its image's size: re-export the mask"
            )
        return stem, iw * ih, defect

    with ThreadPoolExecutor(max_workers=4) as pool:
        checked = list(pool.map(check, sorted(images)))
    samples = []
    for item in checked:
        if isinstance(item, str):
            problems.append(item)
            continue
        stem, pixels, defect = item
        path = images[stem]
        samples.append(
            Sample(
                PLAIN_CLASS,
                split,
                path.stem,
                path,
                masks[stem] if defect else None,
                defect > 0,
                pixels=pixels,
                defect_pixels=defect,
            )
        )
    if not images:
        problems.append(f"{image_dir} holds no image files ({'/'.join(s[1:] for s in IMAGE_SUFFIXES)})")
    return samples


def plain_split(samples: Sequence[Sample], fraction: float = PLAIN_TEST_FRACTION) -> list[Sample]:
    """The samples with ``split`` set to "Train" or "Test": per group (defective / clean), the
    ``round(n * fraction)`` samples whose stems hash lowest under :data:`PLAIN_SPLIT_SEED` are
    "Test" (at least one defective each side when there are two or more). It depends on the stems
    only, so every command sees the same Test images, and adding images moves few of them."""
    import dataclasses

    def rank(s: Sample) -> str:
        return hashlib.sha256(f"{PLAIN_SPLIT_SEED}/{s.sample_id}".encode()).hexdigest()

    test: set[int] = set()
    for defective in (True, False):
        group = sorted(
            (i for i, s in enumerate(samples) if s.defective == defective), key=lambda i: rank(samples[i])
        )
        n = len(group)
        n_test = math.floor(n * fraction + 0.5)
        if defective and n >= 2:
            n_test = min(max(n_test, 1), n - 1)
        test.update(group[:n_test])
    return [dataclasses.replace(s, split="Test" if i in test else "Train") for i, s in enumerate(samples)]


def _scan_plain(root: Path, folders: dict[str, Path]) -> SampleIndex:
    problems: list[str] = []
    samples: list[Sample] = []
    for split, folder in folders.items():
        samples.extend(_scan_plain_folder(folder, split or "Train", problems))
    if problems:
        listed = "; ".join(problems[:MAX_LISTED_PROBLEMS])
        more = (
            f" (and {len(problems) - MAX_LISTED_PROBLEMS} more)"
            if len(problems) > MAX_LISTED_PROBLEMS
            else ""
        )
        raise DatasetError(f"{len(problems)} problem(s) with the images under {root}: {listed}{more}")
    if "" in folders:
        samples = plain_split(samples)
    return SampleIndex(sorted(samples, key=_sort_key), root)


def sample_key(sample: Sample, root: Path | None) -> str:
    """A sample's name in a run's ``split.json``: its image path relative to the data root (POSIX)."""
    path = Path(sample.image_path)
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def is_plain(index: SampleIndex) -> bool:
    """True when ``index`` holds your own images (the plain layout), not DAGM classes."""
    return any(s.class_id == PLAIN_CLASS for s in index)


def image_policy(index: SampleIndex) -> str:
    """How the images of ``index`` are brought to the network: DAGM images are resized to the
    profile's image size (``"resize"``: 512x512 stay as they are); your own images keep their
    own size (``"none"``): training cuts them into tiles, evaluation and prediction tile them."""
    return "none" if is_plain(index) else "resize"


def scan(root: str | Path) -> SampleIndex:
    """Index every sample under ``root`` (any of the four layouts; see the module docstring).

    Raises :class:`DatasetError` when the folder is missing, empty or has no DAGM layout,
    when a split folder lacks its ``Label/Labels.txt``, or when a class appears twice;
    :class:`LabelsFormatError` when a label file is malformed, or when rows and files
    disagree (listed image or mask missing, mask or image without a row); that message
    names the first few files and counts the rest.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: the folder does not exist; {EXPECTED_LAYOUTS}")
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a folder; pass the folder that holds the ClassN folders")
    root = root.absolute()
    if not _children(root):
        raise DatasetError(f"{root}: the folder is empty; {EXPECTED_LAYOUTS}")
    plain = _plain_folders(root)
    if plain is not None:
        return _scan_plain(root, plain)
    folders = _class_folders(root)
    if not folders:
        if root.name.lower() in ("train", "test", "label"):
            raise DatasetError(
                f"{root}: this is a split folder; point at the ClassN folder above it (or the folder that holds "
                "the ClassN folders)"
            )
        raise DatasetError(f"{root}: no DAGM class folders found; {EXPECTED_LAYOUTS}")
    seen: dict[int, Path] = {}
    for class_id, _, folder in folders:
        if class_id in seen:
            raise DatasetError(
                f"class {class_id} was found twice, in {seen[class_id]} and {folder}; "
                "keep one copy (or point at one of them)"
            )
        seen[class_id] = folder
    problems: list[str] = []
    samples: list[Sample] = []
    for class_id, kind, folder in folders:
        if kind == "dev":
            samples.extend(_scan_dev(class_id, folder, problems))
            continue
        parent = _split_parent(folder)
        for split in DAGM_SPLITS:
            split_dir = _child_dir(parent, split)
            if split_dir is not None:
                samples.extend(_scan_split(class_id, split, split_dir, problems))
    if problems:
        listed = "; ".join(problems[:MAX_LISTED_PROBLEMS])
        more = (
            f" (and {len(problems) - MAX_LISTED_PROBLEMS} more)"
            if len(problems) > MAX_LISTED_PROBLEMS
            else ""
        )
        raise LabelsFormatError(
            f"{len(problems)} label/file mismatch(es) under {root}: {listed}{more}. "
            "Re-download the affected classes, or fix Labels.txt so that it lists exactly the files present"
        )
    if not samples:
        raise DatasetError(f"{root}: the class folders hold no images; {EXPECTED_LAYOUTS}")
    return SampleIndex(sorted(samples, key=_sort_key), root)


__all__ = [
    "DAGM_SPLITS",
    "IMAGE_SUFFIXES",
    "PLAIN_CLASS",
    "PLAIN_TEST_FRACTION",
    "SPLITS",
    "Ellipse",
    "LabelRow",
    "Sample",
    "SampleIndex",
    "format_counts",
    "format_ellipse_labels",
    "format_labels_txt",
    "header_size",
    "image_policy",
    "is_plain",
    "parse_ellipse_labels",
    "parse_labels_txt",
    "plain_split",
    "sample_key",
    "scan",
]
