"""The public API: every name ``dagm_helpers`` re-exports resolves, lazily."""

import subprocess
import sys

import pytest

import dagm_helpers


@pytest.mark.parametrize("name", sorted(dagm_helpers._EXPORTS))
def test_every_export_resolves(name):
    assert getattr(dagm_helpers, name) is not None
    assert name in dir(dagm_helpers)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dagm_helpers.nope  # noqa: B018


def test_import_does_not_load_tensorflow():
    code = "import sys, dagm_helpers, dagm_helpers.cli; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_train_and_evaluate_are_the_functions_the_issues_name():
    import importlib

    importlib.import_module("dagm_helpers.training")  # importing the module must not shadow the function
    assert dagm_helpers.train.__module__ == "dagm_helpers.training" and callable(dagm_helpers.train)
    assert dagm_helpers.evaluate.__module__ == "dagm_helpers.infer"
