"""Export a Keras U-Net to an `ncnn <https://github.com/Tencent/ncnn>`_ network (``.param`` + ``.bin``).

Why ncnn: on the 2-core AVX2 CPU this project is tested on, float32 inference is already at the
matrix-multiply rate of the cores (OpenVINO reaches ~97% of it), and int8 is no faster without
VNNI. What still pays is doing less arithmetic: ncnn runs 3x3 convolutions with Winograd
F(4x4, 3x3) transforms, which need ~4x fewer multiplications, and is ~20% faster than OpenVINO on
this model at 512x512 with the same float32 numbers (max difference ~1e-6; ``docs/performance.md``).

The converter reads the Keras layer graph directly (no ONNX or PyTorch on the way) and supports
the layers ``model.small_unet`` builds: ``Rescaling`` right after the input (applied to the input
array instead), ``Conv2D`` (stride 1, ``same`` or ``valid``), ``BatchNormalization`` and
``Activation`` (folded into the (de)convolution before them; else a ReLU/Sigmoid layer), ``Dropout`` (dropped),
``MaxPooling2D``, ``Conv2DTranspose`` (kernel = stride), ``UpSampling2D`` and ``Concatenate`` on
the channel axis. Anything else raises :class:`~dagm_helpers.errors.ConfigError` naming the layer.

:func:`to_ncnn` converts in memory; :func:`save_ncnn` writes ``<stem>.param``/``<stem>.bin``
for deployment with ncnn's C++ or Python API (the input blob is ``in0``, raw grey values scaled
by :attr:`NcnnNet.scale`; the output blob name is in :attr:`NcnnNet.output`).
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["INPUT_BLOB", "NcnnNet", "load_net", "save_ncnn", "to_ncnn", "write_ncnn"]

#: ncnn's activation_type codes (Convolution/Deconvolution param 9)
_ACTIVATIONS = {"linear": 0, "relu": 1, "sigmoid": 4}
_MAGIC = "7767517"
INPUT_BLOB = "in0"


@dataclass
class NcnnNet:
    """An ncnn network in memory: the ``.param`` text, the ``.bin`` weights and how to feed it.

    Attributes:
        param: the network description (ncnn's text ``.param`` format).
        weights: the weights (ncnn's ``.bin`` format, float32).
        output: name of the output blob.
        scale, offset: the model's input ``Rescaling``; feed ``raw * scale + offset``.
        layers: ncnn layer types in order (for logs and tests).
    """

    param: str
    weights: bytes
    output: str
    scale: float = 1.0
    offset: float = 0.0
    layers: list[str] = field(default_factory=list)


@dataclass
class _Layer:
    kind: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, Any] = field(default_factory=dict)
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None


def _unsupported(layer: Any, why: str) -> ConfigError:
    return ConfigError(
        f"ncnn export: layer {layer.name!r} ({type(layer).__name__}) {why}; "
        "use the 'openvino' or 'tf' fast backend for this model"
    )


def _inputs(layer: Any) -> list[Any]:
    inp = layer.input
    return list(inp) if isinstance(inp, (list, tuple)) else [inp]


def _activation_code(layer: Any, name: str) -> int:
    if name not in _ACTIVATIONS:
        raise _unsupported(layer, f"has activation {name!r} (supported: {', '.join(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


def _weights(layer: Any, axes: tuple[int, int, int, int], kind: str, src: str, out: str) -> _Layer:
    """A (de)convolution record: kernel transposed to ncnn's (out, in, kh, kw), bias, activation."""
    weight = np.ascontiguousarray(np.asarray(layer.kernel, np.float32).transpose(axes))
    co, _, kh, kw = weight.shape
    bias = np.asarray(layer.bias, np.float32) if layer.use_bias else np.zeros(co, np.float32)
    act = _activation_code(layer, layer.activation.__name__)
    params = {0: co, 1: kw, 11: kh, 5: 1, 6: weight.size, 9: act}
    return _Layer(kind, layer.name, [src], [out], params, weight, bias)


def _conv(layer: Any, src: str, out: str) -> _Layer:
    cfg = layer.get_config()
    kh, kw = (int(s) for s in layer.kernel.shape[:2])
    if tuple(cfg.get("strides", (1, 1))) != (1, 1) or tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1):
        raise _unsupported(layer, "has strides or dilation other than 1")
    if cfg.get("groups", 1) != 1:  # data_format is checked for every layer in _graph
        raise _unsupported(layer, "is grouped")
    pad_h, pad_w = ((kh - 1) // 2, (kw - 1) // 2) if cfg["padding"] == "same" else (0, 0)
    if cfg["padding"] == "same" and (kh % 2 == 0 or kw % 2 == 0):
        raise _unsupported(layer, "has an even kernel with 'same' padding")
    rec = _weights(layer, (3, 2, 0, 1), "Convolution", src, out)  # Keras: (kh, kw, in, out)
    rec.params.update({4: pad_w, 14: pad_h})
    return rec


def _deconv(layer: Any, src: str, out: str) -> _Layer:
    cfg = layer.get_config()
    kh, kw = (int(s) for s in layer.kernel.shape[:2])
    sh, sw = (int(s) for s in cfg["strides"])
    if cfg["padding"] == "same" and (kh, kw) != (sh, sw):
        raise _unsupported(layer, "has 'same' padding with kernel != strides")
    if tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1) or cfg.get("output_padding") is not None:
        raise _unsupported(layer, "has dilation or output_padding")
    rec = _weights(layer, (2, 3, 0, 1), "Deconvolution", src, out)  # Keras: (kh, kw, out, in)
    rec.params.update({3: sw, 13: sh})
    return rec


def _fold_bn(layer: Any, conv: _Layer) -> None:
    """Fold an inference-mode BatchNormalization into the convolution before it."""
    assert conv.weight is not None and conv.bias is not None
    gamma = np.asarray(layer.gamma, np.float64) if layer.scale else 1.0
    beta = np.asarray(layer.beta, np.float64) if layer.center else 0.0
    mean = np.asarray(layer.moving_mean, np.float64)
    s = gamma / np.sqrt(np.asarray(layer.moving_variance, np.float64) + layer.epsilon)
    conv.weight = (conv.weight * s[:, None, None, None]).astype(np.float32)
    conv.bias = ((conv.bias - mean) * s + beta).astype(np.float32)


_WEIGHTED = {"Conv2D": _conv, "Conv2DTranspose": _deconv}


def _fold(
    layer: Any, cfg: dict, src: str, conv: _Layer | None, sole_reader: bool, out: str
) -> tuple[str, list[_Layer]]:
    """BatchNormalization / Activation: folded into the (de)convolution before it when that one
    feeds only this layer and has no activation yet; else a standalone ReLU/Sigmoid layer.
    Returns the blob that now holds the layer's output and the layers to add."""
    foldable = conv is not None and sole_reader and conv.params.get(9, 0) == 0
    if type(layer).__name__ == "BatchNormalization":
        if conv is None or not foldable or cfg.get("axis") not in (-1, [-1], 3, [3]):
            raise _unsupported(layer, "does not directly follow a convolution on the channel axis")
        _fold_bn(layer, conv)
        return src, []
    code = _activation_code(layer, cfg.get("activation"))
    if conv is not None and foldable:
        conv.params[9] = code
        return src, []
    if code == 0:  # linear
        return src, []
    return out, [_Layer({1: "ReLU", 4: "Sigmoid"}[code], layer.name, [src], [out])]


def _graph(model: Any) -> tuple[list[_Layer], str, float, float]:
    """Walk the functional model in order; returns ncnn layers, output blob, input scale/offset."""
    blob: dict[str, str] = {}  # Keras tensor name -> ncnn blob name
    uses: dict[str, int] = {}
    for layer in model.layers:
        if type(layer).__name__ != "InputLayer":
            for t in _inputs(layer):
                uses[t.name] = uses.get(t.name, 0) + 1
    produced: dict[str, _Layer] = {}
    out_layers: list[_Layer] = []
    scale, offset = 1.0, 0.0
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError("ncnn export: the model must have exactly one input and one output")
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            blob[layer.output.name] = INPUT_BLOB
            out_layers.append(_Layer("Input", INPUT_BLOB, [], [INPUT_BLOB]))
            continue
        ins = _inputs(layer)
        src = [blob[t.name] for t in ins]
        out = layer.output.name
        if (cfg := layer.get_config()).get("data_format", "channels_last") != "channels_last":
            raise _unsupported(layer, "is not channels_last")
        if kind == "Rescaling":
            if src != [INPUT_BLOB] or uses[ins[0].name] != 1 or scale != 1.0 or offset != 0.0:
                raise _unsupported(layer, "is not directly after the input")
            scale, offset = float(np.squeeze(cfg["scale"])), float(np.squeeze(cfg["offset"]))
            blob[out] = INPUT_BLOB
        elif kind in ("Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout"):
            blob[out] = src[0]  # identity at inference
        elif kind in ("BatchNormalization", "Activation"):
            blob[out], standalone = _fold(
                layer, cfg, src[0], produced.get(src[0]), uses[ins[0].name] == 1, out
            )
            out_layers.extend(standalone)
        elif kind in _WEIGHTED:
            rec = _WEIGHTED[kind](layer, src[0], out)
            out_layers.append(rec)
            produced[out] = rec
            blob[out] = out
        elif kind == "MaxPooling2D":
            (ph, pw), (sh, sw) = layer.pool_size, layer.strides
            if cfg["padding"] != "valid":
                raise _unsupported(layer, "has 'same' padding")
            params = {0: 0, 1: pw, 11: ph, 2: sw, 12: sh, 5: 1}  # max, kernel, stride, valid
            out_layers.append(_Layer("Pooling", layer.name, src, [out], params))
            blob[out] = out
        elif kind == "UpSampling2D":
            mode = {"nearest": 1, "bilinear": 2}.get(cfg["interpolation"])
            if mode is None:
                raise _unsupported(layer, f"uses {cfg['interpolation']!r} interpolation")
            fh, fw = (float(s) for s in cfg["size"])
            out_layers.append(_Layer("Interp", layer.name, src, [out], {0: mode, 1: fh, 2: fw}))
            blob[out] = out
        elif kind == "Concatenate":
            if cfg["axis"] not in (-1, 3):
                raise _unsupported(layer, "does not concatenate along the channel axis")
            out_layers.append(_Layer("Concat", layer.name, src, [out], {0: 0}))
            blob[out] = out
        else:
            raise _unsupported(layer, "is not supported by the ncnn exporter")
    return out_layers, blob[model.outputs[0].name], scale, offset


def _with_splits(layers: list[_Layer]) -> list[_Layer]:
    """ncnn needs an explicit ``Split`` for every blob read by more than one layer."""
    readers: dict[str, list[_Layer]] = {}
    for rec in layers:
        for b in rec.inputs:
            readers.setdefault(b, []).append(rec)
    result: list[_Layer] = []
    for rec in layers:
        result.append(rec)
        for b in rec.outputs:
            users = readers.get(b, [])
            if len(users) > 1:
                names = [f"{b}_{i}" for i in range(len(users))]
                result.append(_Layer("Split", f"{b}_split", [b], names))
                for name, user in zip(names, users, strict=True):
                    user.inputs = [name if x == b else x for x in user.inputs]
    return result


def _format(value: Any) -> str:
    return f"{value:.9g}" if isinstance(value, float) else str(int(value))


def to_ncnn(model: Any) -> NcnnNet:
    """Convert a Keras functional U-Net to an in-memory :class:`NcnnNet` (float32 weights)."""
    layers, output, scale, offset = _graph(model)
    layers = _with_splits(layers)
    blobs = {b for rec in layers for b in rec.outputs}
    lines = [_MAGIC, f"{len(layers)} {len(blobs)}"]
    weights = io.BytesIO()
    for rec in layers:
        params = " ".join(f"{k}={_format(v)}" for k, v in rec.params.items())
        lines.append(
            f"{rec.kind:<16} {rec.name:<28} {len(rec.inputs)} {len(rec.outputs)} "
            f"{' '.join(rec.inputs + rec.outputs)} {params}".rstrip()
        )
        if rec.weight is not None and rec.bias is not None:
            weights.write(struct.pack("<I", 0))  # tag 0: raw float32 weights follow
            weights.write(np.ascontiguousarray(rec.weight, "<f4").tobytes())
            weights.write(np.ascontiguousarray(rec.bias, "<f4").tobytes())
    return NcnnNet(
        "\n".join(lines) + "\n", weights.getvalue(), output, scale, offset, [r.kind for r in layers]
    )


def save_ncnn(model: Any, stem: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Convert ``model`` and write ``<stem>.param`` and ``<stem>.bin``; returns their paths."""
    return write_ncnn(to_ncnn(model), stem)


def write_ncnn(net: NcnnNet, stem: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a converted network as ``<stem>.param`` and ``<stem>.bin`` (each atomically)."""
    from ..atomic import write_bytes, write_text

    stem = Path(stem)
    param = write_text(stem.with_suffix(".param"), net.param)
    weights = write_bytes(stem.with_suffix(".bin"), net.weights)
    return param, weights


def load_net(net: NcnnNet, threads: int | None = None, **options: Any) -> Any:
    """An ``ncnn.Net`` loaded from ``net`` with Winograd convolutions on and fp32 storage.

    ``options``: further ``ncnn.Option`` attributes to set, e.g. ``use_winograd43_convolution=False``.
    """
    import ncnn

    loaded = ncnn.Net()
    opt = loaded.opt
    if threads:
        opt.num_threads = int(threads)
    # float32 storage and arithmetic everywhere: the masks must match TensorFlow's
    for name in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage"):
        if hasattr(opt, name):
            setattr(opt, name, False)
    opt.use_winograd_convolution = True
    for name, value in options.items():
        setattr(opt, name, value)
    # load from files: ncnn may keep pointers into memory it is given, files it reads are copied
    with tempfile.TemporaryDirectory(prefix="dagm-ncnn-") as tmp:
        param, weights = Path(tmp, "net.param"), Path(tmp, "net.bin")
        param.write_text(net.param)
        weights.write_bytes(net.weights)
        if loaded.load_param(str(param)) != 0 or loaded.load_model(str(weights)) != 0:
            raise ConfigError("ncnn rejected the exported network; please report this with the model")
    return loaded
