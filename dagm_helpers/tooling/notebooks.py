"""Keeping the committed notebooks clean: stripped outputs, and the few checked outputs' references.

``python -m dagm_helpers.tooling.notebooks strip FILE.ipynb ...`` removes every output and
execution count: the committed notebooks carry none. The few cells marked
``# NBVAL_CHECK_OUTPUT`` (the data table, the parameter count) are still compared by nbval:
their reference outputs live in ``notebooks/expected_outputs.json``, and ``conftest.py``
attaches them to nbval's in-memory copy of the notebook (:func:`attach_expected_outputs`).
``python -m dagm_helpers.tooling.notebooks refresh`` re-executes the notebooks in the smoke
profile and rewrites that file.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError
from ..notebook import EXPECT_PROFILE_ENV, RUNS_ENV

#: marker of notebook cells whose output nbval compares
CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
#: reference outputs of the marked cells, beside the notebooks: {notebook: {first code line: stdout}}
EXPECTED_OUTPUTS_FILE = "expected_outputs.json"
#: environment variable naming a file where conftest.py reports the outputs it attached (tests use it)
ATTACH_REPORT_ENV = "DAGM_ATTACH_REPORT"


def is_checked_cell(cell) -> bool:
    """True for a code cell marked ``# NBVAL_CHECK_OUTPUT``."""
    return cell.get("cell_type") == "code" and CHECK_MARKER in "".join(cell.get("source", ""))


def strip_notebook(nb) -> bool:
    """Remove all outputs and execution counts in place; return True when anything changed.

    Cells marked ``# NBVAL_CHECK_OUTPUT`` are stripped too: their reference
    outputs live in ``expected_outputs.json`` (see :func:`attach_expected_outputs`).
    """
    changed = False
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs") or cell.get("execution_count") is not None:
            changed = True
        cell["outputs"], cell["execution_count"] = [], None
        if cell.get("metadata", {}).pop("execution", None) is not None:
            changed = True
    return changed


def checked_cell_key(cell) -> str:
    """The first line of a checked cell's code after its comments: its key in ``expected_outputs.json``."""
    source = "".join(cell.get("source", ""))
    lines = [line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ConfigError(f"a {CHECK_MARKER} cell holds no code: {source!r}")
    return lines[0].strip()


def load_expected_outputs(folder: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """Read ``expected_outputs.json`` from a notebook folder (``{}`` when the file is absent)."""
    import json

    path = Path(folder) / EXPECTED_OUTPUTS_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path}: cannot read it as JSON ({exc}); rerun `python -m dagm_helpers.tooling.notebooks refresh`"
        ) from exc
    ok = isinstance(data, dict) and all(
        isinstance(v, dict) and all(isinstance(t, str) for t in v.values()) for v in data.values()
    )
    if not ok:
        raise ConfigError(
            f"{path}: expected {{notebook: {{first code line: output text}}}}; rerun the refresh"
        )
    return data


def attach_expected_outputs(name: str, cells: Sequence, expected: dict[str, dict[str, str]]) -> int:
    """Give each ``# NBVAL_CHECK_OUTPUT`` cell of notebook ``name`` its reference stdout, in place.

    nbval compares a cell only when it has a stored execution count and outputs,
    so each checked cell gets execution count 1 and one stdout stream. A checked
    cell without a reference, or a reference without its cell, is an error:
    the comparison can never switch off silently. Returns the number of cells given outputs.
    """
    from nbformat.v4 import new_output

    refs = dict(expected.get(name, {}))
    attached = 0
    for cell in cells:
        if not is_checked_cell(cell):
            continue
        key = checked_cell_key(cell)
        if key not in refs:
            raise ConfigError(
                f"notebook {name}: the {CHECK_MARKER} cell `{key}` has no reference output in "
                f"{EXPECTED_OUTPUTS_FILE}; run `python -m dagm_helpers.tooling.notebooks refresh`"
            )
        cell["outputs"] = [new_output("stream", name="stdout", text=refs.pop(key))]
        cell["execution_count"] = 1
        attached += 1
    if refs:
        raise ConfigError(
            f"notebook {name}: {EXPECTED_OUTPUTS_FILE} holds outputs for cells it does not have "
            f"({', '.join(sorted(refs))}); run `python -m dagm_helpers.tooling.notebooks refresh`"
        )
    return attached


def strip_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Strip each notebook file in place (atomically); return the files that changed."""
    import nbformat

    from ..atomic import write_text

    changed = []
    for path in map(Path, paths):
        nb = nbformat.read(path, as_version=4)
        if strip_notebook(nb):
            write_text(path, nbformat.writes(nb) + "\n")
            changed.append(path)
    return changed


def refresh_checked_outputs(
    paths: Sequence[str | os.PathLike[str]] | None = None, timeout: int = 600
) -> Path:
    """Execute notebooks in the smoke profile and record their checked cells' stdout.

    Run it after a change that alters a checked output (the data table, the
    parameter count). It rewrites ``expected_outputs.json`` beside the notebooks
    and leaves the notebooks themselves untouched. Returns the JSON file's path.
    """
    import json
    import tempfile

    from ..atomic import write_text
    from .series import execute_notebook, notebook_paths

    targets = [Path(p) for p in paths] if paths else notebook_paths()
    folder = targets[0].parent
    expected = load_expected_outputs(folder)
    env = {
        "DAGM_PROFILE": "smoke",
        EXPECT_PROFILE_ENV: "smoke",
        RUNS_ENV: tempfile.mkdtemp(prefix="dagm-runs-"),
    }
    env["DAGM_HOME"] = os.environ.get("DAGM_HOME") or tempfile.mkdtemp(prefix="dagm-home-")
    for path in targets:
        executed = execute_notebook(path, env=env, timeout=timeout)
        refs = {}
        for cell in executed.cells:
            if is_checked_cell(cell):
                outs = cell.get("outputs", [])
                if not all(o.get("output_type") == "stream" and o.get("name") == "stdout" for o in outs):
                    raise ConfigError(f"{path}: a {CHECK_MARKER} cell must only print to stdout")
                refs[checked_cell_key(cell)] = "".join(o.get("text", "") for o in outs)
        expected.pop(path.stem, None)
        if refs:
            expected[path.stem] = refs
        print(f"recorded {len(refs)} checked output(s) of {path}")
    dest = folder / EXPECTED_OUTPUTS_FILE
    write_text(dest, json.dumps(dict(sorted(expected.items())), indent=2, ensure_ascii=False) + "\n")
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dagm_helpers.tooling.notebooks strip|refresh [FILES]``."""
    parser = argparse.ArgumentParser(prog="python -m dagm_helpers.tooling.notebooks")
    parser.add_argument("action", choices=["strip", "refresh"])
    parser.add_argument("files", nargs="*")
    args = parser.parse_args(argv)
    if args.action == "strip":
        changed = strip_files(args.files)
        for path in changed:
            print(f"stripped {path}")
        return 1 if changed else 0  # pre-commit: a changed file fails the hook once, then passes
    refresh_checked_outputs(args.files or None)
    return 0


__all__ = [
    "ATTACH_REPORT_ENV",
    "CHECK_MARKER",
    "EXPECTED_OUTPUTS_FILE",
    "attach_expected_outputs",
    "checked_cell_key",
    "is_checked_cell",
    "load_expected_outputs",
    "refresh_checked_outputs",
    "strip_files",
    "strip_notebook",
]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
