"""Training images per second of the tutorial's ``fit`` and of the fast path, by image size.

    python docs/experiments/train_speed_by_size.py                  # 128 and 256, about 6 minutes
    python docs/experiments/train_speed_by_size.py --sizes 512 --images 20

The same measurement as ``bench`` (``bench._train_throughput``: median optimizer step inside
``fit``, timed by a callback, one compiling call first), at smaller images and with more steps,
so that the fast path's gain at sizes below 512x512 is measured rather than guessed. Seen on
the CI-like machine (seventh session, quiet, ``--images 60 --repeats 3``): 1.05x at 128x128
(10.31 against 10.83 img/s), 1.10x at 256x256 (2.54 against 2.78 img/s).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dagm_helpers.bench import _train_throughput  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--images", type=int, default=60, help="images per timed epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per candidate")
    args = parser.parse_args()
    print("size  baseline_img_s  fast_img_s  ratio")
    for size in args.sizes:
        r = _train_throughput(size, args.batch, args.images, args.repeats)
        base, fast = r["baseline_train_img_s"], r["train_img_s"]
        print(f"{size:4d}  {base:14.2f}  {fast:10.2f}  {fast / base:5.3f}", flush=True)


if __name__ == "__main__":
    main()
