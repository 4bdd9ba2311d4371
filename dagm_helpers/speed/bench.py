"""``python -m dagm_helpers bench``: the project's speed against the tutorial's own code.

One run, one machine. :func:`run_benchmark` returns a JSON-friendly dict:

* training throughput, same model, same 512x512 images, batch 10 (same work per image):
  the tutorial's way (``model.fit`` on in-memory float32 numpy arrays, Adam 1e-4, Dice
  loss) in a process of its own with TensorFlow in its default setup, against the
  project's fast path (:func:`dagm_helpers.speed.fast.training_settings`), measured in a second
  process that turned oneDNN on before importing TensorFlow (:func:`fast_path_throughput`);
* inference throughput at 512x512, batch 8: ``model.predict`` against the project's paths
  (:func:`fast_inference`: :func:`dagm_helpers.speed.fast.fast_predictor` in float32, and in int8
  when NNCF is installed), and how well their masks agree (Dice); ``infer_img_s`` is the
  fastest path whose masks agree at Dice >= 0.99 (:func:`choose_infer_path`);
* the model's cost (GFLOP per image) against a float32 matrix-multiply probe of the
  machine (GFLOP/s), so the fraction of the hardware used is visible;
* time to quality: wall-clock seconds until the validation Dice on defective images
  reaches 0.80 on the built-in data, for the CPU profile (trained by
  :func:`dagm_helpers.training.train` as the command line does, in a process with oneDNN on:
  :func:`fast_time_to_quality`) and for the tutorial's recipe (it stops at a budget; the
  ratio is then a lower bound).

Every measurement runs in a child process (:func:`_in_child`): the tutorial's side in
TensorFlow's default setup (:func:`tutorial_measurements`), the fast path's with oneDNN on,
whatever the calling process set up.

Every timing is warmed up first and taken as the median of several
``time.perf_counter`` repeats. ``quick=True`` shrinks every size and budget so the run
takes about a minute: its numbers prove the code paths, not the speed (``"quick": true``).
"""

from __future__ import annotations

import math
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

QUALITY_DICE = 0.80
#: full run: the whole benchmark is planned to end within this many seconds. The tutorial recipe's
#: time-to-quality run comes last and gets what is left (less a margin for its validations) ...
FULL_RUN_BUDGET_S = 30 * 60.0
FULL_RUN_MARGIN_S = 180.0
#: ... but never more than this multiple of the fast path's time to quality (enough to show the
#: 10x target as a lower bound) and never less than the minimum. ``baseline_minutes``
#: (``--baseline-minutes``) replaces "what is left" with a stated cap, for a longer run.
BASELINE_BUDGET_FACTOR = 10.5
BASELINE_BUDGET_MIN_S = 5 * 60.0
#: full run: the CPU profile gets at most this long to reach the quality
FAST_TTQ_BUDGET_S = 12 * 60.0

__all__ = [
    "QUALITY_DICE",
    "baseline_budget_s",
    "choose_infer_path",
    "device_name",
    "fast_inference",
    "fast_path_throughput",
    "fast_time_to_quality",
    "peak_gflop_s",
    "peak_rss_mb",
    "reference_copy",
    "run_benchmark",
    "time_it",
    "tutorial_measurements",
    "versions",
]


LOG_PREFIX = "[bench] "


def _log(msg: str) -> None:
    print(f"{LOG_PREFIX}{msg}", file=sys.stderr, flush=True)


