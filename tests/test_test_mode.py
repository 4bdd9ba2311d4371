"""The test suite really runs in the smoke profile, notebooks included (tests/test_test_mode.py).

How it cannot silently switch off:

1. ``conftest.py`` sets ``DAGM_PROFILE=smoke`` *and* ``DAGM_EXPECT_PROFILE=smoke``
   before pytest starts any kernel; nbval's kernels inherit the environment.
2. ``setup_notebook()`` raises when the resolved profile differs from
   ``$DAGM_EXPECT_PROFILE``, and every notebook repeats the check in a visible
   ``assert`` cell before it trains anything, so a notebook that resolved another
   profile fails under nbval instead of training for real.
3. The tests below check the environment, the pytest configuration, that a
   freshly started kernel sees the smoke profile, and that every notebook holds
   the assertion in a cell nbval runs.
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
from dagm_helpers.notebook import check_expected_profile, setup_notebook

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
ASSERTION = 'assert nb.profile.name == os.environ.get("DAGM_EXPECT_PROFILE", nb.profile.name)'
TRAINING_CALLS = ("train(", "ensure_run(", "compare(")


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
def test_every_notebook_asserts_the_expected_profile_before_training(path):
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    holding = [i for i, c in enumerate(cells) if ASSERTION in c.source]
    assert holding, f"{path.name} lacks the cell `{ASSERTION}`"
    cell = cells[holding[0]]
    assert "NBVAL_SKIP" not in cell.source and "NBVAL_RAISES_EXCEPTION" not in cell.source
    assert "setup_notebook(" in cell.source
    first_training = [i for i, c in enumerate(cells) if any(call in c.source for call in TRAINING_CALLS)]
    assert not first_training or holding[0] < first_training[0], f"{path.name} trains before checking"


def test_setup_refuses_another_profile_while_smoke_is_expected(monkeypatch):
    with pytest.raises(ConfigError, match="expects the 'smoke' profile"):
        setup_notebook("x", profile="cpu")
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
