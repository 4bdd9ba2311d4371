"""Read DAGM images and masks as numpy arrays, safely.

* Images come out 2-D ``uint8``; masks 2-D ``uint8`` with values 0 and 1.
* RGB, RGBA, palette and grey+alpha images are converted to 8-bit grey (ITU-R 601-2
  luma) and 16-bit images are scaled to 8 bits (the high byte, ``>> 8``); both with an
  :class:`ImageConversionWarning` that names the file.
* Empty, truncated or corrupt files raise :class:`~dagm_helpers.errors.ImageFileError`
  naming the file. Images above :data:`MAX_PIXELS` are refused from their header,
  before any pixel is decoded, so a crafted or giant file cannot exhaust memory.
* Size policies: ``"resize"`` to ``size x size`` (bilinear for images, nearest
  neighbour for masks, re-binarised), ``"pad"`` the bottom and right edges by
  reflection up to the next multiple of :data:`PAD_MULTIPLE`, or ``"none"``.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from skimage.draw import ellipse as _draw_ellipse

from ..errors import ConfigError, DatasetError, ImageFileError
from .layout import Ellipse, Sample

#: Largest image accepted, in pixels (64 megapixels, e.g. 8192 x 8192; a DAGM image has
#: 0.26 megapixels). Larger files are refused from their header before decoding: an
#: 8-bit image this size already takes 64 MB, its float32 copy 256 MB.
MAX_PIXELS = 64 * 1024 * 1024
#: The "pad" policy pads height and width up to a multiple of this (2**depth of the U-Net).
PAD_MULTIPLE = 16
POLICIES: tuple[str, ...] = ("resize", "pad", "none")
#: Image channels a model can take: 1 (grey, the default; colour is converted) or 3 (RGB, when asked).
CHANNELS: tuple[int, ...] = (1, 3)

_BAD_FILE = "the file is empty, truncated or not an image (PNG expected); re-download or re-export it"
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class DagmWarning(UserWarning):
    """Base class of the warnings dagm_helpers issues about usable-but-unusual input."""


class ImageConversionWarning(DagmWarning):
    """An image was converted (colour to grey, 16 to 8 bits) on reading."""


# ----------------------------------------------------------------------------- decoding
def _open(path: str | Path) -> tuple[Path, Image.Image]:
    """Open and fully decode ``path`` with Pillow, turning every failure into ImageFileError."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageFileError(
            f"{path}: the file does not exist; check the path or re-download the data"
        ) from None
    except OSError as exc:
        raise ImageFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if path.is_dir():
        raise ImageFileError(f"{path} is a folder, not an image file")
    if size == 0:
        raise ImageFileError(f"{path}: the file is empty (0 bytes); re-download or re-export it")
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageFileError(
            f"{path}: refused, the image is far too large ({exc}); downscale or crop it"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageFileError(f"{path}: {_BAD_FILE} ({exc})") from None
    try:
        width, height = im.size
        if width * height > MAX_PIXELS:
            raise ImageFileError(
                f"{path}: {width}x{height} pixels ({width * height / 1e6:.0f} megapixels) is above the limit of "
                f"{MAX_PIXELS / 1e6:.0f} megapixels (dagm_helpers.data.images.MAX_PIXELS); the file was not "
                "decoded. Downscale or crop it first"
            )
        try:
            im.load()
        except Image.DecompressionBombError as exc:
            raise ImageFileError(f"{path}: refused, the image is far too large ({exc})") from None
        except MemoryError:
            raise ImageFileError(f"{path}: not enough memory to decode this {width}x{height} image") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageFileError(f"{path}: {_BAD_FILE} ({exc})") from None
    except BaseException:
        im.close()
        raise
    return path, im


_gathering: list[list[tuple[str, str]]] = []  # open conversions_said_once blocks, innermost last
_gathering_lock = threading.Lock()


def _warn(path: Path, what: str) -> None:
    message = f"{path}: {what}"
    with _gathering_lock:
        if _gathering:  # inside conversions_said_once: said once when the block ends
            _gathering[-1].append((str(path), message))
            return
    warnings.warn(message, ImageConversionWarning, stacklevel=4)


@contextlib.contextmanager
def conversions_said_once(
    total: int | None = None, *, stacklevel: int = 3
) -> Iterator[list[tuple[str, str]]]:
    """Within the block, the per-file conversion warnings (colour to grey, 16 to 8 bits) of every
    thread are gathered and, when it ends, said as one :class:`ImageConversionWarning`: the file's
    own message when one image was converted, else the count (of ``total`` when given) and the
    first file's message. A folder of RGB photos says so once, not once per photo. Files are
    counted once however many conversions they needed. Yields the gathered ``(file, message)``."""
    found: list[tuple[str, str]] = []
    with _gathering_lock:
        _gathering.append(found)
    try:
        yield found
    finally:
        with _gathering_lock:
            del _gathering[next(i for i, g in enumerate(_gathering) if g is found)]
            outer = _gathering[-1] if _gathering else None
        if outer is not None:  # nested (evaluate reading a chunk): the outermost block says them all
            outer.extend(found)
        else:
            _say_conversions(found, total, stacklevel + 1)


def _say_conversions(found: list[tuple[str, str]], total: int | None, stacklevel: int) -> None:
    files = len({path for path, _ in found})
    if files == 1:  # one file: its own message(s)
        warnings.warn("; ".join(m for _, m in found), ImageConversionWarning, stacklevel=stacklevel)
    elif found:
        of = f" of {total}" if total is not None else ""
        warnings.warn(
            f"{files}{of} images were converted on reading, for example {found[0][1]}",
            ImageConversionWarning,
            stacklevel=stacklevel,
        )


def _gray_uint8(path: Path, im: Image.Image) -> np.ndarray:
    """The decoded image as 2-D uint8 grey, converting (with a warning) where needed."""
    mode = im.mode
    if mode == "L":
        return np.array(im, dtype=np.uint8)
    if mode == "1":
        return np.array(im.convert("L"), dtype=np.uint8)
    if mode in _SIXTEEN_BIT:
        arr = np.clip(np.array(im).astype(np.int64), 0, 65535)
        top = int(arr.max()) if arr.size else 0
        note = ""
        if top < 4096:  # 10- or 12-bit camera data in a 16-bit file: >> 8 leaves a few grey levels
            note = (
                f"; its values only reach {top} (10- or 12-bit data?), so it keeps {(top >> 8) + 1} grey "
                "level(s): convert your images to 8 bits with the scaling your camera needs (for 12-bit "
                "data, value >> 4) before training"
            )
        _warn(path, f"16-bit image ({mode}) scaled to 8 bits (value >> 8){note}")
        return (arr >> 8).astype(np.uint8)
    if mode == "F":
        _warn(path, "floating-point image clipped to 0..255 and rounded to 8 bits")
        return np.clip(np.rint(np.array(im, dtype=np.float64)), 0, 255).astype(np.uint8)
    if mode in ("LA", "La"):
        _warn(path, f"{mode} image: transparency dropped, grey channel kept")
        return np.array(im.getchannel(0), dtype=np.uint8)
    try:
        grey = im.convert("L")
    except (ValueError, OSError) as exc:
        raise ImageFileError(
            f"{path}: image mode {mode} cannot be converted to grey ({exc}); re-export it as 8-bit grey PNG"
        ) from None
    _warn(path, f"{mode} image converted to 8-bit grey (ITU-R 601-2 luma); DAGM images are 8-bit grey")
    return np.array(grey, dtype=np.uint8)


_COLOUR_AS_IS = ("RGB",)
_COLOUR_ALPHA = ("RGBA", "RGBa", "RGBX")


def _colour_uint8(path: Path, im: Image.Image) -> np.ndarray:
    """The decoded image as ``(H, W, 3)`` uint8 RGB, for a model with three input channels: RGB as
    it is, palette images by their colours, transparency dropped (said), other colour spaces
    converted (said), grey images repeated into the three channels (said)."""
    mode = im.mode
    if mode in _COLOUR_AS_IS or mode == "P":
        return np.array(im.convert("RGB") if mode == "P" else im, dtype=np.uint8)
    if mode in _COLOUR_ALPHA:
        if mode != "RGBX":
            _warn(path, f"{mode} image: transparency dropped, colour channels kept")
        return np.array(im.convert("RGB"), dtype=np.uint8)
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        try:
            rgb = im.convert("RGB")
        except (ValueError, OSError) as exc:
            raise ImageFileError(
                f"{path}: image mode {mode} cannot be converted to RGB ({exc}); re-export it as 8-bit RGB PNG"
            ) from None
        _warn(path, f"{mode} image converted to 8-bit RGB")
        return np.array(rgb, dtype=np.uint8)
    grey = _gray_uint8(path, im)  # 16-bit and float grey are scaled (and said) there
    _warn(path, f"{mode} grey image repeated into the three channels of a colour model")
    return np.repeat(grey[:, :, None], 3, axis=2)


def _check_channels(channels: int) -> None:
    if channels not in CHANNELS:
        raise ConfigError(
            f"channels must be 1 (grey, DAGM and most inspection cameras) or 3 (colour), got {channels!r}"
        )


def _read_pixels(path: str | Path, channels: int = 1) -> np.ndarray:
    """``(H, W)`` uint8 grey, or ``(H, W, 3)`` uint8 RGB with ``channels=3``."""
    path, im = _open(path)
    with im:
        return _colour_uint8(path, im) if channels == 3 else _gray_uint8(path, im)


def _read_binary(path: str | Path) -> np.ndarray:
    """A mask file as 0/1 uint8 at its own size; values must be {0,255}, {0,1} (or 16-bit {0,65535}).

    A palette PNG (as annotation tools export) is read by its palette indices: index 0 is
    background, every other index is defect, whatever its colour.
    """
    path, im = _open(path)
    with im:
        mode = im.mode
        if mode == "1":
            return np.array(im, dtype=np.uint8)
        if mode in ("P", "PA"):
            return (np.array(im.getchannel(0) if mode == "PA" else im) > 0).astype(np.uint8)
        if mode in _SIXTEEN_BIT:
            raw = np.array(im).astype(np.int64)
            allowed = ({0, 1}, {0, 255}, {0, 65535})
        else:
            raw = _gray_uint8(path, im)
            allowed = ({0, 1}, {0, 255})
    values = np.unique(raw)
    found = {int(v) for v in values}
    if not any(found <= ok for ok in allowed):
        shown = ", ".join(str(int(v)) for v in values[:8]) + (
            f", ... ({len(values)} in all)" if len(values) > 8 else ""
        )
        raise ImageFileError(
            f"{path}: a mask must hold two values (0 and 255, or 0 and 1), found {shown}; "
            "re-export it as a binary PNG (no anti-aliasing, no JPEG)"
        )
    return (raw > 0).astype(np.uint8)


# ----------------------------------------------------------------------------- sizes
def _check_policy(size: int, policy: str) -> None:
    if policy not in POLICIES:
        raise ConfigError(f"unknown size policy {policy!r}; use one of {', '.join(POLICIES)}")
    if policy == "resize" and (not isinstance(size, (int, np.integer)) or size < 1):
        raise ConfigError(f"image size must be a positive whole number, got {size!r}")


def apply_policy(
    array: np.ndarray, size: int = 512, policy: str = "resize", *, mask: bool = False
) -> np.ndarray:
    """Bring a 2-D uint8 image (or 0/1 mask, ``mask=True``; or an ``(H, W, 3)`` colour image) to the
    size the policy asks for.

    ``"resize"``: to ``size x size``, bilinear for images, nearest neighbour for masks
    (then re-binarised); ``"pad"``: reflect the bottom and right edges up to the next
    multiple of :data:`PAD_MULTIPLE` (masks are reflected alike, so labels follow the
    mirrored pixels); ``"none"``: unchanged.
    """
    _check_policy(size, policy)
    if policy == "none":
        return array
    if policy == "resize":
        if array.shape[:2] == (size, size):
            return array
        resample = Image.Resampling.NEAREST if mask else Image.Resampling.BILINEAR
        out = np.asarray(
            Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).resize((size, size), resample)
        )
        return (out > 0).astype(np.uint8) if mask else out.copy()
    height, width = array.shape[:2]
    pad_h, pad_w = -height % PAD_MULTIPLE, -width % PAD_MULTIPLE
    if not pad_h and not pad_w:
        return array
    mode = "reflect" if min(height, width) > 1 else "edge"
    return np.pad(array, ((0, pad_h), (0, pad_w)) + ((0, 0),) * (array.ndim - 2), mode=mode)


