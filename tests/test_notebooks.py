"""The committed notebooks: pairing, no outputs, checked-output references, badges, no logic inside.

nbval executes them (``pytest`` collects ``notebooks/``); these tests check what
is committed.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_output

from dagm_helpers.config import REPO_URL, colab_url
from dagm_helpers.errors import ConfigError
from dagm_helpers.tooling.notebooks import (
    ATTACH_REPORT_ENV,
    CHECK_MARKER,
    attach_expected_outputs,
    checked_cell_key,
    is_checked_cell,
    load_expected_outputs,
    strip_notebook,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NAMES = (
    "01_get_the_data",
    "02_build_the_unet",
    "03_train_with_bce",
    "04_train_with_dice",
    "05_compare_and_inspect_edges",
    "06_your_own_images",
)
#: the only cells whose outputs are committed (nbval compares them): notebook -> first code line
CHECKED = {
    "01_get_the_data": "print(format_counts(counts))",
    "02_build_the_unet": 'print(f"{model.count_params():,} parameters")',
}
EXPECTED = load_expected_outputs(NOTEBOOK_DIR)


def _read(name: str):
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def _code(source: str) -> str:
    """Cell source with IPython magics commented out, so ast can parse it."""
    return "\n".join(
        "# " + line if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )


def test_the_series_is_exactly_these_six_pairs():
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")) == list(NAMES)
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py")) == list(NAMES)
    assert "ipynb,py:percent" in (ROOT / "jupytext.toml").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_and_py_agree(name):
    ipynb = jupytext.read(NOTEBOOK_DIR / f"{name}.ipynb")
    py = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert cells(ipynb) == cells(py), f"run `jupytext --sync notebooks/{name}.py`"


@pytest.mark.parametrize("name", NAMES)
def test_no_outputs(name):
    for number, cell in enumerate(_read(name).cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{name} cell {number} carries outputs"
            )


@pytest.mark.parametrize("name", NAMES)
def test_checked_cells_are_exactly_those_with_reference_outputs(name):
    checked = [checked_cell_key(c) for c in _read(name).cells if is_checked_cell(c)]
    assert checked == ([CHECKED[name]] if name in CHECKED else [])
    assert sorted(EXPECTED.get(name, {})) == checked


def test_reference_outputs_hold_the_known_answers():
    (table,) = EXPECTED["01_get_the_data"].values()
    assert re.search(r"^\s*1\s+Train\s+24\s+\d+", table, re.M), table  # smoke: 24 images per split
    assert EXPECTED["02_build_the_unet"] == {CHECKED["02_build_the_unet"]: "1,755,737 parameters\n"}


def test_attach_gives_checked_cells_their_reference_and_refuses_mismatches():
    free = new_code_cell("print(1)")
    checked = new_code_cell(f"{CHECK_MARKER}\nprint(2)")
    assert attach_expected_outputs("nb", [free, checked], {"nb": {"print(2)": "2\n"}}) == 1
    assert checked.execution_count == 1 and checked.outputs[0]["text"] == "2\n"
    assert checked.outputs[0]["output_type"] == "stream" and checked.outputs[0]["name"] == "stdout"
    assert free.outputs == [] and free.execution_count is None
    with pytest.raises(ConfigError, match="no reference output"):
        attach_expected_outputs("nb", [checked], {"nb": {"print(3)": "3\n"}})
    with pytest.raises(ConfigError, match="cells it does not have"):
        attach_expected_outputs("nb", [free], {"nb": {"print(2)": "2\n"}})


def test_conftest_attaches_the_references_when_pytest_collects_the_notebooks(tmp_path):
    """The hook must really run: collect two notebooks in a child pytest and read its report."""
    report = tmp_path / "attached.json"
    env = {**os.environ, ATTACH_REPORT_ENV: str(report)}
    targets = [f"notebooks/{n}.ipynb" for n in ("01_get_the_data", "02_build_the_unet", "03_train_with_bce")]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "0",
            *targets,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert json.loads(report.read_text()) == {
        "01_get_the_data": 1,
        "02_build_the_unet": 1,
        "03_train_with_bce": 0,
    }


@pytest.mark.parametrize("name", NAMES)
def test_title_and_colab_badge_link_to_the_notebook_itself(name):
    first = _read(name).cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    links = re.findall(r"\]\((https://colab\.research\.google\.com/github/[^)]+)\)", first.source)
    assert links == [colab_url(f"notebooks/{name}.ipynb")]
    assert "colab-badge.svg" in first.source


def _setup_cell(name: str) -> str:
    return next(c for c in _read(name).cells if c.cell_type == "code").source


def test_every_notebook_starts_with_the_same_setup_cell():
    cells = {name: _setup_cell(name) for name in NAMES}
    assert len(set(cells.values())) == 1, "the setup cells differ: make them identical"
    setup = cells[NAMES[0]]
    assert '"google.colab" in sys.modules' in setup  # installs only in Colab
    assert setup.rstrip().endswith("nb = setup()  # Python, TensorFlow and GPU; the profile and the data")


def test_setup_cell_installs_the_tested_release_from_the_one_repository():
    import dagm_helpers

    namespace = {}
    exec(_setup_cell(NAMES[0]).split("if ")[0], namespace)  # the constants at the top of the cell
    assert namespace["REPO_URL"] == REPO_URL  # the URL is defined once in config; this copy must match
    assert namespace["RELEASE"] == f"v{dagm_helpers.__version__}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'version = { attr = "dagm_helpers.__version__" }' in pyproject  # one version, one place


class _FakePip:
    def __init__(self, returncode: int):
        self.returncode, self.calls = returncode, []

    def __call__(self, command, **kwargs):
        import subprocess

        self.calls.append(command)
        return subprocess.CompletedProcess(command, self.returncode, "", "ERROR: no network (test)")


def _run_setup_cell_in_fake_colab(monkeypatch, returncode: int) -> tuple[dict, _FakePip]:
    import subprocess
    import types

    import dagm_helpers

    pip = _FakePip(returncode)
    monkeypatch.setattr(subprocess, "run", pip)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    namespace: dict = {}
    try:
        exec(_setup_cell(NAMES[0]), namespace)
    finally:
        assert pip.calls, "the setup cell did not call pip in Colab"
        command = pip.calls[0]
        assert command[1:4] == ["-m", "pip", "install"]
        assert command[-1] == f"dagm-helpers @ git+{REPO_URL}@v{dagm_helpers.__version__}"
    return namespace, pip


def test_setup_cell_stops_with_what_to_do_when_the_install_fails(monkeypatch):
    with pytest.raises(RuntimeError) as info:
        _run_setup_cell_in_fake_colab(monkeypatch, returncode=1)
    message = str(info.value)
    assert "pip could not install" in message and "no network (test)" in message  # pip's own words
    assert REPO_URL in message and "pip install -e" in message  # and what to do instead


def test_setup_cell_goes_on_to_setup_when_the_install_succeeds(monkeypatch, capsys):
    namespace, _ = _run_setup_cell_in_fake_colab(monkeypatch, returncode=0)
    assert namespace["nb"].profile.name == "smoke"
    assert "TensorFlow" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_call_dagm_helpers_and_hold_no_test_machinery(name):
    """Lessons import the package; they define only the code they teach (tests/test_taught_code.py
    lists it and checks each function against its package twin) and assert nothing."""
    sources = [c.source for c in _read(name).cells if c.cell_type == "code"]
    assert any("from dagm_helpers" in s for s in sources)
    for source in sources:
        for node in ast.walk(ast.parse(_code(source))):
            assert not isinstance(node, ast.ClassDef), (
                f"{name} defines class {node.name}: move it to dagm_helpers"
            )
            assert not isinstance(node, ast.Assert), f"{name} asserts in a lesson: move the check to tests/"
    prose = " ".join(c.source for c in _read(name).cells if c.cell_type == "markdown").lower()
    for word in ("nbval", " ci ", "smoke run", "test suite", "dagm_expect_profile"):
        assert word not in prose, f"{name}'s prose mentions {word.strip()!r}"


@pytest.mark.parametrize("name", NAMES)
def test_maths_and_prose_come_with_the_code(name):
    markdown = [c.source for c in _read(name).cells if c.cell_type == "markdown"]
    assert len(markdown) >= 4 and sum(len(m) for m in markdown) > 1500


def test_the_loss_notebooks_state_their_formulas_in_latex():
    bce = " ".join(c.source for c in _read("03_train_with_bce").cells if c.cell_type == "markdown")
    dice = " ".join(c.source for c in _read("04_train_with_dice").cells if c.cell_type == "markdown")
    assert r"y_i \log p_i" in bce and "$$" in bce
    assert r"\frac{2\sum_i p_i y_i + s}{\sum_i p_i + \sum_i y_i + s}" in dice
    assert "add-one" in dice.lower() and "IoU" in dice and "tutorial" in dice


def test_strip_removes_every_output_and_count():
    nb = nbformat.v4.new_notebook()
    free = new_code_cell(
        "print(1)", execution_count=1, outputs=[new_output("stream", name="stdout", text="1\n")]
    )
    checked = new_code_cell(
        f"{CHECK_MARKER}\nprint(2)",
        execution_count=2,
        outputs=[new_output("stream", name="stdout", text="2\n")],
    )
    nb.cells = [free, checked]
    assert strip_notebook(nb) is True
    assert free.outputs == [] and free.execution_count is None
    assert checked.outputs == [] and checked.execution_count is None
    assert strip_notebook(nb) is False  # idempotent


def test_load_expected_outputs_reads_the_file_and_names_what_is_wrong(tmp_path):
    assert load_expected_outputs(tmp_path) == {}  # no file: no references
    target = tmp_path / "expected_outputs.json"
    target.write_text(json.dumps({"nb": {"print(2)": "2\n"}}))
    assert load_expected_outputs(tmp_path) == {"nb": {"print(2)": "2\n"}}
    target.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read it as JSON"):
        load_expected_outputs(tmp_path)
    target.write_text(json.dumps({"nb": {"print(2)": 2}}))
    with pytest.raises(ConfigError, match="first code line: output text"):
        load_expected_outputs(tmp_path)


def test_refresh_records_checked_stdout_and_leaves_the_notebook_untouched(tmp_path):
    """``refresh`` executes a notebook, rewrites only its entry of expected_outputs.json, keeps the rest."""
    from dagm_helpers.tooling.notebooks import refresh_checked_outputs

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        new_code_cell("x = 6 * 7"),
        new_code_cell(f"{CHECK_MARKER}\nprint(x)"),
        new_code_cell("print('not checked')"),
    ]
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    before = path.read_bytes()
    (tmp_path / "expected_outputs.json").write_text(
        json.dumps({"other": {"print(1)": "1\n"}, "tiny": {"print(stale)": "0\n"}})
    )
    dest = refresh_checked_outputs([path], timeout=120)
    assert json.loads(dest.read_text()) == {"other": {"print(1)": "1\n"}, "tiny": {"print(x)": "42\n"}}
    assert path.read_bytes() == before

    nb.cells = [new_code_cell(f"{CHECK_MARKER}\n6 * 7")]  # a rich result, not stdout: refused
    nbformat.write(nb, path)
    with pytest.raises(ConfigError, match="must only print to stdout"):
        refresh_checked_outputs([path], timeout=120)
    assert json.loads(dest.read_text())["tiny"] == {"print(x)": "42\n"}  # nothing half-written


def test_under_xdist_each_test_file_and_the_notebooks_stay_in_one_worker():
    """conftest.py groups the items for ``--dist loadgroup``: notebook 5 reads the runs 3 and 4 wrote,
    and every notebook's cells share one kernel, so all notebooks go to one worker in order."""
    from types import SimpleNamespace

    import conftest

    class Item:
        def __init__(self, path):
            self.path, self.marks = Path(path), []

        def add_marker(self, mark):
            self.marks.append(mark)

    items = [Item(ROOT / "notebooks" / "03_train_with_bce.ipynb"), Item(ROOT / "notebooks" / "05_x.ipynb")]
    items += [
        Item(ROOT / "tests" / "test_a.py"),
        Item(ROOT / "tests" / "test_a.py"),
        Item(ROOT / "tests" / "test_b.py"),
    ]
    with_xdist = SimpleNamespace(pluginmanager=SimpleNamespace(hasplugin=lambda name: name == "xdist"))
    conftest._group_for_xdist(with_xdist, items)
    groups = [item.marks[0].args[0] for item in items]
    assert groups[0] == groups[1] == "notebooks" and groups[2] == groups[3] != groups[4]
    assert all(item.marks[0].name == "xdist_group" for item in items)
    without = [Item(ROOT / "tests" / "test_a.py")]
    conftest._group_for_xdist(
        SimpleNamespace(pluginmanager=SimpleNamespace(hasplugin=lambda name: False)), without
    )
    assert without[0].marks == []
