"""The tutorial's small U-Net, with optional variants, and its cost in FLOPs.

``small_unet()`` with its defaults rebuilds the tutorial's network exactly
(1,755,737 parameters):

* input ``(None, None, 1)``: raw grey values 0..255, any size divisible by 16;
* ``Rescaling(1/255)``: the tutorial *defines* a normalisation function but never
  connects it to the network, so its model trains on raw 0..255 values. Here the
  scaling is a real layer inside the model (not a ``Lambda``, which would make the
  saved file unloadable with ``safe_mode=True``), so every caller feeds raw pixels;
* encoder: per level two 3x3 ReLU ``same`` convolutions (16, 32, 64, 128 filters)
  and a 2x2 max-pooling;
* bottleneck: two 3x3 convolutions of 256 filters;
* decoder: per level ``Conv2DTranspose`` (64, 32, 16, 8 filters; kernel 2, stride 2),
  concatenation with the encoder output of the same resolution, two 3x3 ReLU
  convolutions (128, 64, 32, 16 filters);
* a 1x1 sigmoid convolution, computed in float32 even under mixed precision.

The options (all off by default) change width, depth, normalisation, dropout,
the upsampling operator and the convolution block; see ``small_unet``.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from .errors import ConfigError

UPSAMPLING_CHOICES = ("transpose", "bilinear")
BLOCK_CHOICES = ("conv", "dense")

__all__ = [
    "BLOCK_CHOICES",
    "all_layers",
    "UPSAMPLING_CHOICES",
    "gflops",
    "level_filters",
    "required_multiple",
    "small_unet",
]


def level_filters(filters: int = 16, width: float = 1.0, depth: int = 4) -> list[int]:
    """Filters of the encoder levels and the bottleneck: ``base * 2**i`` for i = 0..depth.

    ``base = max(1, round(filters * width))``; at the defaults ``[16, 32, 64, 128, 256]``.
    """
    base = max(1, int(round(filters * width)))
    return [base * 2**i for i in range(depth + 1)]


def _validate(
    input_channels: int,
    filters: int,
    depth: int,
    width: float,
    batch_norm: bool,
    dropout: float,
    upsampling: str,
    block: str,
    dense_layers: int,
    growth_rate: int | None,
) -> None:
    def bad(msg: str) -> ConfigError:
        return ConfigError(f"small_unet: {msg}")

    if isinstance(input_channels, bool) or not isinstance(input_channels, int) or input_channels < 1:
        raise bad(
            f"input_channels must be an integer >= 1 (1 for DAGM's grey images), got {input_channels!r}"
        )
    if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
        raise bad(f"filters must be an integer >= 1 (the tutorial uses 16), got {filters!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 6:
        raise bad(f"depth must be an integer from 1 to 6 (the tutorial uses 4), got {depth!r}")
    if (
        isinstance(width, bool)
        or not isinstance(width, (int, float))
        or not math.isfinite(width)
        or width <= 0
    ):
        raise bad(f"width must be a number > 0 (1.0 is the tutorial's width), got {width!r}")
    if not isinstance(batch_norm, bool):
        raise bad(f"batch_norm must be True or False, got {batch_norm!r}")
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, (int, float))
        or not math.isfinite(dropout)
        or not 0.0 <= dropout < 1.0
    ):
        raise bad(f"dropout must be a rate in [0, 1), got {dropout!r}")
    if upsampling not in UPSAMPLING_CHOICES:
        raise bad(f"upsampling must be one of {', '.join(UPSAMPLING_CHOICES)}; got {upsampling!r}")
    if block not in BLOCK_CHOICES:
        raise bad(f"block must be one of {', '.join(BLOCK_CHOICES)}; got {block!r}")
    if isinstance(dense_layers, bool) or not isinstance(dense_layers, int) or dense_layers < 1:
        raise bad(f"dense_layers must be an integer >= 1, got {dense_layers!r}")
    if growth_rate is not None and (
        isinstance(growth_rate, bool) or not isinstance(growth_rate, int) or growth_rate < 1
    ):
        raise bad(f"growth_rate must be None or an integer >= 1, got {growth_rate!r}")


#: initialiser of the ReLU convolutions (He-normal; the tutorial used Keras' default "glorot_uniform")
KERNEL_INIT = "he_normal"


#: momentum of the batch-norm moving statistics (Keras' default 0.99 averages over ~100
#: steps: too slow for runs of a few hundred steps, whose early checkpoints then predict garbage)
BN_MOMENTUM = 0.9


def _conv(x: keras.KerasTensor, n: int, kernel: int, batch_norm: bool, name: str) -> keras.KerasTensor:
    """3x3 (or kxk) 'same' convolution + optional batch norm + ReLU."""
    if batch_norm:
        x = layers.Conv2D(
            n, kernel, padding="same", use_bias=False, kernel_initializer=KERNEL_INIT, name=f"{name}_conv"
        )(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
        return layers.Activation("relu", name=f"{name}_relu")(x)
    # He initialisation suits ReLU (and is what the U-Net paper uses); with Keras' default
    # Glorot init the plain network regularly died (all outputs 0) at Adam 1e-3 here.
    return layers.Conv2D(
        n, kernel, padding="same", activation="relu", kernel_initializer=KERNEL_INIT, name=name
    )(x)


def _conv_block(
    x: keras.KerasTensor,
    n: int,
    *,
    batch_norm: bool,
    dropout: float,
    block: str,
    dense_layers: int,
    growth_rate: int,
    name: str,
) -> keras.KerasTensor:
    """The tutorial's two 3x3 convolutions, or a dense block with a 1x1 transition to ``n`` maps."""
    if block == "conv":
        x = _conv(x, n, 3, batch_norm, f"{name}_conv1")
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"{name}_drop")(x)
        return _conv(x, n, 3, batch_norm, f"{name}_conv2")
    # DenseNet / FC-DenseNet (Jégou et al. 2017) dense block: every layer sees the
    # concatenation of the block input and all earlier layers' outputs and adds
    # `growth_rate` new maps; a 1x1 transition then compresses to `n` maps so the
    # U-Net's skips, pooling and upsampling stay as in the tutorial.
    features = [x]
    for i in range(dense_layers):
        inp = features[0] if len(features) == 1 else layers.Concatenate(name=f"{name}_cat{i}")(features)
        new = _conv(inp, growth_rate, 3, batch_norm, f"{name}_dense{i + 1}")
        if dropout > 0:
            new = layers.Dropout(dropout, name=f"{name}_drop{i + 1}")(new)
        features.append(new)
    x = layers.Concatenate(name=f"{name}_cat")(features)
    return _conv(x, n, 1, batch_norm, f"{name}_transition")