# ----------------------------------------------------------------------------- public API
def read_image(path: str | Path, size: int = 512, policy: str = "resize", channels: int = 1) -> np.ndarray:
    """Read an image file as 2-D uint8 grey (``channels=3``: ``(H, W, 3)`` uint8 RGB, for a model
    with three input channels) and apply the size policy."""
    _check_policy(size, policy)
    _check_channels(channels)
    return apply_policy(_read_pixels(path, channels), size, policy)


def read_mask(
    path: str | Path,
    size: int = 512,
    policy: str = "resize",
    expect_shape: tuple[int, int] | None = None,
    image_path: str | Path | None = None,
) -> np.ndarray:
    """Read a mask file as 2-D uint8 0/1 and apply the size policy.

    ``expect_shape`` is the (height, width) of the image it belongs to, before any
    resizing; a different mask size raises :class:`ImageFileError` naming both files
    (``image_path``, when given) and both sizes.
    """
    _check_policy(size, policy)
    mask = _read_binary(path)
    if expect_shape is not None and tuple(mask.shape) != tuple(expect_shape):
        of_image = f"its image {image_path}" if image_path is not None else "its image"
        raise ImageFileError(
            f"{path}: the mask is {mask.shape[1]}x{mask.shape[0]} (width x height) but {of_image} is "
            f"{expect_shape[1]}x{expect_shape[0]}; a mask must match its image pixel for pixel: "
            "re-export the mask at the image's size"
        )
    return apply_policy(mask, size, policy, mask=True)


