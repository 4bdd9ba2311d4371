"""Peak memory of ``python -m dagm_helpers predict``, fast path against ``--no-fast``.

    python tools/predict_memory.py                 # a 3000x3000 image, a 4096x4096 image, 1,000 512x512 images
    python tools/predict_memory.py --sizes 2048 --folder 0 --json

Each case runs the real command in a child process and reads the child's peak resident memory
(``ru_maxrss``) from the operating system, so it counts everything: TensorFlow, the fast runtimes,
the image, the stitched probability map and the outputs. The model is the tutorial's U-Net
(``small_unet()``, untrained: memory depends on the architecture, not on the weights) and the
images are random grey levels. ``docs/reliability.md`` quotes the numbers; the fast path must stay
within :data:`FAST_LIMIT` times ``--no-fast`` (``tests/test_predict_cli.py`` checks one size).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

#: the fast path may use at most this multiple of --no-fast's peak memory
FAST_LIMIT = 1.5

_PEAK = (
    "import resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode; "
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_mb(args: list[str]) -> float:
    """Peak resident memory (MB) of one command, run to completion in a fresh child process."""
    out = subprocess.run([sys.executable, "-c", _PEAK, *args], capture_output=True, text=True, check=True)
    code, kb = out.stdout.split()
    if code != "0":
        raise RuntimeError(f"{' '.join(args)} exited with status {code}")
    return int(kb) / 1024  # Linux reports kilobytes


def _write_inputs(folder: Path, shape: tuple[int, int], count: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def measure(sizes: list[int], folder_count: int, work: Path) -> list[dict]:
    from dagm_helpers.model import small_unet

    model = work / "model.keras"
    small_unet().save(model)
    cases = [(f"one {s}x{s} image", (s, s), 1) for s in sizes]
    if folder_count:
        cases.append((f"{folder_count:,} 512x512 images", (512, 512), folder_count))
    rows = []
    for name, shape, count in cases:
        inputs = _write_inputs(work / f"in-{shape[0]}-{count}", shape, count)
        row: dict = {"case": name}
        for flag in ("--fast", "--no-fast"):
            out = work / f"out-{shape[0]}-{count}{flag}"
            cmd = [sys.executable, "-m", "dagm_helpers", "predict", "--model", str(model)]
            row[flag.lstrip("-").replace("-", "_") + "_mb"] = round(
                peak_mb([*cmd, "--input", str(inputs), "--out", str(out), flag])
            )
        row["ratio"] = round(row["fast_mb"] / row["no_fast_mb"], 2)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--sizes", type=int, nargs="*", default=[3000, 4096], help="sides of single square images"
    )
    ap.add_argument(
        "--folder", type=int, default=1000, help="how many 512x512 images in the folder case (0: none)"
    )
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="predict-memory-") as tmp:
        rows = measure(args.sizes, args.folder, Path(tmp))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("| case | --fast peak (MB) | --no-fast peak (MB) | ratio |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['case']} | {r['fast_mb']} | {r['no_fast_mb']} | {r['ratio']} |")
    return 0 if all(r["ratio"] <= FAST_LIMIT for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