def time_it(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


def baseline_budget_s(fast_ttq_s: float, elapsed_s: float, cap_s: float | None = None) -> float:
    """Seconds of training the tutorial recipe gets in the full run.

    ``fast_ttq_s``: the fast path's time to quality (or its whole run when it missed);
    ``elapsed_s``: the benchmark's time so far; ``cap_s``: a stated cap (``--baseline-minutes``),
    else what is left of :data:`FULL_RUN_BUDGET_S` after a margin for the baseline's own
    validations. Never above :data:`BASELINE_BUDGET_FACTOR` times ``fast_ttq_s`` (enough for the
    10x bound) and never below :data:`BASELINE_BUDGET_MIN_S` (or ``cap_s`` when that is smaller).
    """
    if cap_s is None:
        cap_s = FULL_RUN_BUDGET_S - elapsed_s - FULL_RUN_MARGIN_S
        floor = BASELINE_BUDGET_MIN_S
    else:
        floor = min(BASELINE_BUDGET_MIN_S, cap_s)
    return max(floor, min(cap_s, BASELINE_BUDGET_FACTOR * fast_ttq_s))


def peak_rss_mb() -> float:
    """This process's memory high-water mark in MB.

    Linux: ``VmHWM`` from ``/proc/self/status``, the peak of the process's own memory since it
    started its program. ``getrusage``'s ``ru_maxrss`` is not that in a child process: Linux
    carries the parent's resident size at the fork into it, so a bench child would report at least
    the parent's size. Elsewhere ``ru_maxrss`` (kilobytes; bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def device_name() -> str:
    """The GPU's name when TensorFlow sees one, else the CPU model and its core count."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            details = tf.config.experimental.get_device_details(gpus[0])
            name = details.get("device_name", gpus[0].name)
        except Exception:  # noqa: BLE001 - details are best effort
            name = gpus[0].name
        return f"{name} x{len(gpus)}" if len(gpus) > 1 else str(name)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores"


def versions() -> dict[str, str | None]:
    """Versions of Python and the libraries that decide the speed."""
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "numpy", "ncnn", "openvino", "nncf"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def peak_gflop_s(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a float32 ``n x n`` matrix multiply (2 n^3 FLOPs): the best repeat of the faster
    of TensorFlow's and numpy's BLAS.

    This is an *achieved* matrix-multiply rate, not the CPU's theoretical peak: a tuned
    convolution engine (OpenVINO) can run faster than it, so ``infer_fraction_of_peak`` may
    exceed 1 (it reached 1.6 on the 2-core CI machine, whose matmul gave 63-74 GFLOP/s).
    """
    import tensorflow as tf

    a_np = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b_np = a_np[::-1].copy()
    a, b = tf.constant(a_np), tf.constant(b_np)
    engines = (lambda: tf.linalg.matmul(a, b).numpy(), lambda: a_np @ b_np)
    best = math.inf
    for once in engines:
        for _ in range(2):
            once()
        for _ in range(max(1, repeats)):  # the best repeat: a peak, not a typical value
            t0 = time.perf_counter()
            once()
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


# ----------------------------------------------------------------------------- data
def _pick_samples(samples: list, n: int, mixed: bool) -> list:
    """Up to ``n`` of ``samples`` (anything with ``.defective``), in order within each kind:
    defective first, or with ``mixed`` half defective, the rest clean (more of one kind where
    the other runs short)."""
    defective = [s for s in samples if s.defective]
    clean = [s for s in samples if not s.defective]
    if not mixed:
        return (defective + clean)[:n]
    k = max(n - len(clean), min(n // 2, len(defective)))
    return (defective[:k] + clean)[:n]


def _split_images(
    root: Path, classes: tuple[int, ...], size: int, n: int, split: str = "Test", mixed: bool = False
) -> np.ndarray:
    """``n`` real-looking images from a split, uint8 (n, size, size): defective first, or with
    ``mixed`` half defective and half clean (as far as the split has them)."""
    from ..data.layout import scan
    from ..data.pipeline import load_arrays

    samples = _pick_samples(list(scan(root).filter(classes=classes, split=split)), n, mixed)
    images, _ = load_arrays(samples, size=size)
    while len(images) < n:  # a tiny data set: repeat flipped copies
        images = np.concatenate([images, images[:, ::-1]])[:n]
    return images


def _compile_tutorial_way(model: Any, lr: float = 1e-4) -> Any:
    """Compile ``model`` as the tutorial did (Adam, Dice loss, Keras' defaults); return it."""
    import keras

    from ..losses import DiceLoss

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=DiceLoss())
    return model


def _tutorial_model(lr: float = 1e-4) -> Any:
    """The tutorial's network compiled the tutorial's way (Adam, Dice loss, Keras' defaults)."""
    from ..model import small_unet

    return _compile_tutorial_way(small_unet(), lr)


def reference_copy(trained: Any, lr: float = 1e-4) -> Any:
    """A copy of ``trained`` (same layers and weights) compiled the tutorial's way, for ``model.predict``.

    The copy keeps the trained network's own architecture (the ``cpu`` profile adds batch
    norm), so the reference and the fast path run exactly the same network.
    """
    import keras

    model = keras.models.clone_model(trained)
    model.set_weights(trained.get_weights())
    return _compile_tutorial_way(model, lr)


# ----------------------------------------------------------------------------- training throughput
def _median_step_s(run: Callable[[list], Any], repeats: int, phase: str = "train") -> float:
    """Median seconds of one batch inside ``run(callbacks)`` (a ``fit`` or ``predict`` call), timed by
    a callback on ``on_{phase}_batch_begin`` / ``on_{phase}_batch_end``.

    One untimed call first (it compiles). Batches are timed from begin to end, not whole calls: on
    the 2-core CI machine a ``fit`` or ``predict`` call sometimes idles for seconds after its last
    batch before it returns (``docs/experiments/fit_stall.py``), which would swamp a comparison of
    one- or two-batch calls; a real run is one long call, which pays that once.
    """
    import keras

    if phase not in ("train", "predict"):
        raise ValueError(f"phase must be 'train' or 'predict', got {phase!r}")
    steps: list[float] = []

    class Timer(keras.callbacks.Callback):
        def _begin(self, batch, logs=None):
            self.t0 = time.perf_counter()

        def _end(self, batch, logs=None):
            steps.append(time.perf_counter() - self.t0)

    setattr(Timer, f"on_{phase}_batch_begin", Timer._begin)
    setattr(Timer, f"on_{phase}_batch_end", Timer._end)

    run([])
    for _ in range(max(1, repeats)):
        run([Timer()])
    return float(statistics.median(steps))


def _train_arrays(size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The training throughput's images and masks (random: speed does not depend on content)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, 1)).astype(np.float32)
    y = (rng.random((n, size, size, 1)) < 0.05).astype(np.float32)
    return x, y


def _tutorial_fit_step_s(size: int, batch: int, n: int, repeats: int) -> float:
    """Median seconds of one step of the tutorial's way: ``fit`` on numpy arrays."""
    import keras

    x, y = _train_arrays(size, n)
    keras.utils.set_random_seed(0)
    base = _tutorial_model()
    return _median_step_s(
        lambda cbs: base.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True, callbacks=cbs),
        repeats,
    )


def _baseline_train_throughput(size: int, batch: int, n: int, repeats: int) -> dict:
    """Images/s of the tutorial's ``fit`` on numpy arrays, in this process (run in TensorFlow's
    default setup, :func:`tutorial_measurements`: the tutorial's own code does nothing to it)."""
    from .fast import onednn_enabled

    return {
        "baseline_train_img_s": batch / _tutorial_fit_step_s(size, batch, n, repeats),
        "baseline_onednn": onednn_enabled(),
        "train_batch_size": batch,
        "train_image_size": size,
        "train_images_per_repeat": n,
        "train_repeats": repeats,
        "train_timing": "median optimizer step inside fit, timed by a callback",
    }


def fast_path_throughput(size: int, batch: int, n: int, repeats: int) -> dict:
    """The fast training path's images/s (:func:`dagm_helpers.speed.fast.training_settings`: every
    setting honoured, mixed precision and threads included), run in a process where oneDNN was
    enabled before TensorFlow was imported (:func:`_in_child`).

    Also measured there, to split the gain: the tutorial's own ``fit`` with oneDNN on
    (``train_onednn_only_img_s``). On a CPU the same model is also timed with TensorFlow's own
    weight gradients (``train_tf_gradients_img_s``), and ``train_img_s`` is the one of the two
    that ``train`` would choose (:func:`dagm_helpers.training.choose_fastest`, the rule its
    chooser applies): ``train_speedup`` measures the path ``train`` takes, not a fixed one.
    """
    import keras
    import tensorflow as tf

    from ..losses import DiceLoss
    from ..model import small_unet
    from .conv_grad import use_fast_conv_gradients
    from .fast import configure_threads, onednn_enabled, training_settings

    settings = training_settings()
    result: dict[str, Any] = {"train_settings": settings, "train_onednn": onednn_enabled()}
    if settings["onednn"] and not result["train_onednn"]:
        raise RuntimeError("the fast path needs oneDNN, but TensorFlow started without it")
    if settings["threads"] is not None:
        configure_threads(*settings["threads"])
    x, y = _train_arrays(size, n)
    keras.utils.set_random_seed(0)
    # mixed precision (the gpu settings) for the fast model only: the tutorial's models measured
    # below in this process stay float32
    policy = keras.mixed_precision.global_policy()
    if settings["mixed_precision"]:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        fast = small_unet()
    finally:
        keras.mixed_precision.set_global_policy(policy)
    result["train_compute_dtype"] = next(
        layer.compute_dtype for layer in fast.layers if isinstance(layer, keras.layers.Conv2D)
    )
    result["train_conv_gradient_layers"] = (
        use_fast_conv_gradients(fast) if settings["conv_gradients"] == "matmul" else 0
    )

    def step_s(model: Any) -> float:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=1e-4),
            loss=DiceLoss(),
            jit_compile=settings["jit_compile"],
            steps_per_execution=settings["steps_per_execution"],
        )
        if settings["dataset"]:
            data = (
                tf.data.Dataset.from_tensor_slices((x, y))
                .shuffle(n, seed=0)
                .batch(batch)
                .prefetch(settings["prefetch"] if settings["prefetch"] >= 0 else tf.data.AUTOTUNE)
            )
            return _median_step_s(
                lambda cbs: model.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=cbs), repeats
            )
        return _median_step_s(  # the tutorial's own feeding, on the fast path's compiled model
            lambda cbs: model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True, callbacks=cbs),
            repeats,
        )

    fast_step = step_s(fast)
    per_step = batch * settings["steps_per_execution"]
    result["train_img_s"] = per_step / fast_step
    if result["train_conv_gradient_layers"]:  # a CPU: the variant train's chooser weighs it against
        from ..training import choose_fastest

        keras.utils.set_random_seed(0)
        plain_step = step_s(small_unet())
        result["train_tf_gradients_img_s"] = per_step / plain_step
        result["train_matmul_gradients_img_s"] = result["train_img_s"]
        chosen = choose_fastest({"tf": plain_step, "matmul": fast_step}, plain="tf")
        result["train_choice"] = {"conv_gradients": chosen}
        result["train_img_s"] = per_step / (plain_step if chosen == "tf" else fast_step)
    result["train_onednn_only_img_s"] = batch / _tutorial_fit_step_s(size, batch, n, repeats)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


