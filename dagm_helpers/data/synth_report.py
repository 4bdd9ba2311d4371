"""Compare the generator with the real DAGM sample: a figure and a statistics table.

    python -m dagm_helpers.data.synth_report --out docs/figures [--real ../shared/dagm_sample]

Writes ``synthetic_vs_real.png`` (example tiles of all ten generated classes, then,
for each real class in the sample, intensity histograms and radially averaged power
spectra of real and generated images) and prints a Markdown table of mean, standard
deviation, skewness, spectral slope and grain energy (how smooth the smoothest patch of
defect-free texture is, and how smooth a defect's interior is). Real images are only
measured, never drawn: the sample's terms of use do not allow copying them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from . import synth

#: The real sample's default place: ``../shared/dagm_sample`` next to the repository.
DEFAULT_REAL = Path(__file__).resolve().parents[3] / "shared" / "dagm_sample"
REAL_ENV = "DAGM_SAMPLE"


def radial_spectrum(image: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum (index = radius in frequency bins, 0 .. side/2)."""
    a = image.astype(np.float64)
    power = np.abs(np.fft.fftshift(np.fft.fft2(a - a.mean()))) ** 2 / a.size
    h, w = a.shape
    yy, xx = np.indices(a.shape)
    r = np.hypot(yy - h // 2, xx - w // 2).astype(int)
    spectrum = np.bincount(r.ravel(), power.ravel()) / np.maximum(np.bincount(r.ravel()), 1)
    return spectrum[: min(h, w) // 2 + 1]


def spectral_slope(spectrum: np.ndarray, lo: int = 4, hi: int = 200) -> float:
    """Slope of log power against log frequency between radii ``lo`` and ``hi``."""
    k = np.arange(lo, min(hi, len(spectrum)))
    return float(np.polyfit(np.log(k), np.log(spectrum[k] + 1e-12), 1)[0])


#: Side (pixels) of the windows that :func:`smoothest_patch` compares: about a small defect's size.
PATCH = 31
#: Defect-free texture means farther than this (pixels) from any label ellipse.
MARGIN = 20


def grain_energy(image: np.ndarray) -> np.ndarray:
    """Local high-frequency ("grain") energy, relative to the image's median (1 = typical texture).

    The RMS of the image minus a Gaussian blur (sigma 1.5 px), averaged over a Gaussian window
    (sigma 8 px). A blurred or flattened patch has low grain energy.
    """
    from scipy import ndimage as ndi

    f = image.astype(np.float32)
    high = f - ndi.gaussian_filter(f, 1.5)
    energy = np.sqrt(ndi.gaussian_filter(high * high, 8.0))
    return energy / max(float(np.median(energy)), 1e-6)


def smoothest_patch(image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Grain energy of the smoothest ``PATCH`` x ``PATCH`` window of defect-free texture.

    Every pixel of the window must lie more than ``MARGIN`` px from the label ellipse
    (``mask`` > 0). Values well below a defect's own (:func:`defect_grain`) mean that clean
    texture contains unlabelled defect look-alikes.
    """
    from scipy import ndimage as ndi

    energy = grain_energy(image)
    background = np.ones(image.shape, bool)
    if mask is not None and np.any(mask):
        background = ~ndi.binary_dilation(mask > 0, iterations=MARGIN)
    window_min = ndi.minimum_filter(np.where(background, energy, np.inf), PATCH)
    return float(window_min[background].min()) if background.any() else float("nan")


def defect_grain(image: np.ndarray, mask: np.ndarray) -> float:
    """Median grain energy inside the label ellipse (eroded by 6 px); NaN without a defect."""
    from scipy import ndimage as ndi

    inner = ndi.binary_erosion(np.asarray(mask) > 0, iterations=6)
    return float(np.median(grain_energy(image)[inner])) if inner.any() else float("nan")


def image_stats(images: list[np.ndarray], masks: list[np.ndarray | None] | None = None) -> dict:
    """Mean, std, skewness, spectral slope (averaged over images) and the pooled histogram and spectrum.

    With ``masks`` (one per image, ``None`` for a clean one) also the median over images of
    :func:`smoothest_patch` (``smoothest``) and of :func:`defect_grain` (``defect_grain``).
    """
    flat = [i.astype(np.float64).ravel() for i in images]
    spectra = [radial_spectrum(i) for i in images]
    skews = [float(((f - f.mean()) ** 3).mean() / f.std() ** 3) for f in flat]
    return {
        "n": len(images),
        "mean": float(np.mean([f.mean() for f in flat])),
        "std": float(np.mean([f.std() for f in flat])),
        "skew": float(np.mean(skews)),
        "slope": float(np.mean([spectral_slope(s) for s in spectra])),
        "hist": np.bincount(np.concatenate([i.ravel() for i in images]), minlength=256)
        / sum(i.size for i in images),
        "spectrum": np.mean(spectra, axis=0),
        **(_grain_stats(images, masks) if masks is not None else {}),
    }


def _grain_stats(images: list[np.ndarray], masks: list[np.ndarray | None]) -> dict:
    smooth = [smoothest_patch(i, m) for i, m in zip(images, masks, strict=True)]
    inside = [defect_grain(i, m) for i, m in zip(images, masks, strict=True) if m is not None]
    inside = [v for v in inside if np.isfinite(v)]
    return {
        "smoothest": float(np.median(smooth)),
        "smoothest_min": float(np.min(smooth)),
        "defect_grain": float(np.median(inside)) if inside else float("nan"),
        "defects": len(inside),
    }


def real_samples(root: Path, class_id: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """All ``(image, mask or None)`` pairs of one class in the real sample (any split), uint8.

    Read by the project's own loader (:func:`~dagm_helpers.data.layout.scan`,
    :func:`~dagm_helpers.data.images.load_sample`) at the files' own size.
    """
    from .images import load_sample
    from .layout import scan

    out = []
    for sample in scan(root).filter(classes=[class_id]):
        image, mask = load_sample(sample, policy="none")
        out.append((image, mask if sample.defective else None))
    return out


def real_images(root: Path, class_id: int) -> list[np.ndarray]:
    """All images of one class in the real sample (any split), as uint8 arrays."""
    return [image for image, _ in real_samples(root, class_id)]


def generated_samples(
    class_id: int, n: int = 12, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``n`` generated ``(image, mask or None)`` pairs of a class, with the real defect share."""
    ids = synth.sample_ids(class_id, "Train", n)
    flags = synth.defect_flags(class_id, "Train", ids, seed)
    made = [synth.generate_image(class_id, "Train", i, seed, flags[i]) for i in ids]
    return [(s.image, s.mask) for s in made]


def generated_images(class_id: int, n: int = 12, seed: int = 0) -> list[np.ndarray]:
    """``n`` generated images of a class, with the real defect share."""
    return [image for image, _ in generated_samples(class_id, n, seed)]


def compare(real_root: Path | None, n: int = 12) -> dict[int, dict]:
    """Statistics of real and generated images for every class present in the real sample."""
    classes = []
    if real_root is not None and real_root.is_dir():
        classes = sorted(
            int(p.name[5:]) for p in real_root.iterdir() if p.is_dir() and p.name.lower().startswith("class")
        )
    result = {}
    for c in classes:
        real = real_samples(real_root, c)
        if real:
            made = generated_samples(c, n)
            result[c] = {
                "real": image_stats([i for i, _ in real], [m for _, m in real]),
                "generated": image_stats([i for i, _ in made], [m for _, m in made]),
            }
    return result


def markdown_table(stats: dict[int, dict]) -> str:
    """The table that docs/synthetic_data.md shows."""
    lines = [
        "| class | source | images | mean | std | skewness | spectral slope "
        "| smoothest patch (median, min) | defect interior (defects) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c, pair in stats.items():
        for source in ("real", "generated"):
            s = pair[source]
            grain = (
                f"| {s['smoothest']:.2f}, {s['smoothest_min']:.2f} | {s['defect_grain']:.2f} ({s['defects']}) |"
                if "smoothest" in s
                else "| | |"
            )
            lines.append(
                f"| {c} | {source} | {s['n']} | {s['mean']:.1f} | {s['std']:.1f} | {s['skew']:.2f} "
                f"| {s['slope']:.2f} {grain}"
            )
    return "\n".join(lines)


def figure(stats: dict[int, dict], out: Path, seed: int = 0) -> Path:
    """Draw the comparison figure into ``out/synthetic_vs_real.png`` (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import ndimage as ndi

    rows = len(stats)
    fig = plt.figure(figsize=(15, 6.4 + 3.2 * rows))
    grid = fig.add_gridspec(2 + rows, 5, height_ratios=[1, 1] + [0.9] * rows, hspace=0.45, wspace=0.3)
    for k, c in enumerate(range(1, 11)):
        ax = fig.add_subplot(grid[k // 5, k % 5])
        s = synth.generate_image(c, "Test", "0001", seed, defective=True)
        rgb = np.repeat(s.image[:, :, None], 3, axis=2)
        m = s.mask > 0
        rgb[m & ~ndi.binary_erosion(m, iterations=2)] = (255, 40, 40)
        ax.imshow(rgb)
        spec = synth.CLASS_SPECS[c]
        ax.set_title(f"generated class {c}: {spec.texture}\ndefect: {spec.defect['kind']}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    colours = {"real": "#1f77b4", "generated": "#ff7f0e"}
    for row, (c, pair) in enumerate(stats.items()):
        ax_h = fig.add_subplot(grid[2 + row, 0:2])
        ax_s = fig.add_subplot(grid[2 + row, 2:4])
        ax_t = fig.add_subplot(grid[2 + row, 4])
        for source, s in pair.items():
            label = f"{source} ({s['n']} images)"
            ax_h.plot(np.arange(256), s["hist"], color=colours[source], label=label)
            k = np.arange(1, len(s["spectrum"]))
            ax_s.loglog(
                k / 512, s["spectrum"][1:], color=colours[source], label=f"{label}, slope {s['slope']:.2f}"
            )
        ax_h.set(
            title=f"class {c}: intensity histogram",
            xlabel="grey level",
            ylabel="share of pixels",
            xlim=(0, 255),
        )
        ax_s.set(
            title=f"class {c}: radially averaged power spectrum",
            xlabel="spatial frequency (cycles/pixel)",
            ylabel="power",
        )
        ax_h.legend(fontsize=8)
        ax_s.legend(fontsize=8)
        ax_t.imshow(generated_images(c, 1)[0][:192, :192], cmap="gray", vmin=0, vmax=255)
        ax_t.set_title(f"generated class {c}, 192 px crop", fontsize=9)
        ax_t.set_xticks([])
        ax_t.set_yticks([])
    fig.suptitle(
        "Built-in DAGM-like generator: all ten classes (red: label ellipse), and real vs generated statistics",
        fontsize=12,
    )
    dest = Path(out) / "synthetic_vs_real.png"
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/figures", help="folder for synthetic_vs_real.png")
    parser.add_argument(
        "--real", default=os.environ.get(REAL_ENV) or str(DEFAULT_REAL), help="the real DAGM sample folder"
    )
    parser.add_argument("--images", type=int, default=12, help="generated images per class to measure")
    args = parser.parse_args(argv)
    real = Path(args.real)
    if not real.is_dir():
        print(f"note: no real sample at {real}; the figure shows generated classes only")
    stats = compare(real if real.is_dir() else None, args.images)
    print(f"figure: {figure(stats, Path(args.out))}")
    print(markdown_table(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
