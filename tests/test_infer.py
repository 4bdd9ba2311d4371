"""infer.py: safe model loading, any-size prediction, tiling, evaluation aggregation."""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from dagm_helpers import infer
from dagm_helpers.errors import ConfigError, DatasetError, ModelFileError
from dagm_helpers.model import small_unet


def _tiny_unet(depth: int = 2, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return small_unet(filters=4, depth=depth)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    """Real model files: a good one and every broken/unsafe/ill-fitting kind load_model must refuse."""
    d = tmp_path_factory.mktemp("models")
    files: dict[str, Path] = {}
    files["ok"] = d / "ok.keras"
    _tiny_unet().save(files["ok"])
    data = files["ok"].read_bytes()

    files["truncated"] = d / "truncated.keras"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["random"] = d / "random.keras"
    files["random"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    files["empty"] = d / "empty.keras"
    files["empty"].write_bytes(b"")
    flipped = bytearray(data)  # bytes damaged inside the weights member: zip CRC no longer matches
    mid = len(flipped) // 2
    flipped[mid : mid + 64] = bytes(b ^ 0xFF for b in flipped[mid : mid + 64])
    files["flipped"] = d / "flipped.keras"
    files["flipped"].write_bytes(bytes(flipped))
    files["not_a_model_zip"] = d / "photos.keras"
    with zipfile.ZipFile(files["not_a_model_zip"], "w") as zf:
        zf.writestr("readme.txt", "hello")
    files["bad_config"] = d / "bad_config.keras"
    with zipfile.ZipFile(files["ok"]) as zin, zipfile.ZipFile(files["bad_config"], "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, b"{not json" if name == "config.json" else zin.read(name))

    inp = keras.Input((None, None, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(x)
    files["lambda"] = d / "lambda.keras"
    keras.Model(inp, out).save(files["lambda"])

    files["lambda_h5"] = d / "lambda.h5"  # legacy HDF5 format: safe mode applies too
    keras.Model(inp, out).save(files["lambda_h5"])

    class Unregistered(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras.Input((None, None, 1))
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(Unregistered()(inp))
    files["custom"] = d / "custom.keras"
    keras.Model(inp, out).save(files["custom"])

    inp = keras.Input((None, None, 2))
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp)
    files["two_channel"] = d / "two_channel.keras"
    keras.Model(inp, out).save(files["two_channel"])

    inp = keras.Input((None, None, 3))
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp)
    files["rgb"] = d / "rgb.keras"  # a colour model (train --channels 3): accepted
    keras.Model(inp, out).save(files["rgb"])

    inp = keras.Input((None, None, 1))
    out = keras.layers.Conv2D(2, 3, padding="same", activation="softmax")(inp)
    files["two_class"] = d / "two_class.keras"
    keras.Model(inp, out).save(files["two_class"])

    inp = keras.Input((None, None, 1))
    out = keras.layers.Conv2D(1, 3, padding="same", activation="relu")(inp)
    files["relu"] = d / "relu.keras"
    keras.Model(inp, out).save(files["relu"])
    return files


# ----------------------------------------------------------------------------- load_model
def test_load_model_ok_round_trip(model_files):
    model = infer.load_model(model_files["ok"])
    x = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 1)).astype(np.float32)
    ref = _tiny_unet()
    np.testing.assert_allclose(model.predict_on_batch(x), ref.predict_on_batch(x), atol=1e-6)


@pytest.mark.parametrize(
    "kind, pattern",
    [
        ("truncated", r"not a zip file.*truncated or corrupt"),
        ("random", r"not a zip file"),
        ("empty", r"empty \(0 bytes\)"),
        ("flipped", r"corrupt"),
        ("not_a_model_zip", r"not a Keras model \(no config.json"),
        ("bad_config", r"cannot (read|load) (this|the) model"),
    ],
)
def test_load_model_refuses_corrupt_files(model_files, kind, pattern):
    with pytest.raises(ModelFileError, match=pattern) as err:
        infer.load_model(model_files[kind])
    msg = str(err.value)
    assert str(model_files[kind]) in msg  # names the file
    assert "re-save" in msg or "download" in msg or "model.save" in msg  # says what to do


def test_load_model_missing_file_and_folder(tmp_path):
    with pytest.raises(ModelFileError, match="not found") as err:
        infer.load_model(tmp_path / "nope.keras")
    assert "nope.keras" in str(err.value)
    with pytest.raises(ModelFileError, match="is a folder"):
        infer.load_model(tmp_path)


@pytest.mark.parametrize("kind", ["lambda", "lambda_h5"])
def test_load_model_refuses_lambda_without_running_it(model_files, kind):
    with pytest.raises(ModelFileError) as err:
        infer.load_model(model_files[kind])
    msg = str(err.value)
    assert model_files[kind].name in msg
    assert "refuses to run code" in msg and "safe_mode=False" in msg and "trust" in msg


def test_load_model_unknown_custom_layer(model_files):
    with pytest.raises(
        ModelFileError, match="custom.keras: the model uses a layer or object .* does not know"
    ):
        infer.load_model(model_files["custom"])


@pytest.mark.parametrize(
    "kind, pattern",
    [
        ("two_channel", r"input has shape \(None, None, None, 2\).*one grey-level channel \(or 3, colour\)"),
        ("two_class", r"output has shape \(None, None, None, 2\)"),
        ("relu", r"activation 'relu', not sigmoid"),
    ],
)
def test_load_model_refuses_models_that_do_not_fit(model_files, kind, pattern):
    with pytest.raises(ModelFileError, match=pattern) as err:
        infer.load_model(model_files[kind])
    assert model_files[kind].name in str(err.value)


def test_load_model_takes_a_colour_model(model_files):
    assert infer.model_channels(infer.load_model(model_files["rgb"])) == 3


# ----------------------------------------------------------------------------- predict_proba
@pytest.fixture(scope="module")
def tiny():
    return _tiny_unet(depth=2)


def _raw(model, batch):
    return np.asarray(model.predict_on_batch(batch[..., None].astype(np.float32)))[..., 0]


def test_required_multiple(tiny):
    assert infer.required_multiple(tiny) == 4
    assert infer.required_multiple(small_unet(filters=2, depth=4)) == 16
    assert infer.required_multiple(small_unet(filters=2, depth=3)) == 8


def test_predict_any_size_returns_own_size(tiny):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 500, 500), dtype=np.uint8)
    b = rng.integers(0, 256, (1, 333, 517), dtype=np.uint8)
    pa = infer.predict_proba(tiny, a)
    pb = infer.predict_proba(tiny, b[..., None])  # (N, H, W, 1) accepted too
    assert pa.shape == (2, 500, 500) and pa.dtype == np.float32
    assert pb.shape == (1, 333, 517)
    assert 0.0 <= pa.min() and pa.max() <= 1.0


def test_predict_equals_unpadded_call_when_divisible(tiny):
    x = np.random.default_rng(1).integers(0, 256, (3, 64, 48), dtype=np.uint8)
    np.testing.assert_allclose(infer.predict_proba(tiny, x, batch_size=2), _raw(tiny, x), atol=1e-5)


def test_padding_crops_back_the_reflect_padded_prediction(tiny):
    x = np.random.default_rng(2).integers(0, 256, (1, 30, 37), dtype=np.uint8)
    padded = np.pad(x, ((0, 0), (0, 2), (0, 3)), mode="reflect")  # 32 x 40, multiple of 4
    np.testing.assert_allclose(infer.predict_proba(tiny, x)[0], _raw(tiny, padded)[0, :30, :37], atol=1e-5)


def test_predict_mixed_list_and_single(tiny):
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(40, 40), (21, 35), (40, 40), (5, 3)]]
    out = infer.predict_proba(tiny, imgs, batch_size=8)
    assert isinstance(out, list) and [o.shape for o in out] == [i.shape for i in imgs]
    np.testing.assert_allclose(out[0], infer.predict_proba(tiny, imgs[0]), atol=1e-5)  # single 2-D image
    np.testing.assert_allclose(out[2], _raw(tiny, imgs[2][None])[0], atol=1e-5)
    assert infer.predict_proba(tiny, imgs[1]).shape == (21, 35)