CHILD_MARKER = "DAGM-BENCH-JSON "


def _in_child(function: str, kwargs: dict, env: dict[str, str], timeout_s: float) -> Any:
    """Run ``bench.<function>(**kwargs)`` in a fresh Python process with ``env``; return its result.

    Settings that TensorFlow reads once at import (oneDNN) can only differ between processes.
    The child's progress lines (``[bench] ...``) are passed on to this process's stderr as they
    come; the rest of its stderr is kept for the error message if it fails.
    """
    import json
    import subprocess
    import threading
    from collections import deque

    code = (
        "import json, sys\n"
        "from dagm_helpers.speed import bench\n"
        f"out = bench.{function}(**json.loads(sys.argv[1]))\n"
        f"print({CHILD_MARKER!r} + json.dumps(out), flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(kwargs)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout: list[str] = []
    tail: deque[str] = deque(maxlen=15)

    def collect() -> None:
        stdout.extend(proc.stdout)  # type: ignore[arg-type]

    def relay() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            if line.startswith(LOG_PREFIX):
                sys.stderr.write(line)
                sys.stderr.flush()
            else:
                tail.append(line.rstrip("\n"))

    readers = [threading.Thread(target=collect, daemon=True), threading.Thread(target=relay, daemon=True)]
    for reader in readers:
        reader.start()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"bench: {function} did not finish within {timeout_s:.0f} s") from exc
    finally:
        for reader in readers:
            reader.join(timeout=10)
    lines = [line for line in stdout if line.startswith(CHILD_MARKER)]
    if proc.returncode != 0 or not lines:
        text = "\n".join(tail)
        raise RuntimeError(f"bench: {function} failed in its own process (exit {proc.returncode}):\n{text}")
    return json.loads(lines[-1][len(CHILD_MARKER) :])


