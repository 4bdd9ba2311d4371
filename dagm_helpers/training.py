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

Choosing the CPU training settings
    An accelerator may offer training variants that give the same numbers by other kernels
    (:func:`dagm_helpers.hooks.training_options`; :mod:`dagm_helpers.speed` offers TensorFlow's
    weight gradients or matrix-product ones, faster on some CPUs and slower on others). A
    profile that sizes its schedule to the machine (``cpu``) times each variant on
    :data:`PROBE_STEPS` steps of the run's own shapes before training and keeps the fastest,
    unless it is within :data:`CHOICE_NOISE` of plain TensorFlow (:func:`choose_fastest`). The
    decision is cached per machine and setting in ``$DAGM_HOME/training_choices.json``, so the
    timing is paid once; ``config.json`` records it (key ``cpu_choice``: what was chosen, why, and
    the step times). ``train_options`` (``--conv-gradients``) fixes a choice; a resumed run keeps
    the choice it began with. Other profiles use the cached choice, else plain TensorFlow.

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
import dataclasses
import json
import math
import os
import platform
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from . import atomic, hooks
from . import losses as losses_mod
from . import metrics as metrics_mod
from .config import RECIPE_OPTIONS, Profile, data_source, resolve_profile
from .errors import ConfigError, DatasetError, TrainingError
from .history import HISTORY_COLUMNS, HISTORY_FILE, format_history, read_history
from .infer import save_model

CONFIG_FILE = "config.json"
BEST_FILE = "model.keras"
LAST_FILE = "last.keras"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.json"
#: which images the run trained on, validated on and left for testing (data.layout.sample_key names)
SPLIT_FILE = "split.json"
#: An epoch still running at BUDGET_HARD_FACTOR x budget + BUDGET_HARD_SLACK_S is cut short.
BUDGET_HARD_FACTOR = 1.25
BUDGET_HARD_SLACK_S = 30.0
#: the dtype policies a run can train in
TRAIN_PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
#: the threshold when none was chosen on validation
DEFAULT_THRESHOLD = 0.5
#: validation predicts at most this many pixels per call (eight 512x512 images), in whole batches
VALIDATION_PIXELS = 8 * 512 * 512
#: a timed training variant must be this much faster than plain TensorFlow's to be chosen
CHOICE_NOISE = 0.03
#: the per-machine cache of timed choices, in $DAGM_HOME
CHOICE_CACHE = "training_choices.json"
#: training steps timed to size a budget schedule (after one more that traces the step)
PROBE_STEPS = 5
#: share of the budget a sized schedule plans for (the rest absorbs checkpoint writes and noise)
SCHEDULE_FILL = 0.92
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
        precision: the Keras dtype policy to train in, one of :data:`TRAIN_PRECISIONS`
            (``None``: float16 on a GPU when the profile asks for it, else an accelerator's choice,
            else float32).
        train_options: fixed choices among the training variants accelerators offer, e.g.
            ``{"conv_gradients": "matmul"}`` or ``{"conv_gradients": None}`` (TensorFlow's own);
            the rest are chosen by timing (module docstring, "Choosing the CPU training settings").
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
    precision: str | None = None
    train_options: dict = field(default_factory=dict)
    callbacks: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.classes is not None:
            self.classes = tuple(int(c) for c in self.classes)
        if self.devices is not None:
            self.devices = list(self.devices)
        self.model = dict(self.model or {})
        self.train_options = dict(self.train_options or {})

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
            overwrite=bool(getattr(args, "overwrite", False)),
            precision=getattr(args, "precision", None),
            train_options=_cli_train_options(args),
            **recipe_overrides(args),
        )

    def resolve_profile(self) -> Profile:
        """The profile with this config's overrides applied (validated)."""
        given = {o.field: getattr(self, o.name) for o in RECIPE_OPTIONS if o.name != "crop_size"}
        profile = resolve_profile(self.profile, **given)
        if self.crop_size is not None:  # 0 means full images, which the profile spells None
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


def _cli_train_options(args: Any) -> dict:
    """``--conv-gradients tf|matmul`` as ``train_options`` (``auto`` or absent: chosen by timing)."""
    chosen = getattr(args, "conv_gradients", None)
    if chosen in (None, "auto"):
        return {}
    return {"conv_gradients": None if chosen == "tf" else chosen}


def choose_fastest(step_s: dict[str, float], plain: str, noise: float = CHOICE_NOISE) -> str:
    """The label of the fastest variant in ``step_s`` (seconds per step), unless it saves less than
    ``noise`` (a share) against ``plain``, which then wins: a gain within timing noise is not worth
    leaving plain TensorFlow for. Non-finite times never win."""
    finite = {k: v for k, v in step_s.items() if math.isfinite(v) and v > 0}
    if not finite:
        return plain
    best = min(finite, key=lambda k: (finite[k], k != plain))
    if plain in finite and finite[best] > finite[plain] * (1.0 - noise):
        return plain
    return best


def option_value(value: Any) -> str:
    """A training option's value as the command line spells it (None: ``tf``, TensorFlow's own)."""
    return "tf" if value is None else str(value)


def option_label(options: dict) -> str:
    """A readable, stable name of a set of training options: ``conv_gradients=matmul``."""
    return ",".join(f"{k}={option_value(v)}" for k, v in sorted(options.items())) or "plain"


