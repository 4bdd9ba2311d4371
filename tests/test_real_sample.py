"""The loader on the 15 real DAGM images in ../shared/dagm_sample (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dagm_helpers.data.images import load_sample, read_image, read_mask
from dagm_helpers.data.layout import parse_labels_txt, scan

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "dagm_sample"

# class -> (image ids, defective ids), as listed in each Train/Label/Labels.txt of the sample
EXPECTED = {
    1: (["0593", "0595", "0602", "0616", "0626"], ["0595", "0616", "0626"]),
    2: (["0576", "0577", "0578", "0579", "0581"], ["0576", "0578", "0579"]),
    4: (["0576", "0577", "0579", "0602", "0624"], ["0576", "0602", "0624"]),
}


@pytest.fixture(scope="module")
def index():
    if not (SAMPLE / "Class1").is_dir():
        pytest.skip(f"the real DAGM sample is not present at {SAMPLE}")
    return scan(SAMPLE)


def test_counts(index):
    assert index.counts() == [
        {"class": 1, "split": "Train", "images": 5, "defective": 3},
        {"class": 2, "split": "Train", "images": 5, "defective": 3},
        {"class": 4, "split": "Train", "images": 5, "defective": 3},
    ]
    assert index.classes == (1, 2, 4)


def test_ids_and_flags(index):
    for class_id, (ids, defective) in EXPECTED.items():
        part = index.filter(classes=class_id)
        assert [s.sample_id for s in part] == ids
        assert [s.sample_id for s in part if s.defective] == defective
        for s in part:
            assert s.image_path.name == f"{s.sample_id}.PNG"
            if s.defective:
                assert s.mask_path is not None and s.mask_path.name == f"{s.sample_id}_label.PNG"
            else:
                assert s.mask_path is None


def test_crlf_and_lf_files_parse_alike():
    if not (SAMPLE / "Class2").is_dir():
        pytest.skip(f"the real DAGM sample is not present at {SAMPLE}")
    crlf = SAMPLE / "Class2" / "Train" / "Label" / "Labels.txt"
    assert b"\r\n" in crlf.read_bytes()  # the sample's Class2 file really is CRLF
    rows = parse_labels_txt(crlf)
    assert [(r.sample_id, r.defective, r.mask_file) for r in rows][:2] == [
        ("0576", True, "0576_label.PNG"),
        ("0577", False, None),
    ]


def test_images_and_masks(index):
    for s in index:
        image, mask = load_sample(s)
        assert image.shape == mask.shape == (512, 512)
        assert image.dtype == mask.dtype == np.uint8
        assert image.std() > 1  # real texture, not a blank
        assert set(np.unique(mask)) <= {0, 1}
        if s.defective:
            area = int(mask.sum())
            assert 500 < area < 0.25 * 512 * 512  # a coarse ellipse: visible, far from the whole image
        else:
            assert mask.sum() == 0


def test_real_mask_is_0_255_on_disk(index):
    s = next(iter(index.filter(defective=True)))
    raw = read_image(s.mask_path, policy="none")
    assert set(np.unique(raw)) == {0, 255}
    np.testing.assert_array_equal(read_mask(s.mask_path, policy="none"), raw // 255)


def test_generated_class1_grain_matches_the_real_sample(index):
    """The real sample fixes the thresholds that tests/test_synth.py uses for generated class 1:
    real clean texture's smoothest patch stays above 0.55 of the median grain energy, and the
    generator's smoothest patches are within 0.1 of the real ones (docs/synthetic_data.md)."""
    from dagm_helpers.data.synth_report import generated_samples, real_samples, smoothest_patch

    real = [smoothest_patch(i, m) for i, m in real_samples(SAMPLE, 1)]
    made = [smoothest_patch(i, m) for i, m in generated_samples(1, 12)]
    assert min(real) > 0.55, real
    assert abs(float(np.median(made)) - float(np.median(real))) < 0.1, (made, real)


def test_report_reads_the_sample_with_the_project_loader(index):
    """synth_report.real_samples: every image of the class, a 0/1 mask exactly for the defective ones."""
    from dagm_helpers.data.synth_report import real_samples

    for c, (ids, defective) in EXPECTED.items():
        pairs = real_samples(SAMPLE, c)
        assert len(pairs) == len(ids)
        masks = [m for _, m in pairs if m is not None]
        assert len(masks) == len(defective)
        assert all(m.shape == (512, 512) and set(np.unique(m)) == {0, 1} for m in masks)
