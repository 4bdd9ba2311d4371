"""From a sample index to arrays (numpy) and to training batches (``tf.data``).

Two layers:

* :func:`load_arrays` decodes a selection of samples once, in a thread pool, into
  two uint8 arrays ``(N, H, W)``: the images and their 0/1 masks. This is the plain
  numpy loader for a first look and for small sets, and it is the pipeline's cache.
  :func:`load_tiles` does the same for images of any sizes (your own images): each
  is cut, at its own resolution, into tiles of one size.
* :func:`make_dataset` (and :func:`dataset_from_arrays`, for arrays already in
  memory) turns those arrays into a ``tf.data.Dataset`` of
  ``(x float32 (B, H, W, 1) in 0..255, y float32 (B, H, W, 1) in {0, 1})``: optional
  random crops (a share of them centred near a defect), flips and 90-degree
  rotations, optional brightness/contrast jitter, batching and prefetch. The model
  rescales ``x`` itself (its first layer is ``Rescaling(1/255)``).

Caching and memory
    Decoding PNGs is the slow part of reading DAGM, so every image is decoded exactly
    once and kept in memory as uint8: the cache costs ``N * H * W * 2`` bytes (image
    plus mask), e.g. 1150 images of one DAGM class at 512x512 take 0.6 GB, all ten
    classes 6 GB. A selection whose cache would exceed :func:`cache_limit_bytes`
    (half the machine's RAM, or ``$DAGM_MAX_CACHE_GB``) is refused with a
    :class:`~dagm_helpers.errors.DatasetError` that says how to make it smaller.

Determinism
    Every random choice uses TensorFlow's *stateless* RNG keyed by
    ``(seed, epoch, position in the epoch)``, never a global or per-iterator state.
    The same seed therefore gives identical batches, and epoch ``e`` of a dataset
    built with ``start_epoch=e`` (a resumed training run) is identical to epoch ``e``
    of a run that never stopped. Parallel ``map`` keeps element order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, DatasetError

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

#: Share of the machine's RAM the decoded cache may use by default.
CACHE_RAM_FRACTION = 0.5
CACHE_ENV = "DAGM_MAX_CACHE_GB"
#: Brightness shift (in 0..255 grey levels) and contrast factor range of intensity jitter.
BRIGHTNESS_DELTA = 20.0
CONTRAST_RANGE = (0.8, 1.2)
_EPOCH_STRIDE = 1 << 24  # element keys: epoch * _EPOCH_STRIDE + position (positions < 16.7 M per epoch)


# ----------------------------------------------------------------------------- numpy
def cache_limit_bytes() -> int:
    """The most memory the decoded cache may take: ``$DAGM_MAX_CACHE_GB`` or half the RAM."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        try:
            return int(float(env) * 1024**3)
        except ValueError:
            raise ConfigError(f"${CACHE_ENV}={env!r} is not a number of gigabytes") from None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 8 * 1024**3
    return int(total * CACHE_RAM_FRACTION)


def cache_bytes(n: int, height: int, width: int, channels: int = 1) -> int:
    """Bytes the decoded cache needs for ``n`` images of ``height x width`` (image + mask, uint8)."""
    return int(n) * int(height) * int(width) * (int(channels) + 1)


def _check_cache_size(n: int, height: int, width: int, channels: int = 1) -> None:
    need, limit = cache_bytes(n, height, width, channels), cache_limit_bytes()
    if need > limit:
        raise DatasetError(
            f"the selection of {n} images at {height}x{width} needs {need / 1024**3:.2f} GB of memory for "
            f"the decoded image cache, more than the limit of {limit / 1024**3:.2f} GB; select fewer classes "
            f"or images, use a smaller --image-size, or raise ${CACHE_ENV} if the machine has the memory"
        )


