"""The tutorial's U-Net: exact architecture, parameter count, options, FLOPs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from dagm_helpers.errors import ConfigError
from dagm_helpers.model import BN_MOMENTUM, gflops, layer_flops, level_filters, required_multiple, small_unet


@pytest.fixture(scope="module")
def unet() -> keras.Model:
    return small_unet()


def conv_params(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout


def test_default_parameter_count_is_the_tutorials(unet):
    assert unet.count_params() == 1_755_737
    # the same number from the tutorial's arrangement, by hand:
    total = 0
    for cin, cout in [(1, 16), (16, 32), (32, 64), (64, 128)]:  # encoder: two 3x3 convs per level
        total += conv_params(3, cin, cout) + conv_params(3, cout, cout)
    total += conv_params(3, 128, 256) + conv_params(3, 256, 256)  # bottleneck
    prev = 256
    for up, skip, cout in [(64, 128, 128), (32, 64, 64), (16, 32, 32), (8, 16, 16)]:
        # Conv2DTranspose(up, 2x2) then concat with the skip then two 3x3 convs
        total += conv_params(2, prev, up) + conv_params(3, up + skip, cout) + conv_params(3, cout, cout)
        prev = cout
    total += conv_params(1, 16, 1)  # 1x1 sigmoid
    assert total == 1_755_737


def test_default_layers_match_the_tutorial(unet):
    convs = [la for la in unet.layers if type(la) is keras.layers.Conv2D]
    ups = [la for la in unet.layers if isinstance(la, keras.layers.Conv2DTranspose)]
    assert [c.filters for c in convs] == [16, 16, 32, 32, 64, 64, 128, 128, 256, 256] + [
        128,
        128,
        64,
        64,
        32,
        32,
        16,
        16,
        1,
    ]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs[:-1])
    assert all(c.activation.__name__ == "relu" for c in convs[:-1])
    assert convs[-1].kernel_size == (1, 1) and convs[-1].activation.__name__ == "sigmoid"
    assert [u.filters for u in ups] == [64, 32, 16, 8]
    assert all(u.kernel_size == (2, 2) and u.strides == (2, 2) for u in ups)
    assert sum(isinstance(la, keras.layers.MaxPooling2D) for la in unet.layers) == 4
    assert sum(isinstance(la, keras.layers.Concatenate) for la in unet.layers) == 4
    assert unet.input_shape == (None, None, None, 1)


def test_input_is_rescaled_by_a_real_layer(unet):
    first = unet.layers[1]
    assert isinstance(first, keras.layers.Rescaling)
    assert first.scale == pytest.approx(1 / 255) and first.offset == 0.0


@pytest.mark.parametrize("kwargs", [{}, {"block": "dense"}, {"upsampling": "bilinear", "batch_norm": True}])
def test_no_lambda_layers(kwargs):
    model = small_unet(filters=4, depth=2, **kwargs)
    assert not any(isinstance(la, keras.layers.Lambda) for la in model.layers)


@pytest.mark.parametrize("shape", [(512, 512), (64, 64), (48, 80)])
def test_output_shape_equals_input_shape(unet, shape):
    x = np.random.default_rng(0).uniform(0, 255, (1, *shape, 1)).astype("float32")
    y = np.asarray(unet(x, training=False))
    assert y.shape == (1, *shape, 1)
    assert y.dtype == np.float32
    assert np.all((y > 0) & (y < 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_norm": True},
        {"dropout": 0.3},
        {"upsampling": "bilinear"},
        {"block": "dense"},
        {"block": "dense", "batch_norm": True, "dropout": 0.1, "dense_layers": 2, "growth_rate": 8},
        {"width": 2.0},
        {"depth": 3},
        {"depth": 1},
        {"input_channels": 3},
    ],
)
def test_options_build_and_run(kwargs):
    model = small_unet(**kwargs)
    channels = kwargs.get("input_channels", 1)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 48, channels)).astype("float32")
    y = np.asarray(model(x, training=True))
    assert y.shape == (2, 32, 48, 1)
    assert np.all(np.isfinite(y)) and np.all((y >= 0) & (y <= 1))
    if "dropout" not in kwargs:  # dropout adds no parameters
        assert model.count_params() != 1_755_737


def test_option_effects():
    base = small_unet()
    # width 2 doubles every filter count: roughly 4x the parameters
    wide = small_unet(width=2.0)
    assert 3.9 < wide.count_params() / base.count_params() < 4.1
    assert level_filters(16, 2.0, 4) == [32, 64, 128, 256, 512]
    # batch norm: 4 parameters per channel after each 3x3 conv, no conv biases
    bn = small_unet(batch_norm=True)
    conv_channels = 2 * (16 + 32 + 64 + 128 + 256) + 2 * (128 + 64 + 32 + 16)
    assert bn.count_params() == base.count_params() + 4 * conv_channels - conv_channels
    bn_layers = [layer for layer in bn.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bn_layers) == 18 and all(layer.momentum == BN_MOMENTUM == 0.9 for layer in bn_layers)
    # dropout adds no parameters but Dropout layers
    drop = small_unet(dropout=0.5)
    assert drop.count_params() == base.count_params()
    assert sum(isinstance(la, keras.layers.Dropout) for la in drop.layers) == 9
    # bilinear: 1x1 convs instead of 2x2 transposed convs (a quarter of those weights)
    bil = small_unet(upsampling="bilinear")
    assert not any(isinstance(la, keras.layers.Conv2DTranspose) for la in bil.layers)
    up_weights = 256 * 64 + 128 * 32 + 64 * 16 + 32 * 8
    assert bil.count_params() == base.count_params() - 3 * up_weights
    dense = small_unet(block="dense")
    assert sum(isinstance(la, keras.layers.Concatenate) for la in dense.layers) > 20


def test_required_multiple():
    assert required_multiple(small_unet()) == 16
    assert required_multiple(small_unet(depth=3, filters=4)) == 8
    assert required_multiple(small_unet(depth=6, filters=2)) == 64


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"depth": 0}, "depth"),
        ({"depth": 7}, "depth"),
        ({"width": 0}, "width"),
        ({"width": float("nan")}, "width"),
        ({"input_channels": 0}, "input_channels"),
        ({"filters": 0}, "filters"),
        ({"dropout": 1.0}, "dropout"),
        ({"upsampling": "nearest"}, "transpose, bilinear"),
        ({"block": "resnet"}, "conv, dense"),
        ({"batch_norm": "yes"}, "batch_norm"),
        ({"dense_layers": 0, "block": "dense"}, "dense_layers"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        small_unet(**kwargs)


def test_gflops_by_hand(unet):
    # 2 FLOPs per multiply-add; conv: 2*k*k*cin*cout*H*W at the output size
    expected = 0.0
    side = 512
    cin = 1
    for cout in [16, 32, 64, 128]:
        expected += 2 * 9 * cin * cout * side**2 + 2 * 9 * cout * cout * side**2
        cin = cout
        side //= 2
    expected += 2 * 9 * 128 * 256 * side**2 + 2 * 9 * 256 * 256 * side**2  # bottleneck at 32x32
    prev = 256
    for up, cout in [(64, 128), (32, 64), (16, 32), (8, 16)]:
        expected += 2 * 4 * prev * up * side**2  # transposed conv: per input pixel
        side *= 2
        expected += 2 * 9 * (up + cout) * cout * side**2 + 2 * 9 * cout * cout * side**2
        prev = cout
    expected += 2 * 16 * 1 * side**2
    assert gflops(unet, 512) == pytest.approx(expected / 1e9, rel=1e-12)
    assert 21.0 < gflops(unet) < 21.3
    assert gflops(unet, 256) == pytest.approx(gflops(unet, 512) / 4)
    assert len(layer_flops(unet)) == 23  # 19 convs + 4 transposed convs


def test_mixed_precision_output_is_float32():
    old = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_float16")
        model = small_unet(filters=4, depth=2)
        hidden = model.get_layer("enc1_conv1")
        assert hidden.compute_dtype == "float16"
        y = model(np.full((1, 16, 16, 1), 128.0, "float32"))
        assert np.asarray(y).dtype == np.float32
    finally:
        keras.config.set_dtype_policy(old)


def test_relu_convolutions_start_from_he_normal(monkeypatch):
    import keras

    from dagm_helpers import model as model_mod

    net = model_mod.small_unet()
    relu_convs = [
        layer
        for layer in net.layers
        if isinstance(layer, keras.layers.Conv2D)
        and not isinstance(layer, keras.layers.Conv2DTranspose)
        and layer.name != "mask"
    ]
    assert len(relu_convs) == 18
    assert all(isinstance(layer.kernel_initializer, keras.initializers.HeNormal) for layer in relu_convs)
    monkeypatch.setattr(model_mod, "KERNEL_INIT", "glorot_uniform")
    glorot = model_mod.small_unet()
    assert isinstance(glorot.get_layer("enc1_conv1").kernel_initializer, keras.initializers.GlorotUniform)