def test_predict_rejects_bad_shapes_and_warns_on_unit_range(tiny):
    with pytest.raises(ConfigError, match="expected"):
        infer.predict_proba(tiny, np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ConfigError, match="batch_size"):
        infer.predict_proba(tiny, np.zeros((1, 8, 8), np.uint8), batch_size=0)
    with pytest.warns(UserWarning, match="0..255"):
        infer.predict_proba(tiny, np.full((1, 8, 8), 0.5, np.float32))


def test_tiled_equals_untiled_small_net(tiny):
    """Forced small tiles: overlap 32 > half the receptive field of a 2-level U-Net, so exact."""
    x = np.random.default_rng(4).integers(0, 256, (150, 203), dtype=np.uint8)
    whole = infer.predict_proba(tiny, x)
    tiled = infer.predict_proba(tiny, x, tile_size=96, tile_overlap=32, max_untiled_pixels=1)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_tiled_equals_untiled_default_depth_and_overlap():
    """The default overlap (128 px) covers the default 4-level U-Net's receptive field."""
    model = small_unet(filters=2, depth=4)
    x = np.random.default_rng(5).integers(0, 256, (420, 380), dtype=np.uint8)
    whole = infer.predict_proba(model, x)
    tiled = infer.predict_proba(model, x, tile_size=320, max_untiled_pixels=1)
    assert infer.TILE_OVERLAP == 128
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_tile_starts_cover_everything():
    for n, tile, step in [(100, 32, 16), (512, 512, 256), (40, 64, 32), (1000, 272, 16)]:
        starts = infer._tile_starts(max(n, tile), tile, step)
        assert starts[0] == 0 and starts[-1] + tile >= n
        assert all(b - a <= step for a, b in zip(starts, starts[1:], strict=False))


