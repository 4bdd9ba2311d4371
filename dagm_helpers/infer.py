"""Loading saved models, predicting defect maps for images of any size, evaluation and batch prediction.

The notebooks and ``python -m dagm_helpers evaluate|predict`` call the same functions:

* :func:`load_model` opens a ``.keras`` file with Keras *safe mode* on and checks that the network
  fits the task (one grey input channel, one sigmoid output channel). Anything wrong becomes a
  :class:`~dagm_helpers.errors.ModelFileError` that names the file, says what is wrong and what to do.
* :func:`predict_proba` returns per-pixel defect probabilities at each image's own size: images are
  padded (reflection, bottom/right) to a multiple of the network's down-sampling factor, batched by
  size, run through one cached compiled graph function and cropped back.
* :func:`evaluate` streams a split through the model in chunks and returns segmentation and
  image-level metrics as JSON-safe numbers.
* :func:`predict_files` writes masks, overlays and ``predictions.csv`` for a file or a folder.

**Memory bound for large images.** An image whose padded size exceeds :data:`MAX_UNTILED_PIXELS`
(1024 x 1024 = 1,048,576 pixels) is processed in overlapping tiles of :data:`TILE_SIZE` (1024) pixels
with :data:`TILE_OVERLAP` (128) pixels of context on every inner side, stitched by centre crop; one
forward call never sees more than :data:`MAX_BATCH_PIXELS` (8 x 512 x 512) pixels (or one tile), so
the network's activation memory is bounded whatever the input size. 128 pixels exceed half the
receptive field of the default 4-level U-Net (about 100 pixels), so tiled and untiled predictions
agree to float rounding. Measured with the default network on CPU (``tools/predict_memory.py``,
``docs/reliability.md``): ``predict`` peaks at about 1.4 GB on a 3000 x 3000 image with TensorFlow
(1.5 GB with the fast runtimes), 1.5 / 2.0 GB on a 4096 x 4096 image and 1.3 GB on a folder of
512 x 512 images, whatever their number. The stitched probability map itself (4 bytes per
pixel) must fit in memory: images above :data:`MAX_IMAGE_PIXELS` (8192 x 8192) are refused with an
error.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
import warnings
import weakref
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, write_text
from .data import layout
from .errors import ConfigError, DagmError, DatasetError, ImageFileError, ModelFileError

#: padded images larger than this many pixels are predicted in tiles
MAX_UNTILED_PIXELS = 1024 * 1024
#: side of a square prediction tile (rounded up to the network's down-sampling multiple)
TILE_SIZE = 1024
#: context kept on each inner side of a tile and discarded when stitching
TILE_OVERLAP = 128
#: most pixels sent through the network in one forward call (unless one untiled image is larger)
MAX_BATCH_PIXELS = 8 * 512 * 512
#: images above this many pixels are refused (their float32 probability map alone would be > 256 MB)
MAX_IMAGE_PIXELS = 8192 * 8192
#: a model with a fixed input size is tiled at that size; an image that would need more tiles is refused
MAX_FIXED_SIZE_TILES = 4096
#: file suffixes :func:`predict_files` treats as images (case-insensitive)
IMAGE_SUFFIXES = layout.IMAGE_SUFFIXES
#: inference precisions: float32, and int8 (an accelerator's post-training quantisation)
PRECISIONS = ("f32", "int8")
#: at most this many images calibrate int8 quantisation
MAX_CALIBRATION_IMAGES = 32
#: samples loaded and predicted at once by :func:`evaluate`
EVAL_CHUNK = 32
#: keys of the dict :func:`evaluate` returns (always present; more may follow)
EVAL_KEYS = (
    "images",
    "defective_images",
    "dice_defective_mean",
    "iou_defective_mean",
    "pixel_iou",
    "pixel_dice",
    "boundary_f1",
    "image_auroc",
    "image_ap",
    "tpr",
    "tnr",
    "threshold",
    "seconds",
)


# ----------------------------------------------------------------------------- loading
def _model_error(path: Path, what: str, todo: str) -> ModelFileError:
    return ModelFileError(f"{path}: {what}; {todo}")


def _check_archive(path: Path) -> None:
    """Refuse a missing, empty, non-zip or corrupt ``.keras`` file before Keras sees it."""
    if not path.exists():
        raise _model_error(
            path, "model file not found", "check the path (a training run saves RUN_DIR/model.keras)"
        )
    if path.is_dir():
        raise _model_error(
            path, "is a folder, not a model file", "pass the .keras file inside it (e.g. RUN_DIR/model.keras)"
        )
    size = path.stat().st_size
    if size == 0:
        raise _model_error(path, "the model file is empty (0 bytes)", "re-save or re-download the model")
    if path.suffix.lower() in (".h5", ".hdf5"):
        return  # legacy HDF5: Keras checks it (still in safe mode)
    if not zipfile.is_zipfile(path):
        raise _model_error(
            path,
            f"not a Keras .keras archive (not a zip file, {size} bytes; truncated or corrupt?)",
            "re-save the model with model.save('model.keras') or download it again",
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise _model_error(
            path, f"the .keras archive is corrupt ({exc})", "re-save or download the model again"
        ) from exc
    if bad is not None:
        raise _model_error(
            path,
            f"the .keras archive is corrupt (member {bad!r} fails its checksum)",
            "download or save it again",
        )
    if "config.json" not in names:
        raise _model_error(
            path,
            "this zip file is not a Keras model (no config.json inside)",
            "pass a file written by model.save('model.keras')",
        )


def _is_sigmoid(layer: Any) -> bool | None:
    """True/False when the layer's activation is known to be (not) a sigmoid; None when unknown."""
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    name = getattr(act, "__name__", None) or type(act).__name__
    return "sigmoid" in str(name).lower()


def _check_model_fits(path: Path, model: Any) -> None:
    from .data.images import CHANNELS

    try:
        in_shape = tuple(model.inputs[0].shape) if len(model.inputs) == 1 else None
        out_shape = tuple(model.outputs[0].shape) if len(model.outputs) == 1 else None
    except (AttributeError, TypeError, ValueError):  # subclassed model without a known graph
        in_shape = out_shape = None
    if in_shape is None or out_shape is None:
        raise _model_error(
            path,
            "the model must have exactly one image input and one mask output",
            "use a model built by dagm_helpers.small_unet or with that interface",
        )
    if len(in_shape) != 4 or in_shape[-1] not in CHANNELS:
        raise _model_error(
            path,
            f"the model's input has shape {in_shape}; this project needs (batch, height, width, 1): "
            "one grey-level channel (or 3, colour)",
            "retrain the model with input_channels=1 (DAGM images are grayscale) or 3",
        )
    if len(out_shape) != 4 or out_shape[-1] != 1:
        raise _model_error(
            path,
            f"the model's output has shape {out_shape}; this project needs one defect-probability channel "
            "(batch, height, width, 1)",
            "use a segmentation model with a single sigmoid output channel",
        )
    out_layer = model.outputs[0]._keras_history[0] if hasattr(model.outputs[0], "_keras_history") else None
    sig = _is_sigmoid(out_layer) if out_layer is not None else None
    if sig is False:
        raise _model_error(
            path,
            f"the model's last layer {out_layer.name!r} has activation {out_layer.activation.__name__!r}, not "
            "sigmoid, so its output is not a defect probability",
            "end the model with a sigmoid (e.g. Conv2D(1, 1, activation='sigmoid'))",
        )
    _check_output_size(path, model, in_shape)


