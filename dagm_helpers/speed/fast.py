"""Fast inference and training settings, chosen by measurement (``docs/performance.md``).

Inference: :func:`fast_predictor` wraps a trained U-Net in a :class:`Predictor` that
turns raw grey images into defect probabilities, like ``infer.predict_proba`` but
through the fastest runtime available:

``"ncnn"``
    the Keras model converted to an ncnn network by :mod:`dagm_helpers.speed.ncnn_export` and run
    one image at a time with Winograd 3x3 convolutions (~4x fewer multiplications); float32,
    same numbers as TensorFlow within ~1e-5. The fastest path measured on a 2-core AVX2 CPU
    (~20% faster than OpenVINO there, ``docs/performance.md``). Any image size, nothing to compile.
``"openvino"``
    the Keras model converted in memory by OpenVINO (``openvino.convert_model``) and
    compiled for the CPU per input shape with the ``LATENCY`` hint. Float32 by default
    (same numbers as TensorFlow within ~1e-5); ``precision="int8"`` quantises it after
    training with NNCF, calibrated on images you pass (or on the first images it sees). Whether
    int8 pays depends on the CPU: 1.6-2.0x float32 on 2 Zen 3 cores (AVX2, no VNNI), masks
    agreeing with float32 at Dice 0.995; no faster than float32 on a Zen 2 with two
    hyper-threads; more on CPUs with int8 dot-product instructions (VNNI/AMX).
``"xla"``
    ``tf.function(jit_compile=True)`` (useful on GPUs; on CPUs usually slower than "tf").
``"tf"``
    a plain graph-mode ``tf.function``: always available, the fallback.
``"auto"``
    on a CPU, measured: ``"ncnn"``, ``"openvino"`` (each when installed, ``pip install
    dagm-helpers[fast]``, and able to run the model) and ``"tf"`` are timed on the first batch
    of the first call, cropped to at most :data:`AUTO_PROBE_IMAGES` x :data:`AUTO_PROBE_SIDE`
    x :data:`AUTO_PROBE_SIDE` to bound memory (one warm-up, best of :data:`AUTO_PROBE_REPEATS`), and the fastest runs
    from then on (``Predictor.backend`` says which; ``Predictor.probe_img_s`` holds the
    timings). Which one wins depends on the CPU: ncnn on a 2-core AVX2 Zen 2 with two
    hyper-threads, OpenVINO on 2 Zen 3 cores (``docs/performance.md``). int8: ``"openvino"``;
    ``"xla"`` on a GPU. ``python -m dagm_helpers bench`` times every candidate on your machine.

Images of any size are reflection-padded at the bottom/right to a multiple of 16 (the
U-Net pools four times) and the probabilities cropped back; each padded shape is
compiled once and cached.

Training: :func:`training_settings` returns the ``compile``/``fit``/input-pipeline
settings of the project's fast training path; ``train.py`` uses them.

This module imports only ``model``, ``config``, ``errors`` and ``ncnn_export`` (leaves of the package).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError

BACKENDS: tuple[str, ...] = ("auto", "ncnn", "openvino", "xla", "tf")
#: TensorFlow's switch for its oneDNN CPU kernels, read once when TensorFlow is imported
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
#: side of the square centre crops larger calibration images are cut to. Whole 512x512 images
#: calibrate much better than 256x256 crops of them (masks agreeing with float32 at Dice 0.995
#: against 0.985, ``docs/performance.md``): a crop misses the statistics of the image's edges
CALIBRATION_CROP = 512
#: "auto" on a CPU: timed calls per runtime on the first batch (the best counts), after a warm-up
AUTO_PROBE_REPEATS = 3
#: "auto" times the runtimes on the first batch cropped to at most this side and to at most
#: AUTO_PROBE_IMAGES images: every runtime keeps its buffers while the others are timed, so timing
#: on whole batches (8 x 512 x 512, or 1024 x 1024 tiles) raised the peak memory of ``predict``
#: to 1.6-2x ``--no-fast`` (``docs/reliability.md``, ``tools/predict_memory.py``)
AUTO_PROBE_SIDE = 256
AUTO_PROBE_IMAGES = 4

__all__ = [
    "BACKENDS",
    "Predictor",
    "configure_threads",
    "cpu_features",
    "bf16_capable",
    "cpu_training_precision",
    "enable_onednn",
    "fast_predictor",
    "openvino_available",
    "runner_for",
    "ncnn_available",
    "nncf_available",
    "onednn_enabled",
    "training_settings",
    "xla_for_training",
]


def openvino_available() -> bool:
    """True when the optional ``openvino`` package can be imported."""
    return importlib.util.find_spec("openvino") is not None


def ncnn_available() -> bool:
    """True when ``ncnn`` (the Winograd CPU runtime, optional) can be imported."""
    return importlib.util.find_spec("ncnn") is not None


def nncf_available() -> bool:
    """True when ``nncf`` (needed for int8 quantisation) can be imported."""
    return importlib.util.find_spec("nncf") is not None


def _gpu_present() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def configure_threads(intra: int | None = None, inter: int | None = None) -> bool:
    """Set TensorFlow's intra/inter-op thread pools; False (and no change) if TensorFlow already ran ops."""
    import tensorflow as tf

    try:
        if intra is not None:
            tf.config.threading.set_intra_op_parallelism_threads(int(intra))
        if inter is not None:
            tf.config.threading.set_inter_op_parallelism_threads(int(inter))
    except RuntimeError:
        return False
    return True


