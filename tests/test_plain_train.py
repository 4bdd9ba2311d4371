"""Training and evaluating on your own images (the plain layout), through the API and the command line:
images of several sizes (not multiples of 16, not square), tiles at their own resolution, the split
recorded in the run folder and respected by ``evaluate``, and the errors a user meets first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dagm_helpers.data.layout import sample_key, scan
from dagm_helpers.data.pipeline import cut_tiles, load_tiles, tile_starts
from dagm_helpers.errors import DatasetError
from dagm_helpers.training import SPLIT_FILE, TrainConfig, train

SIZES = [(70, 90), (100, 52), (64, 64), (130, 77)]


def make_own(root: Path, n: int = 24, seed: int = 0, defective_every: int = 2) -> Path:
    """Noise images of several sizes; every ``defective_every``-th has a bright blob and its mask."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = SIZES[i % len(SIZES)]
        img = np.clip(rng.normal(100, 12, (h, w)), 0, 255)
        name = f"part_{i:03d}"
        if defective_every and i % defective_every == 0:
            yy, xx = np.mgrid[0:h, 0:w]
            cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
            blob = ((yy - cy) / 8) ** 2 + ((xx - cx) / 11) ** 2 <= 1
            img[blob] = 220
            Image.fromarray((blob * 255).astype(np.uint8)).save(root / "masks" / f"{name}.png")
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"{name}{'.png' if i % 3 else '.jpg'}")
    return root


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        out=out,
        data=str(data),
        loss="dice",
        profile="smoke",
        epochs=2,
        steps_per_epoch=4,
        batch_size=4,
        image_size=64,
        crop_size=48,
        defect_crop_fraction=0.8,
        max_minutes=5.0,
        seed=3,
        verbose=0,
        evaluate_test=True,
        model={"filters": 4},
    )
    base.update(kw)
    return TrainConfig(**base)


def test_tiles_cover_every_pixel_without_resampling():
    assert tile_starts(130, 64) == [0, 64, 66] and tile_starts(64, 64) == [0] and tile_starts(20, 64) == [0]
    image = np.arange(130 * 77, dtype=np.uint32).reshape(130, 77).astype(np.uint8)
    mask = (image > 200).astype(np.uint8)
    tiles, masks = cut_tiles(image, mask, 64)
    assert tiles.shape == (6, 64, 64) and masks.shape == tiles.shape
    np.testing.assert_array_equal(tiles[0], image[:64, :64])
    np.testing.assert_array_equal(tiles[-1], image[-64:, -64:])
    small, small_mask = cut_tiles(image[:20, :30], mask[:20, :30], 64)  # mirrored out, labels alike
    assert small.shape == (1, 64, 64)
    np.testing.assert_array_equal(small[0, :20, :30], image[:20, :30])
    np.testing.assert_array_equal(small_mask[0, :20, :30], mask[:20, :30])


def test_colour_images_are_converted_with_one_warning_for_the_whole_folder(tmp_path):
    from dagm_helpers.data.images import ImageConversionWarning

    root = make_own(tmp_path / "own", n=6)
    for path in (root / "images").iterdir():  # every image becomes RGB
        Image.open(path).convert("RGB").save(path)
    with pytest.warns(ImageConversionWarning) as record:
        images, _ = load_tiles(list(scan(root)), 64)
    conversions = [w for w in record if issubclass(w.category, ImageConversionWarning)]
    assert len(conversions) == 1 and str(conversions[0].message).startswith("6 of 6 images were converted")
    assert images.dtype == np.uint8


def test_load_tiles_reads_every_size(tmp_path):
    index = scan(make_own(tmp_path / "own", n=8))
    images, masks = load_tiles(list(index), 64)
    # 70x90 -> 2x2, 100x52 -> 2x1, 64x64 -> 1, 130x77 -> 3x2 tiles; twice each
    assert images.shape == (2 * (4 + 2 + 1 + 6), 64, 64) and masks.max() == 1


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    data = make_own(tmp_path_factory.mktemp("own") / "parts")
    out = tmp_path_factory.mktemp("runs") / "own"
    return data, out, train(_config(data, out))


