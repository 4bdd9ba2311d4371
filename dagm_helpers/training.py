"""Training: one engine for the notebooks and ``python -m dagm_helpers train``.

:func:`train` takes a :class:`TrainConfig` and leaves a *run folder*:

``config.json``
    the full resolved configuration: the profile with every override applied, data
    root and split sizes, global batch and learning rate, library versions.
``history.csv``
    one row per completed epoch (``epoch`` counts from 0, as Keras' ``CSVLogger``):
    ``epoch, loss, iou, dice, val_loss, val_iou, val_dice, val_dice_defective, lr,
    elapsed_s``. Train columns are running means over the epoch's batches; validation
    runs on the full-size validation images after every epoch; ``val_dice_defective``
    is the mean per-image Dice over the *defective* validation images, the number that
    picks the best checkpoint. ``elapsed_s`` is training wall-clock time (setup
    excluded), continued across resumes.
``model.keras``
    the best model so far on ``val_dice_defective`` (``val_dice`` when the validation
    images hold no defect).
``last.keras`` + ``state.json``
    the model *with its optimizer state* after the last completed epoch (also written
    once before the first epoch, so a run killed in its first epoch can resume).
``metrics.json``
    :func:`dagm_helpers.infer.evaluate` of ``model.keras`` on the Test split.

Every file is written atomically (:mod:`dagm_helpers.atomic`): a crash or a kill at
any moment leaves the previous complete version.

Stopping
    * ``epochs`` are done, or the time budget ``max_minutes`` ran out: the run stops at
      the end of the epoch during which the budget ran out. If an epoch is still running
      at 1.25 x the budget + 30 s and an earlier epoch has completed, it stops after the
      current batch and that unfinished epoch is discarded (its steps are not saved).
    * SIGINT (Ctrl-C, "interrupt kernel") or SIGTERM: training stops after the current
      batch; the unfinished epoch is discarded; files of the last completed epoch stay;
      :class:`TrainingInterrupted` is raised (a second Ctrl-C stops at once).
    * a NaN or infinite training loss: stops after that batch, keeps the last good
      checkpoint, raises :class:`~dagm_helpers.errors.TrainingError` saying what to change.

Resuming (``resume=True`` / ``--resume``)
    loads ``last.keras`` with its optimizer (step count, Adam moments, learning-rate
    schedule), takes the completed epoch count from the optimizer's step count, keeps the
    history rows of those epochs and the elapsed time, and continues. The saved
    configuration is used; only ``epochs`` and ``max_minutes`` may be changed on resume.
    The training data of epoch ``e`` is a function of ``(seed, e)`` only
    (:func:`dagm_helpers.data.pipeline.dataset_from_arrays`), so on CPU a resumed run ends
    with the same weights as one that never stopped (``tests/test_train.py`` checks this).

Several devices (``tf.distribute``)
    :func:`choose_strategy` picks ``MirroredStrategy`` over several GPUs, ``TPUStrategy``
    on a Colab TPU, and the default strategy otherwise. The profile's ``batch_size`` is
    *per replica*: the global batch is ``batch_size x replicas`` and the learning rate is
    scaled linearly, ``learning_rate x replicas`` (Goyal et al., 2017), so one optimizer
    step sees ``replicas`` times the data at a proportionally larger step. With one
    replica nothing changes. ``steps_per_epoch`` counts global batches. Set-based losses
    (Dice) are computed per replica over its share of the batch and averaged.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import atomic
from .config import Profile, data_source, resolve_profile
from .errors import ConfigError, DatasetError, TrainingError
from .fast import onednn_enabled, xla_for_training

HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch",
    "loss",
    "iou",
    "dice",
    "val_loss",
    "val_iou",
    "val_dice",
    "val_dice_defective",
    "lr",
    "elapsed_s",
)
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
BEST_FILE = "model.keras"
LAST_FILE = "last.keras"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.json"
#: An epoch still running at BUDGET_HARD_FACTOR x budget + BUDGET_HARD_SLACK_S is cut short.
BUDGET_HARD_FACTOR = 1.25
BUDGET_HARD_SLACK_S = 30.0
#: Settings that may differ from the saved run on --resume.
RESUME_OVERRIDABLE = ("epochs", "max_minutes")


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped by SIGINT or SIGTERM; the run folder holds the last completed epoch."""

    def __init__(self, message: str, signal_name: str, run_dir: Path, epochs_done: int):
        super().__init__(message)
        self.signal_name = signal_name
        self.run_dir = run_dir
        self.epochs_done = epochs_done

    @property
    def exit_status(self) -> int:
        """The conventional shell status: 128 + signal number."""
        return 128 + int(getattr(signal, self.signal_name, signal.SIGINT))

    def __str__(self) -> str:
        return str(self.args[0])


