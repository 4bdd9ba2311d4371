"""The offline DAGM-like generator: layout, formats, determinism, labels, caching, resolve_data."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.measure import regionprops

from dagm_helpers import config
from dagm_helpers.data import resolve_data, synth
from dagm_helpers.errors import ConfigError, DatasetError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    """Classes 1 and 7 (the two id schemes), eight images per split."""
    return synth.synthesize(tmp_path_factory.mktemp("synth") / "data", classes=[1, 7], images_per_split=8)


# ----------------------------------------------------------------------------- ids and counts
def test_ids_follow_the_real_release():
    assert synth.sample_ids(1, "Train")[0] == "0576" and synth.sample_ids(1, "Train")[-1] == "1150"
    assert synth.sample_ids(6, "Test")[0] == "0001" and synth.sample_ids(6, "Test")[-1] == "0575"
    assert synth.sample_ids(7, "Train")[0] == "1151" and synth.sample_ids(10, "Train")[-1] == "2300"
    assert synth.sample_ids(10, "Test")[-1] == "1150"
    assert synth.sample_ids(3, "Test", 3) == ["0001", "0002", "0003"]
    assert [synth.real_count(c) for c in (1, 6, 7, 10)] == [575, 575, 1150, 1150]
    with pytest.raises(ConfigError, match="1..575"):
        synth.sample_ids(1, "Train", 576)
    with pytest.raises(ConfigError, match="classes are 1..10"):
        synth.sample_ids(11, "Train")


def test_defect_share_is_thirteen_percent():
    assert [synth.n_defective(n) for n in (3, 4, 8, 24, 100, 575, 1150)] == [0, 1, 1, 3, 13, 75, 150]
    ids = synth.sample_ids(2, "Test", 100)
    flags = synth.defect_flags(2, "Test", ids, seed=0)
    assert sum(flags.values()) == 13
    assert flags == synth.defect_flags(2, "Test", ids, seed=0)
    assert flags != synth.defect_flags(2, "Test", ids, seed=1)


# ----------------------------------------------------------------------------- layout and formats
def test_layout_and_file_formats(small_set: Path):
    for class_id, first in ((1, {"Train": 576, "Test": 1}), (7, {"Train": 1151, "Test": 1})):
        for split in ("Train", "Test"):
            folder = small_set / f"Class{class_id}" / split
            ids = [f"{i:04d}" for i in range(first[split], first[split] + 8)]
            assert sorted(p.name for p in folder.glob("*.PNG")) == [f"{i}.PNG" for i in ids]
            raw = (folder / "Label" / "Labels.txt").read_bytes()
            assert b"\r" not in raw and raw.startswith(b"1\n") and raw.endswith(b"\n")
            rows = raw.decode("ascii").split("\n")[1:-1]
            assert [r.split("\t")[0] for r in rows] == ids
            defective = []
            for row in rows:
                sid, flag = row.split("\t")[:2]
                if flag == "1":
                    assert row == f"{sid}\t1\t{sid}.PNG\t0\t{sid}_label.PNG"
                    defective.append(sid)
                else:
                    assert row == f"{sid}\t0\t{sid}.PNG\t0\t0\t"  # the shipped trailing tab
            assert len(defective) == synth.n_defective(8) == 1
            masks = sorted(p.name for p in (folder / "Label").glob("*.PNG"))
            assert masks == [f"{sid}_label.PNG" for sid in defective]
            for sid in ids[:3] + defective:
                with Image.open(folder / f"{sid}.PNG") as im:
                    assert (im.format, im.mode, im.size) == ("PNG", "L", (512, 512))
            for sid in defective:
                with Image.open(folder / "Label" / f"{sid}_label.PNG") as im:
                    assert (im.mode, im.size) == ("L", (512, 512))
                    values = set(np.unique(np.asarray(im)).tolist())
                assert values == {0, 255}
    assert not [p for p in small_set.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_layout_scan_round_trip(small_set: Path):
    layout = pytest.importorskip("dagm_helpers.data.layout")
    index = layout.scan(small_set)
    assert index.counts() == [
        {"class": c, "split": s, "images": 8, "defective": 1} for c in (1, 7) for s in ("Train", "Test")
    ]
    for sample in index:
        assert sample.defective == (sample.mask_path is not None)


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path, small_set: Path):
    again = synth.synthesize(tmp_path / "again", classes=[7], images_per_split=8, seed=0)
    assert _files(again / "Class7") == _files(small_set / "Class7")
    other = synth.synthesize(tmp_path / "other", classes=[1], images_per_split=8, seed=1)
    a, b = _files(small_set / "Class1"), _files(other / "Class1")
    assert a.keys() - {k for k in a if "_label" in k} == b.keys() - {k for k in b if "_label" in k}
    assert all(a[k] != b[k] for k in a if k.endswith(".PNG") and "Label" not in k)


def test_a_subset_has_the_same_images(tmp_path: Path, small_set: Path):
    subset = synth.synthesize(tmp_path / "subset", classes=[7], images_per_split=4)
    compared = 0
    for split in ("Train", "Test"):
        for image in (subset / "Class7" / split).glob("*.PNG"):
            masks = [
                root / "Class7" / split / "Label" / f"{image.stem}_label.PNG" for root in (subset, small_set)
            ]
            if not any(m.exists() for m in masks):  # clean in both sets: byte-identical
                assert image.read_bytes() == (small_set / "Class7" / split / image.name).read_bytes()
                compared += 1
    assert compared >= 4


# ----------------------------------------------------------------------------- defects and labels
@pytest.mark.parametrize("class_id", range(1, 11))
def test_masks_are_filled_ellipses_around_the_defect(class_id: int):
    for k in range(3):
        s = synth.generate_image(class_id, "Test", f"{k + 1:04d}", seed=3, defective=True)
        e = s.ellipse
        m = s.mask > 0
        assert set(np.unique(s.mask).tolist()) == {0, 255}
        (region,) = regionprops(m.astype(np.uint8))
        assert region.solidity > 0.96  # filled and convex
        inside = (
            e.cx - e.a > 1 and e.cy - e.a > 1 and e.cx + e.a < 510 and e.cy + e.a < 510
        )  # not clipped by the border
        if inside:
            assert region.area == pytest.approx(math.pi * e.a * e.b, rel=0.03)
            fit = math.pi * region.axis_major_length * region.axis_minor_length / 4
            assert region.area == pytest.approx(fit, rel=0.03)
            assert region.axis_major_length / 2 == pytest.approx(e.a, rel=0.05)
        # the defect changed the image, and (almost) only inside its ellipse
        diff = np.abs(s.image.astype(np.int16) - s.clean.astype(np.int16))
        assert np.percentile(diff[m], 99) >= 8, "defect too faint to learn"
        assert diff[m].sum() / max(diff.sum(), 1) > 0.97
        # coarse like DAGM: the ellipse is clearly larger than the changed pixels
        changed = diff > 3
        assert changed.sum() < 0.8 * m.sum()
        # subtle, not glaring: the mean change inside the ellipse stays well below the texture's range
        assert diff[m].mean() < 60


def test_defect_free_images_have_no_mask():
    s = synth.generate_image(4, "Train", "0600", seed=0, defective=False)
    assert s.mask is None and s.ellipse is None and not s.defective
    assert s.image is s.clean


def _features(image: np.ndarray) -> np.ndarray:
    """Mean, contrast, anisotropy and a coarse log power spectrum of one image."""
    a = image.astype(np.float64)
    power = np.abs(np.fft.fftshift(np.fft.fft2(a - a.mean()))) ** 2
    yy, xx = np.indices(a.shape)
    r = np.hypot(yy - 256, xx - 256).astype(int)
    radial = np.bincount(r.ravel(), power.ravel()) / np.bincount(r.ravel())
    bands = [np.log10(radial[lo:hi].mean()) for lo, hi in ((1, 4), (4, 16), (16, 64), (64, 160), (160, 256))]
    aniso = np.log(np.abs(np.diff(a, axis=1)).mean() / np.abs(np.diff(a, axis=0)).mean())
    return np.array([a.mean() / 20, a.std() / 10, 3 * aniso, *bands])


def test_classes_are_visually_distinct():
    feats = {
        c: _features(synth.generate_image(c, "Train", "1151" if c > 6 else "0576").image)
        for c in range(1, 11)
    }
    for c in range(1, 11):
        for d in range(c + 1, 11):
            assert np.abs(feats[c] - feats[d]).max() > 0.5, f"classes {c} and {d} look alike"
    # within one class, two images are closer than to any other class
    twin = _features(synth.generate_image(2, "Train", "0900").image)
    dists = {c: np.abs(twin - f).max() for c, f in feats.items()}
    assert min(dists, key=dists.get) == 2


def test_class_statistics_match_the_real_sample_classes():
    """The generated counterparts of real classes 1, 2 and 4 have their grey level and contrast."""
    real = {
        1: (69, 27),
        2: (97, 56),
        4: (175, 18),
    }  # measured on ../shared/dagm_sample (docs/synthetic_data.md)
    for c, (mean, std) in real.items():
        imgs = [synth.generate_image(c, "Train", f"{600 + i:04d}").image.astype(float) for i in range(3)]
        assert np.mean([i.mean() for i in imgs]) == pytest.approx(mean, abs=12)
        assert np.mean([i.std() for i in imgs]) == pytest.approx(std, rel=0.15)


def test_smoothest_patch_finds_a_grain_free_patch():
    """Known answer: white noise scores about 1 everywhere; a blurred square is found unless labelled."""
    from scipy import ndimage as ndi

    from dagm_helpers.data.synth_report import defect_grain, smoothest_patch

    rng = np.random.default_rng(0)
    noise = rng.normal(100, 20, (256, 256))
    assert smoothest_patch(noise) > 0.8
    patched = noise.copy()
    patched[100:150, 100:150] = ndi.gaussian_filter(noise, 4)[100:150, 100:150]
    assert smoothest_patch(patched) < 0.3
    mask = np.zeros((256, 256), np.uint8)
    mask[95:155, 95:155] = 255  # the patch labelled: the rest of the texture is normal again
    assert smoothest_patch(patched, mask) > 0.8
    assert defect_grain(patched, mask) < 0.5  # the grain of the unlabelled rim bleeds in (sigma 8 px)
    assert math.isnan(defect_grain(patched, np.zeros_like(mask)))


def test_report_table_shows_grain_columns_only_when_masks_were_given():
    from dagm_helpers.data.synth_report import generated_samples, image_stats, markdown_table

    pairs = generated_samples(1, 8)
    images, masks = [i for i, _ in pairs], [m for _, m in pairs]
    with_grain = image_stats(images, masks)
    assert with_grain["defects"] == sum(m is not None for m in masks) >= 1
    assert 0.0 < with_grain["smoothest_min"] <= with_grain["smoothest"] < 2.0
    row = markdown_table({1: {"real": with_grain, "generated": image_stats(images)}}).splitlines()
    assert row[2].endswith(
        f"| {with_grain['smoothest']:.2f}, {with_grain['smoothest_min']:.2f} "
        f"| {with_grain['defect_grain']:.2f} ({with_grain['defects']}) |"
    )
    assert row[3].endswith("| | |")  # no masks: no grain numbers


def _class1_smoothest(n: int = 6) -> list[float]:
    from dagm_helpers.data.synth_report import smoothest_patch

    return [smoothest_patch(synth.generate_image(1, "Train", f"{700 + i:04d}").image) for i in range(n)]


def test_class1_clean_texture_has_no_unlabelled_defect_lookalikes(monkeypatch):
    """Clean class-1 texture is never as smooth as class 1's defect (a blurred patch).

    The real sample's smoothest 31 px patches of clean texture have 0.56-0.80 of the median
    grain energy (docs/synthetic_data.md); generator version 2 (envelope 0.3) went down to
    0.17, planting unlabelled look-alike defects. The check is shown to catch that version.
    """
    assert min(_class1_smoothest()) > 0.55
    spec = synth.CLASS_SPECS[1]
    old = dataclasses.replace(spec, texture_params=dict(spec.texture_params, envelope=0.3))
    monkeypatch.setitem(synth.CLASS_SPECS, 1, old)
    assert min(_class1_smoothest()) < 0.55


def test_class1_defects_stay_as_subtle_as_real_ones():
    """The blurred-patch defect keeps 0.6-0.95 of the texture's grain (real class 1: 0.74-0.89)."""
    from dagm_helpers.data.synth_report import defect_grain

    inside = []
    for i in range(6):
        s = synth.generate_image(1, "Train", f"{800 + i:04d}", defective=True)
        inside.append(defect_grain(s.image, s.mask))
    assert 0.6 <= float(np.median(inside)) <= 0.95, inside