def small_unet(
    input_channels: int = 1,
    filters: int = 16,
    depth: int = 4,
    width: float = 1.0,
    batch_norm: bool = False,
    dropout: float = 0.0,
    upsampling: str = "transpose",
    block: str = "conv",
    name: str = "small_unet",
    *,
    dense_layers: int = 4,
    growth_rate: int | None = None,
) -> keras.Model:
    """Build the tutorial's U-Net (defaults: exactly 1,755,737 parameters) or a variant.

    Args:
        input_channels: channels of the input (1 for DAGM's grey images).
        filters: filters of the first level; level i has ``filters * width * 2**i``.
        depth: number of pooling levels (1..6); inputs must be divisible by ``2**depth``
            (``required_multiple(model)``), which ``infer.predict_proba`` pads to.
        width: multiplier on every filter count (the tutorial's "more kernels").
        batch_norm: batch normalisation after every 3x3 convolution (conv without bias,
            BN with momentum ``BN_MOMENTUM``, then ReLU). It makes the network learn several
            times faster from scratch, which is what the ``cpu`` profile needs.
        dropout: rate of a ``Dropout`` between the two convolutions of every block
            (after each dense layer in dense blocks); 0 disables it.
        upsampling: ``"transpose"`` (the tutorial's 2x2 stride-2 ``Conv2DTranspose``) or
            ``"bilinear"`` (``UpSampling2D`` bilinear followed by a 1x1 convolution to the
            same number of maps, which avoids checkerboard artefacts).
        block: ``"conv"`` (two 3x3 convolutions) or ``"dense"`` (a DenseNet-style dense
            block of ``dense_layers`` 3x3 convolutions adding ``growth_rate`` maps each,
            all concatenated, then a 1x1 transition convolution to the level's filters).
        name: model name.
        dense_layers: layers per dense block (``block="dense"`` only).
        growth_rate: maps each dense layer adds; default ``filters * width`` (16, as
            FC-DenseNet's k=16).

    Raises:
        ConfigError: an argument is out of range, naming it and the allowed values.

    The input is raw 0..255 float; the first layer is ``Rescaling(1/255)``. (The tutorial
    defined its ``/255`` normalisation but never connected it to the model.)
    The output is a float32 sigmoid probability map ``(None, None, 1)`` even under a
    ``mixed_float16`` policy.
    """
    _validate(
        input_channels,
        filters,
        depth,
        width,
        batch_norm,
        dropout,
        upsampling,
        block,
        dense_layers,
        growth_rate,
    )
    dropout = float(dropout)
    sizes = level_filters(filters, width, depth)
    growth = growth_rate if growth_rate is not None else sizes[0]
    blk = {
        "batch_norm": batch_norm,
        "dropout": dropout,
        "block": block,
        "dense_layers": dense_layers,
        "growth_rate": growth,
    }

    inputs = keras.Input(shape=(None, None, input_channels), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)

    skips = []
    for level in range(depth):
        x = _conv_block(x, sizes[level], name=f"enc{level + 1}", **blk)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level + 1}_pool")(x)

    x = _conv_block(x, sizes[depth], name="bottleneck", **blk)

    for level in reversed(range(depth)):
        tag = f"dec{level + 1}"
        up_maps = max(1, sizes[level] // 2)  # tutorial: 64, 32, 16, 8
        if upsampling == "transpose":
            x = layers.Conv2DTranspose(up_maps, 2, strides=2, padding="same", name=f"{tag}_up")(x)
        else:
            x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{tag}_resize")(x)
            x = layers.Conv2D(up_maps, 1, padding="same", name=f"{tag}_up")(x)
        x = layers.Concatenate(name=f"{tag}_concat")([x, skips[level]])
        x = _conv_block(x, sizes[level], name=tag, **blk)

    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)
    return keras.Model(inputs, outputs, name=name)


