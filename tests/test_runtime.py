"""TensorFlow is imported without its C++ start-up lines (tests/test_runtime.py).

A newcomer must not see "All log messages before absl::InitializeLog()", the oneDNN
notice or "failed call to cuInit" in the terminal or in a notebook's outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys

from nbformat.v4 import new_code_cell, new_notebook

from dagm_helpers.runtime import captured_stderr_fd

#: fragments of TensorFlow's C++ start-up lines (any of them is a failure)
TF_LOG_FRAGMENTS = (
    "absl::InitializeLog",
    "cuInit",
    "oneDNN custom operations",
    "cuda drivers",
    "cpu_feature_guard",
)


def _plain_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # what a new user has: nothing set
    return env


def test_captured_stderr_fd_catches_what_c_code_writes():
    with captured_stderr_fd() as text:
        os.write(2, b"from C\n")
    assert text == ["from C\n"]


def test_import_tensorflow_writes_nothing_to_stderr():
    code = (
        "from dagm_helpers.runtime import import_tensorflow\ntf = import_tensorflow()\nprint(tf.__version__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_plain_env(), timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    assert proc.stdout.strip()


def test_a_command_error_is_the_only_line_on_stderr(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dagm_helpers", "evaluate", "--model", str(tmp_path / "missing.keras")],
        capture_output=True,
        text=True,
        env=_plain_env(),
        timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.keras" in lines[0], proc.stderr


def test_the_notebook_setup_leaves_no_log_lines_in_the_outputs():
    """ipykernel forwards file descriptor 2 into the notebook: the setup cell's outputs must be clean."""
    from nbclient import NotebookClient

    nb = new_notebook(cells=[new_code_cell("from dagm_helpers.notebook import setup\nnb = setup()")])
    NotebookClient(nb, timeout=300, kernel_name="python3").execute(env=_plain_env())
    outputs = nb.cells[0].outputs
    text = "".join(o.get("text", "") for o in outputs)
    assert not [o for o in outputs if o.get("name") == "stderr"], text
    assert not [f for f in TF_LOG_FRAGMENTS if f in text], text
    assert "TensorFlow" in text and "profile : smoke" in text