# ----------------------------------------------------------------------------- configuration
@dataclass(kw_only=True)
class TrainConfig:
    """What to train and where to put it. ``None`` means: the profile's value.

    Args:
        out: run folder (created; an existing run there needs ``resume`` or ``overwrite``).
        data: a DAGM folder or ``"synthetic"`` (``None``: ``$DAGM_DIR`` or synthetic).
        classes: DAGM classes to train on (``None``: the profile's).
        loss: ``bce``, ``dice``, ``bce_dice``, ``focal_tversky`` or ``tutorial_dice``.
        profile: ``smoke``, ``cpu``, ``gpu`` or ``None``/``auto`` (``$DAGM_PROFILE``, else by hardware).
        epochs, max_minutes, image_size, crop_size, batch_size, lr, steps_per_epoch,
            defect_crop_fraction, defective_share, val_fraction: overrides of the profile (``crop_size=0``:
            train on full images).
        seed: weights, data split, data order and augmentation all follow it.
        resume: continue the run in ``out`` from ``last.keras``.
        overwrite: start afresh even if ``out`` holds a run (its files are replaced).
        model: keyword options of :func:`dagm_helpers.model.small_unet` (e.g. ``{"batch_norm": True}``),
            on top of the profile's ``model`` options.
        verbose: 0 silent, 1 Keras progress bars, 2 one line per epoch, ``"auto"``: 1 in
            notebooks and terminals, 2 otherwise (logs, CI).
        devices: run on these devices (e.g. ``["/cpu:0", "/cpu:1"]``) with
            ``MirroredStrategy``; ``None`` chooses automatically (:func:`choose_strategy`).
        evaluate_test: write ``metrics.json`` from the Test split at the end.
        callbacks: extra Keras callbacks for ``fit`` (not saved in ``config.json``).
    """

    out: Path | str
    data: str | os.PathLike[str] | None = "synthetic"
    classes: tuple[int, ...] | None = None
    loss: str = "dice"
    profile: str | None = None
    epochs: int | None = None
    max_minutes: float | None = None
    image_size: int | None = None
    crop_size: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    steps_per_epoch: int | None = None
    defect_crop_fraction: float | None = None
    defective_share: float | None = None
    val_fraction: float | None = None
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    model: dict = field(default_factory=dict)
    verbose: int | str = "auto"
    devices: Sequence[str] | None = None
    evaluate_test: bool = True
    callbacks: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.classes is not None:
            self.classes = tuple(int(c) for c in self.classes)
        if self.devices is not None:
            self.devices = list(self.devices)
        self.model = dict(self.model or {})

    @classmethod
    def from_cli(cls, args: Any) -> TrainConfig:
        """Build a config from ``python -m dagm_helpers train`` arguments."""
        classes = getattr(args, "classes", None)
        return cls(
            out=args.out,
            data=getattr(args, "data", None),
            classes=tuple(classes) if classes else None,
            loss=getattr(args, "loss", "dice"),
            profile=getattr(args, "profile", None),
            seed=getattr(args, "seed", 0) or 0,
            resume=bool(getattr(args, "resume", False)),
            **recipe_overrides(args),
        )

    def resolve_profile(self) -> Profile:
        """The profile with this config's overrides applied (validated)."""
        profile = resolve_profile(
            self.profile,
            epochs=self.epochs,
            max_minutes=self.max_minutes,
            image_size=self.image_size,
            batch_size=self.batch_size,
            learning_rate=self.lr,
            steps_per_epoch=self.steps_per_epoch,
            defect_crop_fraction=self.defect_crop_fraction,
            defective_share=self.defective_share,
            val_fraction=self.val_fraction,
        )
        if self.crop_size is not None:
            profile = profile.replace(crop_size=self.crop_size if self.crop_size > 0 else None)
        if self.classes:
            profile = profile.replace(classes=tuple(self.classes))
        _validate_profile(profile)
        return profile

    def as_dict(self) -> dict:
        """JSON-friendly dict of the fields."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "callbacks"}
        d["model"] = dict(self.model)
        d["devices"] = None if self.devices is None else list(self.devices)
        d["out"] = str(self.out)
        d["data"] = None if self.data is None else str(self.data)
        d["classes"] = None if self.classes is None else list(self.classes)
        return d


#: command-line options that override the profile's recipe -> TrainConfig fields
RECIPE_OPTIONS = (
    "epochs",
    "max_minutes",
    "image_size",
    "crop_size",
    "batch_size",
    "lr",
    "steps_per_epoch",
    "defect_crop_fraction",
    "defective_share",
)


def recipe_overrides(args: Any) -> dict:
    """The recipe options given on a ``train``/``compare`` command line, as TrainConfig fields.

    Options left out are ``None`` (the profile decides); ``--batch-norm/--no-batch-norm``
    becomes ``model={"batch_norm": ...}`` (``None`` when not given).
    """
    overrides = {name: getattr(args, name, None) for name in RECIPE_OPTIONS}
    batch_norm = getattr(args, "batch_norm", None)
    overrides["model"] = None if batch_norm is None else {"batch_norm": bool(batch_norm)}
    return overrides


def _validate_profile(p: Profile) -> None:
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{what} (profile {p.name!r} with overrides)")

    if p.epochs < 1:
        raise bad(f"epochs must be at least 1, got {p.epochs}")
    if p.batch_size < 1:
        raise bad(f"batch size must be at least 1, got {p.batch_size}")
    if not (p.learning_rate > 0 and math.isfinite(p.learning_rate)):
        raise bad(f"learning rate must be a positive number, got {p.learning_rate}")
    if p.image_size < 16 or p.image_size % 16:
        raise bad(f"image size must be a multiple of 16 (the U-Net pools 4 times), got {p.image_size}")
    if p.crop_size is not None and (p.crop_size % 16 or p.crop_size > p.image_size):
        raise bad(
            f"crop size must be a multiple of 16 and at most the image size {p.image_size}, got {p.crop_size}"
        )
    if p.max_minutes is not None and p.max_minutes <= 0:
        raise bad(f"max minutes must be positive, got {p.max_minutes}")
    if p.steps_per_epoch is not None and p.steps_per_epoch < 1:
        raise bad(f"steps per epoch must be at least 1, got {p.steps_per_epoch}")
    if p.defective_share is not None and not 0.0 <= p.defective_share <= 1.0:
        raise bad(f"defective share must be between 0 and 1, got {p.defective_share}")
    if not 0.0 < p.val_fraction < 1.0:
        raise bad(f"validation fraction must be between 0 and 1, got {p.val_fraction}")
    if p.lr_schedule not in ("constant", "cosine"):
        raise bad(f"unknown learning-rate schedule {p.lr_schedule!r}; use 'constant' or 'cosine'")


@dataclass
class Run:
    """A finished (or resumed-to-the-end) training run."""

    dir: Path
    model: Any  # keras.Model: the best checkpoint (model.keras)
    history: list[dict]
    metrics: dict
    config: dict
    stopped: str = "epochs"  # "epochs" | "time_budget"

    @property
    def best_epoch(self) -> int | None:
        """0-based epoch of the best checkpoint, or None."""
        return self.config.get("best_epoch")


# ----------------------------------------------------------------------------- strategy
def choose_strategy(devices: Sequence[str] | None = None) -> Any:
    """The ``tf.distribute`` strategy to train under.

    ``devices`` given: ``MirroredStrategy`` over them (one device: ``OneDeviceStrategy``).
    Otherwise ``TPUStrategy`` on a Colab/Cloud TPU, ``MirroredStrategy`` over all GPUs when
    there are several, else TensorFlow's default strategy (one CPU or GPU).
    """
    import tensorflow as tf

    if devices:
        devices = list(devices)
        if len(devices) == 1:
            return tf.distribute.OneDeviceStrategy(devices[0])
        return tf.distribute.MirroredStrategy(devices)
    tpu = _tpu_strategy()
    if tpu is not None:
        return tpu
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _tpu_strategy() -> Any:
    """A TPUStrategy when a TPU is attached (Colab TPU runtime), else None."""
    if not (os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME") or os.path.exists("/dev/accel0")):
        return None
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", "local"))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except Exception as exc:  # noqa: BLE001 - any TPU failure falls back to the default strategy
        print(f"[train] TPU found but not usable ({exc}); training on the default device", file=sys.stderr)
        return None


# ----------------------------------------------------------------------------- small file helpers
def read_history(path: str | os.PathLike[str]) -> list[dict]:
    """Rows of a ``history.csv`` with numbers as floats (``epoch`` as int)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as fh:
        for raw in csv.DictReader(fh):
            row: dict = {}
            for k, v in raw.items():
                try:
                    row[k] = int(v) if k == "epoch" else float(v)
                except (TypeError, ValueError):
                    row[k] = math.nan
            rows.append(row)
    return rows