@dataclass
class Predictor:
    """``predictor(images) -> float32 probabilities (N, H, W)``; see :func:`fast_predictor`.

    Calling it runs :func:`dagm_helpers.infer.predict_proba` (the project's one prediction
    engine: padding, batching, tiling) with this runtime doing the batches (:meth:`run`).

    Attributes:
        backend: the runtime actually used ("ncnn", "openvino", "xla" or "tf").
        precision: "f32" or "int8".
        batch_size: images per call into the runtime.
        multiple: image sides are padded to a multiple of this.
        threads: CPU threads the runtime was asked to use (None: its default).
        compiled_shapes: the (batch, height, width) shapes compiled so far.
    """

    backend: str
    precision: str
    batch_size: int
    multiple: int
    threads: int | None
    _run: Callable[[np.ndarray], np.ndarray] | None = field(repr=False)
    compiled_shapes: list[tuple[int, int, int]] = field(default_factory=list)
    #: "auto" before its first call: the runtimes it will time, by name
    candidates: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict, repr=False)
    #: "auto" after its first call: images/s of each runtime on the first batch
    probe_img_s: dict[str, float] = field(default_factory=dict)
    #: the Keras model, weakly: a cached predictor must not keep its model alive
    _model: Any = field(default=None, repr=False)

    def __call__(self, images: Any) -> np.ndarray:
        from ..infer import predict_proba

        model = self._model() if self._model is not None else None
        if model is None:
            raise ConfigError("fast predictor: its Keras model no longer exists; build a new predictor")
        return predict_proba(model, images, batch_size=self.batch_size, predictor=self)

    def run(self, x: np.ndarray) -> np.ndarray:
        """One batch ``(B, H, W, 1)`` float32, sides multiples of :attr:`multiple` -> ``(B, H, W)``.

        "auto": the first batch is timed on every candidate runtime and the fastest kept."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[-1] != 1 or x.shape[1] % self.multiple or x.shape[2] % self.multiple:
            raise ConfigError(  # a native runtime given a wrong shape can corrupt memory: refuse it
                f"fast predictor: a batch must be (B, H, W, 1) with H and W multiples of {self.multiple}, "
                f"got {x.shape}; call the predictor itself, which pads"
            )
        shape = tuple(int(s) for s in x.shape[:3])
        if shape not in self.compiled_shapes:  # each runtime compiles (or traces) per shape
            self.compiled_shapes.append(shape)
        if self.candidates:
            probe = x[:AUTO_PROBE_IMAGES, :AUTO_PROBE_SIDE, :AUTO_PROBE_SIDE]
            self.backend, self.probe_img_s, first = _fastest(self.candidates, np.ascontiguousarray(probe))
            self._run = self.candidates[self.backend]
            self.candidates = {}  # the others' converted networks and buffers go now
            _release_memory()
            if probe.shape == x.shape:
                return first
        assert self._run is not None
        return self._run(x)

    def info(self) -> dict:
        """JSON-friendly description (for benchmarks and logs)."""
        return {
            "backend": self.backend,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "compiled_shapes": [list(s) for s in self.compiled_shapes],
            "probe_img_s": dict(self.probe_img_s),
        }


def _release_memory() -> None:
    """Collect the runtimes just dropped and hand freed heap back to the system (glibc only)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused by this process instead
        pass