def _fast_path_env() -> dict[str, str]:
    """This process's environment with oneDNN switched on (and TensorFlow's chatter off)."""
    from .fast import ONEDNN_ENV

    return dict(os.environ, **{ONEDNN_ENV: "1", "TF_CPP_MIN_LOG_LEVEL": "2"})


def _tutorial_env() -> dict[str, str]:
    """This process's environment without the oneDNN switch: TensorFlow's default setup, as the
    tutorial's own code runs it (the command line and the notebooks set the switch)."""
    from .fast import ONEDNN_ENV

    env = {k: v for k, v in os.environ.items() if k != ONEDNN_ENV}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


# ----------------------------------------------------------------------------- time to quality
class _QualityStop:
    """Keras callback factory: stop once the run's history shows the target validation Dice."""

    @staticmethod
    def make(history_csv: Path, target: float) -> Any:
        import keras

        from ..history import read_history

        class Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                rows = read_history(history_csv)
                if rows and (rows[-1].get("val_dice_defective") or 0.0) >= target:
                    self.model.stop_training = True

        return Stop()


def fast_time_to_quality(
    work: str, profile_name: str, budget_s: float, overrides: dict, data: str = "synthetic"
) -> dict:
    """Train with a profile via :func:`dagm_helpers.training.train` until the quality is reached,
    on ``data`` (the generator, or a DAGM folder: ``bench --data DIR --classes N``).

    Meant for a process of its own started with oneDNN on (:func:`_in_child`), as the command line
    and the notebooks train: JSON in and out. ``model_path`` is the run's best checkpoint, for the
    bench's inference comparison.
    """
    from ..training import TrainConfig, train
    from .fast import onednn_enabled

    out = Path(work) / f"ttq-{profile_name}"
    config = TrainConfig(
        out=out,
        data=data,
        profile=profile_name,
        max_minutes=budget_s / 60.0,
        evaluate_test=False,
        verbose=0,
        overwrite=True,
        **overrides,
    )
    config.callbacks = [_QualityStop.make(out / "history.csv", QUALITY_DICE)]
    run = train(config)
    reached = [r for r in run.history if (r.get("val_dice_defective") or 0.0) >= QUALITY_DICE]
    best = max((r.get("val_dice_defective") or 0.0 for r in run.history), default=0.0)
    return {
        "seconds": float(reached[0]["elapsed_s"]) if reached else None,
        "elapsed_s": float(run.history[-1]["elapsed_s"]) if run.history else 0.0,
        "best_val_dice_defective": float(best),
        "epochs": len(run.history),
        "model_path": str(run.dir / run.metrics["checkpoint"]),
        "data_root": str(run.config["data_root"]),
        "classes": list(run.config["profile"]["classes"]),
        "val_fraction": float(run.config["profile"]["val_fraction"]),
        "onednn": onednn_enabled(),
        "peak_rss_mb": peak_rss_mb(),
    }


