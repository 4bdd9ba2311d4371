"""The code the notebooks teach is the code the package runs (tests/test_taught_code.py).

Notebook 2 writes the U-Net in Keras, notebooks 3 and 4 write their losses in ``keras.ops``
and train with ``compile`` and ``fit``. The package holds the same things for the command
line and the later notebooks. These tests take the functions out of the committed notebooks
(their imports and ``def`` statements only; nothing else is run) and check that each equals
its package twin, and that notebook 3's ``compile``/``fit`` cells train exactly the weights
``dagm_helpers.training.train`` trains.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
#: every function a notebook defines, and the package code it must equal
TAUGHT = {
    "02_build_the_unet": {"conv_block", "down", "up", "build_unet"},
    "03_train_with_bce": {"bce_loss"},
    "04_train_with_dice": {"dice_loss", "tutorial_dice_coefficient"},
}


def _code_cells(name: str) -> list[str]:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def taught(name: str) -> dict:
    """The namespace of a notebook's imports and function definitions (no other statement runs)."""
    keep = []
    for source in _code_cells(name):
        tree = ast.parse(source)
        keep += [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom | ast.FunctionDef)]
    namespace: dict = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), f"<{name}>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("name", sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
def test_notebooks_define_only_the_taught_functions(name):
    defined = {
        node.name
        for source in _code_cells(name)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    assert defined == TAUGHT.get(name, set()), "a new function in a notebook needs a twin test here"


# ----------------------------------------------------------------------------- notebook 2: the U-Net
def _layer_configs(model) -> list[tuple[str, dict]]:
    return [(type(layer).__name__, layer.get_config()) for layer in model.layers]


def test_notebook_unet_is_the_package_unet():
    from dagm_helpers.model import small_unet

    ours, theirs = taught("02_build_the_unet")["build_unet"](), small_unet()
    assert ours.count_params() == theirs.count_params() == 1_755_737
    assert [type(layer).__name__ for layer in ours.layers] == [
        type(layer).__name__ for layer in theirs.layers
    ]
    assert _layer_configs(ours) == _layer_configs(theirs)  # names, filters, kernels, strides, dtypes
    theirs.set_weights([w * 1.0 for w in ours.get_weights()])  # same weights ...
    x = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 1)).astype("float32")
    np.testing.assert_allclose(
        ours.predict(x, verbose=0), theirs.predict(x, verbose=0), atol=1e-6
    )  # ... same outputs


# ----------------------------------------------------------------------------- notebooks 3 and 4: losses
def _random_batches(seed: int = 0):
    rng = np.random.default_rng(seed)
    for shape in ((2, 16, 16, 1), (3, 24, 8, 1)):
        y_true = (rng.random(shape) < 0.2).astype("float32")
        yield y_true, rng.random(shape).astype("float32")
        yield np.zeros(shape, "float32"), rng.random(shape).astype("float32") * 0.1  # a clean batch
        yield y_true, y_true  # a perfect prediction


def test_notebook_bce_is_the_package_bce():
    from dagm_helpers.losses import PixelBCE

    bce_loss = taught("03_train_with_bce")["bce_loss"]
    for y_true, y_pred in _random_batches():
        np.testing.assert_allclose(
            float(bce_loss(y_true, y_pred)), float(PixelBCE()(y_true, y_pred)), rtol=1e-5
        )


def test_notebook_dice_losses_are_the_package_losses():
    from dagm_helpers.losses import DiceLoss, TutorialDiceLoss

    ns = taught("04_train_with_dice")
    for y_true, y_pred in _random_batches():
        np.testing.assert_allclose(
            float(ns["dice_loss"](y_true, y_pred)), float(DiceLoss()(y_true, y_pred)), rtol=1e-5
        )
        tutorial = -float(ns["tutorial_dice_coefficient"](y_true, y_pred))
        np.testing.assert_allclose(tutorial, float(TutorialDiceLoss()(y_true, y_pred)), rtol=1e-5)
    empty = np.zeros((2, 8, 8, 1), "float32")
    assert (
        float(ns["dice_loss"](empty, empty)) == 0.0
        and float(ns["tutorial_dice_coefficient"](empty, empty)) == 2.0
    )


# ----------------------------------------------------------------------------- notebooks 3 and 4: compile and fit
def _run_notebook_cells(name: str, runs: Path) -> dict:
    """Execute a notebook's code cells in this process (smoke profile) with its runs in ``runs``."""
    import os

    namespace: dict = {}
    old = os.environ.get("DAGM_RUNS")
    os.environ["DAGM_RUNS"] = str(runs)
    try:
        for number, source in enumerate(_code_cells(name)):
            exec(compile(source, f"<{name} cell {number}>", "exec"), namespace)
    finally:
        os.environ["DAGM_RUNS"] = old or ""
        import matplotlib.pyplot as plt

        plt.close("all")
    return namespace


@pytest.mark.parametrize(
    ("name", "loss", "result"), [("03_train_with_bce", "bce", "bce"), ("04_train_with_dice", "dice", "dice")]
)
def test_notebook_compile_and_fit_train_what_the_package_trains(name, loss, result, tmp_path):
    """The notebook's visible compile/fit and ``train()`` (the command line's) give the same weights."""
    from dagm_helpers.notebook import run_config, setup
    from dagm_helpers.training import read_history, train

    namespace = _run_notebook_cells(name, tmp_path / "notebook")
    ours = namespace[result]
    theirs = train(run_config(setup(runs=tmp_path / "package", quiet=True), loss))
    assert [r["epoch"] for r in ours.history] == [r["epoch"] for r in theirs.history]
    for a, b in zip(ours.model.get_weights(), theirs.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for key in ("loss", "val_loss", "val_dice"):
        assert [r[key] for r in ours.history] == pytest.approx([r[key] for r in theirs.history], abs=1e-5)
    notebook_config = (tmp_path / "notebook" / loss / "config.json").read_text()
    assert f'"loss": "{loss}"' in notebook_config
    assert read_history(tmp_path / "notebook" / loss / "history.csv") == ours.history
