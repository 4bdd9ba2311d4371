"""Figures and the prediction browser: labels, colours and widget behaviour (tests/test_viz.py)."""

from __future__ import annotations

import html

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from dagm_helpers import viz


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _square_mask(size: int = 16, lo: int = 4, hi: int = 12) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[lo:hi, lo:hi] = 1
    return mask


def _titled_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.get_title()]


def test_colours_differ_and_match_uint8_versions():
    assert viz.TRUTH_COLOR != viz.PRED_COLOR
    assert viz.PRED_RGB8 == (255, 0, 255)
    assert viz.TRUTH_RGB8 == tuple(round(255 * c) for c in viz.TRUTH_COLOR)


def test_edge_overlay_marks_exactly_the_prediction_boundary_in_pred_colour():
    image = np.full((16, 16), 100, np.uint8)
    prob = _square_mask().astype(np.float32) * 0.9
    rgb = viz.edge_overlay(image, prob, threshold=0.5)
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    is_pred = np.all(rgb == viz.PRED_RGB8, axis=-1)
    # the inner boundary of the 8x8 square at rows/cols 4..11: its 28 border pixels
    expected = np.zeros((16, 16), bool)
    expected[4:12, 4:12] = True
    expected[5:11, 5:11] = False
    assert np.array_equal(is_pred, expected)
    assert is_pred.sum() == 28
    # everything else keeps the grey value
    assert np.all(rgb[~is_pred] == 100)


def test_edge_overlay_draws_truth_below_prediction_and_threshold_matters():
    image = np.zeros((16, 16), np.uint8)
    truth = _square_mask(lo=2, hi=14)
    prob = _square_mask().astype(np.float32) * 0.4
    high = viz.edge_overlay(image, prob, threshold=0.5, truth=truth)
    assert not np.any(np.all(high == viz.PRED_RGB8, axis=-1))  # 0.4 < 0.5: nothing predicted
    assert np.all(np.all(high == viz.TRUTH_RGB8, axis=-1)[2, 2:14])  # truth's top edge
    low = viz.edge_overlay(image, prob, threshold=0.3, truth=truth)
    assert np.all(low[4, 4] == viz.PRED_RGB8) and np.all(low[2, 2] == viz.TRUTH_RGB8)


def test_edge_overlay_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="differ in size"):
        viz.edge_overlay(np.zeros((8, 8), np.uint8), np.zeros((4, 4)))


def test_foreground_share_known_answer():
    masks = np.zeros((4, 10, 10), np.uint8)
    masks[0, :2, :5] = 1  # 10 px
    masks[1, :3, :10] = 1  # 30 px
    stats = viz.foreground_share(masks)
    assert stats["images"] == 4
    assert stats["pixel_share"] == pytest.approx(40 / 400)
    assert stats["defective_images"] == pytest.approx(0.5)
    assert stats["share_in_defective"] == pytest.approx((0.1 + 0.3) / 2)


def test_plot_history_labels_every_panel_and_draws_each_run(tmp_path):
    bce = [
        {"epoch": e, "loss": 0.7 - 0.1 * e, "val_loss": 0.6 - 0.1 * e, "val_iou": 0.1 * e} for e in range(3)
    ]
    csv_path = tmp_path / "history.csv"
    csv_path.write_text("epoch,loss,val_loss,val_iou\n0,0.9,0.95,0.0\n1,0.5,0.6,0.3\n2,0.4,0.5,0.5\n")
    fig = viz.plot_history({"bce": bce, "dice": csv_path}, metrics=("loss", "val_iou"))
    loss_ax, iou_ax = fig.axes[:2]
    for ax in (loss_ax, iou_ax):
        assert ax.get_title() and ax.get_xlabel() == "epoch" and ax.get_ylabel()
        assert ax.get_legend() is not None
    # loss: train + validation for both runs; IoU: validation only
    assert len(loss_ax.lines) == 4 and len(iou_ax.lines) == 2
    dice_iou = [line for line in iou_ax.lines if line.get_label() == "dice (validation)"][0]
    assert list(dice_iou.get_ydata()) == [0.0, 0.3, 0.5]
    assert list(dice_iou.get_xdata()) == [1, 2, 3]
    assert fig._suptitle.get_text()


