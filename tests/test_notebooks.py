"""The committed notebooks (tests/test_notebooks.py): pairing, no outputs, badges, no logic inside.

nbval executes them (``pytest`` collects ``notebooks/``); these tests check what
is committed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_output

from dagm_helpers.config import REPO_URL, colab_url
from dagm_helpers.notebook import CHECK_MARKER, is_checked_cell, strip_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NAMES = (
    "01_get_the_data",
    "02_build_the_unet",
    "03_train_with_bce",
    "04_train_with_dice",
    "05_compare_and_inspect_edges",
)
#: the only cells whose outputs are committed (nbval compares them): notebook -> first code line
CHECKED = {
    "01_get_the_data": "print(format_counts(counts))",
    "02_build_the_unet": 'print(f"{model.count_params():,} parameters")',
}
#: longest function body (in lines) a notebook may define: anything longer belongs in dagm_helpers
MAX_FUNCTION_LINES = 3


def _read(name: str):
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def _code(source: str) -> str:
    """Cell source with IPython magics commented out, so ast can parse it."""
    return "\n".join(
        "# " + line if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )


def test_the_series_is_exactly_these_five_pairs():
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
def test_no_outputs_except_the_checked_cells(name):
    nb = _read(name)
    for number, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if is_checked_cell(cell):
            first = [line for line in cell.source.splitlines() if not line.startswith("#")][0]
            assert CHECKED.get(name) == first, f"{name} cell {number}: unexpected {CHECK_MARKER} cell"
            # nbval compares only cells with a stored execution count and output
            assert cell.execution_count is not None and cell.outputs, (
                f"{name}: run dagm_helpers.notebook refresh"
            )
            assert all(o.output_type == "stream" and o.name == "stdout" for o in cell.outputs)
        else:
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{name} cell {number} carries outputs"
            )
    assert (name in CHECKED) == any(is_checked_cell(c) for c in nb.cells)


def test_checked_outputs_hold_the_known_answers():
    table = "".join(o.text for c in _read("01_get_the_data").cells if is_checked_cell(c) for o in c.outputs)
    assert re.search(r"^\s*1\s+Train\s+24\s+\d+", table, re.M), table  # smoke: 24 images per split
    count = "".join(o.text for c in _read("02_build_the_unet").cells if is_checked_cell(c) for o in c.outputs)
    assert count == "1,755,737 parameters\n"


@pytest.mark.parametrize("name", NAMES)
def test_title_and_colab_badge_link_to_the_notebook_itself(name):
    first = _read(name).cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    links = re.findall(r"\]\((https://colab\.research\.google\.com/github/[^)]+)\)", first.source)
    assert links == [colab_url(f"notebooks/{name}.ipynb")]
    assert "colab-badge.svg" in first.source


@pytest.mark.parametrize("name", NAMES)
def test_setup_cell_installs_from_the_repository_only_in_colab(name):
    code = [c for c in _read(name).cells if c.cell_type == "code"]
    setup = code[0].source
    assert '"google.colab" in sys.modules' in setup
    assert f"git+{REPO_URL}" in setup  # the URL is defined once in config; this copy must match it
    assert "report_runtime()" in setup  # and it says whether a GPU is present


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_call_dagm_helpers_and_hold_no_logic(name):
    sources = [c.source for c in _read(name).cells if c.cell_type == "code"]
    assert any("from dagm_helpers" in s for s in sources)
    for source in sources:
        tree = ast.parse(_code(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                pytest.fail(f"{name} defines class {node.name}: move it to dagm_helpers")
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno
                assert length <= MAX_FUNCTION_LINES, f"{name} defines {node.name} ({length} lines)"


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


def test_strip_keeps_only_checked_cells_and_their_counts():
    nb = nbformat.v4.new_notebook()
    free = new_code_cell(
        "print(1)", execution_count=1, outputs=[new_output("stream", name="stdout", text="1\n")]
    )
    checked = new_code_cell(
        f"{CHECK_MARKER}\nprint(2)",
        execution_count=2,
        outputs=[new_output("stream", name="stdout", text="2\n")],
    )
    checked.outputs[0]["metadata"] = {"junk": 1}
    nb.cells = [free, checked]
    assert strip_notebook(nb) is True
    assert free.outputs == [] and free.execution_count is None
    assert checked.outputs[0]["text"] == "2\n" and checked.execution_count == 2
    assert strip_notebook(nb) is False  # idempotent