def recipe_overrides(args: Any) -> dict:
    """The recipe options (:data:`dagm_helpers.config.RECIPE_OPTIONS`) given on a ``train``/``compare``
    command line, as TrainConfig fields.

    Options left out are ``None`` (the profile decides); ``--batch-norm/--no-batch-norm``
    becomes ``model={"batch_norm": ...}`` and ``--channels 3`` ``model={"input_channels": 3}``
    (``None`` when neither is given).
    """
    overrides = {option.name: getattr(args, option.name, None) for option in RECIPE_OPTIONS}
    model = {}
    batch_norm = getattr(args, "batch_norm", None)
    if batch_norm is not None:
        model["batch_norm"] = bool(batch_norm)
    channels = getattr(args, "channels", None)
    if channels is not None:
        model["input_channels"] = int(channels)
    overrides["model"] = model or None
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
def _write_history(path: Path, rows: list[dict]) -> None:
    atomic.write_text(path, format_history(rows))


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
    # small images (tiles, smoke runs) are predicted many batches at a time: per-call overhead
    # dominated there; a multiple of the batch size, at most VALIDATION_PIXELS per call
    per_call = batch_size * max(1, VALIDATION_PIXELS // (batch_size * images.shape[1] * images.shape[2]))
    per_call = min(per_call, -(-len(images) // batch_size) * batch_size)  # no call of padding only
    chunk = 8 * per_call
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk, ..., None].astype(np.float32)
        y = masks[start : start + chunk].astype(bool)
        # pad to whole batches: one input shape, so an XLA-compiled model compiles once
        pad = -len(x) % per_call
        xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), np.float32)]) if pad else x
        prob = np.asarray(model.predict(xp, batch_size=per_call, verbose=0), dtype=np.float32)[
            : len(x), ..., 0
        ]
        for b in range(0, len(x), batch_size):
            yb = y[b : b + batch_size, ..., None].astype(np.float32)
            loss_sum += float(loss_fn(yb, prob[b : b + batch_size, ..., None])) * len(yb)
        tp_i, fp_i, fn_i = metrics_mod.confusion_counts(y, prob, threshold)
        tp, fp, fn = tp + int(tp_i.sum()), fp + int(fp_i.sum()), fn + int(fn_i.sum())
        has = y.any(axis=(1, 2))
        if has.any():
            dice_def.append(metrics_mod.overlap(tp_i[has], fp_i[has], fn_i[has], "dice"))
    return {
        "val_loss": loss_sum / len(images),
        "val_iou": metrics_mod.overlap(tp, fp, fn, "iou"),
        "val_dice": metrics_mod.overlap(tp, fp, fn, "dice"),
        "val_dice_defective": float(np.concatenate(dice_def).mean()) if dice_def else math.nan,
    }


def _score(row: dict) -> float:
    """The number the best checkpoint is chosen on."""
    for key in ("val_dice_defective", "val_dice"):
        v = row.get(key)
        if v is not None and math.isfinite(v):
            return float(v)
    return -float(row.get("loss", math.inf))


# ----------------------------------------------------------------------------- the callbacks
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


class Checkpoints(keras.callbacks.Callback):
    """After every epoch: validate on the full-size validation images, append ``history.csv``,
    save ``model.keras`` (the best so far) and ``last.keras`` with the optimizer's state (what
    ``--resume`` continues from after a Colab disconnect). Stops after a batch whose loss is NaN.

    During ``fit``, Ctrl-C ("interrupt kernel") and SIGTERM stop training after the current
    batch. An unfinished epoch (a signal, the time budget's cut, a NaN) is never recorded.
    """

    def __init__(self, run: TrainingRun) -> None:
        super().__init__()
        self.run = run

    def on_train_begin(self, logs=None):
        self.run.started(self.model)

    def on_train_end(self, logs=None):
        self.run.restore_signal_handlers()

    def on_epoch_begin(self, epoch, logs=None):
        self.run.batches, self.run.epoch_t0 = 0, time.monotonic()
        if self.run.signal_name:
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        self.run.batches += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.run.nan = (len(self.run.history), batch, float(loss))
            self.model.stop_training = True
        if self.run.signal_name:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.run.record_epoch(epoch, logs if logs is not None else {})


class TimeBudget(keras.callbacks.Callback):
    """Stop at the end of the epoch during which the run's ``max_minutes`` ran out (time counted
    across resumes); an epoch still running at ``BUDGET_HARD_FACTOR`` x budget +
    ``BUDGET_HARD_SLACK_S`` is cut after the current batch and discarded."""

    def __init__(self, run: TrainingRun) -> None:
        super().__init__()
        self.run = run

    def on_train_batch_end(self, batch, logs=None):
        run = self.run
        if run.budget_s is None or not run.history or run.batches >= run.steps_per_epoch:
            return
        if run.elapsed() > BUDGET_HARD_FACTOR * run.budget_s + BUDGET_HARD_SLACK_S:
            run.budget_stop = "cut"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        run = self.run
        if run.budget_s is not None and run.recorded(epoch) and epoch + 1 < run.epochs:
            if run.history[-1]["elapsed_s"] >= run.budget_s:
                run.budget_stop = "epoch"
                self.model.stop_training = True


