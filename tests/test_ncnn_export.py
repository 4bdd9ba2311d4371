"""ncnn export: the network text and weights are what the Keras model holds, and ncnn runs it
with TensorFlow's numbers for every model variant the package builds."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from _nets import decisive_head  # noqa: E402

from dagm_helpers.errors import ConfigError  # noqa: E402
from dagm_helpers.model import small_unet  # noqa: E402
from dagm_helpers.speed import ncnn_export  # noqa: E402

VARIANTS = {
    "tutorial": {},
    "batch_norm": {"batch_norm": True},
    "bilinear": {"upsampling": "bilinear"},
    "dense": {"block": "dense", "dense_layers": 2},
    "dropout_bn": {"dropout": 0.2, "batch_norm": True},
}


def _model(**kwargs):
    keras.utils.set_random_seed(3)
    m = small_unet(filters=4, **kwargs)
    rng = np.random.default_rng(4)
    for layer in m.layers:  # inference statistics far from the identity, so folding is tested
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c).astype("f4"),
                    rng.normal(0, 0.2, c).astype("f4"),
                    rng.normal(0, 0.2, c).astype("f4"),
                    rng.uniform(0.5, 2.0, c).astype("f4"),
                ]
            )
    return m


def _param_layers(param: str) -> list[list[str]]:
    lines = param.splitlines()
    assert lines[0] == "7767517"
    n_layers, n_blobs = (int(v) for v in lines[1].split())
    rows = [line.split() for line in lines[2:]]
    assert len(rows) == n_layers
    outputs = [b for r in rows for b in r[4 + int(r[2]) : 4 + int(r[2]) + int(r[3])]]
    assert len(outputs) == n_blobs == len(set(outputs))  # every blob written exactly once
    return rows


def test_param_text_and_weights_describe_the_model():
    m = _model(batch_norm=True)
    net = ncnn_export.to_ncnn(m)
    rows = _param_layers(net.param)
    kinds = [r[0] for r in rows]
    # BN and ReLU are folded into the 19 convolutions; one Split per skip connection
    assert kinds.count("Convolution") == 19 and kinds.count("Deconvolution") == 4
    assert kinds.count("Split") == 4 and kinds.count("Concat") == 4 and kinds.count("Pooling") == 4
    assert net.layers == kinds and "BatchNorm" not in kinds
    # every blob read is written before, and read once (Splits fan out the skips)
    written, read = {"in0"}, []
    for r in rows:
        ins = r[4 : 4 + int(r[2])]
        assert set(ins) <= written, r
        read += ins
        written.update(r[4 + int(r[2]) : 4 + int(r[2]) + int(r[3])])
    assert len(read) == len(set(read))

    # weights: one 4-byte tag + weights + bias per (de)convolution, float32; BN adds nothing
    def outputs(layer) -> int:  # Conv2D kernels are (kh, kw, in, out), transposed ones (kh, kw, out, in)
        return int(layer.kernel.shape[-2 if isinstance(layer, keras.layers.Conv2DTranspose) else -1])

    convs = [
        layer for layer in m.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))
    ]
    expected = sum(4 + 4 * int(np.prod(c.kernel.shape)) + 4 * outputs(c) for c in convs)
    assert len(net.weights) == expected
    assert net.scale == pytest.approx(1 / 255) and net.offset == 0.0
    assert net.output == m.outputs[0].name
    mask = next(r for r in rows if r[1] == "mask")
    assert "9=4" in mask  # sigmoid fused into the 1x1 convolution


def test_unsupported_layers_are_named():
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", strides=2, name="strided")(inputs)
    with pytest.raises(ConfigError, match="'strided'.*strides"):
        ncnn_export.to_ncnn(keras.Model(inputs, x))
    y = keras.layers.Conv2D(4, 3, padding="same", name="c")(inputs)
    y = keras.layers.Activation("tanh", name="squash")(y)
    with pytest.raises(ConfigError, match="'squash'.*tanh.*openvino"):
        ncnn_export.to_ncnn(keras.Model(inputs, y))


def test_save_writes_both_files(tmp_path):
    m = _model()
    param, weights = ncnn_export.save_ncnn(m, tmp_path / "unet")
    net = ncnn_export.to_ncnn(m)
    assert param.name == "unet.param" and param.read_text() == net.param
    assert weights.name == "unet.bin" and weights.read_bytes() == net.weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.bin", "unet.param"]


def _odd_layers_model():
    """Layers small_unet does not combine this way: an input offset, BN after a transposed
    convolution, a standalone ReLU on a concatenation, nearest upsampling, a sigmoid layer."""
    keras.utils.set_random_seed(6)
    L = keras.layers
    inputs = keras.Input((None, None, 1))
    x = L.Conv2D(4, 3, padding="same", activation="relu")(L.Rescaling(1 / 127.5, offset=-1.0)(inputs))
    up = L.Conv2DTranspose(4, 2, strides=2, use_bias=False)(L.MaxPooling2D(2)(x))
    up = L.Activation("relu")(L.BatchNormalization()(up))
    y = L.Activation("relu")(L.Concatenate()([up, x]))
    y = L.Conv2D(1, 1, name="mask")(L.UpSampling2D(2, interpolation="nearest")(y))
    m = keras.Model(inputs, L.Activation("sigmoid", name="prob")(y))
    m.layers[5].set_weights(
        [
            np.linspace(0.5, 1.5, 4),
            np.linspace(-0.2, 0.2, 4),
            np.linspace(-0.3, 0.3, 4),
            np.linspace(0.5, 2, 4),
        ]
    )
    return m, 2


@pytest.mark.parametrize("variant", [*sorted(VARIANTS), "odd_layers"])
def test_ncnn_matches_tensorflow(variant):
    ncnn = pytest.importorskip("ncnn")

    m, upscale = _odd_layers_model() if variant == "odd_layers" else (_model(**VARIANTS[variant]), 1)
    x = np.random.default_rng(5).integers(0, 256, (2, 48, 80, 1)).astype(np.float32)
    decisive_head(m, x)
    ref = np.asarray(m(x, training=False))[..., 0]
    assert ref.shape == (2, 48 * upscale, 80 * upscale)
    exported = ncnn_export.to_ncnn(m)
    if variant == "odd_layers":
        assert {"ReLU", "Interp", "Deconvolution"} <= set(exported.layers) and exported.offset == -1.0
    net = ncnn_export.load_net(exported, threads=2)
    for image, expected in zip(x, ref, strict=True):
        scaled = np.ascontiguousarray(image[None, :, :, 0] * exported.scale + exported.offset)
        ex = net.create_extractor()
        ex.input(ncnn_export.INPUT_BLOB, ncnn.Mat(scaled))
        status, out = ex.extract(exported.output)
        assert status == 0
        np.testing.assert_allclose(np.array(out)[0], expected, atol=1e-4)
    assert 0.05 < float(np.mean(ref >= 0.5)) < 0.95  # the outputs vary, so agreement means something


def test_load_net_applies_options_and_refuses_unknown_ones():
    pytest.importorskip("ncnn")
    exported = ncnn_export.to_ncnn(small_unet(filters=4, depth=2))
    default = ncnn_export.load_net(exported)
    assert default.opt.use_winograd_convolution is True and default.opt.use_bf16_storage is False
    direct = ncnn_export.load_net(exported, threads=1, use_winograd_convolution=False)
    assert direct.opt.use_winograd_convolution is False and direct.opt.num_threads == 1
    with pytest.raises(AttributeError):  # a misspelt option must not be ignored silently
        ncnn_export.load_net(exported, use_winograd_convolutoin=False)
