"""The package's layers (tests/test_layering.py): the teaching core imports nothing from the speed
code or the maintainers' tooling, imports point one way, and the core runs with the speed
package absent (``dagm_helpers/hooks.py`` is the one place it plugs in)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dagm_helpers"
#: subpackages that plug into (speed) or serve (tooling) the core; the core must not import them
OUTSIDE_CORE = ("speed", "tooling")
#: modules above the core: they may import anything
TOP = {"cli", "__main__", "__init__"}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def _imports(path: Path) -> set[str]:
    """Every dagm_helpers module ``path`` imports (at any depth of the file), as dotted names."""
    here = _module_name(path).split(".")
    package = here[:-1] if path.name != "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = [*base, *(node.module.split(".") if node.module else [])]
                names = [".".join(target)] if node.module else [".".join([*base, a.name]) for a in node.names]
                found.update(n for n in names if n)
            elif node.module and node.module.startswith("dagm_helpers."):
                found.add(node.module.removeprefix("dagm_helpers."))
        elif isinstance(node, ast.Import):
            found.update(
                a.name.removeprefix("dagm_helpers.") for a in node.names if a.name.startswith("dagm_helpers.")
            )
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_the_core_imports_neither_the_speed_code_nor_the_tooling():
    offenders = {
        module: sorted(t for t in targets if t.split(".")[0] in OUTSIDE_CORE)
        for module, targets in _graph().items()
        if module.split(".")[0] not in OUTSIDE_CORE and module not in TOP
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_no_two_modules_import_each_other():
    graph = _graph()
    pairs = sorted(
        {tuple(sorted((a, b))) for a, targets in graph.items() for b in targets if a in graph.get(b, set())}
    )
    assert pairs == [], f"modules that import each other: {pairs}"


HIDE_SPEED = textwrap.dedent(
    """
    import importlib.abc, sys

    class HideSpeed(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "dagm_helpers.speed" or name.startswith("dagm_helpers.speed."):
                raise ImportError(f"{name} is hidden for this test")
            return None

    sys.meta_path.insert(0, HideSpeed())
    """
)


def test_the_core_trains_and_predicts_plain_tensorflow_with_the_speed_package_absent(tmp_path):
    code = HIDE_SPEED + textwrap.dedent(
        f"""
        import warnings
        import numpy as np
        from dagm_helpers import hooks
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert hooks.accelerators() == ()
        assert any("not usable" in str(w.message) for w in caught), [str(w.message) for w in caught]
        from dagm_helpers.notebook import setup
        from dagm_helpers.training import TrainConfig, train
        from dagm_helpers.infer import predict_proba
        nb = setup(quiet=True)
        run = train(TrainConfig(out={str(tmp_path / "run")!r}, profile="smoke", verbose=0, evaluate_test=False))
        probs = predict_proba(run.model, np.zeros((2, 40, 56), np.uint8), fast=True)
        assert probs.shape == (2, 40, 56)
        assert run.config["accelerators"] == [] and run.config["onednn"] is None
        assert "dagm_helpers.speed" not in sys.modules
        print("plain TensorFlow: ok")
        """
    )
    env = {**os.environ}
    env.pop("DAGM_NO_ACCELERATORS", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "plain TensorFlow: ok" in proc.stdout


def test_the_speed_package_plugs_in_through_the_hooks():
    from dagm_helpers import hooks, speed

    assert speed in hooks.accelerators()
    assert hooks.cpu_state() == speed.cpu_state()
    assert hooks.training_jit(True, on_gpu=True) is True  # a GPU keeps XLA