def _write_history(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(HISTORY_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in HISTORY_COLUMNS})
    atomic.write_text(path, buf.getvalue())


def _csv_value(v: Any) -> Any:
    if v is None:
        return "nan"
    if isinstance(v, (int, np.integer)):
        return int(v)
    return repr(float(v))


def _save_model(model: Any, dest: Path) -> None:
    with atomic.atomic_path(dest) as tmp:
        model.save(tmp)


def _versions() -> dict:
    import keras
    import tensorflow as tf

    from . import __version__

    return {
        "dagm_helpers": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def _json_float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ----------------------------------------------------------------------------- validation
def validation_scores(
    model: Any, images: np.ndarray, masks: np.ndarray, loss_fn: Any, batch_size: int, threshold: float = 0.5
) -> dict:
    """Loss and metrics of ``model`` on full-size validation arrays (uint8 (N,H,W) images, 0/1 masks).

    ``val_loss``: the loss averaged over batches of ``batch_size`` weighted by their size
    (what ``model.evaluate`` reports); ``val_iou``/``val_dice``: pooled over all pixels at
    ``threshold``; ``val_dice_defective``: mean per-image Dice over images with a defect
    (NaN when there is none), as :func:`dagm_helpers.metrics.dice_per_image`.
    """
    if len(images) == 0:
        return {k: math.nan for k in ("val_loss", "val_iou", "val_dice", "val_dice_defective")}
    tp = fp = fn = 0
    loss_sum = 0.0
    dice_def: list[np.ndarray] = []
    chunk = max(batch_size, 8 * batch_size)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk, ..., None].astype(np.float32)
        y = masks[start : start + chunk].astype(bool)
        # pad to whole batches: one input shape, so an XLA-compiled model compiles once
        pad = -len(x) % batch_size
        xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), np.float32)]) if pad else x
        prob = np.asarray(model.predict(xp, batch_size=batch_size, verbose=0), dtype=np.float32)[
            : len(x), ..., 0
        ]
        for b in range(0, len(x), batch_size):
            yb = y[b : b + batch_size, ..., None].astype(np.float32)
            loss_sum += float(loss_fn(yb, prob[b : b + batch_size, ..., None])) * len(yb)
        pred = prob >= threshold
        tp_i = np.logical_and(pred, y).sum(axis=(1, 2), dtype=np.int64)
        fp_i = np.logical_and(pred, ~y).sum(axis=(1, 2), dtype=np.int64)
        fn_i = np.logical_and(~pred, y).sum(axis=(1, 2), dtype=np.int64)
        tp, fp, fn = tp + int(tp_i.sum()), fp + int(fp_i.sum()), fn + int(fn_i.sum())
        has = y.any(axis=(1, 2))
        if has.any():
            dice_def.append(2.0 * tp_i[has] / (2.0 * tp_i[has] + fp_i[has] + fn_i[has]))
    union = tp + fp + fn
    return {
        "val_loss": loss_sum / len(images),
        "val_iou": 1.0 if union == 0 else tp / union,
        "val_dice": 1.0 if union == 0 else 2.0 * tp / (2.0 * tp + fp + fn),
        "val_dice_defective": float(np.concatenate(dice_def).mean()) if dice_def else math.nan,
    }