def _check_output_size(path: Path, model: Any, in_shape: tuple) -> None:
    """One probability per input pixel, checked on a probe input before anything is written."""
    from .model import required_multiple

    m = required_multiple(model)
    h = int(in_shape[1]) if in_shape[1] is not None else 2 * m
    w = int(in_shape[2]) if in_shape[2] is not None else 3 * m
    try:
        out = model(np.zeros((1, h, w, int(in_shape[-1])), np.float32), training=False)
        got = tuple(int(d) for d in out.shape[1:3])
    except Exception as exc:  # noqa: BLE001 - a model that cannot take its own input size at all
        raise _model_error(
            path, f"the model fails on a {h}x{w} input ({_short(str(exc))})", "check how the model was built"
        ) from exc
    if got != (h, w):
        raise _model_error(
            path,
            f"the model returns {got[0]}x{got[1]} probabilities for a {h}x{w} image; this project needs one "
            "probability per input pixel",
            "use a segmentation model whose output has its input's size (no strided last layer)",
        )


def save_model(model: Any, path: str | os.PathLike[str]) -> Path:
    """Save ``model`` as a ``.keras`` file atomically: an interrupted save leaves the old file or
    none, never a half-written one (:mod:`dagm_helpers.atomic`). Returns the path."""
    from .atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


#: what ``export_model`` writes beside the SavedModel: how to feed it and the threshold to use
EXPORT_INFO = "dagm_export.json"


