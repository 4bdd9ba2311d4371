"""Faster CPU gradients for the U-Net's 3x3 convolutions: same numbers, other kernels.

Profiling a 512x512 training step on the 2-core CI machine (``docs/performance.md``) showed
that TensorFlow spends most of the step in ``Conv2DBackpropFilter`` (the weight gradient),
which runs at a third of the forward convolution's speed there, even with oneDNN. For a
stride-1 'same' convolution the weight gradient is, for each of the k x k kernel taps, one
matrix product of the shifted input (``pixels x in_channels``) with the output gradient
(``pixels x out_channels``); these products run at the matrix-multiply rate, and the
shifted input is a view (a block of rows of the flattened, padded input), not a copy. The input
gradient is computed as a forward convolution of the output gradient with the flipped,
transposed kernel, which is as fast as the forward pass with or without oneDNN.

:func:`use_fast_conv_gradients` routes a model's eligible ``Conv2D`` layers through
:func:`conv2d_same`. Only the gradient changes: the forward pass, the weights, the saved
model (``.keras`` files keep plain ``Conv2D`` layers) and the results within float32
rounding stay the same. For CPU training of full-size images; on a GPU keep cuDNN's own
gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["MIN_MATMUL_CHANNELS", "conv2d_same", "eligible", "use_fast_conv_gradients"]

#: in_channels x out_channels from which the matrix-product weight gradient is used; below it
#: (the 512x512 layers with 1-32 channels) TensorFlow's own kernel was as fast or faster
MIN_MATMUL_CHANNELS = 1024


def _filter_grad_matmul(x: Any, dy: Any, kh: int, kw: int) -> Any:
    """Weight gradient of a stride-1 'same' convolution as kh*kw matrix products, without copies.

    ``x`` is zero-padded for the convolution and ``dy`` padded to the same layout (its valid pixels
    top-left, zeros in the extra rows and columns). Flattened to rows of channels, the input pixel
    under kernel tap (i, j) of the output pixel in row q is row ``q + i * padded_width + j``, so
    each tap's shifted input is a contiguous block of rows: a slice of the first dimension, which
    TensorFlow hands out without copying. Rows that run past an image's edge meet zeros in ``dy``.
    """
    import tensorflow as tf

    ci, co = x.shape[-1], dy.shape[-1]
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    xp = tf.pad(x, [[0, 0], [ph, kh - 1 - ph], [pw, kw - 1 - pw], [0, 0]])
    dyp = tf.pad(dy, [[0, 0], [0, kh - 1], [0, kw - 1], [0, 0]])
    shape = tf.shape(xp)
    padded_width = shape[2]
    rows = shape[0] * shape[1] * padded_width - (kh - 1) * padded_width - (kw - 1)
    xf = tf.reshape(xp, [-1, ci])
    d = tf.slice(tf.reshape(dyp, [-1, co]), [0, 0], [rows, co])
    taps = [
        tf.matmul(tf.slice(xf, [i * padded_width + j, 0], [rows, ci]), d, transpose_a=True)
        for i in range(kh)
        for j in range(kw)
    ]
    return tf.reshape(tf.stack(taps), [kh, kw, ci, co])


def conv2d_same(
    x: Any,
    kernel: Any,
    min_matmul_channels: int = MIN_MATMUL_CHANNELS,
    filter_grad: Callable[[Any, Any, int, int], Any] | None = None,
) -> Any:
    """``tf.nn.conv2d(x, kernel, 1, "SAME")`` (NHWC, odd square kernel) with the faster gradients.

    ``filter_grad(x, dy, kh, kw)`` replaces the matrix-product weight gradient of the layers with
    in x out channels >= ``min_matmul_channels`` (for experiments that compare variants).
    """
    filter_grad = filter_grad or _filter_grad_matmul
    import tensorflow as tf

    @tf.custom_gradient
    def conv(x, kernel):
        y = tf.nn.conv2d(x, kernel, 1, "SAME")

        def grad(dy):
            kh, kw, ci, co = kernel.shape
            flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
            dx = tf.nn.conv2d(dy, flipped, 1, "SAME")
            if ci * co >= min_matmul_channels:
                dk = filter_grad(x, dy, kh, kw)
            else:
                dk = tf.raw_ops.Conv2DBackpropFilter(
                    input=x,
                    filter_sizes=tf.shape(kernel),
                    out_backprop=dy,
                    strides=[1, 1, 1, 1],
                    padding="SAME",
                )
            return dx, dk

        return y, grad

    return conv(x, kernel)


def eligible(layer: Any) -> bool:
    """True for a plain ``keras.layers.Conv2D`` with an odd square kernel, stride 1, 'same'
    padding, no dilation, one group and channels-last data: the case :func:`conv2d_same` handles."""
    import keras

    if type(layer) is not keras.layers.Conv2D:
        return False
    kh, kw = layer.kernel_size
    return (
        kh == kw
        and kh % 2 == 1
        and tuple(layer.strides) == (1, 1)
        and layer.padding == "same"
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.groups == 1
        and layer.data_format == "channels_last"
    )


def use_fast_conv_gradients(model: Any, min_matmul_channels: int = MIN_MATMUL_CHANNELS) -> int:
    """Make every eligible 3x3 (odd, square) ``Conv2D`` layer of ``model`` use :func:`conv2d_same`;
    return how many layers now do. Call before ``compile``/``fit`` (a function traced earlier
    keeps the old gradients). TensorFlow backend only."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"fast conv gradients need the TensorFlow backend, not {keras.backend.backend()!r}"
        )
    count = 0
    from ..model import all_layers

    for layer in all_layers(model):
        if eligible(layer) and layer.kernel_size != (1, 1):  # a 1x1 gradient is a matrix product already
            # Keras' own override point for the convolution (keras-io's StandardizedConv2D uses it)
            layer.convolution_op = lambda inputs, kernel, m=min_matmul_channels: conv2d_same(
                inputs, kernel, m
            )
            count += 1
    return count