def load_arrays(
    samples: Sequence[Any],
    size: int | None = 512,
    policy: str = "resize",
    workers: int | None = None,
    channels: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``samples`` into ``(images uint8 (N, H, W), masks uint8 (N, H, W) of 0/1)``; with
    ``channels=3`` the images are RGB, ``(N, H, W, 3)``.

    Uses :func:`dagm_helpers.data.images.load_sample` in a thread pool (PNG decoding
    releases the GIL). All images must come out the same size, which ``policy="resize"``
    (the default) guarantees. The result needs ``N * H * W * 2`` bytes; a selection
    beyond :func:`cache_limit_bytes` is refused before anything is decoded.
    """
    from .images import load_sample

    samples = list(samples)
    if not samples:
        raise DatasetError("no samples selected: check the data folder, --classes and the split")
    if policy == "resize" and size:
        _check_cache_size(len(samples), int(size), int(size), channels)
    else:  # estimate from the first image's header (pad/none keep each image's own size)
        _check_cache_size(len(samples), *_header_size(samples[0]), channels)
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    pairs = _decode_all(
        lambda s: load_sample(s, size=size, policy=policy, channels=channels), samples, workers
    )
    shapes = {p[0].shape for p in pairs}
    if len(shapes) > 1:
        raise DatasetError(
            f"images of different sizes {sorted(shapes)} cannot be stacked into one array; "
            f"load them with policy='resize' (or pad them to one size)"
        )
    (h, w) = shapes.pop()[:2]
    _check_cache_size(len(pairs), h, w, channels)
    images = np.stack([p[0] for p in pairs]).astype(np.uint8, copy=False)
    masks = np.stack([p[1] for p in pairs]).astype(np.uint8, copy=False)
    for sample, (image, mask) in zip(samples, pairs, strict=True):
        if mask.shape != image.shape[:2]:  # load_sample should already refuse this
            raise DatasetError(
                f"mask of {getattr(sample, 'image_path', sample)} has shape {mask.shape}, image {image.shape}"
            )
    return images, (masks > 0).astype(np.uint8)


def _decode_all(fn: Any, samples: list[Any], workers: int) -> list[Any]:
    """``fn`` over ``samples`` in a thread pool, with the per-file conversion warnings (colour to
    grey, 16 to 8 bits) said once (:func:`~dagm_helpers.data.images.conversions_said_once`)."""
    from .images import conversions_said_once

    with conversions_said_once(len(samples), stacklevel=4):
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, samples))


def tile_starts(length: int, size: int) -> list[int]:
    """Starts of ``size``-long windows that cover ``0..length`` (the last one flush with the end)."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, size))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def cut_tiles(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tiles (T, size, size), mask tiles)`` that cover a 2-D image (or an ``(H, W, 3)`` colour
    one: tiles ``(T, size, size, 3)``) at its own resolution.

    A side shorter than ``size`` is first mirrored out to ``size`` (the mask alike, so labels
    follow the mirrored pixels); a longer one is covered by windows whose last one ends flush
    with the image, so every pixel is in a tile and no pixel is resampled.
    """
    height, width = image.shape[:2]
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if pad_h or pad_w:
        mode = "reflect" if min(height, width) > 1 else "edge"
        image = np.pad(image, ((0, pad_h), (0, pad_w)) + ((0, 0),) * (image.ndim - 2), mode=mode)
        mask = np.pad(mask, ((0, pad_h), (0, pad_w)), mode=mode)
        height, width = image.shape[:2]
    tops, lefts = tile_starts(height, size), tile_starts(width, size)
    images = np.stack([image[t : t + size, x : x + size] for t in tops for x in lefts])
    masks = np.stack([mask[t : t + size, x : x + size] for t in tops for x in lefts])
    return images, masks


def load_tiles(
    samples: Sequence[Any], size: int, workers: int | None = None, channels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`load_arrays`, for images of any sizes: each is read at its own resolution and
    cut into ``size x size`` tiles (:func:`cut_tiles`), so the result is ``(T, size, size)``
    with ``T >= N``. Training crops and validation work on the tiles; nothing is resized, so
    a small defect on a 4096x4096 image keeps its pixels. Refused beyond
    :func:`cache_limit_bytes`, estimated from the file headers before anything is decoded."""
    from .images import load_sample

    samples = list(samples)
    if not samples:
        raise DatasetError("no samples selected: check the data folder, --classes and the split")
    tiles = 0
    for sample in samples:
        height, width = _header_size(sample, multiple=1)
        tiles += len(tile_starts(max(height, size), size)) * len(tile_starts(max(width, size), size))
    _check_cache_size(tiles, size, size, channels)
    workers = workers or min(8, (os.cpu_count() or 1) * 2)

    def one(sample: Any) -> tuple[np.ndarray, np.ndarray]:
        image, mask = load_sample(sample, size=size, policy="none", channels=channels)
        return cut_tiles(image, mask, size)

    parts = _decode_all(one, samples, workers)
    images = np.concatenate([p[0] for p in parts]).astype(np.uint8, copy=False)
    masks = np.concatenate([p[1] for p in parts])
    return images, (masks > 0).astype(np.uint8)


