"""An offline, DAGM-like data generator: ten texture classes with weakly labelled defects.

The real DAGM 2007 benchmark has ten classes of statistically generated surface
textures; about 13% of the images carry one defect, labelled by a *coarse* filled
ellipse around it rather than by its pixels. This module writes a stand-in with
the same folder layout, file formats, ids and defect share, so that every notebook
and command runs without the real data:

    out/ClassN/Train/0576.PNG ...           8-bit grayscale 512x512 PNG
    out/ClassN/Train/Label/0577_label.PNG   0/255 filled ellipse, defective images only
    out/ClassN/Train/Label/Labels.txt       the index, byte-for-byte in the shipped format

Each class has one texture (built from six families: interference, oriented
fibres, woven cross-hatch, radial brush strokes, speckle, low-frequency mottling,
fractal noise) and one defect kind (thin curved scratch, dark or bright spot,
stain, blurred, rotated or swirled patch), as each real class has one defect type.
The label ellipse is computed from the defect's own footprint (its second moments,
enlarged by a fixed rule), so it is coarse like DAGM's but always tied to the defect.

Everything is vectorised numpy/scipy (FFT noise, no per-pixel Python) and
deterministic: an image's texture depends only on ``(seed, class, split, id)``.
See ``docs/synthetic_data.md`` for how close it is to the real images.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import fft as sfft
from scipy import ndimage as ndi

from .. import atomic, config
from ..errors import ConfigError
from .layout import LabelRow, format_labels_txt

#: Bump when the generator's output changes: cached data sets of another version are regenerated.
#: Version 3: class 1's texture envelope is shallower (``envelope`` 0.3 -> 0.1), see
#: ``docs/synthetic_data.md`` ("smoothest patch").
GENERATOR_VERSION = 3
SIZE = 512
DEFECT_SHARE = 0.13
SPLITS = ("Train", "Test")
MARKER_PREFIX = ".complete-"
_SPLIT_CODE = {"Train": 1, "Test": 2}


# ----------------------------------------------------------------------------- ids and defect choice
def real_count(class_id: int) -> int:
    """Images per split in the real release: 575 for classes 1-6, 1150 for 7-10."""
    _check_class(class_id)
    return 575 if class_id <= 6 else 1150


def sample_ids(class_id: int, split: str, n: int | None = None) -> list[str]:
    """The first ``n`` ids (all when None) of a class and split, numbered as in the real release.

    >>> sample_ids(1, "Train", 2), sample_ids(7, "Test", 2), sample_ids(7, "Train")[-1]
    (['0576', '0577'], ['0001', '0002'], '2300')
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use 'Train' or 'Test'")
    total = real_count(class_id)
    n = total if n is None else int(n)
    if not 1 <= n <= total:
        raise ConfigError(f"images_per_split={n} for class {class_id}: choose 1..{total} (the real count)")
    start = total + 1 if split == "Train" else 1
    return [f"{i:04d}" for i in range(start, start + n)]


def n_defective(n: int) -> int:
    """How many of ``n`` images are defective: round(13%), and at least one from four images on."""
    k = int(round(DEFECT_SHARE * n))
    return max(k, 1) if n >= 4 else k


def _rng(seed: int, class_id: int, split: str, sample_id: str, stream: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), int(class_id), _SPLIT_CODE[split], int(sample_id), stream])
    )


def defect_flags(class_id: int, split: str, ids: Sequence[str], seed: int = 0) -> dict[str, bool]:
    """Which of ``ids`` are defective: the :func:`n_defective` ids with the smallest per-id draw.

    Each id's draw comes from ``(seed, class, split, id)``, so the choice is
    deterministic and nested: the defective ids of a subset are mostly those of the full set.
    """
    draws = np.array([_rng(seed, class_id, split, i, 0).random() for i in ids])
    chosen = set(np.argsort(draws, kind="stable")[: n_defective(len(ids))].tolist())
    return {i: k in chosen for k, i in enumerate(ids)}


def _check_class(class_id: int) -> None:
    if int(class_id) not in range(1, 11):
        raise ConfigError(f"DAGM class {class_id} does not exist; classes are 1..10")


# ----------------------------------------------------------------------------- noise building blocks
@functools.lru_cache(maxsize=8)
def _kgrid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ky = np.fft.fftfreq(h).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    return ky, kx


