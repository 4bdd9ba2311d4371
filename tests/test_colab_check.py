"""The project installs into Colab without changing Colab's packages (tests/test_colab_check.py).

``tools/colab_check.py`` builds an environment with Colab's versions and asks pip what
installing the project there would change (``.ci/run`` runs it). These tests check its
logic and, offline, that every requirement range of the package admits the version Colab
ships, naming any that does not.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
FREEZE = ROOT / "tools" / "colab" / "pip-freeze.txt"
SHARED_FREEZE = ROOT.parent / "shared" / "colab" / "pip-freeze.txt"


def _tool():
    spec = importlib.util.spec_from_file_location("colab_check", ROOT / "tools" / "colab_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


colab_check = _tool()


def _dependencies() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


def test_every_requirement_admits_the_version_colab_ships():
    colab = colab_check.read_freeze(FREEZE)
    problems = []
    for req in _dependencies():
        have = colab.get(colab_check.canonical(req.name))
        if have is None:
            continue  # not preinstalled in Colab: pip adds it, changing nothing that is there
        if not req.specifier.contains(have, prereleases=True):
            problems.append(f"{req.name}: the project asks for {req.specifier}, Colab has {have}")
    assert not problems, "installing in Colab would change: " + "; ".join(problems)


def test_the_project_needs_nothing_colab_lacks():
    colab = colab_check.read_freeze(FREEZE)
    missing = [r.name for r in _dependencies() if colab_check.canonical(r.name) not in colab]
    assert missing == [], f"not preinstalled in Colab (pip would add them): {missing}"


def test_requirements_txt_lists_the_package_dependencies():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    listed = {str(Requirement(line.split("#")[0])) for line in lines if line.split("#")[0].strip()}
    assert listed == {str(r) for r in _dependencies()}


def test_the_committed_freeze_is_the_shared_one():
    if not SHARED_FREEZE.is_file():
        pytest.skip("../shared/colab is not beside this checkout")
    assert FREEZE.read_text() == SHARED_FREEZE.read_text()


def test_pins_come_from_the_freeze_and_name_what_is_missing(tmp_path):
    pins = colab_check.pins(FREEZE)
    assert pins["ipywidgets"] == "7.7.1" and pins["ipython"] == "7.34.0" and pins["notebook"] == "6.5.7"
    assert pins["tensorflow"] == "2.20.0" and pins["keras"] == "3.13.2"
    partial = tmp_path / "freeze.txt"
    partial.write_text("numpy==2.1.3\ntorch @ https://example.invalid/torch.whl\n")
    assert colab_check.read_freeze(partial) == {"numpy": "2.1.3"}  # URL lines are not pins
    with pytest.raises(SystemExit, match="does not list tensorflow"):
        colab_check.pins(partial)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(SystemExit, match="no `name==version` lines"):
        colab_check.read_freeze(tmp_path / "empty.txt")


def test_changes_names_every_package_pip_would_change():
    installed = {"ipywidgets": "7.7.1", "numpy": "2.1.3", "tqdm": "4.67.3"}
    report = {
        "install": [
            {"metadata": {"name": "dagm-helpers", "version": "0.2.0"}},  # the project itself
            {"metadata": {"name": "ipywidgets", "version": "8.1.7"}},  # an upgrade
            {"metadata": {"name": "numpy", "version": "2.1.3"}},  # a reinstall of the same version
            {"metadata": {"name": "filelock", "version": "3.20.0"}},  # something new
        ]
    }
    lines = colab_check.changes(report, installed)
    assert lines == [
        "ipywidgets: Colab has 7.7.1, installing the project would put 8.1.7",
        "filelock: not in Colab's set, installing the project would add 3.20.0",
    ]
    assert colab_check.changes({"install": report["install"][:1]}, installed) == []


def test_the_lab_for_each_ipywidgets_major_renders_it():
    # JupyterLab 4's widget manager renders ipywidgets 8 models only; ipywidgets 7 needs Lab 3
    assert colab_check.JUPYTERLAB_FOR_WIDGETS["7"] == ("jupyterlab>=3.6,<4", "jupyterlab_widgets>=1.1,<2")
    assert re.fullmatch(r"7\.\d+\.\d+", colab_check.pins(FREEZE)["ipywidgets"])


def test_the_colab_run_keeps_the_lessons_the_widget_and_the_gpu_profile():
    """The Colab-environment run covers what Colab's versions can break: every notebook (nbval),
    the widget in a real browser, the gpu profile's training steps, the runtime's quiet start."""
    assert {"tests/test_browser.py", "tests/test_colab_runtime.py", "tests/test_runtime.py"} <= set(
        colab_check.COLAB_TESTS
    )
    assert all((colab_check.REPO / t).is_file() for t in colab_check.COLAB_TESTS)
    import inspect

    assert '"notebooks"' in inspect.getsource(colab_check.run_tests)  # nbval runs every lesson there