def _tutorial_time_to_quality(
    root: Path,
    classes: tuple[int, ...],
    size: int,
    budget_s: float,
    check_every: int,
    val_fraction: float = 0.2,
) -> dict:
    """The tutorial's recipe (full images, batch 10, Adam 1e-4, Dice loss, ``fit`` on numpy arrays),
    validated every ``check_every`` steps and stopped at the quality or at ``budget_s`` of training.

    Same training/validation split as :func:`dagm_helpers.training.train` with seed 0 (pass the
    profile's ``val_fraction``).
    Validation predicts only the defective validation images: the score is the mean Dice over
    exactly those images either way, and skipping the clean ones makes each check several
    times cheaper (validation time is not counted as training time, but it lengthens the run).
    """
    import keras

    from ..data.layout import scan
    from ..data.pipeline import load_arrays
    from ..losses import DiceLoss
    from ..training import validation_scores

    index = scan(root).filter(classes=classes, split="Train")
    train_set, val_set = index.train_val_split(val_fraction=val_fraction, seed=0)
    tx, ty = load_arrays(list(train_set), size=size)
    val_defective = [s for s in val_set if s.defective] or list(val_set)
    vx, vy = load_arrays(val_defective, size=size)
    x = tx[..., None].astype(np.float32)
    y = ty[..., None].astype(np.float32)
    keras.utils.set_random_seed(0)
    model = _tutorial_model()
    loss = DiceLoss()
    state = {"train_s": 0.0, "best": 0.0, "reached": None, "steps": 0, "t0": 0.0}

    class Watch(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            state["t0"] = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            state["train_s"] += time.perf_counter() - state["t0"]
            state["steps"] += 1
            over = state["train_s"] >= budget_s
            if state["steps"] % check_every == 0 or over:
                score = validation_scores(self.model, vx, vy, loss, batch_size=10)["val_dice_defective"]
                score = 0.0 if not math.isfinite(score) else score
                state["best"] = max(state["best"], score)
                if score >= QUALITY_DICE and state["reached"] is None:
                    state["reached"] = state["train_s"]
                    self.model.stop_training = True
            if over:
                self.model.stop_training = True

    epochs = 10_000  # stopped by the callback
    model.fit(x, y, batch_size=10, epochs=epochs, verbose=0, shuffle=True, callbacks=[Watch()])
    return {
        "seconds": state["reached"],
        "elapsed_s": state["train_s"],
        "best_val_dice_defective": state["best"],
        "steps": state["steps"],
        "val_images": len(vx),
    }


# ----------------------------------------------------------------------------- inference
INFER_BATCH = 8


#: masks of a faster inference path must agree with ``model.predict``'s at least this well (Dice)
INFER_AGREEMENT_MIN = 0.99


def _infer_images(fast_ttq: dict, quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """The inference comparison's images (Test split, defective first) and the int8 calibration
    images (Train split, half defective: a practitioner calibrates on training data, so the
    compared images are unseen), the same in every process."""
    data_root, classes = Path(fast_ttq["data_root"]), tuple(fast_ttq["classes"])
    size = 128 if quick else 512
    images = _split_images(data_root, classes, size, 8 if quick else 16)
    calib = _split_images(data_root, classes, size, 8 if quick else 32, split="Train", mixed=True)
    return images, calib


def choose_infer_path(paths: dict[str, dict]) -> str:
    """The fastest inference path whose masks agree with ``model.predict``'s at Dice >=
    :data:`INFER_AGREEMENT_MIN` (``paths``: name -> ``{"img_s", "agreement"}``); "f32" when none
    does (the float32 path is the reference's arithmetic: its agreement is 1.0 up to rounding)."""
    good = {name: p for name, p in paths.items() if p["agreement"] >= INFER_AGREEMENT_MIN}
    return max(good, key=lambda name: good[name]["img_s"]) if good else "f32"


def fast_inference(work: str, fast_ttq: dict, quick: bool) -> dict:
    """The project's inference paths on the trained network, for a process of its own with oneDNN
    on, as the command line predicts:

    * "f32": ``fast_predictor(model)`` ("auto": the runtimes timed on a first batch, the fastest
      kept), the same arithmetic as the model;
    * "int8": ``fast_predictor(model, backend="openvino", precision="int8", calibration=...)``,
      calibrated on training images, when OpenVINO and NNCF are installed.

    Also timed here, to split the gain: ``model.predict`` with oneDNN on, and with ``not quick``
    every runtime on its own (``candidates``). The probabilities go to
    ``<work>/fast_inference.npz`` for the tutorial's process to score against ``model.predict``
    (:func:`_infer_compare`); :func:`choose_infer_path` then picks the path reported as
    ``infer_img_s``. JSON in and out.
    """
    from ..infer import load_model
    from .fast import fast_predictor, ncnn_available, nncf_available, onednn_enabled, openvino_available

    model = load_model(fast_ttq["model_path"])
    images, calibration = _infer_images(fast_ttq, quick)
    n, repeats = len(images), 1 if quick else 3
    outputs: dict[str, np.ndarray] = {}
    paths: dict[str, dict] = {}

    def measure(name: str, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        predictor = fast_predictor(model, batch_size=INFER_BATCH, **kwargs)
        outputs[name] = predictor(images)  # the first call compiles ("auto": times the runtimes)
        prepare_s = time.perf_counter() - t0
        seconds = time_it(lambda: predictor(images), repeats=repeats, warmup=1)
        paths[name] = {
            "img_s": n / seconds,
            "backend": predictor.backend,
            "precision": predictor.precision,
            "prepare_s": prepare_s,
            "probe_img_s": predictor.probe_img_s,
        }

    measure("f32", backend="auto")
    if openvino_available() and nncf_available():
        measure("int8", backend="openvino", precision="int8", calibration=calibration)
    x = images[..., None].astype(np.float32)
    predict_onednn = INFER_BATCH / _median_step_s(
        lambda cbs: model.predict(x, batch_size=INFER_BATCH, verbose=0, callbacks=cbs),
        repeats + 1,
        phase="predict",
    )
    result: dict[str, Any] = {
        "infer_paths": paths,
        "infer_timing": "median of whole fast-predictor calls",
        "infer_probe_img_s": paths["f32"]["probe_img_s"],
        "infer_predict_onednn_img_s": predict_onednn,
        "infer_onednn": onednn_enabled(),
        "infer_batch_size": INFER_BATCH,
        "infer_images": n,
        "infer_calibration_images": len(calibration) if "int8" in paths else 0,
        "infer_image_size": int(images.shape[1]),
        "infer_repeats": repeats,
    }
    table: dict[str, dict] = {}
    if not quick:
        options: list[tuple[str, dict]] = [("tf.function", {"backend": "tf"}), ("xla", {"backend": "xla"})]
        if ncnn_available():
            options.append(("ncnn_f32", {"backend": "ncnn"}))
        if openvino_available():
            options.append(("openvino_f32", {"backend": "openvino"}))
        for name, kwargs in options:
            try:
                p = fast_predictor(model, batch_size=INFER_BATCH, **kwargs)
                outputs[name] = p(images)
                seconds = time_it(lambda p=p: p(images), repeats=repeats, warmup=1)
            except Exception as exc:  # noqa: BLE001 - a failing candidate is reported, not fatal
                table[name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                continue
            table[name] = {"img_s": n / seconds, "backend": p.backend, "precision": p.precision}
        if "int8" in paths:
            table["openvino_int8"] = {k: paths["int8"][k] for k in ("img_s", "backend", "precision")}
            outputs["openvino_int8"] = outputs["int8"]
    result["candidates"] = table
    np.savez(Path(work) / "fast_inference.npz", **outputs)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _infer_compare(model: Any, images: np.ndarray, repeats: int, fast_outputs: Path, fast: dict) -> dict:
    """``model.predict`` (the tutorial's way, in this process) on the images the fast path
    predicted in its own process (:func:`fast_inference`): its speed, and the agreement of the
    fast path's masks (and of every candidate's) with its masks.
    """
    from ..metrics import dice

    batch = INFER_BATCH
    x = images[..., None].astype(np.float32)
    n = len(images)
    if n % batch:
        raise ValueError(f"time inference on whole batches: {n} images is not a multiple of batch {batch}")
    # the tutorial's predict, timed per batch inside the call (like training): a short predict call
    # sometimes idles for ~2 s after its last batch on the 2-core machine, which would inflate the
    # ratio; the whole-call rate, idle included, is reported beside it
    base_batch_s = _median_step_s(
        lambda cbs: model.predict(x, batch_size=batch, verbose=0, callbacks=cbs), repeats, phase="predict"
    )
    # already compiled by the batch timing above: no warm-up call
    call_s = time_it(lambda: model.predict(x, batch_size=batch, verbose=0), repeats=repeats, warmup=0)
    reference = np.asarray(model.predict(x, batch_size=batch, verbose=0), np.float32)[..., 0]
    with np.load(fast_outputs) as saved:
        outputs = {name: saved[name] for name in saved.files}

    def agreement(out: np.ndarray) -> float:
        return float(dice(reference >= 0.5, out, threshold=0.5))

    result: dict[str, Any] = {
        "baseline_infer_img_s": batch / base_batch_s,
        "baseline_infer_call_img_s": n / call_s,
        "baseline_infer_timing": "median predict batch inside the call, timed by a callback",
        "infer_path_agreement": {name: agreement(outputs[name]) for name in fast["infer_paths"]},
        "infer_path_max_abs_diff": {
            name: float(np.max(np.abs(reference - outputs[name]))) for name in fast["infer_paths"]
        },
        "infer_reference_positive_fraction": float(np.mean(reference >= 0.5)),
    }
    if fast["candidates"]:
        table: dict[str, dict] = {
            "model.predict": {"img_s": batch / base_batch_s, "agreement": 1.0},
            "model.predict (whole calls)": {"img_s": n / call_s, "agreement": 1.0},
        }
        for name, row in fast["candidates"].items():
            table[name] = dict(row, agreement=agreement(outputs[name])) if name in outputs else row
        result["infer_candidates"] = table
    return result


def _gpu_extra(size: int, batch: int, repeats: int) -> dict:
    """GPU only: the gpu profile's path (mixed precision + XLA) at ``size``, batch ``batch``."""
    import keras
    import tensorflow as tf

    from ..losses import DiceLoss
    from ..model import small_unet

    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = small_unet()
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=DiceLoss(), jit_compile=True)
        n = batch * 8
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (n, size, size, 1)).astype(np.float32)
        y = (rng.random((n, size, size, 1)) < 0.05).astype(np.float32)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache().prefetch(tf.data.AUTOTUNE)
        train_s = time_it(lambda: model.fit(ds, epochs=1, verbose=0), repeats=repeats)
        graph = tf.function(lambda a: model(a, training=False), jit_compile=True)
        xb = tf.constant(x[:batch])
        infer_s = time_it(lambda: graph(xb).numpy(), repeats=repeats * 5, warmup=2)
        return {
            "gpu_mixed_precision": True,
            "gpu_batch_size": batch,
            "gpu_train_img_s": n / train_s,
            "gpu_infer_img_s": batch / infer_s,
        }
    finally:
        keras.mixed_precision.set_global_policy(old)


# ----------------------------------------------------------------------------- the benchmark
def _infer_path_keys(paths: dict[str, dict], agreements: dict, max_diffs: dict) -> dict:
    """The flat ``infer_*`` keys: the chosen path's (:func:`choose_infer_path`) and each path's."""
    table = {
        name: dict(p, agreement=agreements[name], max_abs_diff=max_diffs[name]) for name, p in paths.items()
    }
    chosen = choose_infer_path(table)
    out: dict[str, Any] = {
        "infer_path": chosen,
        "infer_paths": table,
        "infer_img_s": table[chosen]["img_s"],
        "infer_agreement": table[chosen]["agreement"],
        "infer_max_abs_diff": table[chosen]["max_abs_diff"],
        "infer_backend": table[chosen]["backend"],
        "infer_precision": table[chosen]["precision"],
        "infer_prepare_s": table[chosen]["prepare_s"],
        "infer_agreement_min": INFER_AGREEMENT_MIN,
    }
    for name, p in table.items():
        out[f"infer_{name}_img_s"] = p["img_s"]
        out[f"infer_{name}_agreement"] = p["agreement"]
    return out


def tutorial_measurements(
    quick: bool,
    shape: dict,
    fast_ttq: dict,
    fast_infer: dict,
    fast_outputs: str,
    started_at: float,
    base_cap: float | None,
) -> dict:
    """Everything measured the tutorial's way, for a process of its own in TensorFlow's default
    setup (:func:`_tutorial_env`): the machine probe, the baseline training throughput, the
    inference comparison on the fast run's trained network, and the tutorial recipe's time to
    quality with the time that is left (``started_at``: the benchmark's start, ``time.time()``).
    JSON in and out.
    """
    import tensorflow as tf

    from ..infer import load_model
    from ..model import gflops, small_unet
    from .fast import openvino_available

    result: dict[str, Any] = {"device": device_name(), "openvino_available": openvino_available()}
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    _log("matrix-multiply probe")
    result["peak_gflop_s"] = peak_gflop_s(2048, repeats=4 if quick else 10)
    result["gflop_per_image"] = float(gflops(small_unet(), 512))

    _log("training throughput: the tutorial's fit")
    result.update(_baseline_train_throughput(**shape))

    _log("inference: model.predict, and the fast path's agreement with it")
    # the trained network (with batch norm in the cpu profile), compiled the tutorial's way
    model = reference_copy(load_model(fast_ttq["model_path"]))
    images, _ = _infer_images(fast_ttq, quick)
    result.update(_infer_compare(model, images, 1 if quick else 3, Path(fast_outputs), fast_infer))

    data_root, classes = Path(fast_ttq["data_root"]), tuple(fast_ttq["classes"])
    if quick:
        ttq_size, base_budget, check_every = 64, 5.0, 2
    else:
        ttq_size, check_every = 512, 10
        ref = fast_ttq["seconds"] or fast_ttq["elapsed_s"]
        base_budget = baseline_budget_s(ref, time.time() - started_at, base_cap)
    _log(f"time to quality: tutorial recipe (budget {base_budget:.0f}s)")
    base_ttq = _tutorial_time_to_quality(
        data_root, classes, ttq_size, base_budget, check_every, fast_ttq["val_fraction"]
    )
    result["baseline_time_to_quality"] = dict(base_ttq, budget_s=base_budget)

    if on_gpu:
        _log("GPU: mixed precision at 512x512, batch 16")
        result.update(_gpu_extra(128 if quick else 512, 16, 1 if quick else 3))
    else:
        result["gpu_note"] = "no GPU visible to TensorFlow: the gpu profile path was not measured"
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _check_bench_data(root: Path, classes: Sequence[int]) -> None:
    """Refuse, before any measurement, a ``--data`` folder the time-to-quality runs cannot use: it
    needs Train images with defects (to train and validate on) and defective Test images (for the
    inference comparison) of the chosen classes."""
    from ..data import resolve_data
    from ..data.layout import scan
    from ..errors import DatasetError

    index = scan(resolve_data(root))
    for split in ("Train", "Test"):
        if not any(s.defective for s in index.filter(classes=classes, split=split)):
            raise DatasetError(
                f"{root}: no defective {split} images of class(es) {', '.join(map(str, classes))}; bench "
                "--data needs a DAGM folder whose classes have defective Train and Test images (choose them "
                "with --classes N)"
            )


def run_benchmark(
    quick: bool = False,
    work_dir: str | os.PathLike[str] | None = None,
    baseline_minutes: float | None = None,
    data: str | os.PathLike[str] | None = None,
    classes: Sequence[int] | None = None,
) -> dict:
    """Measure everything in the module docstring; ``quick`` for rough numbers in about a minute.

    ``data`` (a DAGM folder, e.g. real DAGM) and ``classes``: the time-to-quality runs, the
    inference images and the tutorial recipe's run use them instead of the generator's classes
    (``time_to_quality_data`` and ``time_to_quality_classes`` say which). The throughput
    measurements use random images of the same shapes either way.

    This process only orchestrates: every measurement runs in a process of its own, the fast
    path's with oneDNN switched on (:func:`_fast_path_env`) and the tutorial's in TensorFlow's
    default setup (:func:`_tutorial_env`), so the numbers do not depend on how the caller's
    process was set up (the command line and the notebooks turn oneDNN on).

    The full run is planned to end within :data:`FULL_RUN_BUDGET_S` (30 minutes): the tutorial
    recipe's time-to-quality run comes last and gets the time that is left
    (:func:`baseline_budget_s`). ``baseline_minutes`` gives it a stated cap instead (full run
    only), for example 60 to let it run long enough to show a 10x lower bound.
    """
    if baseline_minutes is not None and not (math.isfinite(baseline_minutes) and baseline_minutes > 0):
        from ..errors import ConfigError

        raise ConfigError(f"--baseline-minutes must be a positive number, got {baseline_minutes}")
    base_cap = None if baseline_minutes is None else baseline_minutes * 60.0
    if data is not None:
        from ..config import resolve_profile

        classes = tuple(classes) if classes else resolve_profile("smoke" if quick else "cpu").classes
        _check_bench_data(Path(data).expanduser(), classes)
    t_start, started_at = time.perf_counter(), time.time()
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="dagm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    from .fast import cpu_features

    # which CPU the numbers come from: its model and the instructions that decide the speed
    result: dict[str, Any] = {"quick": bool(quick), "versions": versions(), "cpu": cpu_features()}
    peaks: dict[str, float] = {}
    try:
        # --- training throughput (same model, same work per image), the fast path
        shape = (
            dict(size=128, batch=10, n=20, repeats=1) if quick else dict(size=512, batch=10, n=20, repeats=2)
        )
        _log("training throughput: fast path (own process, oneDNN on)")
        fast_tp = _in_child(
            "fast_path_throughput",
            shape,
            _fast_path_env(),
            timeout_s=600 if quick else 1200,
        )
        peaks["fast_path_throughput"] = fast_tp.pop("peak_rss_mb")
        result.update(fast_tp)

        # --- time to quality, fast path (also gives the trained model the inference comparison needs)
        _log("time to quality: fast profile (own process, oneDNN on)")
        ttq_args = (
            dict(profile_name="smoke", budget_s=20.0, overrides={"epochs": 2})
            if quick
            else dict(profile_name="cpu", budget_s=FAST_TTQ_BUDGET_S, overrides={})
        )
        if classes:
            ttq_args["overrides"] = dict(ttq_args["overrides"], classes=[int(c) for c in classes])
        ttq_args["data"] = "synthetic" if data is None else str(Path(data).expanduser().resolve())
        fast_ttq = _in_child(
            "fast_time_to_quality",
            dict(ttq_args, work=str(work)),
            _fast_path_env(),
            timeout_s=ttq_args["budget_s"] + 600,
        )
        peaks["fast_time_to_quality"] = fast_ttq["peak_rss_mb"]
        result["time_to_quality_onednn"] = fast_ttq["onednn"]

        # --- inference, the project's way (the trained network from the run above)
        _log("inference: fast path (own process, oneDNN on)")
        fast_infer = _in_child(
            "fast_inference",
            dict(work=str(work), fast_ttq=fast_ttq, quick=quick),
            _fast_path_env(),
            timeout_s=600 if quick else 1200,
        )
        peaks["fast_inference"] = fast_infer.pop("peak_rss_mb")
        result.update({k: v for k, v in fast_infer.items() if k not in ("candidates", "infer_paths")})

        # --- the tutorial's way: baseline training, inference, the recipe's time to quality
        _log("the tutorial's way (own process, TensorFlow's default setup)")
        planned = FULL_RUN_BUDGET_S if base_cap is None else base_cap + FAST_TTQ_BUDGET_S
        tutorial = _in_child(
            "tutorial_measurements",
            dict(
                quick=quick,
                shape=shape,
                fast_ttq=fast_ttq,
                fast_infer=fast_infer,
                fast_outputs=str(work / "fast_inference.npz"),
                started_at=started_at,
                base_cap=base_cap,
            ),
            _tutorial_env(),
            timeout_s=600 if quick else planned + 1800,
        )
        peaks["tutorial_measurements"] = tutorial.pop("peak_rss_mb")
        base_ttq = tutorial.pop("baseline_time_to_quality")
        agreements = tutorial.pop("infer_path_agreement")
        max_diffs = tutorial.pop("infer_path_max_abs_diff")
        result.update(tutorial)
        result.update(_infer_path_keys(fast_infer["infer_paths"], agreements, max_diffs))
    finally:
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    result["train_speedup"] = result["train_img_s"] / result["baseline_train_img_s"]
    result["infer_speedup"] = result["infer_img_s"] / result["baseline_infer_img_s"]
    for name in result["infer_paths"]:
        result[f"infer_{name}_speedup"] = result[f"infer_{name}_img_s"] / result["baseline_infer_img_s"]
    # the model's cost at the inference size, so the fraction of peak is right in quick mode too
    gflop_infer = result["gflop_per_image"] * (result["infer_image_size"] / 512) ** 2
    result["infer_fraction_of_peak"] = result["infer_img_s"] * gflop_infer / result["peak_gflop_s"]
    fast_s, base_s = fast_ttq["seconds"], base_ttq["seconds"]
    result["time_to_quality_target_dice"] = QUALITY_DICE
    result["time_to_quality_data"] = "synthetic" if data is None else fast_ttq["data_root"]
    result["time_to_quality_classes"] = fast_ttq["classes"]
    result["time_to_quality_profile"] = "smoke" if quick else "cpu"
    result["time_to_quality_reached"] = fast_s is not None
    result["time_to_quality_s"] = fast_s if fast_s is not None else fast_ttq["elapsed_s"]
    result["time_to_quality_best_dice"] = fast_ttq["best_val_dice_defective"]
    result["baseline_time_to_quality_reached"] = base_s is not None
    result["baseline_time_to_quality_s"] = base_s if base_s is not None else base_ttq["elapsed_s"]
    result["baseline_time_to_quality_budget_s"] = base_ttq["budget_s"]
    result["baseline_time_to_quality_best_dice"] = base_ttq["best_val_dice_defective"]
    result["baseline_time_to_quality_steps"] = base_ttq["steps"]
    result["baseline_time_to_quality_val_images"] = base_ttq["val_images"]
    result["time_to_quality_speedup"] = result["baseline_time_to_quality_s"] / max(
        result["time_to_quality_s"], 1e-9
    )
    # a lower bound when the baseline never got there; no claim at all when the fast path did not either
    result["time_to_quality_speedup_is_lower_bound"] = base_s is None and fast_s is not None
    result["time_to_quality_speedup_valid"] = fast_s is not None

    # every process's own peak: the orchestrator's and each measurement's
    peaks["orchestrator"] = peak_rss_mb()
    result["peak_rss_mb"] = max(peaks.values())
    result["peak_rss_mb_fast_path_process"] = max(
        peaks["fast_path_throughput"], peaks["fast_time_to_quality"], peaks["fast_inference"]
    )
    result["peak_rss_mb_processes"] = peaks
    result["bench_seconds"] = time.perf_counter() - t_start
    result["full_run_budget_s"] = None if quick or base_cap is not None else FULL_RUN_BUDGET_S
    return result