class Progress(keras.callbacks.Callback):
    """One line per epoch (:func:`format_epoch_line`) for logs and CI, where a progress bar
    would be noise; ``fit``'s own bar (``verbose=1``) serves notebooks and terminals."""

    def __init__(self, run: TrainingRun) -> None:
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        run = self.run
        if run.verbose == 2 and run.recorded(epoch):
            improved = run.best_epoch == epoch
            print(format_epoch_line(run.history[-1], run.epochs, time.monotonic() - run.epoch_t0, improved))


# ----------------------------------------------------------------------------- the run
def _verbosity(verbose: int | str) -> int:
    if verbose != "auto":
        return int(verbose)
    if "ipykernel" in sys.modules or (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()):
        return 1
    return 2


class TrainingRun:
    """One training run: its folder, data, schedule and state; everything ``fit`` needs but the model.

    The notebooks and :func:`train` use it the same way::

        run = TrainingRun(config)                 # checks the folder, loads the data, writes config.json
        with run.scope():                         # its strategy and precision
            model = small_unet(**run.profile.model)
            model.compile(optimizer=keras.optimizers.Adam(run.learning_rate), loss=run.loss,
                          metrics=run.metrics(), jit_compile=run.jit_compile)
        run.restore(model)                        # resume: weights and optimizer from last.keras
        model.fit(run.train_ds, epochs=run.epochs, initial_epoch=run.initial_epoch,
                  steps_per_epoch=run.steps_per_epoch, callbacks=run.callbacks(), verbose=run.fit_verbose)
        result = run.finish()                     # the best model, its history and test metrics
    """

    def __init__(self, config: TrainConfig) -> None:
        try:
            self._setup(config)
        except BaseException:
            unlock_run_dir(Path(config.out))
            raise

    def _setup(self, config: TrainConfig) -> None:
        setup_t0 = time.monotonic()
        self.config = config = _prepare_run_dir(config)
        self.profile = profile = config.resolve_profile()
        self.out = Path(config.out)
        self.verbose = _verbosity(config.verbose)
        self.root, self.train_set, self.val_set, self.test_set = _select_data(config, profile)
        keras.utils.set_random_seed(int(config.seed))
        self.strategy = choose_strategy(config.devices)
        self.replicas = int(self.strategy.num_replicas_in_sync)
        self.batch_size = profile.batch_size * self.replicas
        self.steps_per_epoch = profile.steps_per_epoch or _steps_for(len(self.train_set), self.batch_size)
        self.epochs = profile.epochs
        self.budget_s = profile.max_minutes * 60.0 if profile.max_minutes else None
        self.on_gpu = bool(tf.config.list_physical_devices("GPU"))
        self.jit_compile = hooks.training_jit(profile.xla, self.on_gpu)
        # float16 on a GPU when the profile asks for it; on a CPU what an accelerator finds fastest
        gpu_half = profile.mixed_precision and self.on_gpu
        self.precision = config.precision or (
            "mixed_float16" if gpu_half else hooks.training_precision(self.on_gpu)
        )
        if self.precision not in TRAIN_PRECISIONS:
            raise ConfigError(
                f"precision must be one of {', '.join(TRAIN_PRECISIONS)}, got {self.precision!r}"
            )
        self.mixed_precision = self.precision != "float32"
        self.loss = losses_mod.get_loss(config.loss)
        #: image channels the model takes: 1 (grey, the default) or 3 (colour, ``model={"input_channels": 3}``)
        self.channels = int({**profile.model, **config.model}.get("input_channels", 1))
        self._load_arrays()
        self.train_options, self.cpu_choice, to_time = self._initial_choice()
        self.schedule: dict = _saved_schedule(self.out) if config.resume else {"sized_to_budget": False}
        sizing = (
            profile.budget_schedule and self.budget_s and not profile.steps_per_epoch and not config.resume
        )
        if to_time and not sizing and profile.budget_schedule and not config.resume:
            self._time_variants(to_time)  # the schedule was given, the settings still measured
            keras.utils.set_random_seed(int(config.seed))
        if sizing:
            self.schedule = self._size_schedule(to_time)
            self.steps_per_epoch = self.schedule["steps_per_epoch"]
            config.steps_per_epoch = self.steps_per_epoch  # a resumed run keeps the schedule it began with
            keras.utils.set_random_seed(int(config.seed))  # the probe drew weights: start the run afresh
        self.history: list[dict] = []
        self.initial_epoch, self.prior_elapsed = 0, 0.0
        self.batches, self.signal_name, self.nan, self.budget_stop = 0, None, None, None
        self.best, self.best_epoch = -math.inf, None
        self.model: Any = None
        self.t0 = self.epoch_t0 = time.monotonic()
        self._old_handlers: dict[int, Any] = {}
        self.setup_s = time.monotonic() - setup_t0

    # --- what compile and fit are given
    @property
    def learning_rate(self) -> Any:
        """Adam's learning rate: the profile's (x replicas), cosine-decayed to 1% when the profile says so."""
        lr = self.profile.learning_rate * self.replicas
        if self.profile.lr_schedule == "cosine":
            total = self.steps_per_epoch * self.profile.epochs
            return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total, alpha=0.01)
        return lr

    @staticmethod
    def metrics() -> list:
        """The training metrics: pooled pixel IoU and Dice at threshold 0.5."""
        return [metrics_mod.PixelIoU(name="iou"), metrics_mod.PixelDice(name="dice")]

    @contextlib.contextmanager
    def scope(self) -> Any:
        """Build and compile the model inside this: the run's distribution strategy (several GPUs
        or a TPU need every weight made on each device) and its precision (``mixed_float16`` on a
        GPU, ``mixed_bfloat16`` on a CPU with bfloat16 instructions, else float32). Keras' global
        dtype policy is restored on leaving, so nothing built later is affected."""
        before = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(self.precision)
        try:
            with self.strategy.scope():
                yield self.strategy
        finally:
            keras.mixed_precision.set_global_policy(before)

    def build_model(self) -> Any:
        """The run's network: ``small_unet`` with the profile's and the config's options."""
        from .model import small_unet

        with self.scope():
            return small_unet(**{**self.profile.model, **self.config.model})

    def compile(self, model: Any) -> Any:
        """``model.compile`` exactly as notebook 3 shows it (tests/test_taught_code.py checks they agree)."""
        with self.scope():
            model.compile(
                optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate),
                loss=self.loss,
                metrics=self.metrics(),
                jit_compile=self.jit_compile,
            )
        return model

    @property
    def train_ds(self) -> Any:
        """The training batches from epoch ``initial_epoch`` on: a ``tf.data`` pipeline of crops
        (or full images) with oversampling and flips/turns, a function of (seed, epoch) only."""
        return self._dataset(self.steps_per_epoch, self.initial_epoch)

    def _dataset(self, steps_per_epoch: int, start_epoch: int) -> Any:
        from .data.pipeline import dataset_from_arrays

        p = self.profile
        return dataset_from_arrays(
            self.train_x,
            self.train_y,
            batch_size=self.batch_size,
            crop_size=p.crop_size,
            defect_crop_fraction=p.defect_crop_fraction if p.crop_size else 0.0,
            defective_share=p.defective_share,
            augment=True,
            intensity_jitter=p.intensity_jitter,
            shuffle=True,
            repeat=True,
            seed=int(self.config.seed),
            steps_per_epoch=steps_per_epoch,
            start_epoch=start_epoch,
        )

    def _initial_choice(self) -> tuple[dict, dict, list[dict]]:
        """(the options to train with for now, the ``cpu_choice`` record, the variants still to time).

        Explicit ``train_options`` are kept; a resumed run keeps its recorded choice; otherwise
        a cached choice for this machine and setting is used, and without one the variants
        that are left are timed (by :meth:`_time_variants`, in profiles that size their
        schedule) or plain TensorFlow's options are used."""
        offered = hooks.training_options(self.on_gpu)
        explicit = dict(self.config.train_options)
        for name, value in explicit.items():
            if value is not None and value not in offered.get(name, []):
                have = "; ".join(f"{k}: {', '.join(map(option_value, v))}" for k, v in offered.items())
                raise ConfigError(
                    f"training option {name}={option_value(value)} is not available here (offered: "
                    f"{have or 'none, the speed package is not installed or this is a GPU'}); "
                    "drop it to let train choose"
                )
        if self.config.resume:
            saved = _saved_choice(self.out)
            if saved is not None:
                return dict(saved["chosen"]), {**saved, "source": "resumed"}, []
        plain = {name: values[0] for name, values in offered.items()}
        base = {**plain, **explicit}
        free = {k: v for k, v in offered.items() if k not in explicit and len(v) > 1}
        if not free:
            source = "explicit" if explicit else "nothing to choose"
            return base, {"chosen": base, "source": source}, []
        variants = [base]
        for name, values in free.items():
            variants = [{**v, name: value} for v in variants for value in values]
        cached = _cached_choice(self._choice_key(variants))
        if cached is not None and cached.get("chosen") in variants:
            return dict(cached["chosen"]), {**cached, "source": "cached"}, []
        record = {"chosen": base, "source": "plain (not timed: the profile does not size its schedule)"}
        return base, record, variants if self.profile.budget_schedule else []

    def _choice_key(self, variants: list[dict]) -> str:
        """What a cached choice depends on: the machine, TensorFlow, and the run's shapes and network."""
        p = self.profile
        state = hooks.cpu_state()
        return json.dumps(
            {
                "cpu": state.get("cpu_model") or platform.processor() or platform.machine(),
                "cores": os.cpu_count(),
                "tensorflow": tf.__version__,
                "onednn": state.get("onednn"),
                "precision": self.precision,
                "xla": self.jit_compile,
                "side": p.crop_size or p.image_size,
                "batch": self.batch_size,
                "model": {**p.model, **self.config.model},
                "variants": [option_label(v) for v in variants],
            },
            sort_keys=True,
            default=str,
        )

    def _probe_step_s(self, options: dict) -> tuple[float, Any]:
        """Median seconds per training step of a throwaway network trained with ``options`` on
        the run's own batches, after one step that traces; and that network."""
        from .model import small_unet

        with self.scope():
            probe = small_unet(**{**self.profile.model, **self.config.model})
            hooks.prepare_training(probe, options)
            probe.compile(optimizer=keras.optimizers.Adam(1e-4), loss=self.loss, jit_compile=self.jit_compile)
        batches = iter(self._dataset(PROBE_STEPS + 1, start_epoch=0))
        times = []
        for _ in range(PROBE_STEPS + 1):
            x, y = next(batches)
            start = time.perf_counter()
            probe.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
        return float(np.median(times[1:])), probe

    def _time_variants(self, variants: list[dict]) -> tuple[float, Any]:
        """Time every variant, keep the fastest (:func:`choose_fastest`), record and cache the
        decision; return the chosen variant's step time and its probe network."""
        timed: dict[str, tuple[float, Any]] = {}
        for options in variants:
            timed[option_label(options)] = self._probe_step_s(options)
        plain = option_label(variants[0])
        chosen_label = choose_fastest({k: v[0] for k, v in timed.items()}, plain)
        chosen = next(v for v in variants if option_label(v) == chosen_label)
        self.train_options = dict(chosen)
        self.cpu_choice = {
            "chosen": dict(chosen),
            "source": "measured",
            "step_s": {k: round(v[0], 4) for k, v in timed.items()},
            "speedup_vs_plain": round(timed[plain][0] / timed[chosen_label][0], 3),
        }
        _cache_choice(self._choice_key(variants), self.cpu_choice)
        return timed[chosen_label]

    def _size_schedule(self, variants: list[dict] | None = None) -> dict:
        """Steps per epoch such that ``epochs`` epochs, with their validations, fill the budget.

        Times :data:`PROBE_STEPS` training steps of this run's own shapes (after one step that
        traces) and one validation pass on a throwaway copy of the network, on this machine,
        now; with ``variants``, each variant's steps, keeping the fastest (:meth:`_time_variants`).
        The probe's own time comes off the budget; :data:`SCHEDULE_FILL` of the rest is
        planned, leaving room for checkpoint writes and noise.
        """
        t0 = time.monotonic()
        if variants:  # the settings are chosen on the same probe steps
            step_s, probe = self._time_variants(variants)
        else:
            step_s, probe = self._probe_step_s(self.train_options)
        start = time.perf_counter()
        validation_scores(probe, self.val_x, self.val_y, self.loss, self.batch_size)
        val_s = time.perf_counter() - start
        probe_s = time.monotonic() - t0
        left = self.budget_s - probe_s - self.epochs * val_s
        steps = max(1, int(left * SCHEDULE_FILL / (self.epochs * step_s)))
        return {
            "sized_to_budget": True,
            "steps_per_epoch": steps,
            "epochs": self.epochs,
            "budget_s": self.budget_s,
            "measured_step_s": step_s,
            "measured_validation_s": val_s,
            "probe_s": probe_s,
            "planned_training_s": steps * self.epochs * step_s + self.epochs * val_s,
        }

    def callbacks(self) -> list:
        """The run's callbacks for ``fit``: checkpoints, the time budget, progress, then the config's own."""
        return [Checkpoints(self), TimeBudget(self), Progress(self), *self.config.callbacks]

    @property
    def fit_verbose(self) -> int:
        """``fit``'s ``verbose``: its progress bar in notebooks and terminals, else silent (Progress prints)."""
        return 1 if self.verbose == 1 else 0

    # --- the run folder
    def restore(self, model: Any) -> Any:
        """Continue a resumed run: load ``last.keras``'s weights and optimizer state into ``model``
        (compiled as the run compiles it) and the history of its completed epochs. A new run
        saves ``last.keras`` before the first step, so a run killed in its first epoch resumes."""
        hooks.prepare_training(model, self.train_options)  # the chosen variant, before fit traces
        with self.strategy.scope():
            model.optimizer.build(model.trainable_variables)  # slots now, not inside the traced step
            if self.config.resume:
                _load_checkpoint(model, self.out / LAST_FILE)
        if self.config.resume:
            iterations = int(np.asarray(model.optimizer.iterations))
            self.initial_epoch = iterations // self.steps_per_epoch
            self.history = [
                r for r in read_history(self.out / HISTORY_FILE) if r["epoch"] < self.initial_epoch
            ]
            self.prior_elapsed = float(self.history[-1]["elapsed_s"]) if self.history else 0.0
            if iterations % self.steps_per_epoch:
                print(
                    f"[train] warning: {self.out / LAST_FILE} stopped mid-epoch (step {iterations}); "
                    f"continuing from epoch {self.initial_epoch}",
                    file=sys.stderr,
                )
            if self.budget_s is not None and self.prior_elapsed >= self.budget_s:
                self.epochs = self.initial_epoch  # its time is spent: fit has nothing left to do
            scored = [r for r in self.history if math.isfinite(_score(r))]
            if scored:
                best = max(scored, key=_score)
                self.best, self.best_epoch = _score(best), best["epoch"]
        else:
            save_model(model, self.out / LAST_FILE)
        self.model = model
        self._write_config()
        if self.verbose:
            from .data.layout import is_plain

            p = self.profile
            what = "your own images" if is_plain(self.train_set) else f"classes {list(p.classes)}"
            if len(self.train_x) != len(self.train_set):
                what += f" ({len(self.train_x)} training tiles)"
            print(
                f"[train] {self.out}: {len(self.train_set)} train / {len(self.val_set)} val images, "
                f"{what}, loss {self.config.loss}, profile {p.name}, {self.steps_per_epoch} steps x "
                f"batch {self.batch_size} per epoch, epochs {self.initial_epoch + 1}..{self.epochs}"
                f", setup {self.setup_s:.1f}s",
                flush=True,
            )
        return model

    def needs_training(self) -> bool:
        """False when a resumed run has done its epochs or spent its time budget."""
        return self.initial_epoch < self.epochs

    def elapsed(self) -> float:
        """Training seconds, continued across resumes (setup excluded)."""
        return self.prior_elapsed + (time.monotonic() - self.t0)

    def started(self, model: Any) -> None:
        """``fit`` begins: start the clock and catch Ctrl-C and SIGTERM."""
        self.model, self.t0 = model, time.monotonic()
        self.install_signal_handlers()
        if self.signal_name:
            model.stop_training = True

    def recorded(self, epoch: int) -> bool:
        """True when ``epoch`` completed and is the last row of the history."""
        return bool(self.history) and self.history[-1]["epoch"] == epoch

    def record_epoch(self, epoch: int, logs: dict) -> None:
        """Validate, append the history row and save the checkpoints (a finished epoch only)."""
        if self.batches < self.steps_per_epoch or self.nan is not None:
            return  # an unfinished (interrupted, cut, NaN) epoch is never recorded
        row: dict = {"epoch": epoch, **{k: float(logs.get(k, math.nan)) for k in ("loss", "iou", "dice")}}
        row.update(validation_scores(self.model, self.val_x, self.val_y, self.loss, self.batch_size))
        row["lr"] = float(np.asarray(self.model.optimizer.learning_rate))
        row["elapsed_s"] = self.elapsed()
        logs.update({k: row[k] for k in ("val_loss", "val_iou", "val_dice", "val_dice_defective", "lr")})
        improved = _score(row) > self.best
        # order matters: history first, then checkpoints; resume trusts last.keras' step count
        self.history.append(row)
        _write_history(self.out / HISTORY_FILE, self.history)
        if improved or not (self.out / BEST_FILE).exists():
            if improved:
                self.best, self.best_epoch = _score(row), epoch
            save_model(self.model, self.out / BEST_FILE)
        save_model(self.model, self.out / LAST_FILE)
        atomic.write_json(
            self.out / STATE_FILE,
            {
                "epochs_done": epoch + 1,
                "optimizer_iterations": int(np.asarray(self.model.optimizer.iterations)),
                "elapsed_s": self.elapsed(),
                "best_score": _json_float(self.best),
                "best_epoch": self.best_epoch,
            },
        )

    def finish(self) -> Run:
        """After ``fit``: report a stop by signal or NaN, load the best checkpoint, evaluate it on
        the Test split (``metrics.json``) and return the :class:`Run`. Releases the run folder."""
        try:
            return self._finish()
        finally:
            unlock_run_dir(self.out)

    def _finish(self) -> Run:
        self.restore_signal_handlers()
        self._raise_if_stopped()
        best_path = self.out / BEST_FILE if (self.out / BEST_FILE).exists() else self.out / LAST_FILE
        from .infer import as_float32

        with self.strategy.scope():  # float32 for inference, whatever precision it trained in
            best = as_float32(keras.saving.load_model(best_path, compile=True))
        chosen = self.choose_threshold(best)
        metrics = {}
        if self.config.evaluate_test:
            metrics = _final_metrics(best, self.test_set, self.profile, self.batch_size, chosen["threshold"])
        metrics.update(
            chosen, checkpoint=best_path.name, best_epoch=self.best_epoch, epochs_done=len(self.history)
        )
        atomic.write_json(self.out / METRICS_FILE, metrics)
        settings = {**self.settings(), "best_epoch": self.best_epoch}
        stopped = "time_budget" if self.budget_stop else "epochs"
        return Run(self.out, best, list(self.history), metrics, settings, stopped)

    def choose_threshold(self, model: Any) -> dict:
        """The probability threshold that maximises the pooled Dice on the validation images.

        ``evaluate`` and ``predict`` use it for this run's model unless told otherwise
        (``metrics.json``'s ``threshold``). Without a defective validation image there is
        nothing to choose it on: 0.5, with a warning.
        """
        from .infer import predict_proba

        if not self.val_y.any():
            warnings.warn(
                f"{self.out}: the validation images hold no defect, so the threshold cannot be chosen "
                "on them; using 0.5. Give the run more defective images (or a larger --val-fraction)",
                RuntimeWarning,
                stacklevel=2,
            )
            return {"threshold": DEFAULT_THRESHOLD, "threshold_source": "default"}
        probs = predict_proba(model, self.val_x, batch_size=max(1, self.batch_size))
        threshold, dice = metrics_mod.best_threshold(self.val_y, probs, metric="dice")
        return {"threshold": threshold, "threshold_source": "validation", "val_dice_at_threshold": dice}

    def _raise_if_stopped(self) -> None:
        done = len(self.history)
        if self.signal_name:
            raise TrainingInterrupted(
                f"training interrupted by {self.signal_name} after {done} completed epoch(s); "
                f"{self.out / LAST_FILE} and {self.out / HISTORY_FILE} hold the last completed epoch; "
                f"continue with --resume (resume=True)",
                self.signal_name,
                self.out,
                done,
            )
        if self.nan is not None:
            epoch, batch, value = self.nan
            lr = self.profile.learning_rate * self.replicas
            raise TrainingError(
                f"training loss became {value} in epoch {epoch + 1}, batch {batch + 1} "
                f"(learning rate {lr:g}, loss {self.config.loss!r}); the last good checkpoint "
                f"{self.out / LAST_FILE} (after {done} epoch(s)) is intact. Try a lower learning rate "
                f"(--lr {lr / 10:g}), check the data for corrupt images or masks, or switch the loss "
                f"(e.g. --loss bce_dice)"
            )

    # --- signals: during fit, Ctrl-C and SIGTERM ask Keras to stop after the current batch
    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._old_handlers:
            return

        def handler(signum, frame):
            name = signal.Signals(signum).name
            if self.signal_name == "SIGINT" and signum == signal.SIGINT:
                raise KeyboardInterrupt  # second Ctrl-C: stop now (files of the last epoch stay intact)
            self.signal_name = name
            if self.model is not None:
                self.model.stop_training = True
            print(f"\n[train] {name} received: stopping after the current batch", file=sys.stderr, flush=True)

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):
                self._old_handlers[sig] = signal.signal(sig, handler)

    def restore_signal_handlers(self) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers = {}

    # --- internals
    def _load_arrays(self) -> None:
        """Decode the training and validation images once, into memory (data.pipeline states the bound)."""
        from .data.layout import image_policy
        from .data.pipeline import load_arrays, load_tiles

        size = self.profile.image_size
        if image_policy(self.train_set) == "none":  # your own images: tiles at their own resolution

            def load(samples: Any) -> tuple[np.ndarray, np.ndarray]:
                return load_tiles(list(samples), size, channels=self.channels)
        else:  # DAGM: every image at the profile's size

            def load(samples: Any) -> tuple[np.ndarray, np.ndarray]:
                return load_arrays(list(samples), size=size, channels=self.channels)

        self.train_x, self.train_y = load(self.train_set)
        if len(self.val_set):
            self.val_x, self.val_y = load(self.val_set)
        else:
            self.val_y = np.zeros((0, size, size), np.uint8)
            self.val_x = self.val_y if self.channels == 1 else np.zeros((0, size, size, 3), np.uint8)

    def settings(self) -> dict:
        """What ``config.json`` records: the resolved configuration, data and versions."""
        return {
            "train_config": self.config.as_dict(),
            "profile": self.profile.as_dict(),
            "data_root": str(self.root),
            "images": {"train": len(self.train_set), "val": len(self.val_set), "test": len(self.test_set)},
            "tiles": {"train": len(self.train_x), "val": len(self.val_x)},
            "channels": self.channels,
            "strategy": type(self.strategy).__name__,
            "replicas": self.replicas,
            "global_batch_size": self.batch_size,
            "learning_rate": self.profile.learning_rate * self.replicas,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.steps_per_epoch * self.profile.epochs,
            "schedule": self.schedule,
            "mixed_precision": self.mixed_precision,
            "precision": self.precision,
            "xla": self.jit_compile,
            "onednn": hooks.cpu_state().get("onednn"),
            "cpu": {k: v for k, v in hooks.cpu_state().items() if k != "onednn"},
            "cpu_choice": self.cpu_choice,
            "accelerators": [getattr(a, "__name__", type(a).__name__) for a in hooks.accelerators()],
            "history_columns": list(HISTORY_COLUMNS),
            "versions": _versions(),
        }

    def _write_config(self) -> None:
        atomic.write_json(self.out / CONFIG_FILE, self.settings())  # on resume: changed epochs / max_minutes
        atomic.write_json(self.out / SPLIT_FILE, self.split_record())

    def split_record(self) -> dict:
        """What ``split.json`` records: the images of each part, so that ``evaluate`` can leave out
        every image this run trained or chose its threshold on (see ``infer.evaluate_cli``)."""
        from .data.layout import sample_key

        root = self.root

        def keys(part: Any) -> list[str]:
            return [sample_key(s, root) for s in part]

        return {
            "data_root": str(root),
            "seed": int(self.config.seed),
            "train": keys(self.train_set),
            "val": keys(self.val_set),
            "test": keys(self.test_set),
        }


