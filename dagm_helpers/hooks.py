"""The one documented place where optional speed-ups plug into the teaching core.

The core (data, model, losses, metrics, viz, training, infer) runs plain TensorFlow and
imports nothing from the speed code. An *accelerator* (this project's
:mod:`dagm_helpers.speed`, or anyone's) is a module or object that offers some of these
hooks; the core calls them through the functions below, which fall back to plain
TensorFlow when no accelerator is installed or when one fails to import:

``before_tensorflow()``
    called once before TensorFlow is imported, to set switches TensorFlow reads only then
    (:mod:`dagm_helpers.speed` turns on oneDNN's CPU kernels where TensorFlow leaves them off).
``cpu_state() -> dict``
    facts about the CPU path for reports and ``config.json`` (e.g. ``{"onednn": True}``).
``training_jit(requested: bool, on_gpu: bool) -> bool``
    whether to XLA-compile the training step when a profile asks for ``requested``.
``training_precision(on_gpu: bool) -> str``
    the Keras dtype policy to train in on this machine ("float32", "mixed_bfloat16", ...) when
    the profile does not ask for float16 on a GPU.
``training_options(on_gpu: bool) -> dict[str, list]``
    model-level training variants an accelerator can apply, each with the values worth timing,
    plain TensorFlow's first (e.g. ``{"conv_gradients": [None, "matmul"]}``); ``train`` times
    them on a few steps of the run's own shapes and keeps the fastest (see
    :mod:`dagm_helpers.training`, "Choosing the CPU training settings").
``prepare_training(model, options: dict) -> None``
    apply chosen options to a model before its training step is traced.
``fast_runner(model, batch_size, precision, calibration) -> Callable | None``
    a function from a float32 batch ``(B, H, W, 1)`` of raw grey values (sides padded to the
    model's multiple) to float32 probabilities ``(B, H, W)``, on a faster runtime; ``None``
    declines. :func:`dagm_helpers.infer.predict_proba` pads, batches and tiles around it.

Accelerators are found through the entry-point group ``dagm_helpers.accelerators``
(``pyproject.toml`` registers ``dagm_helpers.speed``), loaded once, on first use. Set
``DAGM_NO_ACCELERATORS=1`` to run the core exactly as the tutorial's plain TensorFlow does.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from functools import cache
from typing import Any

ENTRY_POINT_GROUP = "dagm_helpers.accelerators"
DISABLE_ENV = "DAGM_NO_ACCELERATORS"


@cache
def accelerators() -> tuple[Any, ...]:
    """The installed accelerators, in name order (none when ``$DAGM_NO_ACCELERATORS`` is set)."""
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return ()
    from importlib.metadata import entry_points

    found = []
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            found.append(entry.load())
        except ImportError as exc:  # its optional parts are missing: the core runs without it
            warnings.warn(
                f"accelerator {entry.name!r} is not usable ({exc}); running plain TensorFlow",
                RuntimeWarning,
                stacklevel=2,
            )
    return tuple(found)


def _offered(name: str) -> list[Callable[..., Any]]:
    return [getattr(a, name) for a in accelerators() if callable(getattr(a, name, None))]


def before_tensorflow() -> None:
    """Let every accelerator set what TensorFlow reads when it is imported."""
    for hook in _offered("before_tensorflow"):
        hook()


def cpu_state() -> dict:
    """Facts about the CPU path the accelerators report (empty without any)."""
    state: dict = {}
    for hook in _offered("cpu_state"):
        state.update(hook())
    return state


def training_jit(requested: bool, on_gpu: bool) -> bool:
    """Whether to XLA-compile training: as the profile requests, unless an accelerator knows better."""
    for hook in _offered("training_jit"):
        return bool(hook(requested, on_gpu))
    return bool(requested)


def training_precision(on_gpu: bool) -> str:
    """The dtype policy to train in: an accelerator's choice for this machine, else "float32"."""
    for hook in _offered("training_precision"):
        return str(hook(on_gpu))
    return "float32"


def training_options(on_gpu: bool) -> dict[str, list]:
    """The training variants the accelerators offer to time, by option (empty without any)."""
    options: dict[str, list] = {}
    for hook in _offered("training_options"):
        options.update({str(k): list(v) for k, v in hook(on_gpu).items()})
    return options


def prepare_training(model: Any, options: dict) -> None:
    """Apply chosen training ``options`` to ``model`` (before its training step is traced)."""
    if not options:
        return
    for hook in _offered("prepare_training"):
        hook(model, dict(options))


def fast_runner(model: Any, batch_size: int, precision: str = "f32", calibration: Any = None) -> Any:
    """A faster batch runner for ``model`` from the first accelerator that offers one, else ``None``."""
    for hook in _offered("fast_runner"):
        runner = hook(model, batch_size, precision, calibration)
        if runner is not None:
            return runner
    return None


__all__ = [
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "accelerators",
    "before_tensorflow",
    "cpu_state",
    "fast_runner",
    "prepare_training",
    "training_jit",
    "training_options",
    "training_precision",
]
