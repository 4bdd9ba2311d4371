"""The test suite really runs in the smoke profile, notebooks included (tests/test_test_mode.py).

How it cannot silently switch off:

1. ``conftest.py`` sets ``DAGM_PROFILE=smoke`` *and* ``DAGM_EXPECT_PROFILE=smoke``
   before pytest starts any kernel; nbval's kernels inherit the environment.
2. ``setup()``, which every notebook's setup cell calls before anything else,
   raises when the resolved profile differs from ``$DAGM_EXPECT_PROFILE``, so a
   notebook that resolved another profile fails under nbval instead of training
   for real. The lessons carry no test machinery of their own.
3. The tests below check the environment, the pytest configuration, that a
   freshly started kernel sees the smoke profile, that the check is active in
   such a kernel, and that every notebook calls ``setup()`` before it trains.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from dagm_helpers.config import resolve_profile
from dagm_helpers.errors import ConfigError
from dagm_helpers.notebook import check_expected_profile, setup

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SETUP_CALL = "nb = setup()"
TRAINING_CALLS = ("train(", "ensure_run(", "compare(", ".fit(")


def test_conftest_exported_smoke_and_private_folders():
    assert os.environ["DAGM_PROFILE"] == "smoke"
    assert os.environ["DAGM_EXPECT_PROFILE"] == "smoke"
    assert "DAGM_DIR" not in os.environ  # the built-in generator, not real data
    temp = Path(tempfile.gettempdir()).resolve()
    for var in ("DAGM_HOME", "DAGM_RUNS"):
        assert temp in Path(os.environ[var]).resolve().parents, f"{var} must be a fresh temporary folder"
    assert resolve_profile().name == "smoke"
    assert resolve_profile().max_minutes is not None and resolve_profile().max_minutes <= 2


def test_pytest_runs_the_notebooks_in_this_environment():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "notebooks" in options["testpaths"]
    assert "--nbval-lax" in options["addopts"] and "--current-env" in options["addopts"]
    conftest = (ROOT / "conftest.py").read_text()
    assert 'os.environ["DAGM_EXPECT_PROFILE"] = "smoke"' in conftest
    assert 'os.environ["DAGM_PROFILE"] = "smoke"' in conftest


@pytest.mark.parametrize(
    "path", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem
)
def test_every_notebook_calls_setup_before_training(path):
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    holding = [i for i, c in enumerate(cells) if SETUP_CALL in c.source]
    assert holding == [0], f"{path.name}: `{SETUP_CALL}` must be in the first code cell, and only there"
    assert "NBVAL_SKIP" not in cells[0].source and "NBVAL_RAISES_EXCEPTION" not in cells[0].source
    assert "DAGM_EXPECT_PROFILE" not in "".join(c.source for c in cells)  # no test machinery in lessons
    first_training = [i for i, c in enumerate(cells) if any(call in c.source for call in TRAINING_CALLS)]
    assert not first_training or first_training[0] > 0, f"{path.name} trains before its setup"


def test_setup_refuses_another_profile_while_smoke_is_expected(monkeypatch):
    with pytest.raises(ConfigError, match="expects the 'smoke' profile"):
        setup(profile="cpu")
    check_expected_profile(resolve_profile("smoke"))  # no error
    monkeypatch.delenv("DAGM_EXPECT_PROFILE")
    check_expected_profile(resolve_profile("cpu"))  # outside the tests any profile goes


def test_a_kernel_started_like_nbval_sees_the_smoke_profile(tmp_path):
    from nbclient import NotebookClient

    source = (
        "import os\nfrom dagm_helpers.config import resolve_profile\n"
        "print(resolve_profile().name, os.environ['DAGM_EXPECT_PROFILE'], os.environ['DAGM_HOME'])"
    )
    nb = new_notebook(cells=[new_code_cell(source)])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()  # environment inherited, as nbval does
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert text.split() == ["smoke", "smoke", os.environ["DAGM_HOME"]]


def test_the_check_is_active_in_a_notebook_kernel(tmp_path):
    """A kernel that resolves another profile while smoke is expected stops at ``setup()``."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = new_notebook(cells=[new_code_cell("from dagm_helpers.notebook import setup\nnb = setup()")])
    client = NotebookClient(nb, timeout=120, kernel_name="python3")
    with pytest.raises(CellExecutionError, match="expects the 'smoke' profile"):
        client.execute(env={**os.environ, "DAGM_PROFILE": "cpu"})
