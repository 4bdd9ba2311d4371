"""A model with three input channels when asked (``--channels 3``): colour images are read as RGB,
trained on as tiles, evaluated, predicted and exported; grey models keep converting colour to grey."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from dagm_helpers import cli, infer
from dagm_helpers.data import images
from dagm_helpers.data.images import ImageConversionWarning, apply_policy, load_sample, read_image
from dagm_helpers.data.layout import scan
from dagm_helpers.data.pipeline import cut_tiles, dataset_from_arrays, load_tiles
from dagm_helpers.errors import ConfigError
from dagm_helpers.model import small_unet
from dagm_helpers.training import TrainConfig, train

SIZES = [(70, 90), (100, 52), (64, 64), (130, 77)]


def make_colour(root: Path, n: int = 16, seed: int = 0) -> Path:
    """RGB noise images of several sizes; every second one has a red blob (about as bright as the
    background in grey) and its mask."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i in range(n):
        h, w = SIZES[i % len(SIZES)]
        img = np.clip(rng.normal(110, 10, (h, w, 3)), 0, 255)
        name = f"part_{i:03d}"
        if i % 2 == 0:
            yy, xx = np.mgrid[0:h, 0:w]
            cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
            blob = ((yy - cy) / 8) ** 2 + ((xx - cx) / 11) ** 2 <= 1
            img[blob] = (230, 70, 60)
            Image.fromarray((blob * 255).astype(np.uint8)).save(root / "masks" / f"{name}.png")
        Image.fromarray(img.astype(np.uint8), "RGB").save(root / "images" / f"{name}.png")
    return root


def test_images_read_as_rgb_when_asked(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_image(tmp_path / "c.png", policy="none", channels=3), rgb)
    grey = rgb[..., 0]
    Image.fromarray(grey).save(tmp_path / "g.png")
    with pytest.warns(ImageConversionWarning, match="repeated into the three channels"):
        out = read_image(tmp_path / "g.png", policy="none", channels=3)
    assert out.shape == (20, 30, 3) and all(np.array_equal(out[..., c], grey) for c in range(3))
    Image.fromarray(np.dstack([rgb, np.full((20, 30), 128, np.uint8)]), "RGBA").save(tmp_path / "a.png")
    with pytest.warns(ImageConversionWarning, match="transparency dropped"):
        np.testing.assert_array_equal(read_image(tmp_path / "a.png", policy="none", channels=3), rgb)
    sixteen = tmp_path / "g16.png"  # scaled to 8 bits and repeated: two conversions, one file
    Image.fromarray(grey.astype(np.uint16) << 8).save(sixteen)
    with pytest.warns(ImageConversionWarning) as record:
        with images.conversions_said_once(2):
            read_image(sixteen, policy="none", channels=3)
            read_image(tmp_path / "c.png", policy="none", channels=3)
    assert [str(w.message).split(" (")[0] for w in record] == [f"{sixteen}: 16-bit image"]
    with pytest.warns(ImageConversionWarning) as record:
        with images.conversions_said_once(3):
            for path in (sixteen, tmp_path / "g.png", tmp_path / "c.png"):
                read_image(path, policy="none", channels=3)
    assert [str(w.message).split(",")[0] for w in record] == ["2 of 3 images were converted on reading"]
    with pytest.raises(ConfigError, match="channels must be 1 .* or 3"):
        read_image(tmp_path / "c.png", channels=2)
    assert read_image(tmp_path / "c.png", size=16, policy="resize", channels=3).shape == (16, 16, 3)
    padded = apply_policy(rgb, policy="pad")
    assert padded.shape == (32, 32, 3)
    np.testing.assert_array_equal(padded[:20, :30], rgb)


def test_colour_samples_and_tiles_keep_masks_two_dimensional(tmp_path):
    index = scan(make_colour(tmp_path / "own", n=4))
    sample = next(s for s in index if s.defective)
    image, mask = load_sample(sample, policy="none", channels=3)
    assert image.ndim == 3 and image.shape[2] == 3 and mask.shape == image.shape[:2] and mask.any()
    assert image[mask > 0].mean(axis=0)[0] > 200  # the red blob is where its mask says
    tiles, tile_masks = cut_tiles(image, mask, 64)
    assert tiles.shape[1:] == (64, 64, 3) and tile_masks.shape == tiles.shape[:3]
    images, masks = load_tiles(list(index), 64, channels=3)
    assert images.shape[1:] == (64, 64, 3) and masks.shape == images.shape[:3]