def _fastest(
    runners: dict[str, Callable[[np.ndarray], np.ndarray]], probe: np.ndarray
) -> tuple[str, dict[str, float], np.ndarray]:
    """The name of the fastest runner on ``probe`` (one warm-up call, then the best of
    :data:`AUTO_PROBE_REPEATS`), every runner's images/s, and the winner's output on ``probe``.
    A runner that fails is skipped with a warning; if all fail, the last error is raised.

    ``probe`` is a whole batch, as the runners will get them: the warm-up compiles the shape
    that is used from then on, and batch-1 timings would undersell the runtimes that gain
    from batching (TensorFlow: 2.3 img/s at batch 1 against 6.4 at batch 8 at 512x512)."""
    import time

    rates: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}
    error: Exception | None = None
    for name, run in runners.items():
        try:
            outputs[name] = run(probe)  # compiles or traces for this shape
            best = float("inf")
            for _ in range(AUTO_PROBE_REPEATS):
                t0 = time.perf_counter()
                run(probe)
                best = min(best, time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - one runtime failing leaves the others
            warnings.warn(
                f"fast predictor: {name} failed on the probe batch ({exc})", RuntimeWarning, stacklevel=3
            )
            error = exc
            continue
        rates[name] = len(probe) / max(best, 1e-9)
    if not rates:
        assert error is not None
        raise error
    name = max(rates, key=rates.__getitem__)
    return name, rates, outputs[name]


def _tf_runner(model: Any, jit: bool) -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf

    @tf.function(jit_compile=jit, reduce_retracing=False)
    def graph(x):
        return tf.cast(model(x, training=False), tf.float32)

    def run(x: np.ndarray) -> np.ndarray:
        return graph(tf.constant(x)).numpy()[..., 0]

    return run


def _calibration_images(calibration: Any) -> list[np.ndarray] | None:
    """Calibration images as a list of (H, W) float32 arrays (sizes may differ), or None (none
    given, or an empty list: calibrate on the first batch predicted)."""
    from ..infer import as_image_list

    if calibration is None:
        return None
    items, _ = as_image_list(calibration)
    return [np.asarray(img, np.float32) for img in items] or None


def _calibration_crops(images: Any, multiple: int, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` (1, c, c, 1) float32 images for NNCF: centre crops of at most
    :data:`CALIBRATION_CROP` a side, padded to the multiple."""
    from ..infer import pad_to_multiple

    crops = []
    for img in images[:limit]:
        h, w = img.shape
        c = min(CALIBRATION_CROP, h, w)
        top, left = (h - c) // 2, (w - c) // 2
        crop = pad_to_multiple(img[top : top + c, left : left + c], multiple)
        crops.append(np.ascontiguousarray(crop[None, ..., None], dtype=np.float32))
    return crops


def _quantize(ov_model: Any, calibration: Any, multiple: int) -> Any:
    import contextlib
    import logging
    import sys

    import nncf

    nncf.set_log_level(logging.ERROR)
    crops = _calibration_crops(calibration, multiple, max(1, len(calibration)))
    # NNCF draws progress bars on stdout; keep stdout clean for JSON output
    with contextlib.redirect_stdout(sys.stderr):
        return nncf.quantize(
            ov_model,
            nncf.Dataset(crops),
            subset_size=len(crops),
            # asymmetric activations: masks agree a little better with float32 at the same speed
            # (Dice 0.985 against 0.982, both calibrated on 256x256 crops, docs/performance.md)
            preset=nncf.QuantizationPreset.MIXED,
        )


@functools.lru_cache(maxsize=1)
def _openvino_core() -> Any:
    """One OpenVINO ``Core`` per process, shared by every runner (each owns thread pools)."""
    import openvino as ov

    return ov.Core()


def _openvino_runner(
    model: Any,
    precision: str,
    threads: int | None,
    calibration: Any,
    multiple: int,
) -> Callable[[np.ndarray], np.ndarray]:
    import openvino as ov

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns about the input structure while tracing
        base = ov.convert_model(model, input=[(-1, -1, -1, 1)])
    core = _openvino_core()
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    state: dict[str, Any] = {"model": base if precision == "f32" else None}
    if precision == "int8" and calibration is not None:
        state["model"] = _quantize(base, calibration, multiple)
    compiled: dict[tuple[int, ...], Any] = {}

    def run(x: np.ndarray) -> np.ndarray:
        if state["model"] is None:  # int8 without calibration images: calibrate on the first batch
            state["model"] = _quantize(base, x[..., 0], multiple)
        key = tuple(int(s) for s in x.shape)
        fn = compiled.get(key)
        if fn is None:
            m = state["model"].clone()
            m.reshape({m.inputs[0]: ov.PartialShape(list(key))})
            fn = compiled[key] = core.compile_model(m, "CPU", config)
        return np.asarray(fn(x)[0], dtype=np.float32)[..., 0]

    return run


def _ncnn_runner(model: Any, threads: int | None, **options: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Images (N, H, W, 1) -> probabilities (N, H, W) through ncnn; ``options``: see ``load_net``."""
    import ncnn

    from .ncnn_export import INPUT_BLOB, load_net, to_ncnn

    exported = to_ncnn(model)  # raises ConfigError naming an unsupported layer
    net = load_net(exported, threads, **options)

    def run(x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape[:3], np.float32)
        for i in range(len(x)):
            # ncnn.Mat wraps this array without copying: keep it referenced until extract returns
            image = np.ascontiguousarray(x[i, None, :, :, 0] * exported.scale + exported.offset, np.float32)
            extractor = net.create_extractor()
            extractor.input(INPUT_BLOB, ncnn.Mat(image))
            status, prob = extractor.extract(exported.output)
            if status != 0:
                raise RuntimeError(f"ncnn failed on an image shaped {x.shape[1:3]} (status {status})")
            out[i] = np.array(prob, dtype=np.float32).reshape(x.shape[1:3])
        return out

    return run


def fast_predictor(
    model: Any,
    backend: str = "auto",
    batch_size: int = 8,
    threads: int | None = None,
    *,
    precision: str = "f32",
    calibration: Any = None,
) -> Predictor:
    """A :class:`Predictor` for ``model`` on the fastest available runtime.

    Args:
        model: a Keras U-Net taking raw grey values (N, H, W, 1) and giving sigmoid probabilities.
        backend: "auto", "ncnn", "openvino", "xla" or "tf" (see the module docstring). "ncnn",
            "openvino" or int8 without their package fall back to "tf" with a warning.
        batch_size: images per runtime call (8 is the benchmark's setting).
        threads: CPU threads for ncnn/OpenVINO (None: their default); TensorFlow's thread pools are
            process-wide, see :func:`configure_threads`.
        precision: "f32" (agrees with ``model(x)`` to ~1e-5) or "int8" (OpenVINO + NNCF
            post-training quantisation; masks agree with float32 at Dice >= 0.99 on the
            benchmark's images, check on yours with ``metrics.dice``).
        calibration: images for int8 calibration, (N, H, W) or a list of (H, W) arrays of any
            sizes (centre crops of at most 512x512 are used); ``None``: the first batch predicted.
            20-50 typical training images, defective ones included, are plenty.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown fast backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    from ..infer import PRECISIONS

    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    from ..model import required_multiple

    multiple = int(required_multiple(model))
    chosen = backend
    run: Callable[[np.ndarray], np.ndarray] | None = None
    if backend == "auto":
        if precision == "f32" and _gpu_present():
            chosen = "xla"
        elif precision == "f32" and (ncnn_available() or openvino_available()):
            candidates = _cpu_candidates(model, threads, multiple)
            if len(candidates) > 1:
                return Predictor(
                    "auto",
                    "f32",
                    batch_size,
                    multiple,
                    threads,
                    None,
                    candidates=candidates,
                    _model=weakref.ref(model),
                )
            # only TensorFlow is left: OpenVINO would always be a candidate
            warnings.warn(
                "ncnn cannot convert this model and openvino is not installed, so the fast predictor "
                "runs on plain TensorFlow",
                RuntimeWarning,
                stacklevel=2,
            )
            chosen, run = "tf", candidates["tf"]
        else:
            chosen = "openvino"
    available = {"ncnn": ncnn_available, "openvino": openvino_available}
    if chosen in available and not available[chosen]():
        warnings.warn(
            f"{chosen} is not installed, so the fast predictor runs on plain TensorFlow (about 2x "
            "slower on a CPU); install it with: pip install 'dagm-helpers[fast]'",
            RuntimeWarning,
            stacklevel=2,
        )
        chosen, precision = "tf", "f32"
    if precision == "int8" and chosen != "openvino":
        raise ConfigError(f"precision 'int8' needs backend 'openvino', not {chosen!r}")
    if precision == "int8" and not nncf_available():
        warnings.warn(
            "nncf is not installed, so int8 quantisation is off and the predictor runs in float32; "
            "install it with: pip install 'dagm-helpers[fast]'",
            RuntimeWarning,
            stacklevel=2,
        )
        precision = "f32"
    if run is None:  # else "auto" already built the ncnn runner
        if chosen == "ncnn":
            run = _ncnn_runner(model, threads)
        elif chosen == "openvino":
            calib = _calibration_images(calibration) if precision == "int8" else None
            run = _openvino_runner(model, precision, threads, calib, multiple)
        else:
            run = _tf_runner(model, chosen == "xla")
    return Predictor(chosen, precision, batch_size, multiple, threads, run, _model=weakref.ref(model))


#: model -> {(batch_size, precision): (weights fingerprint, predictor or None)}: converting a model
#: takes seconds, so repeated predictions reuse it while the weights stay the same
_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_fingerprint(model: Any) -> int:
    """A CRC-32 of the model's weight values: a converted copy of the model is stale once it changes."""
    import zlib

    crc = 0
    for w in model.get_weights():
        crc = zlib.crc32(np.ascontiguousarray(w).view(np.uint8), crc)
    return crc


def runner_for(
    model: Any, batch_size: int, precision: str = "f32", calibration: Any = None
) -> Predictor | None:
    """The accelerator's hook (:func:`dagm_helpers.hooks.fast_runner`): the fastest predictor for
    ``model``, or None when no runtime faster than TensorFlow is installed and able to run it.

    Float32: the measured "auto" choice among ncnn, OpenVINO and TensorFlow, cached per model,
    batch size and precision, and converted again when the model's weights have changed
    (training went on, or ``set_weights``). int8: OpenVINO quantised on ``calibration``.
    """
    from ..model import required_multiple

    if precision == "int8":
        return fast_predictor(
            model, backend="openvino", batch_size=batch_size, precision="int8", calibration=calibration
        )
    if not (ncnn_available() or openvino_available()) or required_multiple(model) != 16:
        return None
    fingerprint = _weights_fingerprint(model)
    cached = _RUNNERS.setdefault(model, {})
    key = (batch_size, precision)
    if key in cached and cached[key][0] == fingerprint:
        return cached[key][1]
    try:
        predictor = fast_predictor(model, backend="auto", batch_size=batch_size)
    except Exception as exc:  # a conversion problem must not cost the prediction: plain TensorFlow
        warnings.warn(f"fast inference unavailable ({exc}); using TensorFlow", RuntimeWarning, stacklevel=3)
        predictor = None
    cached[key] = (fingerprint, predictor)
    return predictor


def _cpu_candidates(
    model: Any, threads: int | None, multiple: int
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The float32 runtimes "auto" times on a CPU: ncnn and OpenVINO when installed and able to
    convert the model, and TensorFlow."""
    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    if ncnn_available():
        try:
            out["ncnn"] = _ncnn_runner(model, threads)
        except ConfigError:  # a layer the exporter does not know: the other runtimes
            pass
    if openvino_available():
        out["openvino"] = _openvino_runner(model, "f32", threads, None, multiple)
    out["tf"] = _tf_runner(model, False)
    return out


def training_settings(device: str | None = None) -> dict:
    """The fast training path's settings, by device ("cpu" or "gpu"; None: detected).

    Keys: ``jit_compile`` (``model.compile``), ``steps_per_execution`` (``model.compile``),
    ``mixed_precision`` (set ``keras.mixed_precision`` to ``mixed_float16`` before building),
    ``dataset`` (feed a ``tf.data`` pipeline built from in-memory arrays, not numpy arrays to
    ``fit``), ``prefetch`` (batches to prefetch; -1 = ``tf.data.AUTOTUNE``), ``threads``
    (``(intra, inter)`` op threads for :func:`configure_threads`, None = TensorFlow's default),
    ``onednn`` (run in a process where :func:`enable_onednn` ran before TensorFlow was imported),
    ``conv_gradients`` (``"matmul"``: :func:`dagm_helpers.speed.conv_grad.use_fast_conv_gradients` on the
    model; None: TensorFlow's own gradients).

    On a CPU at 512x512 (``docs/performance.md``): oneDNN gives about 1.3x, the matrix-multiply
    filter gradients about 1.2x more; XLA is left off because it bypasses oneDNN's kernels.
    """
    if device is None:
        device = "gpu" if _gpu_present() else "cpu"
    if device not in ("cpu", "gpu"):
        raise ConfigError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if device == "gpu":
        return {
            "jit_compile": True,
            "steps_per_execution": 1,
            "mixed_precision": True,
            "dataset": True,
            "prefetch": -1,
            "threads": None,
            "onednn": False,
            "conv_gradients": None,
        }
    return {
        "jit_compile": False,
        "steps_per_execution": 1,
        "mixed_precision": False,
        "dataset": True,
        "prefetch": -1,
        "threads": None,
        "onednn": True,
        "conv_gradients": "matmul",
    }


#: /proc/cpuinfo flags that matter for speed, by the name the reports use
CPU_FLAGS = {
    "avx2": "avx2",
    "avx512": "avx512f",
    "vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "amx": "amx_tile",
    "amx_bf16": "amx_bf16",
    "avx512_bf16": "avx512_bf16",
}


@functools.cache
def cpu_features() -> dict:
    """The CPU's model name and which of :data:`CPU_FLAGS` it has (Linux; empty elsewhere)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()  # noqa: SIM115
    except OSError:
        return {}
    model = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), ""
    )
    flags = set(
        next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    )
    return {"cpu_model": model, **{name: flag in flags for name, flag in CPU_FLAGS.items()}}


def bf16_capable() -> bool:
    """True on a CPU with bfloat16 instructions (AMX or AVX512-BF16) with oneDNN's kernels on
    (they carry the bfloat16 convolutions)."""
    features = cpu_features()
    return bool(features.get("amx_bf16") or features.get("avx512_bf16")) and bool(onednn_enabled())


def cpu_training_precision(on_gpu: bool) -> str:
    """The policy ``train`` uses on a CPU unless told otherwise: "float32".

    bfloat16 mixed precision (``train --precision mixed_bfloat16``, on a CPU where
    :func:`bf16_capable`) ran the cpu profile's steps 1.3x faster on 2 Sapphire Rapids cores,
    but one real-data run was not better for it (``docs/real_data.md``), so it is not the
    default until its quality is measured over seeds."""
    return "float32"


def enable_onednn() -> bool:
    """Turn on TensorFlow's oneDNN CPU kernels for this process; True if they are (or will be) on.

    TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it is imported, and leaves oneDNN off by
    default on CPUs without AVX-512 VNNI/AMX-class features, such as the 2-core AVX2 CI machine,
    where turning it on makes convolutions 1.4x (forward) to 2.5x (input gradient) faster
    (``docs/performance.md``). So this must run before TensorFlow is imported: the command line
    and :func:`dagm_helpers.notebook.report_runtime` call it first. A value the user has set is
    kept (``TF_ENABLE_ONEDNN_OPTS=0`` turns it off). After TensorFlow is imported it changes
    nothing and reports the state TensorFlow is in.
    """
    import sys

    if "tensorflow" in sys.modules:
        return bool(onednn_enabled())
    os.environ.setdefault(ONEDNN_ENV, "1")
    return os.environ[ONEDNN_ENV].strip().lower() in ("1", "true", "yes", "on")


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process (None before it is imported)."""
    import sys

    if "tensorflow" not in sys.modules:
        return None
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def xla_for_training(requested: bool, on_gpu: bool) -> bool:
    """Whether to compile training with XLA: as ``requested`` (a profile's ``xla``), except on a
    CPU with oneDNN on, where XLA's own convolutions replace oneDNN's and were slower: 6.9
    against 7.8 img/s for the ``cpu`` profile's 160x160 crops, 0.72 against 0.78 at 512x512
    (``docs/performance.md``)."""
    return bool(requested) and (on_gpu or not onednn_enabled())
