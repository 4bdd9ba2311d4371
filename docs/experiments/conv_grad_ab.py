"""Interleaved A/B of the U-Net's training step with three weight-gradient variants, oneDNN on.

    python docs/experiments/conv_grad_ab.py                        # 512x512, batch 10, ~8 minutes
    python docs/experiments/conv_grad_ab.py --size 160 --batch 20 --batch-norm --images 100

Variants, each a U-Net built from the same seed and timed in turn in every round (same process,
so they share the machine's state; the median optimizer step inside ``fit``, as ``bench`` times it):

``onednn``
    TensorFlow's own gradients (oneDNN on): ``train_onednn_only_img_s`` in ``bench``, with ``tf.data``.
``copies``
    the eighth session's ``conv_grad``: each kernel tap's shifted input sliced out of the padded
    activations as a strided copy, then one matrix product per tap.
``views``
    the current ``conv_grad``: the same products on row blocks of the flattened, padded input,
    which TensorFlow slices without copying.

Seen on the CI-like machine (ninth session, 512x512, batch 10, 2 rounds): onednn 0.76-0.77,
copies 0.92, views 0.97-0.99 img/s. At the ``cpu`` profile's 160x160 crops, batch 20, with batch
norm (3 rounds): onednn 7.87-7.90, copies 7.56-7.82, views 7.92-8.02 img/s.
"""

from __future__ import annotations

import argparse
import functools
import os

os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"  # before TensorFlow is imported: it reads it once
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dagm_helpers.speed import conv_grad  # noqa: E402


def _filter_grad_copies(x, dy, kh: int, kw: int):
    """The eighth session's weight gradient: a strided copy of the shifted input per kernel tap."""
    ci, co = x.shape[-1], dy.shape[-1]
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    xp = tf.pad(x, [[0, 0], [ph, kh - 1 - ph], [pw, kw - 1 - pw], [0, 0]])
    d = tf.reshape(dy, [-1, co])
    taps = [
        tf.matmul(tf.reshape(xp[:, i : i + h, j : j + w, :], [-1, ci]), d, transpose_a=True)
        for i in range(kh)
        for j in range(kw)
    ]
    return tf.reshape(tf.stack(taps), [kh, kw, ci, co])


def _patch_copies(model) -> int:
    count = 0
    for layer in conv_grad._all_layers(model):
        if conv_grad.eligible(layer) and layer.kernel_size != (1, 1):
            layer.convolution_op = functools.partial(conv_grad.conv2d_same, filter_grad=_filter_grad_copies)
            count += 1
    return count


VARIANTS = {
    "onednn": lambda model: 0,
    "copies": _patch_copies,
    "views": conv_grad.use_fast_conv_gradients,
}


def main() -> None:
    import keras

    from dagm_helpers.losses import DiceLoss
    from dagm_helpers.model import small_unet
    from dagm_helpers.speed.bench import _median_step_s
    from dagm_helpers.speed.fast import onednn_enabled

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--images", type=int, default=30, help="images per timed fit call")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-norm", action="store_true", help="the cpu profile's network")
    parser.add_argument(
        "--also-min-channels",
        type=int,
        default=None,
        help="add a 'views<N>' variant: matrix products from in x out channels >= N (default 1024)",
    )
    args = parser.parse_args()
    variants = dict(VARIANTS)
    if args.also_min_channels is not None:
        n = args.also_min_channels
        variants[f"views{n}"] = lambda model: conv_grad.use_fast_conv_gradients(model, min_matmul_channels=n)
    if not onednn_enabled():
        raise SystemExit("oneDNN is off in this process: this comparison is about oneDNN's kernels")

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, args.size, args.size, 1)).astype(np.float32)
    y = (rng.random((args.images, args.size, args.size, 1)) < 0.05).astype(np.float32)
    data = (
        tf.data.Dataset.from_tensor_slices((x, y)).shuffle(args.images, seed=0).batch(args.batch).prefetch(2)
    )
    models = {}
    for name, patch in variants.items():
        keras.utils.set_random_seed(0)
        model = small_unet(batch_norm=args.batch_norm)
        print(f"{name}: {patch(model)} layers patched", flush=True)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=DiceLoss())
        models[name] = model
    rates: dict[str, list[float]] = {name: [] for name in models}
    for r in range(args.rounds):
        for name, model in models.items():
            step = _median_step_s(lambda cbs, m=model: m.fit(data, epochs=1, verbose=0, callbacks=cbs), 2)
            rates[name].append(args.batch / step)
            print(f"round {r}  {name:9s} {rates[name][-1]:.3f} img/s", flush=True)
    for name, values in rates.items():
        print(f"{name:9s} " + " ".join(f"{v:.3f}" for v in values))


if __name__ == "__main__":
    main()