def _score(row: dict) -> float:
    """The number the best checkpoint is chosen on."""
    for key in ("val_dice_defective", "val_dice"):
        v = row.get(key)
        if v is not None and math.isfinite(v):
            return float(v)
    return -float(row.get("loss", math.inf))


# ----------------------------------------------------------------------------- the epoch recorder
class _Recorder:
    """Keras callback state and logic; wrapped into a ``keras.callbacks.Callback`` at runtime."""

    def __init__(
        self,
        run_dir: Path,
        *,
        epochs: int,
        steps_per_epoch: int,
        val_images: np.ndarray,
        val_masks: np.ndarray,
        loss_fn: Any,
        batch_size: int,
        history: list[dict],
        prior_elapsed: float,
        budget_s: float | None,
        verbose: int,
    ):
        self.dir = run_dir
        self.epochs = epochs
        self.steps = steps_per_epoch
        self.val_images, self.val_masks = val_images, val_masks
        self.loss_fn = loss_fn
        self.batch_size = batch_size
        self.history = history
        self.prior_elapsed = prior_elapsed
        self.budget_s = budget_s
        self.verbose = verbose
        self.best = max((_score(r) for r in history), default=-math.inf)
        self.best_epoch: int | None = (
            max(history, key=_score)["epoch"] if history and math.isfinite(self.best) else None
        )
        self.t0 = time.monotonic()
        self.epoch_t0 = self.t0
        self.batches = 0
        self.signal_name: str | None = None
        self.nan: tuple[int, int, float] | None = None
        self.budget_stop: str | None = None
        self.model: Any = None

    def elapsed(self) -> float:
        return self.prior_elapsed + (time.monotonic() - self.t0)

    # --- keras hooks
    def on_train_begin(self) -> None:
        self.t0 = time.monotonic()
        if self.signal_name:
            self.model.stop_training = True

    def on_epoch_begin(self, epoch: int) -> None:
        self.batches = 0
        self.epoch_t0 = time.monotonic()
        if self.signal_name:
            self.model.stop_training = True

    def on_train_batch_end(self, batch: int, logs: dict | None) -> None:
        self.batches += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.nan = (len(self.history), batch, float(loss))
            self.model.stop_training = True
        if self.signal_name:
            self.model.stop_training = True
        if (
            self.budget_s is not None
            and self.history
            and self.batches < self.steps
            and self.elapsed() > BUDGET_HARD_FACTOR * self.budget_s + BUDGET_HARD_SLACK_S
        ):
            self.budget_stop = "cut"
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None) -> None:
        if self.batches < self.steps or self.nan is not None:
            return  # an unfinished (interrupted, cut, NaN) epoch is never recorded
        logs = logs if logs is not None else {}
        row: dict = {"epoch": epoch}
        for key in ("loss", "iou", "dice"):
            row[key] = float(logs.get(key, math.nan))
        row.update(
            validation_scores(self.model, self.val_images, self.val_masks, self.loss_fn, self.batch_size)
        )
        row["lr"] = float(np.asarray(self.model.optimizer.learning_rate))
        row["elapsed_s"] = self.elapsed()
        logs.update({k: row[k] for k in ("val_loss", "val_iou", "val_dice", "val_dice_defective", "lr")})
        score = _score(row)
        improved = score > self.best
        # order matters: history first, then checkpoints; resume trusts last.keras' step count
        self.history.append(row)
        _write_history(self.dir / HISTORY_FILE, self.history)
        if improved or not (self.dir / BEST_FILE).exists():
            self.best, self.best_epoch = max(score, self.best), epoch if improved else self.best_epoch
            _save_model(self.model, self.dir / BEST_FILE)
        _save_model(self.model, self.dir / LAST_FILE)
        self._write_state(epoch + 1)
        if self.verbose == 2:
            print(format_epoch_line(row, self.epochs, time.monotonic() - self.epoch_t0, improved), flush=True)
        if self.budget_s is not None and row["elapsed_s"] >= self.budget_s and epoch + 1 < self.epochs:
            self.budget_stop = "epoch"
            self.model.stop_training = True

    def _write_state(self, epochs_done: int) -> None:
        atomic.write_json(
            self.dir / STATE_FILE,
            {
                "epochs_done": epochs_done,
                "optimizer_iterations": int(np.asarray(self.model.optimizer.iterations)),
                "elapsed_s": self.elapsed(),
                "best_score": _json_float(self.best),
                "best_epoch": self.best_epoch,
            },
        )


