"""Class 1's smooth patches: real sample, generator version 2 (envelope 0.3) and version 3 (0.1).

Makes the table in docs/synthetic_data.md ("Smooth patches"). For each source it prints, over
its images, the median and minimum of ``synth_report.smoothest_patch`` (the smoothest 31x31
window of defect-free texture) and the median of ``synth_report.defect_grain`` (inside the
label ellipses), all in units of each image's median grain energy.

    python docs/experiments/smooth_patches.py [--images 40] [--real ../shared/dagm_sample]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from dagm_helpers.data import synth
from dagm_helpers.data.synth_report import DEFAULT_REAL, defect_grain, real_samples, smoothest_patch


def _row(name: str, pairs: list[tuple[np.ndarray, np.ndarray | None]]) -> str:
    smooth = [smoothest_patch(i, m) for i, m in pairs]
    inside = [defect_grain(i, m) for i, m in pairs if m is not None]
    return (
        f"| {name} ({len(pairs)} images, {len(inside)} defective) | {np.median(smooth):.2f} ({np.min(smooth):.2f}) "
        f"| {np.median(inside):.2f} |"
    )


def _generated(n: int, envelope: float) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``n`` class-1 images (every other one defective, for enough defects) at this envelope."""
    spec = synth.CLASS_SPECS[1]
    synth.CLASS_SPECS[1] = dataclasses.replace(
        spec, texture_params=dict(spec.texture_params, envelope=envelope)
    )
    try:
        made = [synth.generate_image(1, "Train", f"{900 + k:04d}", 0, k % 2 == 0) for k in range(n)]
    finally:
        synth.CLASS_SPECS[1] = spec
    return [(s.image, s.mask) for s in made]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="generated images per version")
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL)
    args = parser.parse_args()
    print("| class 1 | smoothest patch of clean texture: median (min) | defect interior: median |")
    print("|---|---|---|")
    if (args.real / "Class1").is_dir():
        print(_row("real sample", real_samples(args.real, 1)))
    print(_row("generator version 2, envelope 0.3", _generated(args.images, 0.3)))
    print(_row("generator version 3, envelope 0.1", _generated(args.images, 0.1)))


if __name__ == "__main__":
    main()