def _saved_choice(out: Path) -> dict | None:
    """The ``cpu_choice`` a run recorded in its ``config.json`` (kept when it resumes)."""
    try:
        saved = json.loads((out / CONFIG_FILE).read_text())["cpu_choice"]
        return saved if isinstance(saved, dict) and isinstance(saved.get("chosen"), dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _choice_cache_path() -> Path:
    from .config import dagm_home

    return dagm_home() / CHOICE_CACHE


def _cached_choice(key: str) -> dict | None:
    try:
        entry = json.loads(_choice_cache_path().read_text()).get(key)
        return entry if isinstance(entry, dict) and isinstance(entry.get("chosen"), dict) else None
    except (OSError, ValueError, AttributeError):
        return None


def _cache_choice(key: str, record: dict) -> None:
    """Remember a timed choice for this machine and setting (a cache: failing to write is harmless)."""
    path = _choice_cache_path()
    try:
        table = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):
        table = {}
    table[key] = {**record, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(path, table)


def _saved_schedule(out: Path) -> dict:
    """The schedule a run recorded in its ``config.json`` (kept when it resumes)."""
    try:
        return dict(json.loads((out / CONFIG_FILE).read_text())["schedule"])
    except (OSError, ValueError, KeyError, TypeError):
        return {"sized_to_budget": False}


def _load_checkpoint(model: Any, path: Path) -> None:
    """Weights and optimizer state of the checkpoint ``path`` into the compiled ``model``."""
    try:
        model.load_weights(path)
    except Exception as exc:  # noqa: BLE001 - any reason the file cannot be read is the same to the user
        raise TrainingError(
            f"cannot resume from {path}: it is damaged or from another network ({_one_line(exc)}). "
            f"Start over with --overwrite (overwrite=True; the run's files are replaced) or in another --out"
        ) from None


def _one_line(exc: BaseException) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())[:300]