def format_epoch_line(row: dict, epochs: int, epoch_s: float, improved: bool = False) -> str:
    """The one-line-per-epoch progress report (logs and CI)::

    epoch 3/40 - 12.3s - loss 0.4123 - iou 0.5120 - dice 0.6340 - val_loss 0.4100 - val_iou 0.5000
    - val_dice 0.6200 - val_dice_defective 0.7100 * - lr 9.10e-04 - elapsed 37.0s

    (on one line; ``*`` marks a new best checkpoint).
    """
    parts = [f"epoch {int(row['epoch']) + 1}/{epochs}", f"{epoch_s:.1f}s"]
    for key in ("loss", "iou", "dice", "val_loss", "val_iou", "val_dice", "val_dice_defective"):
        parts.append(f"{key} {row.get(key, math.nan):.4f}")
    if improved:
        parts[-1] += " *"
    parts.append(f"lr {row.get('lr', math.nan):.2e}")
    parts.append(f"elapsed {row.get('elapsed_s', math.nan):.1f}s")
    return " - ".join(parts)


def _keras_callback(recorder: _Recorder) -> Any:
    import keras

    class RunRecorder(keras.callbacks.Callback):
        def set_model(self, model):
            super().set_model(model)
            recorder.model = model

        def on_train_begin(self, logs=None):
            recorder.on_train_begin()

        def on_epoch_begin(self, epoch, logs=None):
            recorder.on_epoch_begin(epoch)

        def on_train_batch_end(self, batch, logs=None):
            recorder.on_train_batch_end(batch, logs)

        def on_epoch_end(self, epoch, logs=None):
            recorder.on_epoch_end(epoch, logs)

    return RunRecorder()


