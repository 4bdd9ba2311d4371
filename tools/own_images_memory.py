"""Peak memory of ``train`` and ``evaluate`` on a folder of your own large images.

    python tools/own_images_memory.py              # four 4096x4096 images (two defective), plain layout
    python tools/own_images_memory.py --side 2048 --json

Writes a plain-layout folder (``images/`` + ``masks/``) of ``--count`` random grey images of
``--side`` x ``--side`` pixels, half of them with a defect mask, then runs the real commands in
child processes and reads each child's peak resident memory from the operating system
(``predict_memory.peak_mb``): ``train`` for two short epochs in the cpu profile's shapes (tiles of
512x512 at the images' own resolution, 160x160 crops, batch 20) and ``evaluate`` on the Test
images (whole images, predicted in tiles). ``README.md`` quotes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_memory import peak_mb  # noqa: E402


def write_folder(root: Path, side: int, count: int) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(60, 160, (side, side), dtype=np.uint8)
        if i % 2 == 0:
            mask = np.zeros((side, side), np.uint8)
            top, left = rng.integers(0, side - 64, 2)
            mask[top : top + 40, left : left + 64] = 255
            image[mask > 0] = 230
            Image.fromarray(mask).save(root / "masks" / f"part{i}.png")
        Image.fromarray(image).save(root / "images" / f"part{i}.png")
    return root


def measure(side: int, count: int, work: Path) -> dict:
    data = write_folder(work / "data", side, count)
    run = work / "run"
    base = [sys.executable, "-m", "dagm_helpers"]
    train = [*base, "train", "--data", str(data), "--profile", "cpu", "--loss", "dice", "--out", str(run)]
    train += ["--epochs", "2", "--steps-per-epoch", "3", "--max-minutes", "30"]
    evaluate = [
        *base,
        "evaluate",
        "--model",
        str(run / "model.keras"),
        "--data",
        str(data),
        "--profile",
        "cpu",
    ]
    return {
        "images": f"{count} x {side}x{side} (plain layout)",
        "train_peak_mb": round(peak_mb(train)),
        "evaluate_peak_mb": round(peak_mb(evaluate)),
        "tiles": json.loads((run / "config.json").read_text())["tiles"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=4096, help="side of the square images (default 4096)")
    ap.add_argument("--count", type=int, default=4, help="how many images (default 4, half defective)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a line")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="own-images-memory-") as tmp:
        row = measure(args.side, args.count, Path(tmp))
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        print(
            f"{row['images']}: train peak {row['train_peak_mb']} MB, evaluate peak {row['evaluate_peak_mb']} MB "
            f"(training tiles: {row['tiles']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