def _standardise(a: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance, float32 (one BLAS dot product for the variance: fast)."""
    flat = np.ascontiguousarray(a, dtype=np.float32).ravel()
    mean = float(flat.mean(dtype=np.float64))
    var = max(float(np.dot(flat, flat)) / flat.size - mean * mean, 0.0)
    out = flat - np.float32(mean)
    out *= np.float32(1.0 / (math.sqrt(var) + 1e-12))
    return out.reshape(a.shape)


def _noise_scale(amp: np.ndarray, shape: tuple[int, int]) -> float:
    """1 / the expected standard deviation of :func:`_noise`'s raw output for ``amp``."""
    weights = np.full(amp.shape[1], 2.0)
    weights[0] = 1.0
    if shape[1] % 2 == 0:
        weights[-1] = 1.0
    power = float(((amp.astype(np.float64) ** 2).sum(axis=0) * weights).sum() - amp[0, 0] ** 2)
    return float(shape[0] * shape[1] / math.sqrt(2 * max(power, 1e-30)))


def _noise(rng: np.random.Generator, amp: np.ndarray, shape: tuple[int, int], n: int = 1) -> np.ndarray:
    """Gaussian noise with the spectral amplitude ``amp`` (rfft layout), standardised; ``n`` fields."""
    spec = np.empty((n, *amp.shape), np.complex64)
    spec.real = rng.standard_normal((n, *amp.shape), dtype=np.float32)
    spec.imag = rng.standard_normal((n, *amp.shape), dtype=np.float32)
    spec *= amp
    spec[:, 0, 0] = 0
    out = sfft.irfft2(spec, s=shape, axes=(-2, -1), workers=1).astype(np.float32, copy=False)
    out *= _noise_scale(amp, shape)  # unit variance in expectation (Parseval), no pass over the data
    return out if n > 1 else out[0]


@functools.lru_cache(maxsize=64)
def _radial_amp(
    shape: tuple[int, int], beta: float, kmin: float = 1 / 512, klow: float = 0.0, khigh: float = 1.0
) -> np.ndarray:
    """Amplitude of isotropic noise with power ~ k**-beta, band-limited to [klow, khigh] (soft edges)."""
    ky, kx = _kgrid(*shape)
    k = np.sqrt(kx**2 + ky**2)
    amp = np.maximum(k, kmin) ** (-beta / 2)
    if klow > 0:
        amp *= 1 - np.exp(-((k / klow) ** 4))
    if khigh < 1:
        amp *= np.exp(-((k / khigh) ** 4))
    return amp.astype(np.float32)


@functools.lru_cache(maxsize=64)
def _ring_amp(shape: tuple[int, int], k0: float, width: float) -> np.ndarray:
    """Amplitude of narrow-band noise concentrated on the ring |k| = k0 (moire-like interference)."""
    ky, kx = _kgrid(*shape)
    k = np.sqrt(kx**2 + ky**2)
    return np.exp(-0.5 * ((k - k0) / width) ** 2).astype(np.float32)


@functools.lru_cache(maxsize=128)
def _fibre_amp(
    shape: tuple[int, int], angle: float, sigma_along: float, beta: float, k_across: float
) -> np.ndarray:
    """Amplitude of noise stretched along ``angle`` (radians from the image's vertical axis): fibres."""
    ky, kx = _kgrid(*shape)
    c, s = math.cos(angle), math.sin(angle)
    k_u = kx * c - ky * s  # across the fibres
    k_v = kx * s + ky * c  # along the fibres
    amp = np.exp(-0.5 * (k_v / sigma_along) ** 2) * (np.abs(k_u) + 2 / shape[1]) ** (-beta / 2)
    amp *= np.exp(-((np.abs(k_u) / k_across) ** 2))
    return amp.astype(np.float32)


def _upsample(z: np.ndarray, factor: int) -> np.ndarray:
    """Periodic linear interpolation of a square field by an integer ``factor`` (pure broadcasting)."""
    if factor == 1:
        return z
    t = (np.arange(factor, dtype=np.float32) / factor)[None, :, None]
    rows = (z[:, None, :] * (1 - t) + np.roll(z, -1, axis=0)[:, None, :] * t).reshape(-1, z.shape[1])
    t = t.reshape(1, 1, factor)
    return (rows[:, :, None] * (1 - t) + np.roll(rows, -1, axis=1)[:, :, None] * t).reshape(rows.shape[0], -1)


def _low_noise(rng: np.random.Generator, beta: float, khigh: float, n: int = 1) -> np.ndarray:
    """Smooth noise (power ~ k**-beta below ``khigh`` cycles/pixel) made small and upsampled: cheap."""
    factor = 1
    while factor < 16 and khigh * factor * 2 <= 0.25:
        factor *= 2
    small = SIZE // factor
    z = _noise(rng, _radial_amp((small, small), beta, 1 / small, 0.0, khigh * factor), (small, small), n)
    z = z.reshape(n, small, small)
    out = np.stack([_standardise(_upsample(o, factor)) for o in z])
    return out if n > 1 else out[0]


def _tone(z: np.ndarray, mean: float, std: float, skew: float = 0.0, squash: float = 0.0) -> np.ndarray:
    """Map a standardised field to grey levels with a given mean, contrast, skew and flattening."""
    if skew > 0:  # lognormal-like: a longer bright tail
        z = _standardise(np.exp(np.clip(skew * z, -20, 20)))
    elif skew < 0:  # a longer dark tail
        z = _standardise(-np.exp(np.clip(skew * z, -20, 20)))
    if squash:
        z = _standardise(np.tanh(squash * z))
    return (mean + std * z).astype(np.float32)


def _smooth_profile(rng: np.random.Generator, n: int, harmonics: int = 5) -> np.ndarray:
    """A smooth periodic 1-D profile with zero mean and unit-ish amplitude (blob outlines)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False, dtype=np.float32)
    out = np.zeros(n, np.float32)
    for h in range(2, 2 + harmonics):
        out += rng.normal() / h * np.cos(h * t + rng.uniform(0, 2 * np.pi))
    return out / (np.abs(out).max() + 1e-6)


# ----------------------------------------------------------------------------- textures
@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


@functools.lru_cache(maxsize=4)
def _polar_grid(size: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    n = size + 2 * pad
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    c = (n - 1) / 2
    return np.arctan2(yy - c, xx - c), np.hypot(yy - c, xx - c)


@functools.lru_cache(maxsize=8)
def _sum_amp(shape: tuple[int, int], beta: float, moire: float) -> np.ndarray:
    """Amplitude of ``hf + moire * ring`` for independent unit-variance fields ``hf`` and ``ring``."""
    hf_amp, ring_amp = _radial_amp(shape, beta, klow=0.02), _ring_amp(shape, 0.45, 0.02)
    hf = hf_amp.astype(np.float64) * _noise_scale(hf_amp, shape)
    ring = ring_amp.astype(np.float64) * _noise_scale(ring_amp, shape)
    return np.sqrt(hf**2 + (moire * ring) ** 2).astype(np.float32)


def _tex_interference(rng: np.random.Generator, p: dict) -> np.ndarray:
    """Class-1-like: moire of narrow-band high-frequency noise, slowly modulated, over soft mottling.

    ``envelope`` is the depth of the slow modulation of the grain's amplitude. Deep modulation
    (0.3 in generator version 2) left patches of nearly grain-free texture in clean images,
    smoother than any real class-1 image and than the class's own defect (a blurred patch),
    i.e. unlabelled look-alike defects; 0.1 matches the real sample's smoothest patches.
    """
    shp = (SIZE, SIZE)
    # the sum of the broadband and the ring noise is itself one Gaussian field: one FFT
    hf = _noise(rng, _sum_amp(shp, p["beta"], p["moire"]), shp)
    low = _low_noise(rng, p["mottle_beta"], p["mottle_khigh"], 2)
    env = 1 + p["envelope"] * low[0]
    z = hf * env + p["mottle"] * low[1]
    return _tone(_standardise(z), rng.normal(p["mean"], p["mean_sd"]), p["std"], skew=p["skew"])


def _tex_fibres(rng: np.random.Generator, p: dict) -> np.ndarray:
    """Oriented fibres: noise strongly stretched along one (slightly varying) direction."""
    shp = (SIZE, SIZE)
    angle = round(p["angle"] + rng.uniform(-p["tilt"], p["tilt"]), 2)
    z = _noise(rng, _fibre_amp(shp, angle, p["sigma_along"], p["beta"], p["k_across"]), shp)
    if p["mottle"]:
        z = z + p["mottle"] * _low_noise(rng, 3.0, 0.02)
    return _tone(
        _standardise(z), rng.normal(p["mean"], p["mean_sd"]), p["std"], skew=p["skew"], squash=p["squash"]
    )


def _tex_woven(rng: np.random.Generator, p: dict) -> np.ndarray:
    """Woven cross-hatch: alternating horizontal and vertical threads (basket weave), gently warped."""
    shp = (SIZE, SIZE)
    low = _low_noise(rng, 3.0, 0.02, 3)
    yy, xx = _grid(SIZE)
    c, s = math.cos(p["angle"]), math.sin(p["angle"])
    period = p["period"]
    u = (xx * c - yy * s + p["warp"] * low[0] + rng.uniform(0, period)) * (np.pi / period)
    v = (xx * s + yy * c + p["warp"] * low[1] + rng.uniform(0, period)) * (np.pi / period)
    su, sv = np.sin(u), np.sin(v)
    over = 0.5 + 0.5 * np.tanh(p["sharp"] * su * sv)  # which thread lies on top: a soft checkerboard
    weave = over * su * su + (1 - over) * sv * sv
    grain = _noise(rng, _radial_amp(shp, 1.0), shp)
    low = low[2]
    z = _standardise(weave) + p["grain"] * grain + p["mottle"] * low
    return _tone(_standardise(z), rng.normal(p["mean"], p["mean_sd"]), p["std"], skew=p["skew"])


def _tex_radial(rng: np.random.Generator, p: dict) -> np.ndarray:
    """Class-4-like: embossed brush strokes radiating from a point near the centre, on fine grain."""
    pad = 12
    theta, radius = _polar_grid(SIZE, pad)
    oy, ox = rng.integers(0, 2 * pad + 1, size=2)
    theta = theta[oy : oy + SIZE, ox : ox + SIZE]
    radius = radius[oy : oy + SIZE, ox : ox + SIZE]
    n_t, n_r, dr = 1024, 256, 2.0
    strokes = _noise(rng, _fibre_amp((n_t, n_r), math.pi / 2, 0.002, 0.5, 0.35), (n_t, n_r))
    strokes = np.maximum(strokes - p["threshold"], 0)
    strokes /= strokes.max() + 1e-6
    relief = np.roll(strokes, 1, axis=0) - np.roll(strokes, -1, axis=0)  # light/dark flanks
    swirl = rng.uniform(-p["swirl"], p["swirl"])
    ti = ((theta + math.pi + swirl * radius / SIZE) * (n_t / (2 * math.pi))).astype(np.int32) % n_t
    ri = np.minimum((radius / dr).astype(np.int32), n_r - 1)
    fade = np.clip(radius / 14, 0, 1)  # strokes merge into a dark knot at the centre
    field = -(strokes[ti, ri] * fade + (1 - fade) * 1.5) + p["relief"] * relief[ti, ri] * fade
    grain = _noise(rng, _radial_amp((SIZE, SIZE), p["grain_beta"], khigh=0.25), (SIZE, SIZE))
    grain = grain - np.roll(grain, 1, axis=1)  # embossed paper-like grain
    z = field / (field.std() + 1e-6) + p["grain"] * grain / (grain.std() + 1e-6)
    z = z + p["shading"] * _low_noise(rng, 3.0, 0.01)
    return _tone(_standardise(z), rng.normal(p["mean"], p["mean_sd"]), p["std"])


def _tex_speckle(rng: np.random.Generator, p: dict) -> np.ndarray:
    """Speckle: squared modulus of band-limited complex noise (grainy), under low-frequency mottling."""
    shp = (SIZE, SIZE)
    f = _noise(rng, _radial_amp(shp, 0.0, khigh=p["khigh"]), shp, 2)
    speckle = np.sqrt(f[0] ** 2 + f[1] ** 2)  # Rayleigh-distributed amplitude
    low = _low_noise(rng, 3.0, 0.03)
    z = _standardise(speckle) * (1 + p["modulation"] * low) + p["mottle"] * low
    return _tone(_standardise(z), rng.normal(p["mean"], p["mean_sd"]), p["std"], skew=p["skew"])


def _tex_mottle(rng: np.random.Generator, p: dict) -> np.ndarray:
    """Low-frequency mottling (clouds) with a fine grain on top."""
    shp = (SIZE, SIZE)
    low = _low_noise(rng, p["beta"], p["khigh"])
    grain = _noise(rng, _radial_amp(shp, 0.5), shp)
    z = low + p["grain"] * grain
    return _tone(_standardise(z), rng.normal(p["mean"], p["mean_sd"]), p["std"], skew=p["skew"])


def _tex_fractal(rng: np.random.Generator, p: dict) -> np.ndarray:
    """Fractal (1/f^beta) noise: self-similar clouds with detail at every scale."""
    shp = (SIZE, SIZE)
    z = _noise(rng, _radial_amp(shp, p["beta"]), shp)
    return _tone(z, rng.normal(p["mean"], p["mean_sd"]), p["std"], skew=p["skew"])


_TEXTURES = {
    "interference": _tex_interference,
    "fibres": _tex_fibres,
    "woven": _tex_woven,
    "radial": _tex_radial,
    "speckle": _tex_speckle,
    "mottle": _tex_mottle,
    "fractal": _tex_fractal,
}


# ----------------------------------------------------------------------------- defects
@dataclass(frozen=True)
class DefectEllipse:
    """A label ellipse in pixels: semi-axes ``a >= b``, ``angle`` of ``a`` from the x axis (radians)."""

    a: float
    b: float
    angle: float
    cx: float
    cy: float


def _box(cx: float, cy: float, half: float) -> tuple[int, int, int, int]:
    half = int(math.ceil(half))
    return (
        max(int(cy) - half, 0),
        min(int(cy) + half + 1, SIZE),
        max(int(cx) - half, 0),
        min(int(cx) + half + 1, SIZE),
    )


def _blob_weight(
    rng: np.random.Generator,
    cx: float,
    cy: float,
    r: float,
    aspect: float,
    angle: float,
    irregular: float,
    box: tuple[int, int, int, int],
) -> np.ndarray:
    """Soft 0..1 weight of an irregular blob (radius ``r``, elongated by ``aspect``) inside ``box``."""
    y0, y1, x0, x1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    c, s = math.cos(angle), math.sin(angle)
    u, v = (dx * c + dy * s) / aspect, -dx * s + dy * c
    phi = np.arctan2(v, u)
    outline = _smooth_profile(rng, 360)
    idx = ((phi + np.pi) * (360 / (2 * np.pi))).astype(np.int32) % 360
    rr = np.hypot(u, v) / (r * (1 + irregular * outline[idx]))
    t = np.clip((1.0 - rr) / 0.35, 0, 1)
    return t * t * (3 - 2 * t)  # smoothstep: soft rim


def _arc_points(rng: np.random.Generator, length: float, bend: float) -> tuple[np.ndarray, np.ndarray]:
    """Points along a circular arc of ``length`` turning by ``bend`` radians, centred on (0, 0)."""
    n = max(int(length * 2), 8)
    t = np.linspace(-length / 2, length / 2, n)
    kappa = bend / length
    if abs(kappa) < 1e-6:
        x, y = t, np.zeros_like(t)
    else:
        x, y = np.sin(kappa * t) / kappa, (1 - np.cos(kappa * t)) / kappa
    return x - x.mean(), y - y.mean()


def _scratch_weight(
    rng: np.random.Generator, cx: float, cy: float, length: float, bend: float, angle: float, width: float
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A thin curved scratch, tapering at both ends; 0..1 weight inside its box."""
    x, y = _arc_points(rng, length, bend)
    c, s = math.cos(angle), math.sin(angle)
    px, py = cx + x * c - y * s, cy + x * s + y * c
    box = _box(cx, cy, length / 2 + 4 * width + 6)
    y0, y1, x0, x1 = box
    skeleton = np.ones((y1 - y0, x1 - x0), bool)
    widths = np.zeros(skeleton.shape, np.float32)
    iy = np.clip(np.round(py).astype(int) - y0, 0, y1 - y0 - 1)
    ix = np.clip(np.round(px).astype(int) - x0, 0, x1 - x0 - 1)
    taper = np.sqrt(np.sin(np.linspace(0.05, np.pi - 0.05, len(px))))
    skeleton[iy, ix] = False
    widths[iy, ix] = width * (0.3 + 0.7 * taper)
    dist, (ny, nx) = ndi.distance_transform_edt(skeleton, return_indices=True)
    w = widths[ny, nx]
    return np.exp(-0.5 * (dist / np.maximum(w, 0.3)) ** 2).astype(np.float32), box


def _footprint_ellipse(
    weight: np.ndarray, box: tuple[int, int, int, int], level: float = 0.3
) -> DefectEllipse:
    """The coarse label ellipse of a defect: its footprint's moment ellipse, enlarged by a fixed rule."""
    ys, xs = np.nonzero(weight > level * weight.max())
    ys = ys + box[0] + 0.0
    xs = xs + box[2] + 0.0
    cy, cx = ys.mean(), xs.mean()
    cov = np.cov(np.stack([xs - cx, ys - cy])) + np.eye(2) * (1 / 12)
    evals, evecs = np.linalg.eigh(cov)
    a_def, b_def = 2 * math.sqrt(evals[1]), 2 * math.sqrt(max(evals[0], 0))
    angle = math.atan2(evecs[1, 1], evecs[0, 1])
    a = 1.25 * a_def + 8
    b = max(1.25 * b_def + 8, 0.4 * a)
    return DefectEllipse(a=a, b=min(b, a), angle=angle, cx=float(cx), cy=float(cy))


def ellipse_mask(ellipse: DefectEllipse, size: int = SIZE) -> np.ndarray:
    """A filled ellipse as a uint8 0/255 image (clipped at the borders, like DAGM's)."""
    mask = np.zeros((size, size), np.uint8)
    y0, y1, x0, x1 = _box(ellipse.cx, ellipse.cy, ellipse.a + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - ellipse.cx, yy - ellipse.cy
    c, s = math.cos(ellipse.angle), math.sin(ellipse.angle)
    u, v = (dx * c + dy * s) / ellipse.a, (-dx * s + dy * c) / ellipse.b
    mask[y0:y1, x0:x1] = np.where(u * u + v * v <= 1, 255, 0).astype(np.uint8)
    return mask


def _place(rng: np.random.Generator, extent: float) -> tuple[float, float]:
    margin = min(extent + 4, SIZE / 2 - 1)
    return tuple(rng.uniform(margin, SIZE - margin, size=2))  # type: ignore[return-value]


def _defect(img: np.ndarray, rng: np.random.Generator, p: dict, std: float) -> DefectEllipse:
    """Add the class's defect to ``img`` (float grey levels, in place); return its label ellipse."""
    kind = p["kind"]
    sign = p.get("sign", -1)
    contrast = rng.uniform(*p["contrast"]) * std
    angle = rng.uniform(0, math.pi)
    if kind == "scratch":
        length = rng.uniform(*p["length"])
        cx, cy = _place(rng, length / 2 + 6)
        bend = rng.uniform(0.2, p.get("bend", 1.2)) * rng.choice([-1, 1])
        w, box = _scratch_weight(rng, cx, cy, length, bend, angle, rng.uniform(*p["width"]))
        y0, y1, x0, x1 = box
        img[y0:y1, x0:x1] += sign * contrast * w
        return _footprint_ellipse(w, box, 0.3)
    r = rng.uniform(*p["radius"])
    aspect = rng.uniform(1.0, p.get("aspect", 1.5))
    cx, cy = _place(rng, r * aspect * 1.3)
    box = _box(cx, cy, r * aspect * 1.5 + 4)
    y0, y1, x0, x1 = box
    w = _blob_weight(rng, cx, cy, r, aspect, angle, p.get("irregular", 0.2), box)
    crop = img[y0:y1, x0:x1]
    if kind == "spot":
        crop += sign * contrast * w
    elif kind == "stain":
        yy, xx = np.mgrid[0 : y1 - y0, 0 : x1 - x0].astype(np.float32)
        ripple = np.cos(xx * rng.uniform(0.05, 0.15) + yy * rng.uniform(0.05, 0.15))
        crop += sign * contrast * w * (0.8 + 0.2 * ripple)
    elif kind == "blur":
        blurred = ndi.gaussian_filter(crop, p["sigma"], mode="reflect")
        flat = blurred + (crop.mean() - blurred.mean()) + sign * rng.uniform(0, 0.25) * std
        mix = w * rng.uniform(*p["strength"])
        crop[...] = crop * (1 - mix) + flat * mix
    elif kind in ("rotate", "swirl"):
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xx - cx, yy - cy
        if kind == "rotate":
            turn = rng.uniform(*p["turn"]) * rng.choice([-1, 1])
        else:
            turn = rng.uniform(*p["turn"]) * rng.choice([-1, 1]) * np.exp(-((np.hypot(dx, dy) / r) ** 2))
        c, s = np.cos(turn), np.sin(turn)
        sy, sx = cy + dx * s + dy * c, cx + dx * c - dy * s
        warped = ndi.map_coordinates(img, [sy, sx], order=1, mode="reflect").astype(np.float32)
        crop[...] = crop * (1 - w) + warped * w
    else:  # pragma: no cover - guarded by CLASS_SPECS
        raise ConfigError(f"unknown defect kind {kind!r}")
    return _footprint_ellipse(w, box, 0.3)


# ----------------------------------------------------------------------------- the ten classes
@dataclass(frozen=True)
class ClassSpec:
    """One generated class: its texture family and parameters, and its single defect kind."""

    class_id: int
    texture: str
    description: str
    texture_params: dict
    defect: dict


# fmt: off
CLASS_SPECS: dict[int, ClassSpec] = {
    1: ClassSpec(1, "interference",
        "dark moire-like interference pattern (like real class 1); defect: a smoothed, flat patch",
        dict(beta=0.4, moire=0.5, envelope=0.1, mottle=0.45, mottle_beta=2.0, mottle_khigh=0.05, mean=69, mean_sd=4, std=27, skew=0.15),
        dict(kind="blur", radius=(14, 34), aspect=1.6, irregular=0.3, sigma=6.0, strength=(0.75, 1.0),
             contrast=(0, 0))),
    2: ClassSpec(2, "fibres",
        "high-contrast near-vertical fibres (like real class 2); defect: a thin dark curved scratch",
        dict(angle=0.0, tilt=0.08, sigma_along=0.035, beta=0.0, k_across=1.5, mottle=0.0,
             mean=97, mean_sd=10, std=56, skew=0.35, squash=0.5),
        dict(kind="scratch", length=(50, 140), width=(1.2, 2.2), bend=1.4, contrast=(1.2, 2.2))),
    3: ClassSpec(3, "woven",
        "woven cross-hatch (basket weave) of coarse threads; defect: a patch of the weave rotated",
        dict(angle=0.12, period=12.0, warp=3.0, sharp=4.0, grain=0.35, mottle=0.25,
             mean=120, mean_sd=6, std=26, skew=0.0),
        dict(kind="rotate", radius=(16, 34), aspect=1.4, irregular=0.15, turn=(0.35, 0.8), contrast=(0, 0))),
    4: ClassSpec(4, "radial",
        "bright surface with embossed radial brush strokes (like real class 4); defect: a thin dark scratch",
        dict(threshold=0.9, relief=0.8, swirl=0.4, grain=0.35, grain_beta=1.0, shading=0.5, mean=176, mean_sd=7, std=18),
        dict(kind="scratch", length=(60, 150), width=(1.2, 2.0), bend=1.0, contrast=(2.0, 3.5))),
    5: ClassSpec(5, "speckle",
        "fine bright speckle (sand-like grain); defect: a soft dark spot",
        dict(khigh=0.25, modulation=0.15, mottle=0.25, mean=110, mean_sd=6, std=30, skew=0.2),
        dict(kind="spot", radius=(9, 24), aspect=1.4, irregular=0.15, contrast=(0.5, 1.0))),
    6: ClassSpec(6, "mottle",
        "smooth low-frequency mottling with faint grain; defect: a large faint bright stain",
        dict(beta=3.0, khigh=0.06, grain=0.25, mean=140, mean_sd=6, std=14, skew=0.0),
        dict(kind="stain", sign=1, radius=(20, 50), aspect=1.8, irregular=0.35, contrast=(0.9, 1.6))),
    7: ClassSpec(7, "fractal",
        "fractal 1/f noise (clouds with detail at every scale); defect: a dark irregular stain",
        dict(beta=2.0, mean=115, mean_sd=6, std=24, skew=0.2),
        dict(kind="stain", sign=-1, radius=(16, 40), aspect=1.8, irregular=0.35, contrast=(0.8, 1.4))),
    8: ClassSpec(8, "fibres",
        "fine diagonal fibres of moderate contrast; defect: a thin bright curved scratch",
        dict(angle=0.6, tilt=0.05, sigma_along=0.012, beta=1.0, k_across=0.3, mottle=0.3,
             mean=150, mean_sd=6, std=24, skew=-0.2, squash=0.0),
        dict(kind="scratch", sign=1, length=(80, 180), width=(0.9, 1.6), bend=0.8, contrast=(1.0, 2.0))),
    9: ClassSpec(9, "woven",
        "fine diagonal cross-hatch (fabric); defect: a locally swirled patch",
        dict(angle=0.785, period=7.0, warp=2.0, sharp=3.0, grain=0.4, mottle=0.35,
             mean=90, mean_sd=5, std=22, skew=0.2),
        dict(kind="swirl", radius=(18, 36), aspect=1.3, irregular=0.15, turn=(0.8, 1.6), contrast=(0, 0))),
    10: ClassSpec(10, "speckle",
        "dark coarse speckle under strong mottling; defect: a small bright spot",
        dict(khigh=0.09, modulation=0.25, mottle=0.5, mean=62, mean_sd=5, std=20, skew=0.2),
        dict(kind="spot", sign=1, radius=(8, 20), aspect=1.5, irregular=0.2, contrast=(0.9, 1.5))),
}
# fmt: on


# ----------------------------------------------------------------------------- one image
@dataclass(frozen=True)
class SynthImage:
    """One generated image: ``image`` and ``clean`` (its defect-free texture) uint8, ``mask`` 0/255."""

    image: np.ndarray
    clean: np.ndarray
    mask: np.ndarray | None
    ellipse: DefectEllipse | None

    @property
    def defective(self) -> bool:
        return self.mask is not None


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def generate_image(
    class_id: int, split: str, sample_id: str, seed: int = 0, defective: bool = False
) -> SynthImage:
    """Generate one image; its texture depends only on ``(seed, class_id, split, sample_id)``."""
    _check_class(class_id)
    spec = CLASS_SPECS[class_id]
    texture = _TEXTURES[spec.texture](_rng(seed, class_id, split, sample_id, 1), spec.texture_params)
    clean = _to_uint8(texture)
    if not defective:
        return SynthImage(clean, clean, None, None)
    ellipse = _defect(
        texture, _rng(seed, class_id, split, sample_id, 2), spec.defect, spec.texture_params["std"]
    )
    return SynthImage(_to_uint8(texture), clean, ellipse_mask(ellipse), ellipse)


# ----------------------------------------------------------------------------- writing a data set
def _save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(path, format="PNG", compress_level=0)


def _write_split(folder: Path, class_id: int, split: str, n: int | None, seed: int) -> None:
    label_dir = folder / "Label"
    label_dir.mkdir(parents=True)
    ids = sample_ids(class_id, split, n)
    flags = defect_flags(class_id, split, ids, seed)
    for sid in ids:
        sample = generate_image(class_id, split, sid, seed, flags[sid])
        _save_png(folder / f"{sid}.PNG", sample.image)
        if sample.mask is not None:
            _save_png(label_dir / f"{sid}_label.PNG", sample.mask)
    rows = (
        LabelRow(sid, flags[sid], f"{sid}.PNG", f"{sid}_label.PNG" if flags[sid] else None) for sid in ids
    )
    (label_dir / "Labels.txt").write_bytes(format_labels_txt(rows).encode("ascii"))


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Move the finished folder ``tmp`` onto ``dest`` (replacing an old one) with renames only."""
    old = None
    if dest.exists():
        old = dest.with_name(f"{atomic.TMP_PREFIX}old-{dest.name}-{os.getpid()}")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def synthesize_class(
    out: str | os.PathLike[str], class_id: int, images_per_split: int | None = None, seed: int = 0
) -> Path:
    """Write ``out/ClassN`` (both splits) atomically: built in a temporary folder, then renamed."""
    _check_class(class_id)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{atomic.TMP_PREFIX}Class{class_id}-", dir=out))
    try:
        for split in SPLITS:
            _write_split(tmp / split, class_id, split, images_per_split, seed)
        _replace_dir(tmp, out / f"Class{class_id}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / f"Class{class_id}"


def synthesize(
    out: str | os.PathLike[str],
    classes: Iterable[int] = range(1, 11),
    images_per_split: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Write a DAGM-like data set in the official layout under ``out`` and return ``out``.

    ``images_per_split=None`` writes as many images as the real class (575 or
    1150 per split); a smaller number writes the first ids. Each class folder is
    written atomically. The same seed gives byte-identical files.
    """
    out = Path(out)
    classes = [int(c) for c in classes]
    for c in classes:
        _check_class(c)
        sample_ids(c, "Train", images_per_split)  # validates images_per_split before any work
    for c in classes:
        t0 = time.perf_counter()
        synthesize_class(out, c, images_per_split, seed)
        if progress:
            print(f"Class{c}: {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def cache_dir(images_per_split: int | None, seed: int = 0) -> Path:
    """Where :func:`ensure_synthetic` keeps a generated set: ``$DAGM_HOME/synthetic/seed{S}-n{N}``."""
    n = "full" if images_per_split is None else int(images_per_split)
    return config.dagm_home() / "synthetic" / f"seed{seed}-n{n}"


def _marker(root: Path, class_id: int) -> Path:
    return root / f"{MARKER_PREFIX}Class{class_id}.json"


def is_complete(
    root: str | os.PathLike[str], class_id: int, images_per_split: int | None, seed: int = 0
) -> bool:
    """True when ``root/ClassN`` was fully generated by this generator version with these settings."""
    root = Path(root)
    marker = _marker(root, class_id)
    if not marker.is_file() or not (root / f"Class{class_id}").is_dir():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info == _marker_info(class_id, images_per_split, seed)


def _marker_info(class_id: int, images_per_split: int | None, seed: int) -> dict:
    return {
        "class": class_id,
        "images_per_split": images_per_split,
        "seed": seed,
        "version": GENERATOR_VERSION,
    }


def ensure_synthetic(
    classes: Iterable[int],
    images_per_split: int | None,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
) -> Path:
    """A cached generated set holding ``classes``; only missing or incomplete classes are generated.

    A class counts as complete only when its marker file (written atomically after
    the class folder is in place) matches the settings and generator version, so an
    interrupted generation is redone, never reused. Returns the root folder.
    """
    root = Path(root) if root is not None else cache_dir(images_per_split, seed)
    root.mkdir(parents=True, exist_ok=True)
    for c in classes:
        c = int(c)
        if is_complete(root, c, images_per_split, seed):
            continue
        _marker(root, c).unlink(missing_ok=True)
        synthesize_class(root, c, images_per_split, seed)
        atomic.write_json(_marker(root, c), _marker_info(c, images_per_split, seed))
    return root


__all__ = [
    "CLASS_SPECS",
    "GENERATOR_VERSION",
    "ClassSpec",
    "DefectEllipse",
    "SynthImage",
    "cache_dir",
    "defect_flags",
    "ellipse_mask",
    "ensure_synthetic",
    "generate_image",
    "is_complete",
    "n_defective",
    "real_count",
    "sample_ids",
    "synthesize",
    "synthesize_class",
]
