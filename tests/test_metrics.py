"""Metrics: hand-computed known answers, empty-mask conventions, Keras/numpy agreement."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from dagm_helpers.errors import ConfigError
from dagm_helpers.metrics import (
    PixelDice,
    PixelIoU,
    average_precision,
    best_threshold,
    boundary_f1,
    boundary_f1_per_image,
    defect_scores,
    dice,
    dice_per_image,
    image_level,
    iou,
    iou_per_image,
    mask_boundary,
    roc_auc,
)


def squares() -> tuple[np.ndarray, np.ndarray]:
    """Three 6x6 images.

    0: truth rows/cols 1-3 (9 px), prediction rows/cols 2-4 (9 px), overlap rows/cols 2-3 (4 px)
    1: both empty
    2: truth empty, prediction 2 px
    """
    t = np.zeros((3, 6, 6), bool)
    p = np.zeros((3, 6, 6), np.float32)
    t[0, 1:4, 1:4] = True
    p[0, 2:5, 2:5] = 0.9
    p[2, 0, 0:2] = 0.6
    p[1] = 0.3  # below the threshold everywhere
    return t, p


def test_overlap_known_answers():
    t, p = squares()
    # image 0: IoU = 4 / (9 + 9 - 4) = 4/14,  Dice = 2*4 / (9 + 9) = 8/18
    # image 1: empty/empty -> 1;  image 2: 0 overlap, 2 predicted -> 0
    np.testing.assert_allclose(iou_per_image(t, p), [4 / 14, 1.0, 0.0])
    np.testing.assert_allclose(dice_per_image(t, p), [8 / 18, 1.0, 0.0])
    # pooled: TP = 4, |pred| = 9 + 0 + 2 = 11, |truth| = 9
    # IoU = 4 / (11 + 9 - 4) = 4/16,  Dice = 8 / 20
    assert iou(t, p) == pytest.approx(0.25)
    assert dice(t, p) == pytest.approx(0.4)
    # (N, H, W, 1), 0/1 float truth and a 2-D single image give the same answers
    assert iou(t[..., None].astype(np.float32), p[..., None]) == pytest.approx(0.25)
    assert iou_per_image(t[0], p[0]) == pytest.approx([4 / 14])
    # a higher threshold drops image 2's prediction (0.6): pooled IoU = 4 / (9 + 9 - 4)
    assert iou(t, p, threshold=0.7) == pytest.approx(4 / 14)
    # threshold is inclusive (>=), as keras.metrics.BinaryIoU
    assert iou(t, p, threshold=0.9) == pytest.approx(4 / 14)


def test_empty_everywhere_scores_one():
    z = np.zeros((2, 8, 8))
    assert iou(z, z) == 1.0 and dice(z, z) == 1.0
    assert list(iou_per_image(z, z)) == [1.0, 1.0] and list(dice_per_image(z, z)) == [1.0, 1.0]
    assert list(boundary_f1_per_image(z, z)) == [1.0, 1.0]


def test_shape_mismatch_is_a_config_error():
    with pytest.raises(ConfigError, match="shape"):
        iou(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))
    with pytest.raises(ConfigError, match=r"\(N, H, W\)"):
        dice(np.zeros((2, 2, 8, 8)), np.zeros((2, 2, 8, 8)))


def test_mask_boundary_of_a_square():
    m = np.zeros((1, 7, 7), bool)
    m[0, 1:6, 1:6] = True  # 5x5 square: boundary = 25 - 9 interior = 16 pixels
    b = mask_boundary(m)
    assert b.sum() == 16 and not b[0, 2:5, 2:5].any()
    # the image frame is not an edge: a mask filling the image has no boundary
    assert mask_boundary(np.ones((1, 5, 5), bool)).sum() == 0


def shifted_squares() -> tuple[np.ndarray, np.ndarray]:
    """Truth: 5x5 square rows 2-6, cols 2-6. Prediction: the same square 3 columns right (cols 5-9)."""
    t = np.zeros((1, 12, 12), bool)
    p = np.zeros((1, 12, 12), bool)
    t[0, 2:7, 2:7] = True
    p[0, 2:7, 5:10] = True
    return t, p


@pytest.mark.parametrize(
    "tolerance, expected",
    [
        # tolerance 0: only boundary pixels in both: (2,5),(2,6),(6,5),(6,6) -> P = R = 4/16
        (0, 4 / 16),
        # tolerance 1: predicted boundary pixels next to a true one:
        #   row 2: cols 5,6 (on it), 7 (next to (2,6)) = 3;  row 6: 3;  col 5 rows 3-5 (next to col 6) = 3
        #   -> 9/16, and the same for recall by symmetry -> F1 = 9/16
        (1, 9 / 16),
        # tolerance 2 (disk radius 2): rows 2 and 6 also reach col 8 (2 px from col 6): 4 + 4 + 3 = 11
        (2, 11 / 16),
    ],
)
def test_boundary_f1_known_answers(tolerance, expected):
    t, p = shifted_squares()
    assert boundary_f1(t, p, tolerance=tolerance) == pytest.approx(expected)


def test_boundary_f1_empty_conventions():
    t, p = shifted_squares()
    z = np.zeros_like(t)
    assert boundary_f1_per_image(z, p)[0] == 0.0  # empty truth, non-empty prediction
    assert boundary_f1_per_image(t, z)[0] == 0.0  # non-empty truth, empty prediction
    assert boundary_f1_per_image(t, t)[0] == 1.0
    assert boundary_f1_per_image(z, z)[0] == 1.0


def reference_boundary_f1(t: np.ndarray, p: np.ndarray, tol: int) -> float:
    """Slow per-image reference with scipy: erosion + Euclidean distance transform."""
    if not t.any() and not p.any():
        return 1.0
    if not t.any() or not p.any():
        return 0.0
    cross = ndi.generate_binary_structure(2, 1)
    tb = t & ~ndi.binary_erosion(t, cross, border_value=1)
    pb = p & ~ndi.binary_erosion(p, cross, border_value=1)
    if not tb.any() or not pb.any():
        return float(tb.any() == pb.any())
    dist_to_t = ndi.distance_transform_edt(~tb)
    dist_to_p = ndi.distance_transform_edt(~pb)
    precision = (dist_to_t[pb] <= tol).mean()
    recall = (dist_to_p[tb] <= tol).mean()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def random_blobs(rng: np.random.Generator, n: int, size: int, p_empty: float = 0.2) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size), bool)
    for i in range(n):
        if rng.random() < p_empty:
            continue
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(0, size, 2)
            ry, rx = rng.integers(2, size // 3, 2)
            out[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return out


@pytest.mark.parametrize("tol", [0, 1, 2, 3])
def test_boundary_f1_matches_scipy_reference(tol):
    rng = np.random.default_rng(tol)
    t = random_blobs(rng, 12, 40)
    p = random_blobs(rng, 12, 40)
    p[:4] = ndi.binary_dilation(t[:4], iterations=1)  # near misses
    expected = [reference_boundary_f1(a, b, tol) for a, b in zip(t, p, strict=True)]
    np.testing.assert_allclose(boundary_f1_per_image(t, p, tolerance=tol), expected, atol=1e-12)


def test_defect_scores():
    _, p = squares()
    np.testing.assert_allclose(defect_scores(p), [0.9, 0.3, 0.6])
    np.testing.assert_allclose(defect_scores(p, method="area"), [9, 0, 2])
    np.testing.assert_allclose(defect_scores(p, method="area", threshold=0.2), [9, 36, 2])
    with pytest.raises(ConfigError, match="max"):
        defect_scores(p, method="mean")


def test_topk_score_ignores_a_few_stray_pixels():
    clean = np.zeros((32, 32), np.float32)
    clean[3, 5] = clean[20, 9] = 0.99  # two confident stray pixels
    defect = np.zeros((32, 32), np.float32)
    defect[10:20, 10:20] = 0.8  # a 100-pixel defect
    p = np.stack([clean, defect])
    np.testing.assert_allclose(defect_scores(p), [0.99, 0.8])  # max: the clean image looks worse
    np.testing.assert_allclose(defect_scores(p, method="topk", top_k=100), [0.0198, 0.8], rtol=1e-5)
    np.testing.assert_allclose(defect_scores(p, method="topk", top_k=1), defect_scores(p))
    np.testing.assert_allclose(defect_scores(p, method="topk", top_k=10_000), p.mean(axis=(1, 2)), rtol=1e-6)
    with pytest.raises(ConfigError, match="top_k must be a positive integer"):
        defect_scores(p, method="topk", top_k=0)


def test_image_level_known_answers():
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    # AUROC: positive/negative pairs ranked right: (0.35>0.1), (0.8>0.1), (0.8>0.4); wrong: (0.35<0.4) -> 3/4
    # AP: descending 0.8(+) P=1 R=.5 | 0.4(-) P=.5 R=.5 | 0.35(+) P=2/3 R=1 | 0.1(-) P=.5 R=1
    #     = 0.5*1 + 0 + 0.5*(2/3) + 0 = 5/6  (scikit-learn's documented example gives 0.8333)
    out = image_level(y, s, threshold=0.5)
    assert out["auroc"] == pytest.approx(0.75)
    assert out["ap"] == pytest.approx(5 / 6)
    # flagged at >= 0.5: only 0.8 -> TPR = 1/2, TNR = 2/2
    assert out["tpr"] == pytest.approx(0.5) and out["tnr"] == pytest.approx(1.0)
    # ties count one half
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert average_precision([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    # perfect separation
    assert image_level([0, 1, 1], [0.2, 0.7, 0.9])["auroc"] == 1.0
    assert image_level([0, 1, 1], [0.2, 0.7, 0.9])["ap"] == 1.0
    # a missing class gives NaN rather than a made-up number
    only_pos = image_level([1, 1], [0.2, 0.9])
    assert np.isnan(only_pos["auroc"]) and np.isnan(only_pos["tnr"]) and only_pos["tpr"] == 0.5


def test_roc_auc_matches_pair_counting():
    rng = np.random.default_rng(7)
    y = rng.random(60) < 0.4
    s = np.round(rng.random(60), 1)  # many ties
    pos, neg = s[y], s[~y]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(y, s) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_best_threshold_picks_the_right_one():
    t = np.zeros((2, 10, 10), bool)
    t[:, 3:7, 3:7] = True
    prob = np.full((2, 10, 10), 0.1, np.float32)
    prob[:, 2:8, 2:8] = 0.3  # a ring of false positives around the defect
    prob[t] = 0.7  # the defect itself
    # 0.2 -> 36 predicted for 16 true: Dice = 32/52;  0.5 -> exact: Dice 1;  0.8 -> nothing: Dice 0
    assert best_threshold(t, prob, thresholds=[0.2, 0.5, 0.8]) == (0.5, 1.0)
    th, val = best_threshold(t, prob, metric="iou")
    assert 0.3 < th <= 0.7 and val == 1.0
    assert best_threshold(t, prob, metric="boundary_f1")[1] == 1.0
    with pytest.raises(ConfigError, match="dice, iou"):
        best_threshold(t, prob, metric="accuracy")


def run_keras(metric, y_true, y_prob, batches: int = 3) -> float:
    for tb, pb in zip(np.array_split(y_true, batches), np.array_split(y_prob, batches), strict=True):
        metric.update_state(tb, pb)
    return float(metric.result())


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_keras_metrics_agree_with_numpy(threshold):
    rng = np.random.default_rng(int(threshold * 10))
    t = random_blobs(rng, 9, 32)[..., None].astype(np.float32)
    p = np.clip(t * 0.6 + rng.random(t.shape).astype(np.float32) * 0.5, 0, 1)
    assert run_keras(PixelIoU(threshold=threshold), t, p) == pytest.approx(iou(t, p, threshold), rel=1e-6)
    assert run_keras(PixelDice(threshold=threshold), t, p) == pytest.approx(dice(t, p, threshold), rel=1e-6)


def test_keras_metrics_reset_and_empty():
    m = PixelIoU()
    z = np.zeros((2, 8, 8, 1), np.float32)
    assert run_keras(m, z, z, batches=1) == 1.0  # both empty: 1, as the numpy twin
    m.update_state(np.ones_like(z), z)  # now everything missed
    assert float(m.result()) == 0.0
    m.reset_state()
    assert run_keras(m, np.ones_like(z), np.ones_like(z), batches=1) == 1.0
    d = PixelDice(threshold=0.3, name="dice_at_03")
    assert d.get_config()["threshold"] == 0.3 and d.name == "dice_at_03"
    again = PixelDice.from_config(d.get_config())
    assert again.threshold == 0.3


def test_thousand_masks_take_seconds():
    """1,000 masks of 512x512 would need 1 GB of float32 here: scale the check down 8x in pixels."""
    import time

    rng = np.random.default_rng(0)
    t = random_blobs(rng, 125, 512)
    p = (t.astype(np.float32) * 0.8) + 0.1
    start = time.perf_counter()
    iou_per_image(t, p)
    dice(t, p)
    boundary_f1(t, p)
    assert time.perf_counter() - start < 20  # measured ~0.6 s; generous for a busy CI machine


@pytest.mark.parametrize("metric", ["dice", "iou", "dice_per_image", "iou_per_image"])
def test_best_threshold_fast_sweep_equals_the_plain_loop(metric):
    rng = np.random.default_rng(11)
    t = random_blobs(rng, 70, 24)  # more than one chunk of 64 images
    p = np.clip(t * 0.5 + rng.random(t.shape) * 0.6, 0, 1).astype(np.float32)
    ts = np.linspace(0.05, 0.95, 19)
    f = {"dice": dice, "iou": iou}.get(metric) or (
        lambda a, b, th: {"dice_per_image": dice_per_image, "iou_per_image": iou_per_image}[metric](
            a, b, th
        ).mean()
    )
    values = [f(t, p, th) for th in ts]
    i = int(np.argmax(values))
    th, val = best_threshold(t, p, metric=metric, thresholds=ts)
    assert th == ts[i] and val == pytest.approx(values[i], rel=1e-12)
