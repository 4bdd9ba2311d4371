"""Optional speed-ups, and the benchmark that measures them.

Everything here is optional: the teaching core (:mod:`dagm_helpers.training`,
:mod:`dagm_helpers.infer`, ...) runs plain TensorFlow without it and never imports it. This
package plugs in through :mod:`dagm_helpers.hooks`, registered as the entry point
``dagm_helpers.accelerators: speed`` in ``pyproject.toml``; the functions below are its hooks.

* :mod:`.fast`: the CPU runtimes for inference (ncnn, OpenVINO in float32 and int8, chosen
  by timing on the first batch), oneDNN's CPU kernels, the fast training settings;
* :mod:`.conv_grad`: faster weight gradients for 3x3 convolutions on a CPU (same numbers);
* :mod:`.ncnn_export`: a Keras U-Net as an ncnn network (``python -m dagm_helpers export-ncnn``);
* :mod:`.bench`: ``python -m dagm_helpers bench``, this project's speed against the tutorial's.

Importing this package is light (no TensorFlow), so :func:`before_tensorflow` can run first.
"""

from __future__ import annotations

from typing import Any

from . import fast


def before_tensorflow() -> None:
    """Turn on oneDNN's CPU kernels (TensorFlow reads the switch only when it is imported)."""
    fast.enable_onednn()


def cpu_state() -> dict:
    """Whether oneDNN's CPU kernels are on in this process (None before TensorFlow is imported),
    and the CPU's model and the instruction-set features that matter for speed."""
    return {"onednn": fast.onednn_enabled(), **fast.cpu_features()}


def training_jit(requested: bool, on_gpu: bool) -> bool:
    """XLA for training as requested, except on a CPU with oneDNN, where XLA was slower."""
    return fast.xla_for_training(requested, on_gpu)


def training_precision(on_gpu: bool) -> str:
    """bfloat16 mixed precision on a CPU with bfloat16 instructions (AMX or AVX512-BF16) and oneDNN,
    about 1.3x the float32 steps of the cpu profile on 2 Sapphire Rapids cores; else float32."""
    return fast.cpu_training_precision(on_gpu)


def training_options(on_gpu: bool) -> dict[str, list]:
    """On a CPU: TensorFlow's weight gradients or the matrix-product ones (:mod:`.conv_grad`; the
    same numbers, faster on some CPUs and slower on others), for ``train`` to time. On a GPU:
    nothing to choose (cuDNN's gradients)."""
    return {} if on_gpu else {"conv_gradients": [None, "matmul"]}


def prepare_training(model: Any, options: dict) -> None:
    """Install the matrix-product weight gradients when ``options["conv_gradients"] == "matmul"``."""
    if options.get("conv_gradients") == "matmul":
        from .conv_grad import use_fast_conv_gradients

        use_fast_conv_gradients(model)


def fast_runner(model: Any, batch_size: int, precision: str = "f32", calibration: Any = None) -> Any:
    """The fastest CPU runtime for ``model`` (a :class:`~.fast.Predictor`), or None when no faster
    runtime than TensorFlow is installed or able to run the model."""
    return fast.runner_for(model, batch_size, precision, calibration)


__all__ = [
    "before_tensorflow",
    "cpu_state",
    "fast_runner",
    "prepare_training",
    "training_jit",
    "training_options",
    "training_precision",
]