def ellipse_mask(shape: tuple[int, int], ellipse: Ellipse) -> np.ndarray:
    """A 0/1 uint8 mask of ``shape`` with the filled ellipse (see :class:`Ellipse` for the convention).

    Drawn with :func:`skimage.draw.ellipse`: row centre ``cy``, column centre ``cx``,
    row radius ``b``, column radius ``a`` and ``rotation=-angle``, because skimage turns
    counter-clockwise in (row, column) terms while the DAGM angle turns the ``a`` axis
    from +x towards +y. Pixels outside the image are clipped.
    """
    if len(shape) != 2:
        raise ValueError(f"ellipse_mask needs a 2-D shape, got {shape!r}")
    out = np.zeros(shape, dtype=np.uint8)
    rr, cc = _draw_ellipse(ellipse.cy, ellipse.cx, ellipse.b, ellipse.a, shape=shape, rotation=-ellipse.angle)
    out[rr, cc] = 1
    return out


def load_sample(
    sample: Sample, size: int = 512, policy: str = "resize", channels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8, mask uint8 0/1) of one sample, both brought to size by the policy.

    The image is 2-D grey, or ``(H, W, 3)`` RGB with ``channels=3``; the mask is 2-D. It is all
    zeros for a defect-free image, read from its file (and checked against the image's size) for
    the official release, and drawn from the ellipse at the original size for the development set.
    """
    _check_policy(size, policy)
    _check_channels(channels)
    image = _read_pixels(sample.image_path, channels)
    if sample.ellipse is not None:
        mask = ellipse_mask(image.shape[:2], sample.ellipse)
    elif sample.mask_path is not None:
        mask = read_mask(
            sample.mask_path, policy="none", expect_shape=image.shape[:2], image_path=sample.image_path
        )
        if sample.defective and not mask.any():
            warnings.warn(
                f"{sample.mask_path}: the mask is empty although {sample.image_path.name} is listed as "
                "defective; it trains as defect-free but counts as defective in image scores: fix the mask "
                "or the image's Labels.txt row",
                DagmWarning,
                stacklevel=2,
            )
    elif sample.defective:
        raise DatasetError(
            f"{sample.image_path}: flagged defective but has neither a mask file nor an ellipse; "
            "check its Labels.txt row"
        )
    else:
        out = apply_policy(image, size, policy)
        return out, np.zeros(out.shape[:2], dtype=np.uint8)
    return apply_policy(image, size, policy), apply_policy(mask, size, policy, mask=True)


__all__ = [
    "CHANNELS",
    "MAX_PIXELS",
    "PAD_MULTIPLE",
    "POLICIES",
    "DagmWarning",
    "ImageConversionWarning",
    "conversions_said_once",
    "apply_policy",
    "ellipse_mask",
    "load_sample",
    "read_image",
    "read_mask",
]