def _header_size(sample: Any, multiple: int = 16) -> tuple[int, int]:
    """(height, width) of a sample's image from its file header (padded up to a multiple of 16)."""
    from .layout import header_size

    try:
        width, height = header_size(sample.image_path)
    except DatasetError:  # a broken file is reported properly by load_sample
        return (0, 0)
    return (-(-height // multiple) * multiple, -(-width // multiple) * multiple)


# ----------------------------------------------------------------------------- tf.data
def steps_for(n: int, batch_size: int) -> int:
    """Batches in one pass over ``n`` elements when the last partial batch is dropped (at least 1)."""
    return max(1, n // max(1, batch_size))


def make_dataset(
    samples: Sequence[Any],
    *,
    batch_size: int,
    image_size: int = 512,
    crop_size: int | None = None,
    defect_crop_fraction: float = 0.0,
    defective_share: float | None = None,
    augment: bool = False,
    intensity_jitter: bool = False,
    shuffle: bool = False,
    repeat: bool = False,
    seed: int = 0,
    policy: str = "resize",
    steps_per_epoch: int | None = None,
    start_epoch: int = 0,
    drop_remainder: bool | None = None,
    channels: int = 1,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``(x, y)`` batches for ``samples``; see :func:`dataset_from_arrays`.

    The images are decoded once into memory (:func:`load_arrays`) at ``image_size``, grey (or RGB
    with ``channels=3``).
    """
    images, masks = load_arrays(samples, size=image_size, policy=policy, channels=channels)
    return dataset_from_arrays(
        images,
        masks,
        batch_size=batch_size,
        crop_size=crop_size,
        defect_crop_fraction=defect_crop_fraction,
        defective_share=defective_share,
        augment=augment,
        intensity_jitter=intensity_jitter,
        shuffle=shuffle,
        repeat=repeat,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
        start_epoch=start_epoch,
        drop_remainder=drop_remainder,
    )


def dataset_from_arrays(
    images: np.ndarray,
    masks: np.ndarray,
    *,
    batch_size: int,
    crop_size: int | None = None,
    defect_crop_fraction: float = 0.0,
    defective_share: float | None = None,
    augment: bool = False,
    intensity_jitter: bool = False,
    shuffle: bool = False,
    repeat: bool = False,
    seed: int = 0,
    steps_per_epoch: int | None = None,
    start_epoch: int = 0,
    drop_remainder: bool | None = None,
) -> tf.data.Dataset:
    """Batches of ``(x float32 (B,H,W,1) 0..255, y float32 (B,H,W,1) 0/1)`` from in-memory arrays:
    ``images`` uint8 ``(N, H, W)`` (or ``(N, H, W, 3)`` colour: x is then ``(B, H, W, 3)``) and
    ``masks`` ``(N, H, W)``.

    * ``crop_size``: random ``crop_size`` squares instead of whole images; a share
      ``defect_crop_fraction`` of the crops from *defective* images is placed so that a
      randomly chosen defect pixel lies inside the crop, away from its border by a
      random jitter of up to a quarter crop (so those crops always contain defect pixels).
    * ``defective_share``: oversample defective images. Each element of an epoch is, with
      this probability, a randomly drawn *defective* image instead of the next image of
      the permutation (``None``: no oversampling, each image equally often). Defective
      images are rare (about one in seven in DAGM), so without it most training crops
      show no defect at all. Needs ``shuffle``; a set without defective images is used as it is.
    * ``augment``: random horizontal flip and rotation by a multiple of 90 degrees
      (only 0/180 for non-square images, so shapes stay fixed).
    * ``intensity_jitter``: brightness shift up to +-20 grey levels and contrast factor 0.8-1.2.
    * ``shuffle``: a fresh permutation per epoch, a function of ``(seed, epoch)`` only.
    * ``repeat``: an endless stream of epochs starting at ``start_epoch``. Each epoch is
      exactly ``steps_per_epoch`` batches (default: one pass, ``N // batch_size``); when
      that needs more than ``N`` elements, further permutations are appended. Batches
      never straddle epochs, so Keras' ``fit(steps_per_epoch=...)`` sees epoch ``e``
      exactly as a run that never stopped.
    * ``drop_remainder``: defaults to ``repeat`` (training); a single pass keeps every image.
    """
    import tensorflow as tf

    images, masks = np.asarray(images), np.asarray(masks)
    crop_size = _check_dataset_args(
        images, masks, batch_size, crop_size, defect_crop_fraction, defective_share, shuffle
    )
    n, height, width = images.shape[:3]
    channels = images.shape[3] if images.ndim == 4 else 1
    out_h, out_w = (crop_size, crop_size) if crop_size is not None else (height, width)
    drop = repeat if drop_remainder is None else drop_remainder
    if repeat:
        steps = int(steps_per_epoch) if steps_per_epoch else steps_for(n, batch_size)
        per_epoch = steps * batch_size
    else:
        per_epoch = n
    reps = max(1, math.ceil(per_epoch / n))

    img_t = tf.constant(images.astype(np.uint8, copy=False))
    mask_t = tf.constant((masks > 0).astype(np.uint8))
    defective_np = masks.reshape(n, -1).max(axis=1) > 0
    defective_t = tf.constant(defective_np)
    oversample = bool(defective_share) and shuffle and bool(defective_np.any())
    defective_idx = tf.constant(np.flatnonzero(defective_np).astype(np.int64))
    seed_t = tf.constant(int(seed), tf.int64)
    square = out_h == out_w

    def epoch_order(epoch):
        if shuffle:
            keys = tf.random.stateless_uniform([reps, n], seed=tf.stack([seed_t, epoch]))
            order = tf.reshape(tf.argsort(keys, axis=1, stable=True), [-1])
        else:
            order = tf.tile(tf.range(n, dtype=tf.int32), [reps])
        order = tf.cast(order[:per_epoch], tf.int64)
        if oversample:
            pick = tf.random.stateless_uniform([2, per_epoch], seed=tf.stack([seed_t + 1, epoch]))
            which = tf.cast(pick[1] * tf.cast(tf.size(defective_idx), tf.float32), tf.int64)
            which = tf.minimum(which, tf.cast(tf.size(defective_idx), tf.int64) - 1)
            order = tf.where(pick[0] < defective_share, tf.gather(defective_idx, which), order)
        return tf.data.Dataset.from_tensor_slices(
            (tf.fill([per_epoch], epoch), tf.range(per_epoch, dtype=tf.int64), order)
        )

    def element(epoch, position, index):
        key = tf.stack([seed_t, epoch * _EPOCH_STRIDE + position])
        seeds = tf.random.experimental.stateless_split(key, num=8)
        image = tf.gather(img_t, index)
        image = image if channels > 1 else image[..., None]
        pair = tf.concat([image, tf.gather(mask_t, index)[..., None]], axis=-1)  # (H, W, C + 1) uint8
        if crop_size is not None:
            pair = _crop(pair, defective_t[index], seeds, crop_size, defect_crop_fraction, height, width)
        # float32 before the flips and turns (exact for 0-255): oneDNN's transpose, used when it is
        # on, has no uint8 kernel without AVX-512 and logs an error line for every run otherwise
        pair = tf.cast(pair, tf.float32)
        if augment:
            pair = _flip_and_turn(pair, seeds, square, out_h, out_w)
        x, y = pair[..., :channels], pair[..., channels:]
        if intensity_jitter:
            x = _jitter(x, seeds)
        return x, y

    epochs = tf.data.Dataset.range(int(start_epoch), int(start_epoch) + 1)
    if repeat:
        epochs = tf.data.Dataset.range(int(start_epoch), np.iinfo(np.int64).max)
    ds = epochs.flat_map(epoch_order)
    ds = ds.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _check_dataset_args(
    images: np.ndarray,
    masks: np.ndarray,
    batch_size: int,
    crop_size: int | None,
    defect_crop_fraction: float,
    defective_share: float | None,
    shuffle: bool,
) -> int | None:
    """Refuse what :func:`dataset_from_arrays` cannot do; return the crop size (None: full images)."""
    colour = images.ndim == 4 and images.shape[-1] == 3
    if not (images.ndim == 3 or colour) or masks.shape != images.shape[:3]:
        raise DatasetError(
            "images and masks must be arrays of the same shape (N, H, W) (images may be (N, H, W, 3)), "
            f"got {images.shape} and {masks.shape}"
        )
    n, height, width = images.shape[:3]
    if n == 0:
        raise DatasetError(
            "no images to build a dataset from: check the data folder, --classes and the split"
        )
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if crop_size is not None and crop_size > min(height, width):
        raise ConfigError(
            f"crop size {crop_size} is larger than the images ({height}x{width}); "
            f"choose a crop size of at most {min(height, width)} or a larger image size"
        )
    if not 0.0 <= defect_crop_fraction <= 1.0:
        raise ConfigError(f"defect_crop_fraction must be between 0 and 1, got {defect_crop_fraction}")
    if defective_share is not None and not 0.0 <= defective_share <= 1.0:
        raise ConfigError(f"defective_share must be between 0 and 1, got {defective_share}")
    if defective_share and not shuffle:
        raise ConfigError("defective_share (oversampling defective images) needs shuffle=True")
    return int(crop_size) if crop_size is not None and crop_size > 0 else None


def _flip_and_turn(pair, seeds, square: bool, out_h: int, out_w: int):
    """A random horizontal flip and a random turn by a multiple of 90 degrees (180 when not square)."""
    import tensorflow as tf

    flip = tf.random.stateless_uniform([], seed=seeds[4]) < 0.5
    pair = tf.cond(flip, lambda: tf.reverse(pair, axis=[1]), lambda: pair)
    turns = tf.random.stateless_uniform([], seed=seeds[5], minval=0, maxval=4, dtype=tf.int32)
    if not square:
        turns = 2 * (turns // 2)
    return tf.ensure_shape(tf.image.rot90(pair, k=turns), [out_h, out_w, pair.shape[-1]])


def _jitter(x, seeds):
    """Brightness shift up to +-BRIGHTNESS_DELTA grey levels and contrast factor in CONTRAST_RANGE."""
    import tensorflow as tf

    delta = tf.random.stateless_uniform([], seed=seeds[6], minval=-BRIGHTNESS_DELTA, maxval=BRIGHTNESS_DELTA)
    factor = tf.random.stateless_uniform(
        [], seed=seeds[7], minval=CONTRAST_RANGE[0], maxval=CONTRAST_RANGE[1]
    )
    mean = tf.reduce_mean(x)
    return tf.clip_by_value((x - mean) * factor + mean + delta, 0.0, 255.0)


def _crop(pair, defective, seeds, crop: int, fraction: float, height: int, width: int):
    """A ``crop x crop`` window of ``pair`` (H, W, C + 1; the mask last): uniform, or around a random
    defect pixel."""
    import tensorflow as tf

    top = tf.random.stateless_uniform([], seed=seeds[0], minval=0, maxval=height - crop + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seed=seeds[1], minval=0, maxval=width - crop + 1, dtype=tf.int32)
    if fraction > 0.0:
        use_defect = tf.logical_and(defective, tf.random.stateless_uniform([], seed=seeds[2]) < fraction)

        def around_defect():
            coords = tf.cast(tf.where(pair[..., -1] > 0), tf.int32)  # (K, 2), K > 0 for defective images
            sub = tf.random.experimental.stateless_split(seeds[3], num=3)
            k = tf.random.stateless_uniform(
                [], seed=sub[0], minval=0, maxval=tf.shape(coords)[0], dtype=tf.int32
            )
            span = max(1, crop // 4)
            jitter = tf.random.stateless_uniform(
                [2], seed=sub[1], minval=-span, maxval=span + 1, dtype=tf.int32
            )
            start = coords[k] + jitter - crop // 2
            # |jitter| <= crop/4 < crop/2 keeps the chosen pixel inside the window, also after clipping
            return (
                tf.clip_by_value(start[0], 0, height - crop),
                tf.clip_by_value(start[1], 0, width - crop),
            )

        top, left = tf.cond(use_defect, around_defect, lambda: (top, left))
    depth = pair.shape[-1]
    window = tf.slice(pair, tf.stack([top, left, 0]), [crop, crop, depth])
    return tf.ensure_shape(window, [crop, crop, depth])


def dataset_memory_note(n: int, size: int) -> str:
    """A one-line human description of the cache size for ``n`` images at ``size``."""
    return f"{n} images at {size}x{size}: decoded cache {cache_bytes(n, size, size) / 1024**2:.0f} MB"


__all__ = [
    "CACHE_ENV",
    "cache_bytes",
    "cache_limit_bytes",
    "dataset_from_arrays",
    "dataset_memory_note",
    "cut_tiles",
    "load_arrays",
    "load_tiles",
    "make_dataset",
    "steps_for",
]
