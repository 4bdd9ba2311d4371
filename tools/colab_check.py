#!/usr/bin/env python3
"""Check the project against the package set Google Colab ships.

Colab publishes its preinstalled packages as a ``pip freeze``
(github.com/googlecolab/backend-info, ``pip-freeze.txt``). The copy this project was last
matched against is ``tools/colab/pip-freeze.txt``; when Colab updates, pass the newer file
with ``--freeze``.

    python tools/colab_check.py pins                      # the versions pinned from the freeze
    python tools/colab_check.py build                     # venv build/colab-env with those versions
    python tools/colab_check.py install-check             # would installing the project change any?
    python tools/colab_check.py test                      # the notebooks and Colab-facing tests there

``build`` makes a virtual environment with Colab's versions of the packages this project
touches (TensorFlow, Keras, NumPy, ..., ipywidgets 7.7.1, IPython 7.34, ipykernel 6.17,
Notebook 6.5.7) plus the test tools. Only the package set can be matched: the venv uses this
machine's Python. ``install-check`` then asks pip, in that venv, what installing the project
the way the notebooks do would install, and fails naming every preinstalled package pip
would upgrade or downgrade. ``test`` installs the project into the venv without touching its
packages and runs the notebooks under nbval (smoke profile), the browser test and the tests
that build Colab's GPU settings. ``all`` does the three in order (``.ci/run`` calls it).

Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FREEZE = REPO / "tools" / "colab" / "pip-freeze.txt"
DEFAULT_VENV = REPO / "build" / "colab-env"

#: Colab's packages that this project, its notebooks or their kernel and front ends touch;
#: their versions come from the freeze file. (Not the whole freeze: many of its pins have no
#: build for this machine's Python.)
PINNED = (
    # what the package imports
    "tensorflow",
    "keras",
    "numpy",
    "scipy",
    "matplotlib",
    "scikit-image",
    "pillow",
    "ipywidgets",
    "pooch",
    "platformdirs",
    "tqdm",
    "filelock",
    "pycocotools",
    # TensorFlow's own dependencies that Colab pins
    "tensorboard",
    "ml_dtypes",
    "protobuf",
    "h5py",
    # the kernel and the front ends the widget must display in
    "widgetsnbextension",
    "ipython",
    "ipykernel",
    "jupyter_client",
    "jupyter_core",
    "jupyter_server",
    "notebook",
    "nbclassic",
    "traitlets",
    "tornado",
    "pyzmq",
    # running notebooks
    "jupytext",
    "nbclient",
    "nbconvert",
    "nbformat",
    "pytest",
)
#: what the checks add to Colab's set (not preinstalled there, or not pinned by it)
TEST_TOOLS = ("pytest-timeout", "pytest-xdist", "nbval", "selenium")
#: the JupyterLab that renders a given ipywidgets major version (Colab's own front end is not
#: JupyterLab; its freeze lists jupyterlab_widgets 3, which JupyterLab 4 uses for ipywidgets 8
#: only, so the browser test pairs ipywidgets 7 with JupyterLab 3 and its widget manager 1.x)
JUPYTERLAB_FOR_WIDGETS = {"7": ("jupyterlab>=3.6,<4", "jupyterlab_widgets>=1.1,<2"), "8": ("jupyterlab>=4",)}
#: the tests that run in the Colab-matched environment, besides the notebooks (which train through
#: the package's engine in the smoke profile): what Colab's own versions can break. The training
#: engine's process and file handling (tests/test_train.py: kills, locks, resume, damaged files)
#: runs in the main run only; Colab's TensorFlow and Keras train there through the notebooks and
#: tests/test_colab_runtime.py (the gpu profile's mixed precision and XLA). CI has 30 minutes.
COLAB_TESTS = (
    "tests/test_colab_runtime.py",
    "tests/test_browser.py",
    "tests/test_runtime.py",
    "tests/test_test_mode.py",
    "tests/test_viz.py",
    "tests/test_notebooks.py",
    "tests/test_model.py",
    "tests/test_losses.py",
)
PROJECT = "dagm-helpers"


def canonical(name: str) -> str:
    """PEP 503 normalised name (``Scikit_Image`` -> ``scikit-image``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_freeze(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of the ``name==version`` lines of a ``pip freeze`` file."""
    versions = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)\s*", line)
        if match:
            versions[canonical(match.group(1))] = match.group(2)
    if not versions:
        raise SystemExit(f"error: {path} holds no `name==version` lines; is it a pip freeze file?")
    return versions


def pins(freeze: Path) -> dict[str, str]:
    """The :data:`PINNED` packages' versions in ``freeze``; an error names any that it lacks."""
    versions = read_freeze(freeze)
    missing = [name for name in PINNED if canonical(name) not in versions]
    if missing:
        raise SystemExit(
            f"error: {freeze} does not list {', '.join(missing)}; if Colab dropped them, "
            "remove them from PINNED in tools/colab_check.py"
        )
    return {canonical(name): versions[canonical(name)] for name in PINNED}


def changes(report: dict, installed: dict[str, str], project: str = PROJECT) -> list[str]:
    """What a ``pip install --dry-run --report`` would do to an environment holding ``installed``.

    One line per preinstalled package it would upgrade or downgrade (``installed`` maps
    canonical names to versions), and per package it would add; the project itself is
    ignored. Empty when installing changes nothing of what is there.
    """
    lines = []
    for item in report.get("install", []):
        meta = item.get("metadata", {})
        name, new = canonical(meta.get("name", "?")), meta.get("version", "?")
        if name == canonical(project):
            continue
        if name in installed:
            if installed[name] != new:
                lines.append(f"{name}: Colab has {installed[name]}, installing the project would put {new}")
        else:
            lines.append(f"{name}: not in Colab's set, installing the project would add {new}")
    return lines


def _python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def _pip(venv_dir: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    cmd = [str(_python(venv_dir)), "-m", "pip", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kwargs)


def installed_versions(venv_dir: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(_python(venv_dir)), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {canonical(row["name"]): row["version"] for row in json.loads(out)}


def build(freeze: Path, venv_dir: Path) -> None:
    """A venv with Colab's versions of :data:`PINNED` plus the test tools (not the project)."""
    wanted = pins(freeze)
    if not _python(venv_dir).exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    constraints = venv_dir / "colab-constraints.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in wanted.items()), encoding="utf-8")
    lab = JUPYTERLAB_FOR_WIDGETS[wanted["ipywidgets"].split(".")[0]]
    _pip(venv_dir, "install", "-q", "-c", str(constraints), *wanted, *TEST_TOOLS, *lab)
    have = installed_versions(venv_dir)
    wrong = [f"{n} {have.get(n)} (Colab: {v})" for n, v in wanted.items() if have.get(n) != v]
    if wrong:
        raise SystemExit("error: the Colab environment did not get Colab's versions: " + ", ".join(wrong))
    print(f"Colab-matched environment in {venv_dir} ({freeze.name}):")
    print("  " + ", ".join(f"{n} {v}" for n, v in wanted.items()))


def install_check(venv_dir: Path, target: str) -> list[str]:
    """Ask pip what installing ``target`` into the venv would change; print and return the lines."""
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        _pip(venv_dir, "install", "-q", "--dry-run", "--report", str(report_path), target)
        report = json.loads(report_path.read_text(encoding="utf-8"))
    found = changes(report, installed_versions(venv_dir))
    if found:
        print("Installing the project would change Colab's packages:")
        for line in found:
            print("  " + line)
    else:
        print(f"Installing {target} changes none of the environment's packages.")
    return found


def run_tests(venv_dir: Path, extra: list[str]) -> int:
    """Install the project without its dependencies and run the Colab-facing tests and notebooks."""
    _pip(venv_dir, "install", "-q", "--no-deps", "-e", str(REPO))
    _pip(venv_dir, "check")
    cmd = [str(_python(venv_dir)), "-m", "pytest", "-p", "no:cacheprovider", "notebooks", *COLAB_TESTS]
    print("+", " ".join([*cmd, *extra]), flush=True)
    return subprocess.run([*cmd, *extra], cwd=REPO).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/colab_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["pins", "build", "install-check", "test", "all"])
    parser.add_argument("--freeze", type=Path, default=DEFAULT_FREEZE, help="Colab's pip-freeze.txt")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the environment's folder")
    parser.add_argument(
        "--target", default=str(REPO), help="what to install-check (default: this checkout; a git URL works)"
    )
    args, extra = parser.parse_known_args(argv)
    if not args.freeze.is_file():
        parser.error(f"no freeze file at {args.freeze}")
    if args.action == "pins":
        for name, version in pins(args.freeze).items():
            print(f"{name}=={version}")
        return 0
    if args.action in ("build", "all"):
        build(args.freeze, args.venv)
    if args.action in ("install-check", "all") and install_check(args.venv, args.target):
        return 1
    if args.action in ("test", "all"):
        return run_tests(args.venv, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