def export_model(
    model_path: str | os.PathLike[str], out: str | os.PathLike[str], threshold: float | None = None
) -> Path:
    """Export a saved model for serving without this package: a TensorFlow SavedModel in ``out``
    (``serve`` takes ``float32 (batch, height, width, 1)`` grey levels 0..255 (``3``, RGB, for a colour
    model), any height and width
    that are multiples of :func:`required_multiple`, and returns the defect probabilities of the
    same shape) and ``out/dagm_export.json`` with the threshold the training run chose on
    validation (:func:`model_threshold`), the multiple and those conventions.

    Written to a temporary folder and renamed into place, so an interrupted export leaves no
    half-written ``out``; an ``out`` that exists and is not empty is refused.
    """
    import json
    import shutil

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder; choose a new --out")
    model = load_model(model_path)  # float32, checked
    m = required_multiple(model)
    info = {
        "format": "tf_saved_model",
        "signature": "serve",
        "input": (
            "float32 (batch, height, width, 1), grey levels 0..255 (the model rescales inside)"
            if model_channels(model) == 1
            else "float32 (batch, height, width, 3), RGB levels 0..255 (the model rescales inside)"
        ),
        "channels": model_channels(model),
        "output": "float32 (batch, height, width, 1), defect probability per pixel",
        "size_multiple": m,
        "threshold": model_threshold(model_path, threshold),
        "source_model": str(Path(model_path).resolve()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-export-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.export(str(tmp), format="tf_saved_model", verbose=False)
        write_text(tmp / EXPORT_INFO, json.dumps(info, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_model(path: str | os.PathLike[str]) -> Any:
    """Load a saved model with Keras safe mode on, and check it fits the task.

    Raises :class:`ModelFileError` for a missing, empty, truncated or corrupt file, for a file whose
    loading would run code stored in it (a ``Lambda`` layer: refused, never executed), and for a model
    whose input is not one grey channel or whose output is not one sigmoid channel.
    """
    path = Path(path)
    _check_archive(path)  # before importing TensorFlow: a bad path fails in a fraction of a second

    import keras

    from . import losses, metrics  # noqa: F401  (register the project's custom objects)

    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except ValueError as exc:
        text = str(exc)
        if "safe_mode" in text or "unsafe" in text.lower() or "arbitrary code" in text:
            raise _model_error(
                path,
                "the model file contains Python code (e.g. a Lambda layer) that would run when loaded, and "
                "this project refuses to run code from model files",
                "rebuild the model without Lambda layers; only load it yourself with "
                "keras.saving.load_model(path, safe_mode=False) if you trust its source completely",
            ) from exc
        raise _model_error(path, f"Keras cannot read this model ({_short(text)})", _REDO) from exc
    except (TypeError, KeyError) as exc:  # unknown layer class / custom object
        raise _model_error(
            path,
            f"the model uses a layer or object this installation does not know ({_short(str(exc))})",
            "load it with the code that defined it, or re-save it with standard Keras layers",
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile, RuntimeError) as exc:
        raise _model_error(
            path, f"the model file is truncated or corrupt ({_short(str(exc))})", _REDO
        ) from exc
    except Exception as exc:  # e.g. json.JSONDecodeError (a ValueError), h5py errors
        raise _model_error(
            path, f"cannot load the model ({type(exc).__name__}: {_short(str(exc))})", _REDO
        ) from exc
    if not isinstance(model, keras.Model):
        raise _model_error(path, f"the file holds a {type(model).__name__}, not a Keras model", _REDO)
    _check_model_fits(path, model)
    return as_float32(model)


def as_float32(model: Any) -> Any:
    """``model`` computing in float32: a model trained in mixed precision (float16 on a GPU,
    bfloat16 on some CPUs) keeps its layers' policy when saved, and would run in that precision
    on any machine, slowly or not at all where the CPU lacks it. Its variables are float32
    already, so the copy holds exactly the same weights. A float32 model is returned as it is."""
    import keras

    mixed = [layer for layer in model.layers if getattr(layer.dtype_policy, "name", "float32") != "float32"]
    if not mixed:
        return model

    def float32_layer(layer: Any) -> Any:
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    clone = keras.models.clone_model(model, clone_function=float32_layer)
    clone.set_weights(model.get_weights())
    return clone


_REDO = "re-save the model with model.save('model.keras') or download it again"


def _short(text: str, n: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _as_model(model: Any) -> Any:
    return load_model(model) if isinstance(model, (str, os.PathLike)) else model


# ----------------------------------------------------------------------------- prediction
def required_multiple(model: Any) -> int:
    """Image sides the model accepts must be multiples of this (2**depth for the U-Net);
    :func:`dagm_helpers.model.required_multiple`."""
    from .model import required_multiple as multiple

    return int(multiple(model))


def model_channels(model: Any) -> int:
    """The image channels ``model`` takes: 1 (grey; colour files are converted) or 3 (RGB; grey
    files are repeated into the three channels)."""
    return int(model.inputs[0].shape[-1])


def _fixed_input_hw(model: Any) -> tuple[int, int] | None:
    shape = tuple(model.inputs[0].shape)
    h, w = shape[1], shape[2]
    return (int(h), int(w)) if h is not None and w is not None else None


_PREDICT_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _predict_fn(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A cached compiled graph function ``x (B,H,W,C) float32 -> probabilities (B,H,W) float32``.

    The function reaches the model through a weak reference: a cached value that held the model
    would keep its own key, and so the model, alive for the whole session.
    """
    fn = _PREDICT_FNS.get(model)
    if fn is None:
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            model_ref = weakref.ref(model)

            @tf.function(
                input_signature=[tf.TensorSpec([None, None, None, model_channels(model)], tf.float32)],
                jit_compile=False,
                reduce_retracing=True,
                autograph=False,  # no Python control flow to convert; converting it logged a
                # "could not transform ... closure mismatch" warning in some processes
            )
            def graph(x):
                return tf.cast(model_ref()(x, training=False), tf.float32)

            def fn(x: np.ndarray) -> np.ndarray:
                return graph(x).numpy()[..., 0]

        else:  # pragma: no cover - the project runs on the TensorFlow backend

            def fn(x: np.ndarray) -> np.ndarray:
                return np.asarray(model.predict_on_batch(x), dtype=np.float32)[..., 0]

        _PREDICT_FNS[model] = fn
    return fn


def _ceil_to(n: int, m: int) -> int:
    return -(-n // m) * m


def pad_to_multiple(img: np.ndarray, multiple: int) -> np.ndarray:
    """``img`` (H, W) or (H, W, C) reflection-padded at the bottom and right to sides that are
    multiples of ``multiple``."""
    return _pad_to(img, (_ceil_to(img.shape[0], multiple), _ceil_to(img.shape[1], multiple)))


def _pad_to(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    ph, pw = shape[0] - img.shape[0], shape[1] - img.shape[1]
    if ph == 0 and pw == 0:
        return img
    spec = ((0, ph), (0, pw)) + ((0, 0),) * (img.ndim - 2)
    return np.pad(img, spec, mode="reflect" if min(img.shape[:2]) > 1 else "edge")


def as_image_list(images: Any, channels: int = 1) -> tuple[list[np.ndarray], bool]:
    """(list of images, single) from (H,W), (N,H,W), (N,H,W,1) arrays or a sequence of 2-D arrays.

    With ``channels=3`` (a colour model) the images are (H,W,3): a single (H,W,3), an (N,H,W,3)
    array or a sequence of (H,W,3) arrays; grey (H,W) images in a sequence are repeated into the
    three channels.
    """
    if channels == 3:
        return _as_colour_list(images)
    if isinstance(images, np.ndarray):
        arr = images
        if arr.ndim == 2:
            return [arr], True
        if arr.ndim == 4 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 3:
            raise ConfigError(
                f"images have shape {images.shape}; expected (N, H, W), (N, H, W, 1) or a list of (H, W) arrays "
                "(convert RGB to gray first, e.g. with dagm_helpers.data.images.read_image)"
            )
        return list(arr), False
    items = []
    for i, img in enumerate(images):
        a = np.asarray(img)
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim != 2:
            raise ConfigError(f"image {i} has shape {a.shape}; expected a 2-D grayscale array (H, W)")
        items.append(a)
    return items, False


def _as_colour_list(images: Any) -> tuple[list[np.ndarray], bool]:
    if isinstance(images, np.ndarray):
        if images.ndim == 3 and images.shape[-1] == 3:
            return [images], True
        if images.ndim == 4 and images.shape[-1] == 3:
            return list(images), False
        raise ConfigError(
            f"images have shape {images.shape}; this model takes colour images: (H, W, 3), (N, H, W, 3) or "
            "a list of (H, W, 3) arrays (read files with dagm_helpers.data.images.read_image(path, channels=3))"
        )
    items = []
    for i, img in enumerate(images):
        a = np.asarray(img)
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        if a.ndim != 3 or a.shape[-1] != 3:
            raise ConfigError(f"image {i} has shape {a.shape}; this model takes colour images (H, W, 3)")
        items.append(a)
    return items, False


def _check_values(img: np.ndarray, i: int) -> None:
    if img.size == 0:
        raise ConfigError(f"image {i} is empty (shape {img.shape})")
    if img.size > MAX_IMAGE_PIXELS:
        raise ImageFileError(
            f"image {i} has {img.shape[0]}x{img.shape[1]} pixels, above the limit of {MAX_IMAGE_PIXELS:,} "
            "(8192 x 8192) for prediction; cut it into smaller images first"
        )


class _Runner:
    """Sends equally sized padded images through the model in batches bounded by pixel count.

    The batches run through plain TensorFlow, or through ``predictor`` (an object with
    ``run(x (B, H, W, 1)) -> (B, H, W)``, ``backend`` and ``precision``): the one given, or
    with ``fast`` (or a precision other than "f32") the one an accelerator offers
    (:func:`dagm_helpers.hooks.fast_runner`).
    """

    def __init__(
        self,
        model: Any,
        batch_size: int,
        fast: bool = False,
        predictor: Any = None,
        precision: str = "f32",
        calibration: Any = None,
    ):
        from . import hooks

        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if predictor is None and precision != "f32" and model_channels(model) != 1:
            raise ConfigError(
                f"precision {precision!r} runs grey (one-channel) models only; this model takes "
                f"{model_channels(model)} channels: use --precision f32"
            )
        if predictor is None and (fast or precision != "f32") and model_channels(model) == 1:
            # the fast runtimes are built for grey models; a colour model runs on TensorFlow
            predictor = hooks.fast_runner(model, batch_size, precision, calibration)
            if predictor is None and precision != "f32":
                raise ConfigError(
                    f"precision {precision!r} needs the speed accelerator with OpenVINO and NNCF: "
                    "pip install 'dagm-helpers[fast]', or use --precision f32"
                )
        self.predictor = predictor
        self.fn = predictor.run if predictor is not None else _predict_fn(model)
        self.batch_size = batch_size

    @property
    def backend(self) -> str:
        """The runtime: "tf", or the fast predictor's ("auto" until its first call has timed them)."""
        return self.predictor.backend if self.predictor is not None else "tf"

    @property
    def precision(self) -> str:
        """ "f32", or the fast predictor's precision."""
        return self.predictor.precision if self.predictor is not None else "f32"

    def per_batch(self, shape: tuple[int, int]) -> int:
        return max(1, min(self.batch_size, MAX_BATCH_PIXELS // (shape[0] * shape[1])))

    def run(self, arrays: list[np.ndarray]) -> np.ndarray:
        x = np.stack(arrays).astype(np.float32, copy=False)
        return self.fn(x if x.ndim == 4 else x[..., None])


def _tile_starts(n: int, tile: int, step: int) -> list[int]:
    if n <= tile:
        return [0]
    starts = list(range(0, n - tile, step))
    starts.append(n - tile)
    return sorted(set(starts))


def _fixed_overlap(fixed: tuple[int, int], m: int, overlap: int) -> tuple[int, int]:
    """Context kept per side when tiling at a model's fixed input size (at most a quarter tile)."""
    return tuple(min(_ceil_to(overlap, m), max(0, (t // 2 - m) // m * m)) for t in fixed)


def tile_count(shape: tuple[int, int], m: int, tile_hw: tuple[int, int], overlap: tuple[int, int]) -> int:
    """How many ``tile_hw`` tiles :func:`_predict_tiled` runs for an image of ``shape``."""
    hp, wp = max(_ceil_to(shape[0], m), tile_hw[0]), max(_ceil_to(shape[1], m), tile_hw[1])
    ys = _tile_starts(hp, tile_hw[0], tile_hw[0] - 2 * overlap[0])
    xs = _tile_starts(wp, tile_hw[1], tile_hw[1] - 2 * overlap[1])
    return len(ys) * len(xs)


def _check_fixed_tiles(shape: tuple[int, int], m: int, tile_hw: tuple[int, int], ov: tuple[int, int]) -> None:
    """A fixed-input model on a large image: refuse before running thousands of tiny tiles."""
    n = tile_count(shape, m, tile_hw, ov)
    if n > MAX_FIXED_SIZE_TILES:
        raise ConfigError(
            f"this model only takes {tile_hw[0]}x{tile_hw[1]} inputs, so a {shape[0]}x{shape[1]} image needs "
            f"{n:,} tiles (the limit is {MAX_FIXED_SIZE_TILES:,}); rebuild the model with input shape "
            "(None, None, 1) (the U-Net takes any multiple of 16), or resize the image"
        )


def _predict_tiled(
    runner: _Runner, img: np.ndarray, m: int, tile_hw: tuple[int, int], overlap: tuple[int, int]
) -> np.ndarray:
    """Probability map of one large image from overlapping tiles stitched by centre crop."""
    h, w = img.shape[:2]
    th, tw = tile_hw
    hp, wp = max(_ceil_to(h, m), th), max(_ceil_to(w, m), tw)
    padded = _pad_to(img, (hp, wp))
    ys = _tile_starts(hp, th, th - 2 * overlap[0])
    xs = _tile_starts(wp, tw, tw - 2 * overlap[1])
    out = np.empty((h, w), np.float32)
    tiles = [(y, x) for y in ys for x in xs]
    per = runner.per_batch((th, tw))
    for i in range(0, len(tiles), per):
        chunk = tiles[i : i + per]
        probs = runner.run([padded[y : y + th, x : x + tw] for y, x in chunk])
        for (y, x), p in zip(chunk, probs, strict=True):
            y0 = y + overlap[0] if y > 0 else 0
            x0 = x + overlap[1] if x > 0 else 0
            y1 = min(y + th - overlap[0] if y + th < hp else hp, h)
            x1 = min(x + tw - overlap[1] if x + tw < wp else wp, w)
            if y1 > y0 and x1 > x0:
                out[y0:y1, x0:x1] = p[y0 - y : y1 - y, x0 - x : x1 - x]
    return out


def predict_proba(
    model: Any,
    images: Any,
    batch_size: int = 8,
    *,
    tile_size: int = TILE_SIZE,
    tile_overlap: int = TILE_OVERLAP,
    max_untiled_pixels: int = MAX_UNTILED_PIXELS,
    fast: bool = False,
    predictor: Any = None,
) -> np.ndarray | list[np.ndarray]:
    """Per-pixel defect probabilities, float32, each at its image's own size.

    ``images``: uint8 or float arrays of raw grey levels 0..255 (the model rescales inside), shaped
    (N, H, W) or (N, H, W, 1), a single (H, W) image, or a list of (H, W) arrays of different sizes.
    Returns (N, H, W) when all images share one size ((H, W) for a single 2-D image), else a list of
    (H, W) arrays. Images are reflection-padded at the bottom/right to a multiple of
    :func:`required_multiple`, grouped by size, batched (at most ``batch_size`` images and
    :data:`MAX_BATCH_PIXELS` pixels per call) and cropped back. An image whose padded size is above
    ``max_untiled_pixels`` is predicted in ``tile_size`` tiles with ``tile_overlap`` pixels of context
    (both rounded up to the multiple); a model with a fixed input size is always tiled at that size.
    With ``fast``, the batches run on the fastest runtime an accelerator offers (the speed
    package: ncnn or OpenVINO, float32, the same probabilities to ~1e-5) when one is installed;
    ``predictor`` runs them through that object (see :class:`_Runner`).
    """
    model = _as_model(model)
    items, single = as_image_list(images, model_channels(model))
    if not items and isinstance(images, np.ndarray) and images.ndim >= 3:
        return np.zeros(images.shape[:3], np.float32)  # no images: (0, H, W), as given
    for i, img in enumerate(items):
        _check_values(img, i)
    runner = _Runner(model, batch_size, fast=fast, predictor=predictor)
    return _predict_items(runner, model, items, single, tile_size, tile_overlap, max_untiled_pixels)


def _predict_items(
    runner: _Runner,
    model: Any,
    items: list[np.ndarray],
    single: bool,
    tile_size: int = TILE_SIZE,
    tile_overlap: int = TILE_OVERLAP,
    max_untiled_pixels: int = MAX_UNTILED_PIXELS,
) -> np.ndarray | list[np.ndarray]:
    """predict_proba's work on validated (H, W) images, through ``runner``."""
    m = required_multiple(model)
    fixed = _fixed_input_hw(model)
    if fixed is not None:
        tile_hw = fixed
        ov = _fixed_overlap(fixed, m, tile_overlap)
    else:
        t = _ceil_to(max(tile_size, m), m)
        o = _ceil_to(tile_overlap, m)
        if t <= 2 * o:
            raise ConfigError(f"tile_size {t} must be larger than twice tile_overlap ({o})")
        tile_hw, ov = (t, t), (o, o)
    if any(img.dtype.kind == "f" and 0 < float(np.max(img)) <= 1.0 for img in items[:4]):
        warnings.warn(
            "float images with values in 0..1 were given; the model expects raw grey levels 0..255 "
            "(it rescales inside), so predictions will be wrong: multiply by 255 first",
            stacklevel=3,
        )

    if fixed is not None:
        for img in items:
            _check_fixed_tiles(img.shape[:2], m, tile_hw, ov)
    outputs: list[np.ndarray | None] = [None] * len(items)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, img in enumerate(items):
        h, w = img.shape[:2]
        shape = (_ceil_to(h, m), _ceil_to(w, m))
        if fixed is not None or shape[0] * shape[1] > max_untiled_pixels:
            outputs[i] = _predict_tiled(runner, img, m, tile_hw, ov)
        else:
            groups[shape].append(i)
    for shape, idxs in groups.items():
        per = runner.per_batch(shape)
        for k in range(0, len(idxs), per):
            chunk = idxs[k : k + per]
            probs = runner.run([_pad_to(items[i], shape) for i in chunk])
            for i, p in zip(chunk, probs, strict=True):
                h, w = items[i].shape[:2]
                outputs[i] = np.array(p[:h, :w], dtype=np.float32, copy=True)
    if single:
        return outputs[0]
    if outputs and len({o.shape for o in outputs}) == 1:
        return np.stack(outputs)
    if not outputs:
        return np.zeros((0, 0, 0), np.float32)
    return outputs


# ----------------------------------------------------------------------------- evaluation
def _json_number(value: Any) -> float | int | None:
    """A JSON-safe Python number: NaN/inf -> None, numpy scalars -> float/int."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def image_score(prob: Any) -> float:
    """One image's defect score: the mean of its ``metrics.TOP_K`` most confident pixels.

    The highest single pixel would be the obvious score, but then one stray confident pixel
    makes a clean image look as defective as a real defect; DAGM's defects cover hundreds
    of pixels, so averaging the top 100 keeps real defects high and speckles low.
    """
    from . import metrics

    prob = np.asarray(prob, np.float32)[None]
    return float(metrics.defect_scores(prob, method="topk", top_k=metrics.TOP_K)[0])


class EvalAccumulator:
    """Streams (masks, probabilities) chunks into per-image statistics and pooled pixel sums.

    Keeps a handful of numbers per image (score, flags, per-image Dice/IoU/boundary F1), never the
    probability maps, so any number of images can be evaluated in bounded memory.
    """

    def __init__(self, threshold: float = 0.5, boundary_tolerance: int = 2):
        _check_threshold(threshold)
        self.threshold = float(threshold)
        self.tolerance = boundary_tolerance
        self.tp = self.fp = self.fn = 0
        self.flags: list[bool] = []
        self.scores: list[float] = []
        self.dice: list[float] = []
        self.iou: list[float] = []
        self.bf1: list[float] = []

    def update(self, masks: Any, probs: Any, defective: Sequence[bool] | None = None) -> None:
        """Add images: ``masks`` 0/1 and ``probs`` in [0, 1], (N, H, W) arrays or lists of (H, W)."""
        from . import metrics

        masks_l = list(masks) if not isinstance(masks, np.ndarray) or masks.ndim == 3 else [masks]
        probs_l = list(probs) if not isinstance(probs, np.ndarray) or probs.ndim == 3 else [probs]
        if len(masks_l) != len(probs_l):
            raise ValueError(f"{len(masks_l)} masks but {len(probs_l)} probability maps")
        for j, (mask, prob) in enumerate(zip(masks_l, probs_l, strict=True)):
            mask = np.asarray(mask).astype(bool)
            prob = np.asarray(prob, dtype=np.float32)
            if mask.shape != prob.shape:
                raise ValueError(f"mask shape {mask.shape} differs from prediction shape {prob.shape}")
            m8, p1 = mask[None].astype(np.uint8), prob[None]
            tp, fp, fn = (int(c[0]) for c in metrics.confusion_counts(m8, p1, self.threshold))
            self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn
            flag = bool(defective[j]) if defective is not None else bool(mask.any())
            self.flags.append(flag)
            self.scores.append(image_score(prob))
            if flag:
                self.dice.append(metrics.overlap(tp, fp, fn, "dice"))
                self.iou.append(metrics.overlap(tp, fp, fn, "iou"))
                self.bf1.append(
                    float(metrics.boundary_f1(m8, p1, threshold=self.threshold, tolerance=self.tolerance))
                )

    def result(self) -> dict[str, Any]:
        """The evaluation dict (see :data:`EVAL_KEYS`); undefined values are ``None``."""
        from . import metrics

        n = len(self.flags)
        n_def = int(sum(self.flags))
        flags = np.asarray(self.flags, bool)
        scores = np.asarray(self.scores, np.float64)
        # pooled over all images; no defect anywhere, none predicted: 1.0 (metrics.overlap)
        pixel_iou = metrics.overlap(self.tp, self.fp, self.fn, "iou")
        pixel_dice = metrics.overlap(self.tp, self.fp, self.fn, "dice")
        auroc = ap = None
        if 0 < n_def < n:
            lvl = metrics.image_level(flags, scores, self.threshold)
            auroc, ap = lvl["auroc"], lvl["ap"]
        flagged = scores >= self.threshold
        tpr = float(np.mean(flagged[flags])) if n_def else None
        tnr = float(np.mean(~flagged[~flags])) if n - n_def else None
        out = {
            "images": n,
            "defective_images": n_def,
            "dice_defective_mean": float(np.mean(self.dice)) if self.dice else None,
            "iou_defective_mean": float(np.mean(self.iou)) if self.iou else None,
            "pixel_iou": pixel_iou,
            "pixel_dice": pixel_dice,
            "boundary_f1": float(np.mean(self.bf1)) if self.bf1 else None,
            "image_auroc": auroc,
            "image_ap": ap,
            "tpr": tpr,
            "tnr": tnr,
            "threshold": self.threshold,
            "seconds": 0.0,
            "clean_images": n - n_def,
            "false_positive_images": int(np.count_nonzero(flagged & ~flags)),
            "false_negative_images": int(np.count_nonzero(~flagged & flags)),
            "dice_defective_std": float(np.std(self.dice)) if self.dice else None,
        }
        return {k: _json_number(v) for k, v in out.items()}


def summarize_predictions(
    masks: Any, probs: Any, threshold: float = 0.5, defective: Sequence[bool] | None = None
) -> dict[str, Any]:
    """The :func:`evaluate` dict for given masks and probabilities (no model; for tests and notebooks)."""
    acc = EvalAccumulator(threshold)
    acc.update(masks, probs, defective)
    return acc.result()


def _check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and 0.0 <= float(threshold) <= 1.0):
        raise ConfigError(f"threshold must be a probability between 0 and 1, got {threshold!r}")


def evaluate(
    model: Any,
    samples: Sequence[Any],
    *,
    threshold: float = 0.5,
    batch_size: int = 8,
    image_size: int = 512,
    policy: str = "resize",
    progress: bool | None = None,
    fast: bool = True,
) -> dict[str, Any]:
    """Segmentation and image-level metrics of ``model`` (a model or a path) on ``samples``.

    With ``fast`` (default) and ncnn or OpenVINO installed, the probabilities come from
    :func:`dagm_helpers.speed.fast.fast_predictor` (the same numbers to ~1e-5, about 2x faster on
    a CPU); otherwise from :func:`predict_proba`. ``result["backend"]`` says which.

    Images are read with :func:`dagm_helpers.data.pipeline.load_arrays` (``image_size``, ``policy``) in
    chunks of :data:`EVAL_CHUNK`, so memory does not grow with the number of images. Returns a dict with
    the keys of :data:`EVAL_KEYS` (plus ``clean_images``, ``false_positive_images``,
    ``false_negative_images``, ``dice_defective_std``, ``image_size``), all JSON-safe numbers:

    * ``dice_defective_mean``, ``iou_defective_mean``, ``boundary_f1``: per-image means over the
      defective images (tolerance 2 px for the boundary F1);
    * ``pixel_iou``, ``pixel_dice``: pooled over every pixel of every image;
    * image-level: score = the mean of the ``metrics.TOP_K`` (100) most confident pixel
      probabilities (:func:`image_score`, robust to a few stray pixels), an image is
      flagged defective when its score >= ``threshold``; ``tpr``/``tnr`` are the shares of defective /
      clean images flagged correctly, ``image_auroc``/``image_ap`` rank the scores.

    Values that are undefined for the data are ``None`` (JSON ``null``): AUROC and AP when only one
    class of image is present, ``tpr`` and the per-image means without defective images, ``tnr``
    without clean images.
    """
    from .data.images import conversions_said_once, load_sample
    from .data.pipeline import load_arrays

    _check_threshold(threshold)
    start = time.perf_counter()
    model = _as_model(model)
    samples = list(samples)
    if not samples:
        raise DatasetError("no samples to evaluate: check the data folder, the classes and the split")
    acc = EvalAccumulator(threshold)
    channels = model_channels(model)
    runner = _Runner(model, batch_size, fast=fast)  # built once: a fast runtime converts the model
    bar = _progress(len(samples), "evaluate", progress)
    with conversions_said_once(len(samples)):  # colour/16-bit images: said once, not per file
        try:
            for chunk in _eval_chunks(samples, policy):
                if policy == "none":  # each image at its own size (your own images), tiled where large
                    pairs = [load_sample(s, size=image_size, policy="none", channels=channels) for s in chunk]
                    images, masks = [p[0] for p in pairs], [p[1] for p in pairs]
                else:
                    images, masks = load_arrays(chunk, size=image_size, policy=policy, channels=channels)
                probs = _predict_items(runner, model, list(images), single=False)
                acc.update(masks, probs, [bool(s.defective) for s in chunk])
                bar.update(len(chunk))
        finally:
            bar.close()
    result = acc.result()
    result["seconds"] = round(time.perf_counter() - start, 3)
    result["image_size"] = int(image_size) if policy != "none" else None
    result["image_policy"] = policy
    result["backend"] = runner.backend  # after the calls: "auto" has chosen by then
    result["precision"] = runner.precision
    return result


def _eval_chunks(samples: list[Any], policy: str) -> Iterable[list[Any]]:
    """The samples in chunks of :data:`EVAL_CHUNK` images, or, for images kept at their own size,
    of at most that many 512x512 images' worth of pixels (one large image alone), so that memory
    stays bounded whatever the sizes."""
    if policy != "none":
        for i in range(0, len(samples), EVAL_CHUNK):
            yield samples[i : i + EVAL_CHUNK]
        return
    budget, chunk, used = EVAL_CHUNK * 512 * 512, [], 0
    for sample in samples:
        pixels = getattr(sample, "pixels", None) or 512 * 512
        if chunk and used + pixels > budget:
            yield chunk
            chunk, used = [], 0
        chunk.append(sample)
        used += pixels
    if chunk:
        yield chunk


def evaluate_cli(args: Any) -> dict[str, Any]:
    """``python -m dagm_helpers evaluate``: resolve data and profile, select the split, evaluate."""
    from .config import resolve_profile
    from .data import resolve_data
    from .data.layout import SampleIndex, scan

    profile = resolve_profile(getattr(args, "profile", None))
    model = load_model(args.model)  # fail fast, before any data is generated or scanned
    root = resolve_data(getattr(args, "data", None), profile)
    index = scan(root)
    classes = tuple(args.classes) if getattr(args, "classes", None) else tuple(profile.classes)
    split = getattr(args, "split", "Test")
    selected = index.filter(classes=classes, split=split)
    seen = run_training_images(args.model) if split != "Train" else set()
    left_out = 0
    if seen:  # never score an image the model trained or chose its threshold on
        keep = [s for s in selected if layout.sample_key(s, index.root) not in seen]
        left_out = len(selected) - len(keep)
        selected = SampleIndex(keep, index.root)
    if len(selected) == 0:
        have = (
            ", ".join(f"class {r['class']} {r['split']} ({r['images']} images)" for r in index.counts())
            or "nothing"
        )
        raise DatasetError(
            f"{root}: no images for class(es) {', '.join(map(str, classes))} in split {split!r}; "
            f"the folder has: {have}. Choose --classes/--split from those"
        )
    result = evaluate(
        model,
        selected,
        threshold=model_threshold(args.model, getattr(args, "threshold", None)),
        batch_size=getattr(args, "batch_size", 8) or 8,
        image_size=profile.image_size,
        policy=layout.image_policy(index),
        progress=False,
    )
    result.update(model=str(args.model), data=str(root), classes=list(classes), split=split)
    if left_out:
        result["left_out_training_images"] = left_out
    return result


def run_training_images(model_path: str | os.PathLike[str]) -> set[str]:
    """The images (``layout.sample_key`` names) the training run of a saved model trained and
    validated on, from ``split.json`` beside ``model.keras``; empty when there is none."""
    import json

    try:
        record = json.loads((Path(model_path).parent / "split.json").read_text(encoding="utf-8"))
        return {str(k) for part in ("train", "val") for k in record.get(part, [])}
    except (OSError, ValueError, TypeError, AttributeError):
        return set()


def model_threshold(model_path: str | os.PathLike[str], given: float | None = None) -> float:
    """The threshold to use for a saved model: ``given``, else the one its training run chose on
    validation (``metrics.json`` beside ``model.keras``), else 0.5."""
    import json

    if given is not None:
        return float(given)
    try:
        saved = json.loads((Path(model_path).parent / "metrics.json").read_text(encoding="utf-8"))
        if saved.get("threshold_source") == "validation":
            return float(saved["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return 0.5


# ----------------------------------------------------------------------------- files
def _progress(total: int, desc: str, progress: bool | None):
    from tqdm.auto import tqdm

    disable = (not sys.stderr.isatty()) if progress is None else not progress
    return tqdm(total=total, desc=desc, unit="img", disable=disable)


def _int8_settings(precision: str, fast: bool, calibration: Any) -> list[np.ndarray] | None:
    """None for float32; for int8 the calibration images read from ``calibration`` (at most
    :data:`MAX_CALIBRATION_IMAGES`; an empty list: calibrate on the first
    batch predicted). Raises ConfigError for settings that cannot go together."""
    from .data.images import read_image

    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "f32":
        if calibration is not None:
            raise ConfigError(
                "calibration images are for int8 only; add --precision int8 or drop --calibration"
            )
        return None
    if not fast:
        raise ConfigError("int8 runs on the fast runtime (OpenVINO); drop --no-fast or use --precision f32")
    if calibration is None:
        return []
    images = []
    for path in _list_inputs(Path(calibration))[:MAX_CALIBRATION_IMAGES]:
        try:
            images.append(read_image(path, policy="none"))
        except (DagmError, OSError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot read this calibration image ({_short(str(exc))})") from exc
    return images


def _list_inputs(input_path: Path, out: Path | None = None) -> list[Path]:
    """The image files of ``input_path`` (a file, or a folder searched non-recursively). When
    ``out`` is that same folder, the outputs an earlier ``predict`` listed in its
    ``predictions.csv`` (its manifest) are left out, and nothing else: an input is never taken
    for an output because of its name."""
    if not input_path.exists():
        raise DatasetError(f"{input_path}: no such file or folder; pass an image file or a folder of images")
    if input_path.is_file():
        if input_path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetError(
                f"{input_path}: not an image file (suffix {input_path.suffix!r}); "
                f"pass a {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} file or a folder"
            )
        return [input_path]
    ours = _earlier_outputs(out) if out is not None and out.resolve() == input_path.resolve() else set()
    files, skipped, broken = [], [], []
    for p in sorted(input_path.iterdir()):
        if p.is_symlink() and not p.exists():
            broken.append(p)
            continue
        if not p.is_file() or p.name.startswith(".") or p.name in ours:
            continue
        (files if p.suffix.lower() in IMAGE_SUFFIXES else skipped).append(p)
    if broken:
        names = ", ".join(f"{p.name} -> {os.readlink(p)}" for p in broken[:5])
        warnings.warn(
            f"{input_path}: skipping {len(broken)} broken link(s) whose target does not exist: {names}; "
            "fix or remove them",
            stacklevel=3,
        )
    if skipped:
        names = ", ".join(p.name for p in skipped[:10]) + (
            f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        )
        warnings.warn(f"{input_path}: skipping {len(skipped)} non-image file(s): {names}", stacklevel=3)
    if not files:
        raise DatasetError(
            f"{input_path}: no image files ({'/'.join(s[1:] for s in IMAGE_SUFFIXES)}) in this folder "
            "(sub-folders are not searched); pass a folder that contains images"
        )
    return files


def _earlier_outputs(out: Path) -> set[str]:
    """The mask and overlay files an earlier ``predict`` into ``out`` wrote (its predictions.csv)."""
    try:
        with open(out / PREDICTIONS_CSV, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return set()
    return {row[k] for row in rows for k in ("mask", "overlay") if row.get(k)}


def _output_stems(files: list[Path]) -> list[str]:
    """One output stem per input, unique even where file systems ignore case: the file's stem, its
    extension added when two inputs share a stem (``a.png``, ``a.jpg``: ``a_png``, ``a_jpg``), a
    counter when that still collides (``a.png``, ``a.PNG``: ``a_png``, ``a_PNG_2``)."""
    counts: dict[str, int] = defaultdict(int)
    for p in files:
        counts[p.stem.lower()] += 1
    taken: set[str] = set()
    stems = []
    for p in files:
        stem = p.stem if counts[p.stem.lower()] == 1 else f"{p.stem}_{p.suffix[1:]}"
        unique, n = stem, 1
        while unique.lower() in taken:
            n += 1
            unique = f"{stem}_{n}"
        taken.add(unique.lower())
        stems.append(unique)
    return stems


def _write_png(dest: Path, array: np.ndarray) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    with atomic_path(dest) as tmp:
        tmp.write_bytes(buf.getvalue())


PREDICTIONS_CSV = "predictions.csv"
_CSV_FIELDS = (
    "file",
    "status",
    "defect_score",
    "defective",
    "defect_area_px",
    "mask",
    "overlay",
    "error",
    "runtime",  # what predicted the image: "tf", "ncnn", "openvino" or "xla"
    "precision",  # "f32" or "int8"
)


@dataclass
class PredictionSummary:
    """What ``predict_files`` did: where, how many inputs were predicted and how many skipped."""

    out: Path
    done: int
    skipped: int
    backend: str
    precision: str

    def __fspath__(self) -> str:  # usable where the output folder's path was expected
        return str(self.out)


def predict_files(
    model_path: str | os.PathLike[str],
    input: str | os.PathLike[str],  # noqa: A002  (the CLI's name)
    out: str | os.PathLike[str],
    threshold: float = 0.5,
    batch_size: int = 8,
    progress: bool | None = None,
    fast: bool = True,
    precision: str = "f32",
    calibration: str | os.PathLike[str] | None = None,
) -> PredictionSummary:
    """Predict every image in ``input`` (a file, or a folder searched non-recursively) into ``out``.

    Writes per image ``<stem>_mask.png`` (0/255, the input's size) and ``<stem>_overlay.png`` (the
    image in grey with the predicted defect edges in :data:`viz.PRED_COLOR`), with stems unique per
    input (:func:`_output_stems`), and ``predictions.csv``: one row per input with ``file``,
    ``status`` (``ok`` or ``skipped``), ``defect_score`` (:func:`image_score`), ``defective``
    (yes/no; ``error`` when skipped), ``defect_area_px``, ``mask``, ``overlay`` and ``error``. It
    is also the manifest that keeps a later run into the same folder from reading these outputs
    as inputs. An input that cannot be read or processed (a corrupt file, a 1x1 image, ...) is
    skipped with one ``warning:`` naming it and the reason; the others are predicted. Every file
    is written atomically; ``predictions.csv`` is rewritten after every batch. ``fast``
    (default): the fastest runtime an accelerator offers (see :func:`predict_proba`).
    ``precision="int8"``: an accelerator's int8 quantisation, calibrated on the images in
    ``calibration`` (a file or folder; typical training images, defective ones included), or on
    the first batch predicted when it is None; check its masks against float32 on your images
    first (``docs/performance.md``). Returns a :class:`PredictionSummary`.
    """
    from .data.images import conversions_said_once

    _check_threshold(threshold)
    out = Path(out)
    files = _list_inputs(Path(input), out)
    int8 = _int8_settings(precision, fast, calibration)
    model = load_model(model_path)
    # built once: a fast runtime converts the model
    runner = _Runner(model, batch_size, fast=fast, precision=precision, calibration=int8)
    out.mkdir(parents=True, exist_ok=True)
    stems = _output_stems(files)
    min_side = required_multiple(model)
    fixed = _fixed_input_hw(model)
    if fixed is not None:  # the cost, stated once
        m = min_side
        ov = _fixed_overlap(fixed, m, TILE_OVERLAP)
        warnings.warn(
            f"{model_path}: this model only takes {fixed[0]}x{fixed[1]} inputs, so every image is predicted "
            f"in tiles of that size (a 512x512 image needs {tile_count((512, 512), m, fixed, ov)}; images "
            f"needing more than {MAX_FIXED_SIZE_TILES:,} are skipped); a model built with input shape "
            "(None, None, 1) predicts whole images",
            stacklevel=2,
        )
    rows: list[dict[str, Any]] = []
    bar = _progress(len(files), "predict", progress)
    # a folder of colour or 16-bit images: one conversion warning for all of them, not one per file
    with conversions_said_once(len(files)):
        try:
            for k in range(0, len(files), batch_size):
                batch = list(zip(files[k : k + batch_size], stems[k : k + batch_size], strict=True))
                for row in _predict_batch(runner, model, batch, out, threshold, min_side):
                    if row["status"] == "ok":
                        row.update(runtime=runner.backend, precision=runner.precision)
                    rows.append(row)
                _write_csv(out / PREDICTIONS_CSV, rows)
                bar.update(len(batch))
        finally:
            bar.close()
    done = sum(r["status"] == "ok" for r in rows)
    return PredictionSummary(out, done, len(rows) - done, runner.backend, runner.precision)


def _predict_batch(
    runner: _Runner, model: Any, batch: list[tuple[Path, str]], out: Path, threshold: float, min_side: int = 1
) -> list[dict]:
    """Rows of ``predictions.csv`` for one batch: read, predict (together when possible, one by
    one when the batch fails, so that one bad image costs only itself) and write each image."""
    from .data.images import read_image

    rows: dict[Path, dict] = {}
    good: list[tuple[Path, str, np.ndarray]] = []
    for path, stem in batch:
        try:
            image = read_image(path, policy="none", channels=model_channels(model))
            _check_values(image, 0)
            if min(image.shape[:2]) < min_side:
                rows[path] = _skipped(
                    path,
                    f"too small to inspect ({image.shape[0]}x{image.shape[1]} pixels; this model needs at "
                    f"least {min_side} pixels per side, its down-sampling factor)",
                )
                continue
            good.append((path, stem, image))
        except (DagmError, OSError, ValueError) as exc:
            rows[path] = _skipped(path, f"cannot read it ({_short(str(exc))})")
    try:
        probs = _predict_items(runner, model, [g[2] for g in good], single=False) if good else []
        outcome = list(zip(good, probs, strict=True))
    except Exception:  # noqa: BLE001 - isolate the image at fault: predict one by one
        outcome = [(g, None) for g in good]
    for (path, stem, image), prob in outcome:
        try:
            if prob is None:
                prob = _predict_items(runner, model, [image], single=True)
            rows[path] = _write_prediction(path, stem, image, prob, out, threshold)
        except OSError as exc:  # disk full, read-only: every later image would fail too
            raise OSError(
                exc.errno,
                f"cannot write the prediction of {path.name} into {out} ({exc.strerror or exc}); "
                "free some space or choose another --out",
            ) from exc
        except Exception as exc:  # noqa: BLE001 - any shape the model cannot take, any size down to 1x1
            rows[path] = _skipped(path, f"cannot predict it ({type(exc).__name__}: {_short(str(exc))})")
    return [rows[path] for path, _ in batch]


def _skipped(path: Path, reason: str) -> dict:
    warnings.warn(f"{path}: skipped, {reason}", stacklevel=4)
    return dict(
        file=path.name,
        status="skipped",
        defect_score="",
        defective="error",
        defect_area_px="",
        mask="",
        overlay="",
        error=reason,
    )


def _write_prediction(
    path: Path, stem: str, image: np.ndarray, prob: np.ndarray, out: Path, threshold: float
) -> dict:
    from .viz import edge_overlay

    if prob.shape != image.shape[:2]:
        raise ValueError(f"the model returned {prob.shape} probabilities for a {image.shape} image")
    mask = prob >= threshold
    score = image_score(prob)
    overlay = edge_overlay(image, prob, threshold)  # before anything is written: nothing half-done
    _write_png(out / f"{stem}_mask.png", mask.astype(np.uint8) * 255)
    _write_png(out / f"{stem}_overlay.png", overlay)
    return dict(
        file=path.name,
        status="ok",
        defect_score=f"{score:.6f}",
        defective="yes" if score >= threshold else "no",
        defect_area_px=int(np.count_nonzero(mask)),
        mask=f"{stem}_mask.png",
        overlay=f"{stem}_overlay.png",
        error="",
    )


def _write_csv(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


__all__ = [
    "PREDICTIONS_CSV",
    "PredictionSummary",
    "as_float32",
    "save_model",
    "EVAL_KEYS",
    "IMAGE_SUFFIXES",
    "MAX_BATCH_PIXELS",
    "MAX_IMAGE_PIXELS",
    "MAX_FIXED_SIZE_TILES",
    "MAX_UNTILED_PIXELS",
    "TILE_OVERLAP",
    "TILE_SIZE",
    "EvalAccumulator",
    "evaluate",
    "evaluate_cli",
    "load_model",
    "predict_files",
    "predict_proba",
    "required_multiple",
    "summarize_predictions",
]
