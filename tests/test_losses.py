"""Losses: hand-computed values, batch pooling, numerical safety, serialisation."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from dagm_helpers.errors import ConfigError
from dagm_helpers.losses import (
    LOSS_CHOICES,
    BCEDiceLoss,
    DiceLoss,
    FocalTverskyLoss,
    PixelBCE,
    TutorialDiceLoss,
    get_loss,
)
from dagm_helpers.metrics import PixelDice, PixelIoU
from dagm_helpers.model import small_unet


def img(values, shape=(2, 2)) -> np.ndarray:
    """One image (1, H, W, 1) float32 from a flat list."""
    return np.asarray(values, "float32").reshape(1, *shape, 1)


def value(loss, y_true, y_pred) -> float:
    return float(np.asarray(loss(y_true, y_pred)))


# truth [1,1,0,0], prediction [1,0,1,0]: |A∩B| = 1, |A| = 2, |B| = 2
T = img([1, 1, 0, 0])
P = img([1, 0, 1, 0])


def test_dice_hand_example():
    # 1 - (2*1 + 1) / (2 + 2 + 1) = 1 - 3/5 = 0.4
    assert value(DiceLoss(), T, P) == pytest.approx(0.4)
    # perfect prediction: 1 - (2*2+1)/(2+2+1) = 0
    assert value(DiceLoss(), T, T) == pytest.approx(0.0, abs=1e-7)


def test_tutorial_dice_hand_example():
    # -2 (1 + 1) / (2 + 2 + 1) = -4/5
    assert value(TutorialDiceLoss(), T, P) == pytest.approx(-0.8)
    # perfect prediction: -2 (2+1)/(2+2+1) = -6/5: the "coefficient" exceeds 1
    assert value(TutorialDiceLoss(), T, T) == pytest.approx(-1.2)


def test_two_empty_masks():
    empty = np.zeros((2, 4, 4, 1), "float32")
    assert value(DiceLoss(), empty, empty) == pytest.approx(0.0)  # 1 - (0+1)/(0+0+1)
    assert value(DiceLoss(per_image=True), empty, empty) == pytest.approx(0.0)
    assert value(TutorialDiceLoss(), empty, empty) == pytest.approx(-2.0)  # -2(0+1)/(0+0+1)


def test_dice_is_pooled_over_the_batch_by_default():
    rng = np.random.default_rng(0)
    y_true = (rng.random((3, 8, 8, 1)) < 0.3).astype("float32")
    y_true[2] = 0  # one empty image
    y_pred = rng.random((3, 8, 8, 1)).astype("float32")
    inter, a, b = (y_true * y_pred).sum(), y_pred.sum(), y_true.sum()
    pooled = 1 - (2 * inter + 1) / (a + b + 1)
    assert value(DiceLoss(), y_true, y_pred) == pytest.approx(pooled, rel=1e-5)
    per = [1 - (2 * (t * p).sum() + 1) / (t.sum() + p.sum() + 1) for t, p in zip(y_true, y_pred, strict=True)]
    assert value(DiceLoss(per_image=True), y_true, y_pred) == pytest.approx(np.mean(per), rel=1e-5)
    assert not math.isclose(pooled, float(np.mean(per)), rel_tol=1e-3)
    # the per-sample vector Keras reduces is the batch value repeated
    vec = np.asarray(DiceLoss().call(tf.constant(y_true), tf.constant(y_pred)))
    assert vec.shape == (3,) and np.allclose(vec, pooled, rtol=1e-5)
    tut = -2 * (inter + 1) / (a + b + 1)
    assert value(TutorialDiceLoss(), y_true, y_pred) == pytest.approx(tut, rel=1e-5)


def test_bce_known_values():
    half = np.full((1, 2, 2, 1), 0.5, "float32")
    assert value(PixelBCE(), T, half) == pytest.approx(math.log(2), rel=1e-6)
    # a confident wrong pixel is clipped at 1e-7, not infinite: mean of [-log(1e-7), 0, 0, 0]
    wrong = img([0, 1, 0, 0])
    assert value(PixelBCE(), img([1, 1, 0, 0]), wrong) == pytest.approx(-math.log(1e-7) / 4, rel=1e-3)
    # the same as Keras' own BCE away from the clip
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.95, (2, 4, 4, 1)).astype("float32")
    t = (rng.random((2, 4, 4, 1)) < 0.5).astype("float32")
    ref = float(keras.losses.BinaryCrossentropy()(t, p))
    assert value(PixelBCE(), t, p) == pytest.approx(ref, rel=1e-5)


def test_bce_dice_is_weighted_sum():
    bce, dice = value(PixelBCE(), T, P * 0.8 + 0.1), value(DiceLoss(), T, P * 0.8 + 0.1)
    assert value(BCEDiceLoss(), T, P * 0.8 + 0.1) == pytest.approx(bce + dice, rel=1e-6)
    both = BCEDiceLoss(bce_weight=0.25, dice_weight=2.0)
    assert value(both, T, P * 0.8 + 0.1) == pytest.approx(0.25 * bce + 2 * dice, rel=1e-6)


def test_focal_tversky_hand_example_and_alpha_weighs_false_negatives():
    # TP=1, FN=1, FP=1: TI = (1+1)/(1 + 0.7*1 + 0.3*1 + 1) = 2/3; loss (1/3)^0.75
    assert value(FocalTverskyLoss(), T, P) == pytest.approx((1 / 3) ** 0.75, rel=1e-5)
    # one missed pixel (FN): TI = 2/(1+0.7+1);   one extra pixel (FP): TI = 2/(1+0.3+1)
    missed = value(FocalTverskyLoss(), img([1, 1, 0, 0]), img([1, 0, 0, 0]))
    extra = value(FocalTverskyLoss(), img([1, 0, 0, 0]), img([1, 1, 0, 0]))
    assert missed == pytest.approx((1 - 2 / 2.7) ** 0.75, rel=1e-5)
    assert extra == pytest.approx((1 - 2 / 2.3) ** 0.75, rel=1e-5)
    assert missed > extra
    # alpha = 0.5, gamma = 1: (TP+s)/((|A|+|B|)/2 + s) = (2TP+2s)/(|A|+|B|+2s), the Dice loss with smooth 2s
    rng = np.random.default_rng(2)
    t = (rng.random((2, 8, 8, 1)) < 0.3).astype("float32")
    p = rng.random((2, 8, 8, 1)).astype("float32")
    assert value(FocalTverskyLoss(alpha=0.5, gamma=1.0), t, p) == pytest.approx(
        value(DiceLoss(smooth=2.0), t, p), rel=1e-5
    )


ALL_LOSSES = [PixelBCE, DiceLoss, TutorialDiceLoss, BCEDiceLoss, FocalTverskyLoss]


@pytest.mark.parametrize("cls", ALL_LOSSES)
@pytest.mark.parametrize("pred_fill", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_loss_and_gradient_finite_on_empty_masks(cls, pred_fill, dtype):
    y_true = tf.zeros((2, 8, 8, 1), dtype)
    y_pred = tf.Variable(tf.fill((2, 8, 8, 1), tf.constant(pred_fill, dtype)))
    with tf.GradientTape() as tape:
        loss = cls()(y_true, y_pred)
    grad = tape.gradient(loss, y_pred)
    assert np.isfinite(float(loss))
    assert grad is not None and np.all(np.isfinite(np.asarray(grad, "float32")))


@pytest.mark.parametrize("name", LOSS_CHOICES)
def test_loss_finite_with_mixed_precision_model(name):
    old = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_float16")
        model = small_unet(filters=4, depth=2)
        x = np.random.default_rng(3).uniform(0, 255, (2, 16, 16, 1)).astype("float32")
        y = np.zeros((2, 16, 16, 1), "float32")
        y[0, 4:8, 4:8] = 1
        loss_fn = get_loss(name)
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = loss_fn(y, out)
            # and on a float16 copy of the output, as a model without a float32 head would give
            loss16 = loss_fn(y.astype("float16"), tf.cast(out, "float16"))
        grads = tape.gradient(loss, model.trainable_variables)
        assert np.isfinite(float(loss)) and np.isfinite(float(loss16))
        assert all(np.all(np.isfinite(np.asarray(g, "float32"))) for g in grads)
    finally:
        keras.config.set_dtype_policy(old)


def test_get_loss():
    assert isinstance(get_loss("bce"), PixelBCE)
    assert isinstance(get_loss("dice"), DiceLoss)
    assert isinstance(get_loss("bce_dice"), BCEDiceLoss)
    assert isinstance(get_loss("focal_tversky"), FocalTverskyLoss)
    assert isinstance(get_loss("tutorial_dice"), TutorialDiceLoss)
    assert get_loss("dice", per_image=True).per_image is True
    with pytest.raises(ConfigError, match="bce, dice, bce_dice, focal_tversky, tutorial_dice"):
        get_loss("jaccard")


def test_bad_loss_arguments():
    with pytest.raises(ConfigError, match="smooth"):
        DiceLoss(smooth=0)
    with pytest.raises(ConfigError, match="alpha"):
        FocalTverskyLoss(alpha=1.5)
    with pytest.raises(ConfigError, match="gamma"):
        FocalTverskyLoss(gamma=-1)


@pytest.mark.parametrize("name", LOSS_CHOICES)
def test_loss_in_graph_mode_with_unknown_shapes(name):
    loss_fn = get_loss(name)
    spec = tf.TensorSpec((None, None, None, 1), tf.float32)

    @tf.function(input_signature=[spec, spec])
    def graph_loss(t, p):
        return loss_fn(t, p)

    rng = np.random.default_rng(5)
    t = (rng.random((3, 8, 8, 1)) < 0.3).astype("float32")
    p = rng.random((3, 8, 8, 1)).astype("float32")
    assert float(graph_loss(t, p)) == pytest.approx(value(loss_fn, t, p), rel=1e-6)


@pytest.mark.parametrize("name", LOSS_CHOICES)
def test_loss_config_round_trip(name):
    loss = get_loss(name)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is type(loss)
    assert again.get_config() == loss.get_config()
    assert value(again, T, P * 0.6 + 0.2) == pytest.approx(value(loss, T, P * 0.6 + 0.2))


@pytest.mark.parametrize("name", LOSS_CHOICES)
def test_compiled_model_saves_and_loads_in_safe_mode(tmp_path, name):
    keras.utils.set_random_seed(0)
    model = small_unet(filters=4, depth=2, batch_norm=True)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=get_loss(name),
        metrics=[PixelIoU(threshold=0.4), PixelDice()],
        run_eagerly=True,  # tracing a training graph per loss costs ~20 s here; graph mode is tested below
    )
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 255, (4, 16, 16, 1)).astype("float32")
    y = (rng.random((4, 16, 16, 1)) < 0.2).astype("float32")
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert type(loaded.loss) is type(model.loss)
    assert loaded.loss.get_config() == model.loss.get_config()
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    after = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert set(after) >= {"loss", "pixel_iou", "pixel_dice"}
    for key in ("loss", "pixel_iou", "pixel_dice"):
        assert after[key] == pytest.approx(before[key], rel=1e-6, abs=1e-7)
