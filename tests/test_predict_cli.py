"""``python -m dagm_helpers predict`` and ``evaluate``: files of any size, CSV, JSON keys, clean errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from dagm_helpers import cli, infer
from dagm_helpers.errors import DatasetError
from dagm_helpers.model import small_unet

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    small_unet(filters=4, depth=2).save(path)
    return path


@pytest.fixture()
def inputs(tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (500, 500), dtype=np.uint8)).save(d / "square.png")
    Image.fromarray(rng.integers(0, 256, (333, 517), dtype=np.uint8)).save(d / "odd.PNG")
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(d / "colour.png")
    (d / "README.txt").write_text("not an image")
    return d


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_predict_cli_writes_masks_overlays_and_csv(model_path, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["predict", "--model", str(model_path), "--input", str(inputs), "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    # the command line turns each Python warning into one "warning: ..." line on stderr
    messages = [m for m in captured.err.splitlines() if m.startswith("warning: ")]
    assert any("skipping 1 non-image file(s): README.txt" in m for m in messages)
    assert any("colour.png" in m and "grey" in m for m in messages)  # RGB converted with a warning
    assert "ran on " in captured.err  # the runtime and precision used, one line
    for stem, shape in [("square", (500, 500)), ("odd", (333, 517)), ("colour", (64, 80))]:
        mask = np.array(Image.open(out / f"{stem}_mask.png"))
        assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
        overlay = np.array(Image.open(out / f"{stem}_overlay.png"))
        assert overlay.shape == (*shape, 3)
    rows = _read_csv(out / "predictions.csv")
    assert [r["file"] for r in rows] == ["colour.png", "odd.PNG", "square.png"]
    assert list(rows[0]) == [
        "file", "status", "defect_score", "defective", "defect_area_px", "mask", "overlay", "error",
        "runtime", "precision",
    ]  # fmt: skip
    assert {r["status"] for r in rows} == {"ok"}
    # what ran is in the table and on the one stderr line
    (ran,) = {(r["runtime"], r["precision"]) for r in rows}
    assert ran[0] in ("tf", "ncnn", "openvino", "xla") and ran[1] == "f32"
    assert f"ran on {ran[0]} in f32" in captured.err
    for r in rows:
        mask = np.array(Image.open(out / f"{Path(r['file']).stem}_mask.png"))
        assert int(r["defect_area_px"]) == int((mask == 255).sum())
        assert 0.0 <= float(r["defect_score"]) <= 1.0
        assert r["defective"] == ("yes" if float(r["defect_score"]) >= 0.5 else "no")
    assert not list(out.glob(".tmp-*"))  # atomic writes leave no temporaries
    assert "predictions written to" in captured.out


def test_predict_masks_match_predict_proba_and_overlay_edges(model_path, tmp_path):
    img = np.full((48, 40), 120, np.uint8)
    img[10:30, 12:28] = 250
    Image.fromarray(img).save(tmp_path / "one.png")
    # threshold chosen inside the probability range so the mask is neither empty nor full
    prob = infer.predict_proba(infer.load_model(model_path), img)
    threshold = float(np.median(prob))
    out = infer.predict_files(
        model_path, tmp_path / "one.png", tmp_path / "o", threshold=threshold, progress=False
    ).out
    mask = np.array(Image.open(out / "one_mask.png")) > 0
    np.testing.assert_array_equal(mask, prob >= threshold)
    overlay = np.array(Image.open(out / "one_overlay.png"))
    from dagm_helpers.viz import PRED_RGB8

    edge = np.all(overlay == PRED_RGB8, axis=-1)  # the project's prediction colour
    assert edge.any() and not edge[~mask].any()  # edges drawn only on the predicted defect's rim
    np.testing.assert_array_equal(overlay[~edge][:, 0], img[~edge])  # elsewhere: the grey image


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_predict_skips_unreadable_image_and_records_error(model_path, inputs, tmp_path):
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="broken.png: skipped"):
        infer.predict_files(model_path, inputs, out, progress=False)
    rows = {r["file"]: r for r in _read_csv(out / "predictions.csv")}
    assert rows["broken.png"]["defective"] == "error" and rows["broken.png"]["error"]
    assert rows["square.png"]["defective"] in ("yes", "no") and (out / "square_mask.png").exists()


def test_predict_folder_without_images(model_path, tmp_path, capsys):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "notes.txt").write_text("x")
    with pytest.warns(UserWarning, match="notes.txt"), pytest.raises(DatasetError, match="no image files"):
        infer.predict_files(model_path, d, tmp_path / "out")
    code = cli.main(["predict", "--model", str(model_path), "--input", str(d), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and [e for e in err if not e.startswith("warning: ")] == err[-1:]
    assert err[-1].startswith("error: ") and "no image files" in err[-1]


def test_predict_same_stem_does_not_overwrite(model_path, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(d / "a.png")
    Image.fromarray(np.zeros((24, 20), np.uint8)).save(d / "a.bmp")
    out = infer.predict_files(model_path, d, tmp_path / "o", progress=False).out
    assert np.array(Image.open(out / "a_bmp_mask.png")).shape == (24, 20)
    assert np.array(Image.open(out / "a_png_mask.png")).shape == (16, 16)


@pytest.mark.filterwarnings("ignore:.*non-image file")
@pytest.mark.parametrize("payload", [b"", b"PK\x03\x04 truncated", b"garbage" * 100])
def test_predict_corrupt_model_one_error_line(payload, inputs, tmp_path, capsys):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(payload)
    code = cli.main(["predict", "--model", str(bad), "--input", str(inputs), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "bad.keras" in err[0]
    assert not (tmp_path / "o").exists()  # nothing written before the model loaded


def test_predict_subprocess_corrupt_model(model_path, inputs, tmp_path):
    """The real ``python -m dagm_helpers`` entry point: truncated model -> one error line, exit 2."""
    bad = tmp_path / "bad.keras"
    bad.write_bytes(model_path.read_bytes()[:500])
    proc = subprocess.run(
        [sys.executable, "-m", "dagm_helpers", "predict", "--model", str(bad), "--input", str(inputs / "odd.PNG"),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=REPO, timeout=300,
    )  # fmt: skip
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2
    assert err[-1].startswith("error: ") and "bad.keras" in err[-1] and "not a zip file" in err[-1]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from dagm_helpers.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("data") / "dagm", classes=[1], images_per_split=6, seed=0)


def test_evaluate_cli_json(model_path, data_dir, capsys):
    code = cli.main(
        ["evaluate", "--model", str(model_path), "--data", str(data_dir), "--classes", "1", "--json"]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert set(infer.EVAL_KEYS) <= set(result)
    assert result["images"] == 6 and 0 < result["defective_images"] < 6
    for key in infer.EVAL_KEYS:
        if key in ("images", "defective_images", "seconds"):
            continue
        value = result[key]
        assert value is None or 0.0 <= value <= 1.0, key
    assert result["image_auroc"] is not None  # both classes present
    assert result["seconds"] >= 0 and result["threshold"] == 0.5


def test_evaluate_cli_empty_selection(model_path, data_dir, capsys):
    code = cli.main(["evaluate", "--model", str(model_path), "--data", str(data_dir), "--classes", "7"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "class(es) 7" in err[0] and "'Test'" in err[0] and "class 1 Test" in err[0]


def test_evaluate_cli_corrupt_model(data_dir, tmp_path, capsys):
    bad = tmp_path / "model.keras"
    bad.write_bytes(os.urandom(256))
    code = cli.main(["evaluate", "--model", str(bad), "--data", str(data_dir), "--json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "model.keras" in err[0]


def test_export_ncnn_cli_writes_a_network_that_predicts_like_the_model(model_path, tmp_path, capsys):
    code = cli.main(["export-ncnn", "--model", str(model_path), "--out", str(tmp_path / "unet")])
    out = capsys.readouterr().out
    assert code == 0 and "unet.param" in out and "'in0'" in out
    assert "multiples of 4" in out  # the fixture's model pools twice
    param, weights = tmp_path / "unet.param", tmp_path / "unet.bin"
    assert param.read_text().startswith("7767517\n") and weights.stat().st_size > 0
    ncnn = pytest.importorskip("ncnn")
    output = out.split("output blob '")[1].split("'")[0]
    net = ncnn.Net()
    assert net.load_param(str(param)) == 0 and net.load_model(str(weights)) == 0
    image = np.random.default_rng(3).integers(0, 256, (32, 48)).astype(np.float32)
    scaled = np.ascontiguousarray(image[None] / 255.0, np.float32)
    ex = net.create_extractor()
    ex.input("in0", ncnn.Mat(scaled))
    status, prob = ex.extract(output)
    assert status == 0
    model = infer.load_model(model_path)
    np.testing.assert_allclose(np.array(prob)[0], infer.predict_proba(model, image), atol=1e-4)


def test_export_ncnn_cli_corrupt_model_one_error_line(tmp_path, capsys):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"garbage" * 10)
    code = cli.main(["export-ncnn", "--model", str(bad), "--out", str(tmp_path / "unet")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bad.keras" in err[0]
    assert not list(tmp_path.glob("unet*"))


def test_predict_cli_fast_and_tensorflow_agree(inputs, tmp_path):
    from dagm_helpers.speed import fast

    if not (fast.ncnn_available() or fast.openvino_available()):
        pytest.skip("neither ncnn nor openvino installed: --fast runs TensorFlow")
    keras.utils.set_random_seed(4)
    path = tmp_path / "deep.keras"
    small_unet(filters=4).save(path)  # four poolings: the fast runtimes take it
    rows = {}
    for flag in ("--fast", "--no-fast"):
        out = tmp_path / flag.strip("-")
        assert (
            cli.main(["predict", "--model", str(path), "--input", str(inputs), "--out", str(out), flag]) == 0
        )
        rows[flag] = {r["file"]: r for r in _read_csv(out / "predictions.csv")}
    assert rows["--fast"].keys() == rows["--no-fast"].keys() and len(rows["--fast"]) == 3
    for name, row in rows["--fast"].items():
        assert float(row["defect_score"]) == pytest.approx(
            float(rows["--no-fast"][name]["defect_score"]), abs=1e-4
        )


def test_predict_cli_int8_calibrates_on_the_given_images(model_path, inputs, tmp_path, monkeypatch):
    from dagm_helpers.speed import fast

    if not (fast.openvino_available() and fast.nncf_available()):
        pytest.skip("openvino and nncf needed for int8")
    cal = tmp_path / "cal"
    cal.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (96, 128), dtype=np.uint8)).save(cal / "a.png")
    Image.fromarray(rng.integers(0, 256, (700, 600), dtype=np.uint8)).save(cal / "b.png")
    seen, quantize = [], fast._quantize
    monkeypatch.setattr(
        fast,
        "_quantize",
        lambda m, images, multiple: seen.append([i.shape for i in images]) or quantize(m, images, multiple),
    )
    out = tmp_path / "out"
    args = ["predict", "--model", str(model_path), "--input", str(inputs), "--out", str(out)]
    assert cli.main([*args, "--precision", "int8", "--calibration", str(cal)]) == 0
    # quantised once, on the two calibration images at their own sizes (not on the inputs)
    assert seen == [[(96, 128), (700, 600)]]
    assert np.array(Image.open(out / "odd_mask.png")).shape == (333, 517)
    assert len(_read_csv(out / "predictions.csv")) == 3


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--precision", "int8", "--no-fast"], "drop --no-fast"),
        (["--calibration", "somewhere"], "int8 only"),
        (["--precision", "int8", "--calibration", "EMPTY"], "no image files"),
        (["--precision", "int8", "--calibration", "BAD"], "bad.png: cannot read this calibration image"),
    ],
)
def test_predict_cli_int8_settings_that_cannot_work_fail_clearly(
    model_path, inputs, tmp_path, capsys, extra, message
):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    folders = {"EMPTY": str(tmp_path / "empty"), "BAD": str(tmp_path / "bad")}
    extra = [folders.get(e, e) for e in extra]
    out = tmp_path / "out"
    code = cli.main(
        ["predict", "--model", str(model_path), "--input", str(inputs), "--out", str(out), *extra]
    )
    err = capsys.readouterr().err.strip().splitlines()
    # one error line, last, after the warnings (README.txt skipped); never a traceback
    assert code == 2 and [e for e in err if not e.startswith("warning: ")] == err[-1:]
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not out.exists()  # nothing half-written


# ----------------------------------------------------------------------------- a batch survives its worst image
def test_tiny_images_are_skipped_and_the_batch_goes_on(model_path, tmp_path, capsys):
    """A 1x1 or 1x5120 image cannot be predicted: a warning line, a skipped row, exit status 3."""
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(d / "dot.png")
    Image.fromarray(np.zeros((1, 5120), np.uint8)).save(d / "line.png")
    for i in range(3):
        Image.fromarray(np.full((40, 48), 100 + i, np.uint8)).save(d / f"ok{i}.png")
    code = cli.main(["predict", "--model", str(model_path), "--input", str(d), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    rows = {r["file"]: r for r in _read_csv(tmp_path / "o" / "predictions.csv")}
    assert len(rows) == 5 and {rows[f"ok{i}.png"]["status"] for i in range(3)} == {"ok"}
    for name in ("dot.png", "line.png"):
        assert rows[name]["status"] == "skipped" and rows[name]["error"], rows[name]
        assert not (tmp_path / "o" / f"{Path(name).stem}_mask.png").exists()  # nothing half-written
        assert f"warning: {d / name}: skipped, too small to inspect" in err
    assert code == cli.EXIT_PARTIAL == 3 and "ran on" in err


def test_nothing_predictable_is_exit_status_2(model_path, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    (d / "x.png").write_text("hi")
    code = cli.main(
        ["predict", "--model", str(model_path), "--input", str(d / "x.png"), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "error: none of the 1 input(s) could be predicted" in err
    assert _read_csv(tmp_path / "o" / "predictions.csv")[0]["status"] == "skipped"


def test_output_names_never_collide(model_path, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(d / "a.png")
    Image.fromarray(np.full((32, 16), 200, np.uint8)).save(d / "a.PNG", format="PNG")
    Image.fromarray(np.zeros((24, 20), np.uint8)).save(d / "a.jpg")
    summary = infer.predict_files(model_path, d, tmp_path / "o", progress=False)
    rows = _read_csv(summary.out / "predictions.csv")
    masks = [r["mask"] for r in rows]
    assert len({m.lower() for m in masks}) == 3  # distinct even on a case-insensitive disk
    for r in rows:
        shape = np.array(Image.open(d / r["file"])).shape[:2]
        assert np.array(Image.open(summary.out / r["mask"])).shape == shape  # each row points at its own


def test_inputs_named_like_outputs_are_predicted_and_outputs_are_not_reread(model_path, tmp_path):
    """--out equal to --input: the manifest (predictions.csv), not names, tells outputs from inputs."""
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(d / "part_mask.png")  # a real image, unlucky name
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(d / "b.png")
    first = infer.predict_files(model_path, d, d, progress=False)
    assert first.done == 2  # part_mask.png is an input like any other
    again = infer.predict_files(model_path, d, d, progress=False)
    assert again.done == 2 and sorted(r["file"] for r in _read_csv(d / "predictions.csv")) == [
        "b.png",
        "part_mask.png",
    ]


def test_fixed_size_model_states_its_cost_and_refuses_too_many_tiles(tmp_path, capsys, monkeypatch):
    """A model with a fixed input size is tiled at that size, with the cost said once; an image that
    would need more than MAX_FIXED_SIZE_TILES tiles is skipped with the reason, not run for minutes."""
    inp = keras.Input((32, 32, 1))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(2, 3, padding="same")(x))
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(keras.layers.UpSampling2D()(x))
    path = tmp_path / "fixed.keras"
    keras.Model(inp, out).save(path)
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(d / "small.png")
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(d / "large.png")
    m, fixed = 2, (32, 32)
    overlap = infer._fixed_overlap(fixed, m, infer.TILE_OVERLAP)
    assert (
        infer.tile_count((40, 40), m, fixed, overlap) <= 16 < infer.tile_count((300, 300), m, fixed, overlap)
    )
    monkeypatch.setattr(infer, "MAX_FIXED_SIZE_TILES", 16)
    code = cli.main(["predict", "--model", str(path), "--input", str(d), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert "only takes 32x32 inputs, so every image is predicted in tiles" in err
    assert (
        f"warning: {d / 'large.png'}: skipped" in err
        and "the limit is 16" in err
        and "(None, None, 1)" in err
    )
    rows = {r["file"]: r["status"] for r in _read_csv(tmp_path / "o" / "predictions.csv")}
    assert rows == {"large.png": "skipped", "small.png": "ok"} and code == cli.EXIT_PARTIAL
    assert np.array(Image.open(tmp_path / "o" / "small_mask.png")).shape == (40, 40)


def test_a_broken_link_in_the_input_folder_is_named(model_path, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(d / "good.png")
    (d / "gone.png").symlink_to(tmp_path / "moved-away.png")
    code = cli.main(["predict", "--model", str(model_path), "--input", str(d), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 0 and "skipping 1 broken link(s) whose target does not exist: gone.png ->" in err
    assert [r["file"] for r in _read_csv(tmp_path / "o" / "predictions.csv")] == ["good.png"]


def test_the_fast_path_peak_memory_stays_within_its_bound_of_no_fast(tmp_path):
    """docs/reliability.md's memory bound, on one tiled 2048x2048 image: the real command's peak
    resident memory with the fast runtimes is at most FAST_LIMIT (1.5) times --no-fast's."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    try:
        import predict_memory
    finally:
        sys.path.pop(0)
    (row,) = predict_memory.measure([2048], 0, tmp_path)
    assert row["no_fast_mb"] > 200  # TensorFlow and the model were measured, not an empty process
    assert row["ratio"] <= predict_memory.FAST_LIMIT, row