def _steps_for(n_images: int, batch_size: int) -> int:
    from .data.pipeline import steps_for

    return steps_for(n_images, batch_size)


def train(config: TrainConfig) -> Run:
    """Train a U-Net as ``config`` says and return the :class:`Run` (see the module docstring).

    The same steps notebook 3 shows, in the same order (:class:`TrainingRun`).
    """
    run = TrainingRun(config)
    try:
        model = run.restore(run.compile(run.build_model()))
    except BaseException:
        unlock_run_dir(run.out)
        raise
    if run.needs_training():
        try:
            model.fit(
                run.train_ds,
                epochs=run.epochs,
                initial_epoch=run.initial_epoch,
                steps_per_epoch=run.steps_per_epoch,
                callbacks=run.callbacks(),
                verbose=run.fit_verbose,
                shuffle=False,  # the dataset shuffles, keyed by (seed, epoch)
            )
        except BaseException:
            unlock_run_dir(run.out)
            raise
        finally:
            run.restore_signal_handlers()
    return run.finish()


# ----------------------------------------------------------------------------- the engine
#: the run folder's lock file: one writer per run folder
LOCK_FILE = ".lock"
#: locks this process holds, by folder (a notebook that starts the same run again takes it over)
_HELD_LOCKS: dict[Path, Any] = {}


