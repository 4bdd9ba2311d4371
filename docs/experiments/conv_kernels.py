"""Where a 512x512 training step's time goes: each 3x3 convolution's kernels, timed alone.

    python docs/experiments/conv_kernels.py            # TensorFlow's default setup and oneDNN on, ~6 minutes

For every 3x3 convolution shape of the tutorial U-Net at 512x512, batch 10, GFLOP/s of: the
forward convolution; the input gradient as TensorFlow computes it (``Conv2DBackpropInput``) and
as a forward convolution of the output gradient with the flipped kernel; the weight gradient as
TensorFlow computes it (``Conv2DBackpropFilter``) and as one matrix product per kernel tap (what
``dagm_helpers.speed.conv_grad`` does from ``MIN_MATMUL_CHANNELS``). Every variant is checked against
TensorFlow's result. Each setting runs in its own process, because TensorFlow reads
``TF_ENABLE_ONEDNN_OPTS`` once, at import. Best of 3 calls after one warm-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (spatial size, in channels, out channels) of the U-Net's 3x3 convolutions at 512x512 (repeats merged)
SHAPES = [
    (512, 16, 16),
    (512, 32, 16),
    (256, 16, 32),
    (256, 32, 32),
    (256, 64, 32),
    (128, 32, 64),
    (128, 64, 64),
    (128, 128, 64),
    (64, 64, 128),
    (64, 128, 128),
    (64, 256, 128),
    (32, 128, 256),
    (32, 256, 256),
]
BATCH = 10


def _best_s(fn, repeats: int = 3) -> float:
    fn().numpy()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn().numpy()
        best = min(best, time.perf_counter() - t0)
    return best


def measure() -> None:
    import tensorflow as tf

    from dagm_helpers.speed.conv_grad import _filter_grad_matmul
    from dagm_helpers.speed.fast import onednn_enabled

    print(f"oneDNN {'on' if onednn_enabled() else 'off'}: GFLOP/s (batch {BATCH})")
    print("size  in  out   forward  dx:TF  dx:conv  dW:TF  dW:matmul")
    for h, ci, co in SHAPES:
        x = tf.random.normal((BATCH, h, h, ci))
        w = tf.random.normal((3, 3, ci, co))
        dy = tf.random.normal((BATCH, h, h, co))
        flipped = tf.transpose(tf.reverse(w, [0, 1]), [0, 1, 3, 2])
        fns = {
            "forward": tf.function(lambda x=x, w=w: tf.nn.conv2d(x, w, 1, "SAME")),
            "dx_tf": tf.function(
                lambda w=w, dy=dy, s=[BATCH, h, h, ci]: tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=s, filter=w, out_backprop=dy, strides=[1, 1, 1, 1], padding="SAME"
                )
            ),
            "dx_conv": tf.function(lambda dy=dy, f=flipped: tf.nn.conv2d(dy, f, 1, "SAME")),
            "dw_tf": tf.function(
                lambda x=x, dy=dy, s=[3, 3, ci, co]: tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=s, out_backprop=dy, strides=[1, 1, 1, 1], padding="SAME"
                )
            ),
            "dw_matmul": tf.function(lambda x=x, dy=dy: _filter_grad_matmul(x, dy, 3, 3)),
        }
        for a, b in (("dx_tf", "dx_conv"), ("dw_tf", "dw_matmul")):
            ra, rb = fns[a](), fns[b]()
            rel = float(tf.reduce_max(tf.abs(ra - rb)) / tf.reduce_max(tf.abs(ra)))
            assert rel < 1e-4, (h, ci, co, a, b, rel)
        gflop = 2 * BATCH * h * h * 9 * ci * co / 1e9
        rates = [gflop / _best_s(fns[k]) for k in ("forward", "dx_tf", "dx_conv", "dw_tf", "dw_matmul")]
        print(f"{h:4d} {ci:3d} {co:4d}  " + "  ".join(f"{r:7.1f}" for r in rates), flush=True)


def main() -> None:
    if "--child" in sys.argv:
        measure()
        return
    for value in (None, "1"):
        env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
        if value is not None:
            env["TF_ENABLE_ONEDNN_OPTS"] = value
        subprocess.run([sys.executable, __file__, "--child"], env=env, check=True)
        print()


if __name__ == "__main__":
    main()
