"""The BCE-vs-Dice comparison: aggregation known answers, and a smoke-profile end-to-end run."""

import csv
import math

import pytest

from dagm_helpers import experiment


def _history(values):
    return [{"epoch": i, "val_iou": v, "elapsed_s": 10.0 * (i + 1)} for i, v in enumerate(values)]


def test_first_crossing_counts_epochs_from_one():
    assert experiment.first_crossing(_history([0.1, 0.4, 0.55, 0.7]), "val_iou", 0.5) == (3, 30.0)


def test_first_crossing_never_reached_is_nan():
    epoch, seconds = experiment.first_crossing(_history([0.1, 0.2]), "val_iou", 0.5)
    assert math.isnan(epoch) and math.isnan(seconds)


def test_first_crossing_reads_csv_strings():
    rows = [{"epoch": "0", "val_iou": "0.61", "elapsed_s": "12.5"}]
    assert experiment.first_crossing(rows, "val_iou", 0.6) == (1.0, 12.5)


def _comparison(tmp_path):
    bce = experiment.LossResult("bce", runs=[tmp_path / "a", tmp_path / "b"])
    bce.test = {k: [0.5, 0.7] for k in experiment.TEST_METRICS}
    bce.epochs_to_target, bce.seconds_to_target = [3, math.nan], [30.0, math.nan]
    dice = experiment.LossResult("dice", runs=[tmp_path / "c", tmp_path / "d"])
    dice.test = {k: [0.8, 0.8] for k in experiment.TEST_METRICS}
    dice.epochs_to_target, dice.seconds_to_target = [2, 4], [20.0, 40.0]
    return experiment.Comparison(
        tmp_path, {"bce": bce, "dice": dice}, 0.5, "python -m dagm_helpers compare ..."
    )


def test_summary_rows_mean_std_and_reach(tmp_path):
    rows = {r["loss"]: r for r in _comparison(tmp_path).rows()}
    assert rows["bce"]["iou_defective_mean_mean"] == pytest.approx(0.6)
    # sample standard deviation of (0.5, 0.7) = sqrt(((-0.1)^2 + 0.1^2) / 1) = 0.1414
    assert rows["bce"]["iou_defective_mean_std"] == pytest.approx(0.14142, abs=1e-4)
    assert rows["bce"]["runs_reaching_target"] == 1 and rows["bce"]["epochs_to_target_mean"] == 3
    assert rows["dice"]["runs_reaching_target"] == 2 and rows["dice"]["seconds_to_target_mean"] == 30.0
    assert rows["dice"]["dice_defective_mean_std"] == 0.0


def test_table_files(tmp_path):
    comp = _comparison(tmp_path)
    csv_path, md_path = experiment.write_table(comp)
    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["loss"] for r in rows] == ["bce", "dice"]
    assert rows[0]["image_ap_mean"] == "0.600"
    md = md_path.read_text()
    assert (
        "| `dice` | 0.800 ± 0.000" in md and "1/2" in md and "Command: `python -m dagm_helpers compare" in md
    )


def test_rejects_bad_arguments(tmp_path):
    from dagm_helpers.errors import ConfigError

    with pytest.raises(ConfigError, match="--seeds must be at least 1"):
        experiment.compare(losses=["bce"], seeds=0, out=tmp_path)
    with pytest.raises(ConfigError, match="distinct"):
        experiment.compare(losses=["bce", "bce"], seeds=1, out=tmp_path)


def test_compare_smoke_writes_table_and_figures(tmp_path):
    out = tmp_path / "cmp"
    comp = experiment.compare(losses=["bce", "dice"], seeds=1, out=out, data="synthetic", profile="smoke")
    for name in ("comparison.csv", "comparison.md", "val_iou_vs_epoch.png", "edges.png"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["loss"] for r in rows] == ["bce", "dice"] and all(r["seeds"] == "1" for r in rows)
    for r in rows:
        value = r["dice_defective_mean_mean"]
        assert value == "n/a" or 0.0 <= float(value) <= 1.0
    assert all(len(res.histories[0]) >= 1 for res in comp.results.values())
    # a second call reuses the finished runs instead of training again
    before = (out / "runs" / "bce-seed0" / "model.keras").stat().st_mtime_ns
    experiment.compare(losses=["bce", "dice"], seeds=1, out=out, data="synthetic", profile="smoke")
    assert (out / "runs" / "bce-seed0" / "model.keras").stat().st_mtime_ns == before