def test_training_on_own_images_records_its_split(own_run):
    data, out, run = own_run
    config = json.loads((out / "config.json").read_text())
    assert config["images"] == {"train": 16, "val": 4, "test": 4}
    assert config["tiles"]["train"] > config["images"]["train"]  # large images became several tiles
    split = json.loads((out / SPLIT_FILE).read_text())
    index = scan(data)
    assert sorted(split["test"]) == sorted(sample_key(s, index.root) for s in index.filter(split="Test"))
    assert not set(split["train"]) & set(split["val"]) and not set(split["train"]) & set(split["test"])
    assert all(not Path(k).is_absolute() and k.startswith("images/") for k in split["train"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 4 and metrics["image_policy"] == "none" and metrics["split"] == "Test"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dagm_helpers", *args], capture_output=True, text=True, timeout=600
    )


def test_evaluate_scores_only_images_training_never_saw(own_run, tmp_path):
    data, out, _ = own_run
    proc = _cli(
        "evaluate", "--model", str(out / "model.keras"), "--data", str(data), "--profile", "smoke", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (
        result["images"] == 4
        and result["image_policy"] == "none"
        and "left_out_training_images" not in result
    )
    # images added later are scored; images the run trained on never are, even when the split moves them
    moved = tmp_path / "moved"
    (moved / "test" / "images").mkdir(parents=True)
    (moved / "test" / "masks").mkdir(parents=True)
    split = json.loads((out / SPLIT_FILE).read_text())
    for key in split["train"][:3] + split["test"]:
        src = data / key
        (moved / "test" / "images" / src.name).symlink_to(src)
        mask = data / "masks" / f"{src.stem}.png"
        if mask.exists():
            (moved / "test" / "masks" / mask.name).symlink_to(mask)
    (moved / "train" / "images").mkdir(parents=True)
    (moved / "train" / "images" / "x.png").symlink_to(data / split["train"][5])
    # the record names images relative to the data root, so a copy under another root is checked too
    record = dict(split, train=[f"test/images/{Path(k).name}" for k in split["train"]])
    run_copy = tmp_path / "run"
    run_copy.mkdir()
    (run_copy / "model.keras").symlink_to(out / "model.keras")
    (run_copy / SPLIT_FILE).write_text(json.dumps(record))
    proc = _cli(
        "evaluate",
        "--model",
        str(run_copy / "model.keras"),
        "--data",
        str(moved),
        "--profile",
        "smoke",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["images"] == 4 and result["left_out_training_images"] == 3


def test_a_folder_without_defective_images_cannot_be_learned(tmp_path):
    data = make_own(tmp_path / "clean", n=8, defective_every=0)
    with pytest.raises(DatasetError, match="none of the 6 training images is defective"):
        train(_config(data, tmp_path / "run"))
    proc = _cli("train", "--data", str(data), "--profile", "smoke", "--out", str(tmp_path / "run2"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error:") and "defective" in proc.stderr


def test_a_validation_folder_without_defects_falls_back_to_half(tmp_path):
    root = tmp_path / "fixed"
    make_own(root / "train", n=12)
    make_own(root / "val", n=4, seed=1, defective_every=0)
    with pytest.warns(RuntimeWarning, match="validation images hold no defect"):
        run = train(_config(root, tmp_path / "run", evaluate_test=False, epochs=1))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["threshold"] == 0.5 and metrics["threshold_source"] == "default"
    assert run is not None


def test_export_serves_any_size_with_the_runs_threshold(own_run, tmp_path):
    import tensorflow as tf

    from dagm_helpers.infer import EXPORT_INFO, load_model

    _, out, _ = own_run
    proc = _cli("export", "--model", str(out / "model.keras"), "--out", str(tmp_path / "exported"))
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "exported" / EXPORT_INFO).read_text())
    chosen = json.loads((out / "metrics.json").read_text())["threshold"]
    assert info["threshold"] == chosen and info["size_multiple"] == 16
    served = tf.saved_model.load(str(tmp_path / "exported"))
    x = np.random.default_rng(1).uniform(0, 255, (1, 48, 80, 1)).astype(np.float32)
    expected = load_model(out / "model.keras")(x)
    np.testing.assert_allclose(np.asarray(served.serve(x)), np.asarray(expected), atol=1e-5)
    again = _cli("export", "--model", str(out / "model.keras"), "--out", str(tmp_path / "exported"))
    assert again.returncode == 2 and "not an empty folder" in again.stderr


def test_evaluate_and_predict_say_a_colour_folder_once(own_run, tmp_path):
    import shutil

    from dagm_helpers.data.images import ImageConversionWarning
    from dagm_helpers.infer import evaluate, predict_files

    data, out, _ = own_run
    rgb = tmp_path / "rgb"
    shutil.copytree(data, rgb)
    for path in (rgb / "images").iterdir():
        Image.open(path).convert("RGB").save(path)
    test = list(scan(rgb).filter(split="Test"))
    with pytest.warns(ImageConversionWarning) as record:
        result = evaluate(out / "model.keras", test, policy="none", fast=False)
    said = [str(w.message) for w in record if issubclass(w.category, ImageConversionWarning)]
    assert len(said) == 1 and said[0].startswith(f"{len(test)} of {len(test)} images were converted")
    assert result["images"] == len(test)
    n = len(list((rgb / "images").iterdir()))
    with pytest.warns(ImageConversionWarning) as record:
        summary = predict_files(out / "model.keras", rgb / "images", tmp_path / "pred", fast=False)
    said = [str(w.message) for w in record if issubclass(w.category, ImageConversionWarning)]
    assert len(said) == 1 and said[0].startswith(f"{n} of {n} images were converted")
    assert summary.done == n