def required_multiple(model: keras.Model) -> int:
    """Spatial multiple the model's input needs: the product of the strides of its pooling and
    strided-convolution layers (``2**4 = 16`` for the tutorial's U-Net).

    Works on loaded models too, nested models included (it reads the layers, not the build arguments).
    """
    factor = 1
    for layer in all_layers(model):
        if isinstance(layer, layers.MaxPooling2D | layers.AveragePooling2D) or (
            isinstance(layer, layers.Conv2D) and not isinstance(layer, layers.Conv2DTranspose)
        ):
            strides = layer.strides if layer.strides is not None else layer.pool_size
            factor *= int(strides[0] if isinstance(strides, tuple | list) else strides)
    return max(1, factor)


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of ``model``, the layers of nested models in their place (no Keras private helpers)."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(all_layers(layer))
        else:
            out.append(layer)
    return out


def layer_flops(model: keras.Model, size: int | tuple[int, int] = 512) -> list[tuple[str, float]]:
    """Forward-pass FLOPs of every convolution layer for a ``size`` x ``size`` input.

    A multiply-add counts as 2 FLOPs. ``Conv2D``: ``2*kh*kw*cin*cout*Hout*Wout``;
    ``Conv2DTranspose``: ``2*kh*kw*cin*cout*Hin*Win`` (each input pixel scatters a
    kh x kw x cout patch). Biases, activations, batch norm, pooling, concatenation,
    rescaling and resizing are elementwise (well under 1% of the total here) and not counted.
    """
    h, w = (size, size) if isinstance(size, int) else size
    channels = model.inputs[0].shape[-1]
    inp = keras.Input(shape=(h, w, channels))
    fixed = keras.models.clone_model(model, input_tensors=inp)
    rows = []
    for layer in all_layers(fixed):
        if isinstance(layer, layers.Conv2DTranspose):
            _, hin, win, cin = layer.input.shape
            kh, kw = layer.kernel_size
            rows.append((layer.name, 2.0 * kh * kw * cin * layer.filters * hin * win))
        elif isinstance(layer, layers.Conv2D):
            _, hin, win, cin = layer.input.shape
            _, hout, wout, cout = layer.output.shape
            kh, kw = layer.kernel_size
            rows.append((layer.name, 2.0 * kh * kw * (cin // layer.groups) * cout * hout * wout))
    return rows


def gflops(model: keras.Model, size: int | tuple[int, int] = 512) -> float:
    """Forward-pass GFLOPs per image at ``size`` (multiply-add = 2 FLOPs; convolutions only).

    About 21.1 GFLOP for the tutorial's network at 512x512; see ``layer_flops``.
    """
    return sum(f for _, f in layer_flops(model, size)) / 1e9