# ----------------------------------------------------------------------------- caching
def test_ensure_synthetic_caches_and_redoes_interrupted_classes(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("DAGM_HOME", str(tmp_path / "home"))
    root = synth.ensure_synthetic([1], 4, seed=0)
    assert root == tmp_path / "home" / "synthetic" / "seed0-n4"
    marker = root / ".complete-Class1.json"
    assert marker.is_file() and synth.is_complete(root, 1, 4, 0)
    image = root / "Class1" / "Train" / "0576.PNG"
    inode = image.stat().st_ino

    calls = []
    real = synth.synthesize_class
    monkeypatch.setattr(synth, "synthesize_class", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    assert synth.ensure_synthetic([1], 4) == root and calls == []  # reused
    assert image.stat().st_ino == inode

    synth.ensure_synthetic([1, 2], 4)  # only the missing class is generated
    assert calls == [2] and image.stat().st_ino == inode

    marker.unlink()  # as if generation had been interrupted before the marker
    synth.ensure_synthetic([1], 4)
    assert calls == [2, 1] and marker.is_file() and image.stat().st_ino != inode

    marker.write_text('{"version": -1}')  # another generator version: regenerate
    synth.ensure_synthetic([1], 4)
    assert calls == [2, 1, 1]


def test_interrupted_class_leaves_nothing_that_looks_complete(tmp_path: Path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "_write_split", boom)
    with pytest.raises(KeyboardInterrupt):
        synth.ensure_synthetic([3], 4, root=tmp_path)
    assert not (tmp_path / "Class3").exists() and not synth.is_complete(tmp_path, 3, 4)
    assert [p.name for p in tmp_path.iterdir()] == []
    monkeypatch.undo()
    synth.ensure_synthetic([3], 4, root=tmp_path)
    assert synth.is_complete(tmp_path, 3, 4)
    assert len(list((tmp_path / "Class3" / "Test").glob("*.PNG"))) == 4


def test_synthesize_replaces_an_existing_class(tmp_path: Path):
    synth.synthesize(tmp_path, classes=[5], images_per_split=5)
    synth.synthesize(tmp_path, classes=[5], images_per_split=4)
    assert len(list((tmp_path / "Class5" / "Train").glob("*.PNG"))) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Class5"]


# ----------------------------------------------------------------------------- resolve_data
def test_resolve_data(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("DAGM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGM_DIR", raising=False)
    profile = config.resolve_profile("smoke").replace(synth_images_per_split=4, classes=(2,))
    root = resolve_data(None, profile)
    assert root == synth.cache_dir(4) and synth.is_complete(root, 2, 4)
    assert resolve_data("synthetic", profile) == root
    assert resolve_data(tmp_path) == tmp_path
    monkeypatch.setenv("DAGM_DIR", str(tmp_path))
    assert resolve_data(None, profile) == tmp_path
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as err:
        resolve_data(missing)
    assert (
        str(missing) in str(err.value)
        and "download" in str(err.value)
        and "--data synthetic" in str(err.value)
    )
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        resolve_data(tmp_path / "file.txt")


def test_cli_synth(tmp_path: Path, capsys):
    from dagm_helpers.cli import main

    assert (
        main(["synth", "--out", str(tmp_path), "--classes", "9", "--images-per-split", "4", "--seed", "2"])
        == 0
    )
    assert str(tmp_path) in capsys.readouterr().out
    assert len(list((tmp_path / "Class9" / "Train").glob("*.PNG"))) == 4
    assert main(["synth", "--out", str(tmp_path), "--classes", "12"]) == 2
