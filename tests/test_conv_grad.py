"""conv_grad: the faster convolution gradients equal TensorFlow's own, and change nothing else."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from dagm_helpers.model import small_unet  # noqa: E402
from dagm_helpers.speed import conv_grad  # noqa: E402


@pytest.mark.parametrize("channels", [(3, 5), (40, 32)])  # below / above MIN_MATMUL_CHANNELS
@pytest.mark.parametrize("k", [1, 3, 5])
def test_gradients_equal_tensorflows(channels, k):
    ci, co = channels
    rng = np.random.default_rng(k)
    x = tf.constant(rng.normal(size=(2, 12, 10, ci)), tf.float32)
    w = tf.constant(rng.normal(size=(k, k, ci, co)) * 0.2, tf.float32)
    target = tf.constant(rng.normal(size=(2, 12, 10, co)), tf.float32)

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            loss = tf.reduce_sum((fn(x, w) - target) ** 2)
        return tape.gradient(loss, [x, w])

    ref_dx, ref_dw = grads(lambda a, b: tf.nn.conv2d(a, b, 1, "SAME"))
    dx, dw = grads(conv_grad.conv2d_same)
    assert conv_grad.conv2d_same(x, w).shape == (2, 12, 10, co)
    np.testing.assert_allclose(dx.numpy(), ref_dx.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dw.numpy(), ref_dw.numpy(), rtol=1e-4, atol=1e-3)
    assert float(tf.reduce_max(tf.abs(ref_dw))) > 1.0  # not trivially equal


def test_gradients_equal_tensorflows_for_shapes_known_only_at_run_time():
    rng = np.random.default_rng(7)
    w = tf.constant(rng.normal(size=(3, 3, 32, 48)) * 0.2, tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 32], tf.float32)])
    def weight_grads(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(w)
            ref = tf.reduce_sum(tf.nn.conv2d(x, w, 1, "SAME") ** 2)
            fast = tf.reduce_sum(conv_grad.conv2d_same(x, w) ** 2)
        return tape.gradient(ref, w), tape.gradient(fast, w)

    for shape in [(3, 9, 14, 32), (1, 16, 16, 32)]:  # one traced function, several batch and image sizes
        ref, fast = weight_grads(tf.constant(rng.normal(size=shape), tf.float32))
        np.testing.assert_allclose(fast.numpy(), ref.numpy(), rtol=1e-4, atol=1e-2)


def test_patched_unet_trains_to_the_same_weights_and_saves_plain_conv2d(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((2, 32, 32, 1)).astype(np.float32)
    y = (rng.random((2, 32, 32, 1)) < 0.2).astype(np.float32)

    def trained(patch: bool):
        keras.utils.set_random_seed(0)
        m = small_unet(filters=4)
        n = conv_grad.use_fast_conv_gradients(m, min_matmul_channels=32) if patch else 0
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
        m.fit(x, y, batch_size=2, epochs=2, verbose=0)
        return m, n

    ref, _ = trained(False)
    fast, n = trained(True)
    convs = [layer for layer in fast.layers if type(layer) is keras.layers.Conv2D]
    # every 3x3 convolution, not the 1x1 output layer, not the transposed convolutions
    assert n == sum(layer.kernel_size == (3, 3) for layer in convs) == 18
    for a, b in zip(ref.get_weights(), fast.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    assert not np.allclose(ref.get_weights()[0], small_unet(filters=4).get_weights()[0])  # it trained

    path = tmp_path / "m.keras"
    fast.save(path)
    loaded = keras.saving.load_model(path)  # no custom objects needed
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in fast.layers]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), fast.predict(x, verbose=0), atol=1e-6)


def test_eligible_refuses_what_conv2d_same_cannot_compute():
    assert conv_grad.eligible(keras.layers.Conv2D(4, 3, padding="same"))
    assert not conv_grad.eligible(keras.layers.Conv2D(4, 3, padding="valid"))
    assert not conv_grad.eligible(keras.layers.Conv2D(4, 3, strides=2, padding="same"))
    assert not conv_grad.eligible(keras.layers.Conv2D(4, (3, 1), padding="same"))
    assert not conv_grad.eligible(keras.layers.Conv2D(4, 2, padding="same"))
    assert not conv_grad.eligible(keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2))
    assert not conv_grad.eligible(keras.layers.Conv2DTranspose(4, 2, strides=2))


def test_nested_models_are_patched_too():
    inner = small_unet(filters=4, name="inner")
    outer = keras.Sequential([keras.Input((32, 32, 1)), inner])
    assert conv_grad.use_fast_conv_gradients(outer) == 18