def test_huge_image_refused(tiny, monkeypatch):
    monkeypatch.setattr(infer, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(infer.ImageFileError, match="above the limit"):
        infer.predict_proba(tiny, np.zeros((11, 10), np.uint8))


def test_fixed_size_model_is_tiled_at_its_size():
    inp = keras.Input((32, 32, 1))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(2, 3, padding="same")(x))
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(keras.layers.UpSampling2D()(x))
    model = keras.Model(inp, out)
    x = np.random.default_rng(6).integers(0, 256, (1, 32, 32), dtype=np.uint8)
    np.testing.assert_allclose(infer.predict_proba(model, x), _raw(model, x), atol=1e-5)
    assert infer.predict_proba(model, np.zeros((70, 20), np.uint8)).shape == (70, 20)


# ----------------------------------------------------------------------------- aggregation
def test_summary_known_answers(monkeypatch):
    from dagm_helpers import metrics

    monkeypatch.setattr(metrics, "TOP_K", 1)  # image score = the highest pixel probability
    masks = np.zeros((4, 4, 4), np.uint8)
    masks[0, :2, :2] = 1  # defective, predicted exactly
    masks[1, :2, :2] = 1  # defective, half predicted
    probs = np.zeros((4, 4, 4), np.float32)
    probs[0, :2, :2] = 0.9
    probs[1, 0, :2] = 0.8
    probs[2, 3, 3] = 0.7  # clean image with one false-positive pixel -> flagged
    probs[3] = 0.1  # clean, below threshold
    r = infer.summarize_predictions(masks, probs, threshold=0.5)
    assert set(infer.EVAL_KEYS) <= set(r)
    assert r["images"] == 4 and r["defective_images"] == 2 and r["clean_images"] == 2
    # pooled: tp = 4 + 2 = 6, fn = 2, fp = 1
    assert r["pixel_iou"] == pytest.approx(6 / 9)
    assert r["pixel_dice"] == pytest.approx(12 / 15)
    assert r["iou_defective_mean"] == pytest.approx((1.0 + 0.5) / 2, abs=1e-3)
    assert r["dice_defective_mean"] == pytest.approx((1.0 + 2 / 3) / 2, abs=1e-3)
    # scores 0.9, 0.8 (defective) vs 0.7, 0.1 (clean): perfect ranking; image 2 flagged at 0.5
    assert r["image_auroc"] == pytest.approx(1.0) and r["image_ap"] == pytest.approx(1.0)
    assert r["tpr"] == 1.0 and r["tnr"] == 0.5 and r["false_positive_images"] == 1
    assert 0.0 <= r["boundary_f1"] <= 1.0
    r2 = infer.summarize_predictions(masks, probs, threshold=0.75)
    assert r2["tnr"] == 1.0 and r2["tpr"] == 1.0