def test_colour_batches_keep_pixels_and_labels_together():
    rng = np.random.default_rng(0)
    masks = (rng.random((6, 40, 40)) < 0.2).astype(np.uint8)
    images = rng.integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)
    images[..., 1] = masks * 255  # the green channel is the label: crops, flips and turns must agree
    ds = dataset_from_arrays(
        images,
        masks,
        batch_size=3,
        crop_size=24,
        defect_crop_fraction=0.5,
        augment=True,
        shuffle=True,
        repeat=True,
        seed=1,
        steps_per_epoch=2,
    )
    for x, y in ds.take(4):
        assert x.shape == (3, 24, 24, 3) and y.shape == (3, 24, 24, 1)
        np.testing.assert_array_equal(x.numpy()[..., 1], y.numpy()[..., 0] * 255)


def test_channels_on_the_command_line_become_the_models_input_channels():
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--out", "x", "--channels", "3", "--no-batch-norm"])
    assert TrainConfig.from_cli(args).model == {"batch_norm": False, "input_channels": 3}
    assert TrainConfig.from_cli(parser.parse_args(["train", "--out", "x"])).model == {}
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--out", "x", "--channels", "2"])


def test_a_colour_model_runs_on_tensorflow_and_refuses_int8():
    keras.utils.set_random_seed(0)
    model = small_unet(input_channels=3, filters=4, depth=2)
    runner = infer._Runner(model, 2, fast=True)
    assert runner.backend == "tf"  # the fast runtimes are built for grey models
    with pytest.raises(ConfigError, match="one-channel"):
        infer._Runner(model, 2, precision="int8")
    image = np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    prob = infer.predict_proba(model, image)
    assert prob.shape == (37, 50)
    batch = infer.predict_proba(model, [image, image[..., 0]])  # a grey image is repeated into 3 channels
    assert [p.shape for p in batch] == [(37, 50), (37, 50)] or batch.shape == (2, 37, 50)
    with pytest.raises(ConfigError, match="colour images"):
        infer.predict_proba(model, image[..., 0])


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    data = make_colour(tmp_path_factory.mktemp("colour") / "parts")
    out = tmp_path_factory.mktemp("runs") / "colour"
    config = TrainConfig(
        out=out,
        data=str(data),
        loss="dice",
        profile="smoke",
        epochs=2,
        steps_per_epoch=3,
        batch_size=4,
        image_size=64,
        crop_size=48,
        defect_crop_fraction=0.8,
        max_minutes=5.0,
        seed=3,
        verbose=0,
        model={"filters": 4, "input_channels": 3},
    )
    return data, out, train(config)


def test_a_colour_model_trains_evaluates_predicts_and_exports(colour_run, tmp_path):
    data, out, _ = colour_run
    config = json.loads((out / "config.json").read_text())
    assert config["channels"] == 3 and config["train_config"]["model"]["input_channels"] == 3
    model = infer.load_model(out / "model.keras")
    assert infer.model_channels(model) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 4 and metrics["image_policy"] == "none"
    # predict: colour files as they are, a grey file repeated into three channels
    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in sorted((data / "images").iterdir())[:2]:
        (inputs / path.name).write_bytes(path.read_bytes())
    Image.fromarray(np.full((45, 61), 90, np.uint8)).save(inputs / "grey.png")
    summary = infer.predict_files(out / "model.keras", inputs, tmp_path / "pred", fast=True)
    assert summary.done == 3 and summary.backend == "tf"
    assert Image.open(tmp_path / "pred" / "grey_mask.png").size == (61, 45)
    overlay = np.array(Image.open(tmp_path / "pred" / "part_000_overlay.png"))
    source = np.array(Image.open(inputs / "part_000.png"))
    assert overlay.shape == source.shape and (overlay == source).all(axis=-1).mean() > 0.5  # colour kept
    infer.export_model(out / "model.keras", tmp_path / "exported")
    info = json.loads((tmp_path / "exported" / infer.EXPORT_INFO).read_text())
    assert info["channels"] == 3 and "(batch, height, width, 3)" in info["input"]


def test_the_comparison_figure_draws_a_colour_model(colour_run, tmp_path):
    from dagm_helpers.experiment import Comparison, LossResult, plot_edges

    data, out, _ = colour_run
    comparison = Comparison(tmp_path, {"dice": LossResult("dice", runs=[out])}, 0.5, "compare --channels 3")
    path = plot_edges(comparison, tmp_path / "edges.png", data=str(data), classes=None, profile="smoke", n=2)
    assert Image.open(path).size[0] > 100
