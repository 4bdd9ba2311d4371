"""Test-session setup shared by the unit tests and nbval's notebook runs.

The suite always runs in the ``smoke`` profile, and with a private, empty cache
folder. Both are set here, before any kernel starts, so notebook kernels inherit
them; ``tests/test_test_mode.py`` asserts that they really took effect.
"""

import os
import tempfile

import pytest

os.environ["DAGM_PROFILE"] = "smoke"
os.environ["DAGM_HOME"] = tempfile.mkdtemp(prefix="dagm-test-home-")
os.environ["DAGM_EXPECT_PROFILE"] = "smoke"  # setup_notebook() and every notebook assert it
os.environ["DAGM_RUNS"] = tempfile.mkdtemp(prefix="dagm-test-runs-")  # notebook 05 reuses 03/04 runs
os.environ.pop("DAGM_DIR", None)  # tests use the built-in generator unless a test says otherwise
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

# nbval compares `# NBVAL_CHECK_OUTPUT` cells against stored outputs, but the committed notebooks
# carry none: the references live in notebooks/expected_outputs.json and are attached here to
# nbval's in-memory notebooks, after collection and before any cell runs.


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups _group_for_xdist sets
def pytest_collection_modifyitems(session, config, items):
    import json
    from pathlib import Path

    from dagm_helpers.tooling.notebooks import (
        ATTACH_REPORT_ENV,
        attach_expected_outputs,
        load_expected_outputs,
    )

    notebooks = {}
    for item in items:
        parent = getattr(item, "parent", None)
        if type(item).__name__ == "IPyNbCell" and getattr(parent, "nb", None) is not None:
            notebooks[Path(str(parent.fspath))] = parent.nb
    expected = {folder: load_expected_outputs(folder) for folder in {path.parent for path in notebooks}}
    attached = {}
    for path, nb in sorted(notebooks.items()):
        attached[path.stem] = attach_expected_outputs(path.stem, nb.cells, expected[path.parent])
    report = os.environ.get(ATTACH_REPORT_ENV)
    if report:
        Path(report).write_text(json.dumps(attached))
    _group_for_xdist(config, items)


def _group_for_xdist(config, items):
    """Under pytest-xdist (``-n 2 --dist loadgroup``, the README's test command): every test file
    runs whole in one worker (its module fixtures are built once), and the notebooks run in one
    worker, in order, because notebook 5 reads the runs notebooks 3 and 4 wrote (each worker has
    its own DAGM_HOME and DAGM_RUNS, set above)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        path = str(item.path)
        group = "notebooks" if path.endswith(".ipynb") else path
        item.add_marker(pytest.mark.xdist_group(group))