def test_plot_history_reads_a_run_folder(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss,val_iou\n0,1.0,0.2\n1,0.8,0.4\n")
    assert viz.read_history(tmp_path) == [
        {"epoch": 0.0, "loss": 1.0, "val_iou": 0.2},
        {"epoch": 1.0, "loss": 0.8, "val_iou": 0.4},
    ]


def test_show_predictions_and_static_grid_have_titles():
    images = np.random.default_rng(0).integers(0, 255, (3, 32, 32), dtype=np.uint8)
    masks = np.stack([_square_mask(32, 8, 20)] * 3)
    probs = masks.astype(np.float32)
    fig = viz.show_predictions(images, masks, probs, n=2)
    assert len(_titled_axes(fig)) == 6  # 2 rows x 3 panels, colourbars untitled
    grid = viz.static_grid(
        images, masks, {"bce": probs, "dice": probs * 0.2}, threshold={"bce": 0.5, "dice": 0.1}, n=3
    )
    titles = [ax.get_title() for ax in _titled_axes(grid)]
    assert len(titles) == 6 and "dice · image 2 · t=0.10" in titles


def test_plot_foreground_share_labels_axes():
    masks = np.stack([_square_mask(), np.zeros((16, 16), np.uint8)])
    fig = viz.plot_foreground_share(masks)
    for ax in fig.axes:
        assert ax.get_title() and ax.get_ylabel()
    assert "1 of 2 images" in fig.axes[1].get_title()


def test_comparison_table_markdown_and_html():
    results = {"bce": {"pixel_iou": 0.5, "image_ap": None}, "dice": {"pixel_iou": 0.61234, "image_ap": 0.9}}
    md = viz.comparison_table(results, keys=("pixel_iou", "image_ap"))
    lines = md.splitlines()
    assert lines[0] == "| model | pixel_iou | image_ap |"
    assert lines[3] == "| dice | 0.612 | 0.900 |" and "n/a" in lines[2]
    html = viz.comparison_table(results, keys=("pixel_iou",), fmt="html")
    assert html.count("<tr>") == 3 and "<td>0.500</td>" in html
    with pytest.raises(ValueError):
        viz.comparison_table(results, fmt="latex")


def test_prediction_browser_sliders_change_what_is_shown():
    images = np.zeros((3, 16, 16), np.uint8)
    probs = {"bce": np.zeros((3, 16, 16), np.float32), "dice": np.zeros((3, 16, 16), np.float32)}
    probs["dice"][2, 4:12, 4:12] = 0.8
    browser = viz.prediction_browser(images, None, probs, threshold=0.5)
    assert browser.shown["index"] == 0 and browser.shown["model"] == "bce"
    assert browser.index.max == 2 and list(browser.model.options) == ["bce", "dice"]
    browser.index.value = 2
    assert browser.shown["index"] == 2
    browser.model.value = "dice"
    assert browser.shown["model"] == "dice" and "64 px" in browser.shown["title"]
    browser.threshold.value = 0.9
    assert browser.shown["threshold"] == pytest.approx(0.9) and "0 px" in browser.shown["title"]
    # what a front end shows: the caption's text and the PNG change with every control
    assert html.escape(browser.shown["title"]) in browser.caption.value
    assert bytes(browser.picture.value).startswith(b"\x89PNG")
    before = bytes(browser.picture.value)
    browser.threshold.value = 0.5
    assert bytes(browser.picture.value) != before and "64 px" in browser.caption.value


def test_prediction_browser_displays_with_the_installed_ipywidgets():
    """``display(browser)`` publishes a widget view (ipywidgets 7 via _ipython_display_, 8 via the bundle)."""
    import ipywidgets
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.display import display

    images = np.zeros((2, 16, 16), np.uint8)
    browser = viz.prediction_browser(images, None, {"bce": np.zeros((2, 16, 16), np.float32)})
    assert isinstance(browser, ipywidgets.VBox) and isinstance(browser, viz.PredictionBrowser)
    shell = InteractiveShell.instance()
    published = []
    original = shell.display_pub.publish
    shell.display_pub.publish = lambda data, *args, **kwargs: published.append(data)
    try:
        display(browser)
    finally:
        shell.display_pub.publish = original
    assert any("application/vnd.jupyter.widget-view+json" in data for data in published), published
    view = next(d for d in published if "application/vnd.jupyter.widget-view+json" in d)
    assert view["application/vnd.jupyter.widget-view+json"]["model_id"] == browser.model_id


def test_prediction_browser_is_a_note_in_headless_runs(monkeypatch):
    images = np.zeros((3, 16, 16), np.uint8)
    probs = {"bce": np.zeros((3, 16, 16), np.float32)}
    monkeypatch.setenv(viz.HEADLESS_ENV, "1")
    note = viz.prediction_browser(images, None, probs)
    assert isinstance(note, viz.HeadlessNote) and "3 test images" in repr(note)
    monkeypatch.setenv(viz.HEADLESS_ENV, "0")
    assert isinstance(viz.prediction_browser(images, None, probs), viz.PredictionBrowser)
    with pytest.raises(ValueError, match="at least one model"):
        viz.prediction_browser(images, None, {})


def test_prediction_browser_needs_a_model():
    with pytest.raises(ValueError):
        viz.prediction_browser(np.zeros((1, 8, 8), np.uint8), None, {})


def test_class_grid_one_row_per_class_defective_first(tmp_path):
    from dagm_helpers.data.layout import scan
    from dagm_helpers.data.synth import synthesize
    from dagm_helpers.viz import class_grid

    root = synthesize(tmp_path / "s", classes=[1, 2], images_per_split=8, seed=0)
    fig = class_grid(scan(root).filter(split="Train"), per_class=3, size=64)
    axes = fig.axes
    assert len(axes) == 6  # 2 classes x 3 examples
    titles = [ax.get_title() for ax in axes]
    assert titles[0].startswith("class 1") and titles[3].startswith("class 2")
    assert titles[0].endswith("defect") and titles[3].endswith("defect")  # defective examples first
    assert "label ellipse" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="at least one sample"):
        class_grid([])