def lock_run_dir(out: Path) -> None:
    """Make this process the only writer of ``out``, or fail at once with a clear error.

    The lock is an OS file lock (``filelock``): the OS drops it when its process ends however it
    ends, so a killed run leaves no stale lock behind. Leftover temporary files of a killed run's
    atomic writes (``.tmp-*``) are removed here.
    """
    from filelock import FileLock, Timeout

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if out not in _HELD_LOCKS:
        lock = FileLock(out / LOCK_FILE)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise ConfigError(
                f"{out} is being written by another training run right now; wait for it to finish "
                "or choose another --out"
            ) from None
        _HELD_LOCKS[out] = lock
    for leftover in out.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def unlock_run_dir(out: Path) -> None:
    """Release this process's lock on ``out`` (if it holds one)."""
    lock = _HELD_LOCKS.pop(Path(out).resolve(), None)
    if lock is not None:
        lock.release()


def _prepare_run_dir(config: TrainConfig) -> TrainConfig:
    """Lock and check the run folder; on resume return the saved config with allowed overrides."""
    out = config.out
    lock_run_dir(out)
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
            f"{out} already holds a training run; pass --resume to continue it, --overwrite to "
            f"replace it (resume=True / overwrite=True), or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in (STATE_FILE, HISTORY_FILE, BEST_FILE, LAST_FILE, METRICS_FILE, SPLIT_FILE):
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
    fixed_val = index.filter(classes=classes, split="Val")
    if len(fixed_val):  # the plain layout's val/ folder: the user chose the validation images
        train_set, val_set = train_all, fixed_val
    else:
        train_set, val_set = train_all.train_val_split(
            val_fraction=profile.val_fraction, seed=int(config.seed)
        )
    if not any(s.defective for s in train_all):
        raise DatasetError(
            f"{root}: none of the {len(train_all)} training images is defective (no mask with a defect "
            "pixel), so there is nothing to learn to segment; add defective images with their masks "
            "(a few dozen at least)"
        )
    if len(train_set) == 0:
        raise DatasetError(f"{root}: only {len(train_all)} training image(s); too few to hold out validation")
    if len(val_set) == 0:
        warnings.warn(
            f"{root}: only {len(train_all)} training image(s), so none is held out for validation: no "
            "validation scores, the threshold stays 0.5 and the model kept is the last epoch's; add images "
            "(a few dozen, defective and clean) for a model you can judge",
            RuntimeWarning,
            stacklevel=3,
        )
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


def _final_metrics(model: Any, test_set: Any, profile: Profile, batch_size: int, threshold: float) -> dict:
    """``infer.evaluate`` on the Test split at ``threshold`` (``{"images": 0}`` when there is none)."""
    if len(test_set) == 0:
        return {"images": 0, "note": "no Test split for these classes; nothing evaluated"}
    from . import infer
    from .data.layout import image_policy

    result = dict(
        infer.evaluate(
            model,
            list(test_set),
            batch_size=max(1, batch_size),
            image_size=profile.image_size,
            policy=image_policy(test_set),
            threshold=threshold,
            progress=False,
        )
    )
    result["split"] = "Test"
    return result


__all__ = [
    "HISTORY_COLUMNS",
    "Checkpoints",
    "Progress",
    "Run",
    "TimeBudget",
    "TrainConfig",
    "TrainingInterrupted",
    "TrainingRun",
    "choose_strategy",
    "format_epoch_line",
    "read_history",
    "train",
    "validation_scores",
]