def test_image_score_needs_more_than_a_few_stray_pixels():
    masks = np.zeros((2, 32, 32), np.uint8)
    masks[0, 5:25, 5:25] = 1  # a 400-pixel defect
    probs = np.zeros((2, 32, 32), np.float32)
    probs[0, 5:25, 5:25] = 0.8
    probs[1, 3, 3:6] = 0.99  # a clean image with three confident stray pixels
    r = infer.summarize_predictions(masks, probs, threshold=0.5)
    assert infer.image_score(probs[0]) == pytest.approx(0.8)
    assert infer.image_score(probs[1]) == pytest.approx(3 * 0.99 / 100)
    assert r["tpr"] == 1.0 and r["tnr"] == 1.0 and r["image_ap"] == pytest.approx(1.0)


def test_summary_one_class_gives_null_auroc_and_json_safe():
    import json

    masks = np.zeros((3, 8, 8), np.uint8)
    probs = np.full((3, 8, 8), 0.2, np.float32)
    r = infer.summarize_predictions(masks, probs)
    assert r["image_auroc"] is None and r["image_ap"] is None and r["tpr"] is None
    assert r["dice_defective_mean"] is None and r["tnr"] == 1.0
    assert r["pixel_iou"] == 1.0  # nothing to find, nothing predicted
    text = json.dumps(r, allow_nan=False)  # no NaN anywhere
    assert all(type(v) in (int, float, type(None)) for v in json.loads(text).values())


def test_accumulator_streaming_equals_one_shot():
    rng = np.random.default_rng(7)
    masks = (rng.random((10, 16, 16)) > 0.9).astype(np.uint8)
    masks[5:] = 0
    probs = rng.random((10, 16, 16)).astype(np.float32)
    acc = infer.EvalAccumulator(0.5)
    for i in range(0, 10, 3):
        acc.update(masks[i : i + 3], probs[i : i + 3])
    assert acc.result() == infer.summarize_predictions(masks, probs)


def test_bad_threshold():
    with pytest.raises(ConfigError, match="threshold"):
        infer.EvalAccumulator(1.5)


# ----------------------------------------------------------------------------- evaluate on disk
def test_evaluate_on_generated_data(tmp_path):
    from dagm_helpers.data.layout import scan
    from dagm_helpers.data.synth import synthesize

    root = synthesize(tmp_path / "synth", classes=[1], images_per_split=6, seed=0)
    samples = scan(root).filter(classes=[1], split="Test")
    model = _tiny_unet(depth=2)
    r = infer.evaluate(model, samples, threshold=0.5, batch_size=4, image_size=64)
    assert set(infer.EVAL_KEYS) <= set(r)
    assert r["images"] == len(samples)
    assert r["defective_images"] == sum(s.defective for s in samples)
    for key in (
        "pixel_iou",
        "pixel_dice",
        "dice_defective_mean",
        "iou_defective_mean",
        "boundary_f1",
        "tpr",
        "tnr",
    ):
        assert r[key] is None or 0.0 <= r[key] <= 1.0, key
    for key in ("image_auroc", "image_ap"):
        assert r[key] is None or 0.0 <= r[key] <= 1.0
    assert r["threshold"] == 0.5 and r["seconds"] >= 0