# ----------------------------------------------------------------------------- signals
@contextlib.contextmanager
def _graceful_signals(recorder: _Recorder) -> Iterator[None]:
    """During training, SIGINT/SIGTERM ask Keras to stop after the current batch."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old: dict[int, Any] = {}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if recorder.signal_name == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now (files of the last epoch stay intact)
        recorder.signal_name = name
        if recorder.model is not None:
            recorder.model.stop_training = True
        print(f"\n[train] {name} received: stopping after the current batch", file=sys.stderr, flush=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # pragma: no cover - not allowed here
            pass
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


# ----------------------------------------------------------------------------- verbosity
def _verbosity(verbose: int | str) -> int:
    if verbose != "auto":
        return int(verbose)
    if "ipykernel" in sys.modules or (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()):
        return 1
    return 2


# ----------------------------------------------------------------------------- the engine
def _prepare_run_dir(config: TrainConfig) -> TrainConfig:
    """Check the run folder; on resume return the saved config with allowed overrides."""
    out = config.out
    has_run = any((out / f).exists() for f in (LAST_FILE, HISTORY_FILE, CONFIG_FILE))
    if config.resume:
        if not (out / LAST_FILE).exists() or not (out / CONFIG_FILE).exists():
            raise TrainingError(
                f"cannot resume: {out} holds no {LAST_FILE} and {CONFIG_FILE} from an earlier run; "
                f"start a new run without --resume"
            )
        try:
            saved = json.loads((out / CONFIG_FILE).read_text())["train_config"]
        except (OSError, ValueError, KeyError) as exc:
            raise TrainingError(f"cannot resume: {out / CONFIG_FILE} is unreadable ({exc})") from None
        saved.pop("out", None)
        saved = {k: v for k, v in saved.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
        for key in RESUME_OVERRIDABLE:
            if getattr(config, key) is not None:
                saved[key] = getattr(config, key)
        saved.update(
            out=out,
            resume=True,
            overwrite=False,
            verbose=config.verbose,
            evaluate_test=config.evaluate_test,
            callbacks=config.callbacks,
        )
        if config.devices is not None:
            saved["devices"] = config.devices
        return TrainConfig(**saved)
    if has_run and not config.overwrite:
        raise ConfigError(
            f"{out} already holds a training run; pass --resume (resume=True) to continue it, "
            f"overwrite=True to replace it, or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in (STATE_FILE, HISTORY_FILE, BEST_FILE, LAST_FILE, METRICS_FILE):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    return config


def _select_data(config: TrainConfig, profile: Profile) -> tuple[Path, Any, Any, Any]:
    from .data import resolve_data
    from .data.layout import scan

    root = Path(resolve_data(data_source(config.data) if config.data is None else config.data, profile))
    index = scan(root)
    classes = tuple(profile.classes)
    train_all = index.filter(classes=classes, split="Train")
    if len(train_all) == 0:
        have = ", ".join(f"class {r['class']} {r['split']} ({r['images']})" for r in index.counts()) or "none"
        raise DatasetError(
            f"{root}: no training images for class(es) {', '.join(map(str, classes))} (found: {have}); "
            f"choose --classes from what the folder holds"
        )
    train_set, val_set = train_all.train_val_split(val_fraction=profile.val_fraction, seed=int(config.seed))
    if len(train_set) == 0:
        raise DatasetError(f"{root}: only {len(train_all)} training image(s); too few to hold out validation")
    if profile.max_val_images and len(val_set) > profile.max_val_images:
        val_set = cap_validation(val_set, profile.max_val_images, seed=int(config.seed))
    test_set = index.filter(classes=classes, split="Test")
    return root, train_set, val_set, test_set


def cap_validation(val_set: Any, limit: int, seed: int = 0) -> Any:
    """At most ``limit`` validation samples: every defective one first, then clean ones.

    Deterministic for a seed; the order of the index is kept. Held-out images beyond
    the cap are not used for training either, so the split itself does not change.
    """
    from .data.layout import SampleIndex

    samples = list(val_set)
    defective = [i for i, s in enumerate(samples) if s.defective][:limit]
    clean = [i for i, s in enumerate(samples) if not s.defective]
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7919])
    keep = set(defective) | {clean[j] for j in rng.permutation(len(clean))[: max(limit - len(defective), 0)]}
    return SampleIndex([s for i, s in enumerate(samples) if i in keep], val_set.root)


def train(config: TrainConfig) -> Run:
    """Train a U-Net as ``config`` says and return the :class:`Run` (see the module docstring)."""
    import keras
    import tensorflow as tf

    from . import losses as losses_mod
    from . import metrics as metrics_mod
    from .data.pipeline import dataset_from_arrays, load_arrays, steps_for
    from .model import small_unet

    setup_t0 = time.monotonic()
    config = _prepare_run_dir(config)
    profile = config.resolve_profile()
    verbose = _verbosity(config.verbose)
    out = config.out
    root, train_set, val_set, test_set = _select_data(config, profile)

    keras.utils.set_random_seed(int(config.seed))
    strategy = choose_strategy(config.devices)
    replicas = int(strategy.num_replicas_in_sync)
    global_batch = profile.batch_size * replicas
    lr = profile.learning_rate * replicas
    n_train = len(train_set)
    steps = profile.steps_per_epoch or steps_for(n_train, global_batch)
    total_steps = steps * profile.epochs

    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    use_xla = xla_for_training(profile.xla, on_gpu)
    old_policy = keras.mixed_precision.global_policy()
    use_mixed = bool(profile.mixed_precision and on_gpu)
    if use_mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        # data: decoded once, kept in memory (data.pipeline documents the memory bound)
        train_x, train_y = load_arrays(list(train_set), size=profile.image_size)
        val_x, val_y = (
            load_arrays(list(val_set), size=profile.image_size)
            if len(val_set)
            else (np.zeros((0, profile.image_size, profile.image_size), np.uint8),) * 2
        )
        loss_fn = losses_mod.get_loss(config.loss)

        history: list[dict] = []
        prior_elapsed = 0.0
        with strategy.scope():
            if config.resume:
                model = keras.saving.load_model(out / LAST_FILE, compile=True)
                iterations = int(np.asarray(model.optimizer.iterations))
                initial_epoch = iterations // steps
                history = [r for r in read_history(out / HISTORY_FILE) if r["epoch"] < initial_epoch]
                prior_elapsed = float(history[-1]["elapsed_s"]) if history else 0.0
                if iterations % steps:
                    print(
                        f"[train] warning: {out / LAST_FILE} stopped mid-epoch (step {iterations}); "
                        f"continuing from epoch {initial_epoch}",
                        file=sys.stderr,
                    )
            else:
                model = small_unet(**{**profile.model, **config.model})
                schedule: Any = lr
                if profile.lr_schedule == "cosine":
                    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=total_steps, alpha=0.01)
                model.compile(
                    optimizer=keras.optimizers.Adam(learning_rate=schedule),
                    loss=loss_fn,
                    metrics=[metrics_mod.PixelIoU(name="iou"), metrics_mod.PixelDice(name="dice")],
                    jit_compile=use_xla,
                )
                # create the optimizer's slots now: building them inside the first traced step makes
                # TensorFlow trace the training function twice
                model.optimizer.build(model.trainable_variables)
                initial_epoch = 0
                _save_model(model, out / LAST_FILE)  # a resumable checkpoint before the first step

        settings = {
            "train_config": config.as_dict(),
            "profile": profile.as_dict(),
            "data_root": str(root),
            "images": {"train": n_train, "val": len(val_set), "test": len(test_set)},
            "strategy": type(strategy).__name__,
            "replicas": replicas,
            "global_batch_size": global_batch,
            "learning_rate": lr,
            "steps_per_epoch": steps,
            "total_steps": total_steps,
            "mixed_precision": use_mixed,
            "xla": use_xla,
            "onednn": onednn_enabled(),
            "history_columns": list(HISTORY_COLUMNS),
            "versions": _versions(),
        }
        atomic.write_json(out / CONFIG_FILE, settings)  # on resume: records changed epochs / max_minutes

        train_ds = dataset_from_arrays(
            train_x,
            train_y,
            batch_size=global_batch,
            crop_size=profile.crop_size,
            defect_crop_fraction=profile.defect_crop_fraction if profile.crop_size else 0.0,
            defective_share=profile.defective_share,
            augment=True,
            intensity_jitter=profile.intensity_jitter,
            shuffle=True,
            repeat=True,
            seed=int(config.seed),
            steps_per_epoch=steps,
            start_epoch=initial_epoch,
        )
        budget_s = profile.max_minutes * 60.0 if profile.max_minutes else None
        recorder = _Recorder(
            out,
            epochs=profile.epochs,
            steps_per_epoch=steps,
            val_images=val_x,
            val_masks=val_y,
            loss_fn=loss_fn,
            batch_size=global_batch,
            history=history,
            prior_elapsed=prior_elapsed,
            budget_s=budget_s,
            verbose=verbose,
        )
        recorder.model = model
        if verbose:
            print(
                f"[train] {out}: {n_train} train / {len(val_set)} val images, classes "
                f"{list(profile.classes)}, loss {config.loss}, profile {profile.name}, "
                f"{steps} steps x batch {global_batch} per epoch, epochs {initial_epoch + 1}..{profile.epochs}"
                f", setup {time.monotonic() - setup_t0:.1f}s",
                flush=True,
            )
        if initial_epoch < profile.epochs and (budget_s is None or prior_elapsed < budget_s):
            with _graceful_signals(recorder):
                model.fit(
                    train_ds,
                    epochs=profile.epochs,
                    initial_epoch=initial_epoch,
                    steps_per_epoch=steps,
                    callbacks=[_keras_callback(recorder), *config.callbacks],
                    verbose=1 if verbose == 1 else 0,
                    shuffle=False,  # the dataset shuffles, keyed by (seed, epoch)
                )
        epochs_done = len(recorder.history)
        if recorder.signal_name:
            raise TrainingInterrupted(
                f"training interrupted by {recorder.signal_name} after {epochs_done} completed epoch(s); "
                f"{out / LAST_FILE} and {out / HISTORY_FILE} hold the last completed epoch; "
                f"continue with --resume (resume=True)",
                recorder.signal_name,
                out,
                epochs_done,
            )
        if recorder.nan is not None:
            epoch, batch, value = recorder.nan
            raise TrainingError(
                f"training loss became {value} in epoch {epoch + 1}, batch {batch + 1} "
                f"(learning rate {lr:g}, loss {config.loss!r}); the last good checkpoint "
                f"{out / LAST_FILE} (after {epochs_done} epoch(s)) is intact. Try a lower learning rate "
                f"(--lr {lr / 10:g}), check the data for corrupt images or masks, or switch the loss "
                f"(e.g. --loss bce_dice)"
            )

        best_path = out / BEST_FILE if (out / BEST_FILE).exists() else out / LAST_FILE
        with strategy.scope():
            best = keras.saving.load_model(best_path, compile=True)
        metrics = _final_metrics(best, test_set, profile, global_batch) if config.evaluate_test else {}
        metrics.update(checkpoint=best_path.name, best_epoch=recorder.best_epoch, epochs_done=epochs_done)
        atomic.write_json(out / METRICS_FILE, metrics)
        settings["best_epoch"] = recorder.best_epoch
        stopped = "time_budget" if recorder.budget_stop else "epochs"
        return Run(out, best, list(recorder.history), metrics, settings, stopped)
    finally:
        if use_mixed:
            keras.mixed_precision.set_global_policy(old_policy)


def _final_metrics(model: Any, test_set: Any, profile: Profile, batch_size: int) -> dict:
    """``infer.evaluate`` on the Test split (``{"images": 0}`` when there is none)."""
    if len(test_set) == 0:
        return {"images": 0, "note": "no Test split for these classes; nothing evaluated"}
    from . import infer

    result = dict(
        infer.evaluate(
            model,
            list(test_set),
            batch_size=max(1, batch_size),
            image_size=profile.image_size,
            progress=False,
        )
    )
    result["split"] = "Test"
    return result


__all__ = [
    "HISTORY_COLUMNS",
    "Run",
    "TrainConfig",
    "TrainingInterrupted",
    "choose_strategy",
    "format_epoch_line",
    "read_history",
    "train",
    "validation_scores",
]
