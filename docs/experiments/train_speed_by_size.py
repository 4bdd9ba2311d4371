"""Training images per second of the tutorial's ``fit`` and of the fast path, by image size.

    python docs/experiments/train_speed_by_size.py                  # 128 and 256, about 8 minutes
    python docs/experiments/train_speed_by_size.py --sizes 512 --images 20

The same measurement as ``bench`` (median optimizer step inside ``fit``, timed by a callback,
one compiling call first), at other image sizes and with more steps. Three columns: the
tutorial's ``fit`` in TensorFlow's default setup (this process), the same ``fit`` with oneDNN
on, and the fast path (oneDNN on, matrix-product weight gradients, ``tf.data``), both measured
in a second process started with oneDNN on (``bench.fast_path_throughput``).

Seen on the CI-like machine: before oneDNN (seventh session, ``--images 60 --repeats 3``) the
fast path of then (XLA + ``tf.data``) gave 1.05x at 128x128 and 1.10x at 256x256. Eighth
session: see ``docs/performance.md`` (Training).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dagm_helpers.speed.bench import _baseline_train_throughput, _fast_path_env, _in_child  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--images", type=int, default=60, help="images per timed epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per candidate")
    args = parser.parse_args()
    print("size  baseline_img_s  onednn_only_img_s  fast_img_s  fast/baseline")
    for size in args.sizes:
        shape = dict(size=size, batch=args.batch, n=args.images, repeats=args.repeats)
        base = _baseline_train_throughput(**shape)["baseline_train_img_s"]
        fast = _in_child("fast_path_throughput", shape, _fast_path_env(), 3600)
        print(
            f"{size:4d}  {base:14.2f}  {fast['train_onednn_only_img_s']:17.2f}  {fast['train_img_s']:10.2f}"
            f"  {fast['train_img_s'] / base:13.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