def test_evaluate_empty_selection_is_an_error():
    with pytest.raises(DatasetError, match="no samples"):
        infer.evaluate(_tiny_unet(), [])


def test_evaluate_streams_in_chunks(tmp_path, monkeypatch):
    """More samples than one chunk: the result equals one-shot aggregation of the same predictions."""
    from dagm_helpers.data.layout import scan
    from dagm_helpers.data.pipeline import load_arrays
    from dagm_helpers.data.synth import synthesize

    root = synthesize(tmp_path / "synth", classes=[1], images_per_split=7, seed=1)
    samples = list(scan(root).filter(split="Train"))
    monkeypatch.setattr(infer, "EVAL_CHUNK", 3)
    model = _tiny_unet(depth=2)
    r = infer.evaluate(model, samples, image_size=32)
    images, masks = load_arrays(samples, size=32)
    one = infer.summarize_predictions(
        masks, infer.predict_proba(model, images), defective=[s.defective for s in samples]
    )
    for key in infer.EVAL_KEYS:
        if key != "seconds":
            assert r[key] == pytest.approx(one[key]) if one[key] is not None else r[key] is None, key


def test_evaluate_fast_path_gives_the_same_numbers(tmp_path):
    import numpy as np

    from dagm_helpers.data.layout import scan
    from dagm_helpers.data.synth import synthesize
    from dagm_helpers.model import small_unet
    from dagm_helpers.speed import fast

    if not (fast.ncnn_available() or fast.openvino_available()):
        pytest.skip("neither ncnn nor openvino installed: evaluate uses TensorFlow only")
    root = synthesize(tmp_path / "synth", classes=[1], images_per_split=8, seed=0)
    samples = scan(root).filter(classes=[1], split="Test")
    model = small_unet()
    slow = infer.evaluate(model, samples, threshold=0.5, image_size=64, fast=False, progress=False)
    quick = infer.evaluate(model, samples, threshold=0.5, image_size=64, fast=True, progress=False)
    # the fast path timed the installed runtimes on its first image and reports the one it kept
    assert slow["backend"] == "tf" and quick["backend"] in ("ncnn", "openvino", "tf")
    for key in infer.EVAL_KEYS:
        if key in ("seconds",):
            continue
        a, b = slow[key], quick[key]
        assert (a is None and b is None) or np.isclose(a, b, atol=1e-4), key


def test_predict_proba_fast_gives_the_same_probabilities_tiled_or_not():
    from dagm_helpers.speed import fast

    if not (fast.ncnn_available() or fast.openvino_available()):
        pytest.skip("neither ncnn nor openvino installed: fast=True runs TensorFlow")
    keras.utils.set_random_seed(2)
    model = small_unet(filters=4)
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 256, (45, 70)).astype(np.uint8),
        rng.integers(0, 256, (150, 130)).astype(np.uint8),
    ]
    kwargs = {"tile_size": 64, "tile_overlap": 16, "max_untiled_pixels": 64 * 80}  # the second one is tiled
    runner = infer._Runner(model, 8, fast=True)
    assert runner.backend == "auto"  # chosen by timing on the first call
    runner.run([images[1][:48, :64]])  # a padded batch, as predict_proba makes them
    assert runner.backend in ("ncnn", "openvino", "tf")
    slow = infer.predict_proba(model, images, **kwargs)
    quick = infer.predict_proba(model, images, fast=True, **kwargs)
    for a, b in zip(slow, quick, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, atol=1e-4)


