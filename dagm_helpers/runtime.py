"""Importing TensorFlow quietly, and asking it about the hardware.

TensorFlow's C++ core writes start-up lines straight to the process's standard error
before its logging is configured: "All log messages before absl::InitializeLog() ...",
the oneDNN notice, "Could not find cuda drivers", and on a CPU machine "failed call to
cuInit". ``TF_CPP_MIN_LOG_LEVEL`` does not reach the first ones, and in a Jupyter kernel
(ipykernel 6 and newer forward file descriptor 2 into the notebook) they end up in the
cell's output. :func:`import_tensorflow` imports TensorFlow and lists its devices with
file descriptor 2 sent to a temporary file, so a newcomer sees none of it; if the import
fails, the captured text is part of the error.

The command line and the notebooks' setup call it before anything else imports
TensorFlow. Later imports of TensorFlow are silent anyway.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

#: TensorFlow's C++ log threshold: 2 hides INFO and WARNING lines (a user's own value is kept)
LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"


@contextlib.contextmanager
def captured_stderr_fd() -> Iterator[list[str]]:
    """Send file descriptor 2 to a temporary file for the ``with`` block.

    Yields a list that holds the captured text (one string) after the block. Python's own
    ``sys.stderr`` object is flushed first and keeps working.
    """
    captured: list[str] = []
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 at all (some embedded interpreters)
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def import_tensorflow():
    """Import TensorFlow and list its GPUs without C++ start-up lines on standard error.

    Returns the ``tensorflow`` module. A failed import raises ``ImportError`` carrying
    what TensorFlow wrote to standard error.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    from . import hooks

    hooks.before_tensorflow()  # switches TensorFlow reads only at import (an accelerator's oneDNN)
    os.environ.setdefault(LOG_LEVEL_ENV, "2")
    with captured_stderr_fd() as text:
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # CUDA probing logs its errors here, once
            error = None
        except ImportError as exc:
            error = exc
    if error is not None:
        raise ImportError(f"{error}\nTensorFlow wrote while importing:\n{''.join(text).strip()}") from error
    return tf


def gpu_names() -> list[str]:
    """The names of the GPUs TensorFlow sees (imports TensorFlow quietly)."""
    tf = import_tensorflow()
    return [device.name for device in tf.config.list_physical_devices("GPU")]


__all__ = ["LOG_LEVEL_ENV", "captured_stderr_fd", "gpu_names", "import_tensorflow"]