def test_fast_predictor_is_reused_until_the_weights_change(monkeypatch):
    from dagm_helpers.speed import fast

    if not (fast.ncnn_available() or fast.openvino_available()):
        pytest.skip("neither ncnn nor openvino installed: fast=True runs TensorFlow")
    conversions = []
    real = fast.fast_predictor

    def counting(model, **kwargs):
        conversions.append(kwargs)
        return real(model, **kwargs)

    monkeypatch.setattr(fast, "fast_predictor", counting)
    keras.utils.set_random_seed(3)
    model = small_unet(filters=4)
    image = np.random.default_rng(3).integers(0, 256, (48, 48)).astype(np.uint8)
    first = infer.predict_proba(model, image, fast=True)
    again = infer.predict_proba(model, image, fast=True)
    assert len(conversions) == 1  # the second call reused the converted model
    np.testing.assert_array_equal(first, again)

    model.set_weights([w * 0.5 for w in model.get_weights()])  # a converted copy is now stale
    changed = infer.predict_proba(model, image, fast=True)
    assert len(conversions) == 2
    np.testing.assert_allclose(changed, infer.predict_proba(model, image), atol=1e-4)
    assert not np.allclose(changed, first, atol=1e-4)


@pytest.mark.parametrize("fast_path", [False, True])
def test_prediction_caches_do_not_keep_a_model_alive(fast_path):
    """Both caches are keyed weakly by the model: a cached value holding the model would leak it."""
    import gc
    import weakref

    model = small_unet(filters=4)
    alive = weakref.ref(model)
    for shape in [(32, 32), (48, 32)]:  # two traced shapes
        infer.predict_proba(model, np.zeros(shape, np.uint8), fast=fast_path)
    from dagm_helpers.speed import fast

    assert model in (fast._RUNNERS if fast_path else infer._PREDICT_FNS)
    del model
    gc.collect()
    assert alive() is None


def test_a_model_trained_in_mixed_precision_loads_for_float32_inference(tmp_path):
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = small_unet(filters=4)
    finally:
        keras.config.set_dtype_policy(before)
    assert mixed.get_layer("enc1_conv1").compute_dtype == "bfloat16"
    path = tmp_path / "mixed.keras"
    infer.save_model(mixed, path)
    loaded = infer.load_model(path)
    assert {layer.dtype_policy.name for layer in loaded.layers} == {"float32"}
    for a, b in zip(mixed.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the very same weights
    x = np.random.default_rng(0).integers(0, 256, (1, 32, 32)).astype(np.uint8)
    assert infer.predict_proba(loaded, x).dtype == np.float32
    assert infer.as_float32(loaded) is loaded  # a float32 model is left as it is


def test_train_precision_option(tmp_path):
    from dagm_helpers.errors import ConfigError
    from dagm_helpers.training import TrainConfig, TrainingRun, train

    with pytest.raises(ConfigError, match="precision must be one of"):
        TrainingRun(TrainConfig(out=tmp_path / "bad", profile="smoke", precision="int4", verbose=0))
    run = train(
        TrainConfig(
            out=tmp_path / "bf16", profile="smoke", precision="mixed_bfloat16", verbose=0, evaluate_test=False
        )
    )
    assert run.config["precision"] == "mixed_bfloat16"
    assert {layer.dtype_policy.name for layer in run.model.layers} == {"float32"}  # ready for inference


def test_a_model_whose_output_is_smaller_than_its_input_is_refused_before_anything_is_written(tmp_path):
    from dagm_helpers.errors import ModelFileError

    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(1, 3, strides=2, padding="same", activation="sigmoid")(x)
    path = tmp_path / "half.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ModelFileError, match=r"returns \d+x\d+ probabilities for a \d+x\d+ image"):
        infer.load_model(path)
