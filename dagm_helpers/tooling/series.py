"""Run the notebook series headless: ``python -m dagm_helpers series``.

Each notebook is executed in order in a fresh ``python3`` kernel (nbclient),
with its own folder as working directory, and written to ``build/`` as an
executed ``.ipynb`` and as HTML, atomically. Training runs go to ``build/runs``
(``$DAGM_RUNS``), so notebook 05 reuses what 03 and 04 trained. The series stops
at the first failing notebook with a :class:`NotebookError` that names the
notebook and the cell; the partly executed notebook is still written for
inspection.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..atomic import write_text
from ..config import resolve_profile
from ..errors import DagmError

#: seconds one cell may run (the cpu profile's training cell takes ~10 minutes)
CELL_TIMEOUT_S = 3600


class NotebookError(DagmError):
    """A notebook of the series failed."""


def repo_notebooks_dir() -> Path:
    """The repository's ``notebooks/`` folder (next to the package, else under the working directory)."""
    here = Path(__file__).resolve().parents[1] / "notebooks"
    return here if here.is_dir() else Path.cwd() / "notebooks"


def notebook_paths(
    notebooks: Sequence[str | os.PathLike[str]] | None = None, folder: Path | None = None
) -> list[Path]:
    """The notebooks to run, in order: all ``NN_*.ipynb`` of ``folder``, or the ones named.

    A name may be a path, a file name, a stem (``03_train_with_bce``) or its
    number prefix (``03``).
    """
    folder = folder or repo_notebooks_dir()
    available = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        if not available:
            raise NotebookError(f"no notebooks (NN_*.ipynb) found in {folder}")
        return available
    chosen = []
    for name in map(str, notebooks):
        path = Path(name)
        if path.suffix == ".ipynb" and path.is_file():
            chosen.append(path)
            continue
        matches = [p for p in available if p.stem == path.stem or p.stem.split("_")[0] == name]
        if len(matches) != 1:
            raise NotebookError(
                f"unknown notebook {name!r}; choose from {', '.join(p.stem for p in available) or '(none)'}"
            )
        chosen.append(matches[0])
    return chosen


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def progress_line(text: str, epoch: str | None) -> tuple[str | None, str | None]:
    """Training progress in a notebook's stdout chunk ``text``, as one terminal line per epoch.

    Keras' progress bar writes ``Epoch k/N`` and then redraws one line (carriage returns,
    backspaces, colours) until the epoch ends with its validation scores. Returns
    ``(line to print or None, the current "Epoch k/N" header)``; the training run's own
    ``[train]`` line is passed through.
    """
    shown = None
    for raw in text.split("\n")[:-1] if "\n" in text else []:
        line = _ANSI.sub("", re.split(r"[\r\x08]+", raw)[-1]).strip()
        if line.startswith("Epoch "):
            epoch = line
        elif line.startswith("[train]"):
            shown = line
        elif "val_loss" in line and epoch:
            bar, _, scores = line.partition(" - ")  # "3/3 ━━━ 2s 299ms/step", then the scores
            shown = f"{epoch}: {scores or bar}"
            epoch = None
    return shown, epoch


def _client_class():
    """An nbclient ``NotebookClient`` that prints training progress as the notebook writes it."""
    from nbclient import NotebookClient

    class SeriesClient(NotebookClient):
        epoch: str | None = None

        def process_message(self, msg, cell, cell_index):
            content = msg.get("content", {})
            if msg.get("msg_type") == "stream" and content.get("name") == "stdout":
                line, self.epoch = progress_line(content.get("text", ""), self.epoch)
                if line:
                    print(f"    {line}", flush=True)
            return super().process_message(msg, cell, cell_index)

    return SeriesClient


def execute_notebook(
    path: Path, env: Mapping[str, str] | None = None, timeout: int = CELL_TIMEOUT_S, echo: bool = False
):
    """Execute one notebook in a fresh kernel (cwd: its folder) and return the executed node.

    The kernel talks to this process over local (IPC) sockets, not TCP. With ``echo``,
    training progress lines are printed as the notebook writes them. Raises
    :class:`NotebookError` naming the notebook and the failing cell; the partly executed
    notebook is attached as ``error.notebook``.
    """
    import tempfile

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from traitlets.config import Config

    nb = nbformat.read(path, as_version=4)
    kernel_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryDirectory(prefix="dagm-kernel-") as sockets:
        config = Config()  # local sockets: ipykernel warns that TCP transport is unencrypted
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = str(Path(sockets) / "kernel")
        client = (_client_class() if echo else NotebookClient)(
            nb,
            config=config,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        try:
            client.execute(env=kernel_env)
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
            index, source = _failed_cell(nb)
            reason = _last_line(str(exc))
            error = NotebookError(
                f"notebook {path.name} failed in code cell {index} ({source!r}): {reason}. "
                "Open the executed copy to see the traceback, fix the cause and run the series again"
            )
            error.notebook = nb  # type: ignore[attr-defined]
            raise error from exc
    return nb


def _failed_cell(nb) -> tuple[int, str]:
    """(number among code cells, first source line) of the cell that raised, or of the last run one."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for number, cell in enumerate(code, start=1):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return number, _first_line(cell.source)
    ran = [n for n, c in enumerate(code, start=1) if c.get("execution_count") is not None]
    number = (ran[-1] + 1 if ran[-1] < len(code) else ran[-1]) if ran else 1
    return number, _first_line(code[number - 1].source) if code else ""


def _first_line(source: str) -> str:
    lines = [line for line in source.splitlines() if line.strip() and not line.startswith("#")]
    return (lines[0] if lines else source.strip()[:60])[:80]


def _last_line(text: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # drop terminal colours from the traceback
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "unknown error"


def write_outputs(nb, out: Path, stem: str) -> tuple[Path, Path]:
    """Write the executed notebook and its HTML under ``out`` atomically, and its figures.

    Every PNG the notebook displayed is also written to ``out/figures/<stem>_<k>.png``
    (``k`` counts from 1 in notebook order), so a figure of a real run can go straight into
    the documentation.
    """
    import nbformat
    from nbconvert import HTMLExporter

    ipynb, html = out / f"{stem}.ipynb", out / f"{stem}.html"
    write_text(ipynb, nbformat.writes(nb) + "\n")
    body, _ = HTMLExporter().from_notebook_node(nb)
    write_text(html, body)
    write_figures(nb, out / "figures", stem)
    return ipynb, html


def write_figures(nb, folder: Path, stem: str) -> list[Path]:
    """Write the notebook's displayed PNG images to ``folder/<stem>_<k>.png``; return the paths."""
    import base64

    from ..atomic import write_bytes

    for old in folder.glob(f"{stem}_*.png"):  # figures of an earlier run of this notebook
        old.unlink()
    paths = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {}).get("image/png")
            if data:
                path = folder / f"{stem}_{len(paths) + 1}.png"
                write_bytes(path, base64.b64decode(data if isinstance(data, str) else "".join(data)))
                paths.append(path)
    return paths


def run_series(
    out: str | os.PathLike[str] = "build",
    profile: str | None = None,
    notebooks: Sequence[str | os.PathLike[str]] | None = None,
    folder: str | os.PathLike[str] | None = None,
    timeout: int = CELL_TIMEOUT_S,
) -> Path:
    """Execute the notebooks in order into ``out`` (executed ``.ipynb`` + HTML); return ``out``.

    ``profile`` sets ``$DAGM_PROFILE`` for the kernels (default: as the
    environment says, else auto). Training runs go to ``out/runs`` unless
    ``$DAGM_RUNS`` is set.
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    paths = notebook_paths(notebooks, Path(folder) if folder else None)
    env = {
        "DAGM_RUNS": os.environ.get("DAGM_RUNS") or str(out / "runs"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",  # figures into the notebooks, also headless
        "DAGM_HEADLESS": "1",  # no interactive widgets nobody can use (see viz.prediction_browser)
    }
    if profile:
        env["DAGM_PROFILE"] = profile
    series_minutes = resolve_profile(profile).series_max_minutes
    if not os.environ.get("DAGM_MAX_MINUTES") and series_minutes:
        env["DAGM_MAX_MINUTES"] = str(series_minutes)  # three trainings (3, 4, 6) must fit the series' time
    print(
        f"running {len(paths)} notebook(s) into {out} (profile: {profile or os.environ.get('DAGM_PROFILE') or 'auto'})"
    )
    started = time.perf_counter()
    for number, path in enumerate(paths, start=1):
        t0 = time.perf_counter()
        print(f"[{number}/{len(paths)}] {path.name} ...", flush=True)
        try:
            nb = execute_notebook(path, env=env, timeout=timeout, echo=True)
        except NotebookError as exc:
            ipynb, html = write_outputs(exc.notebook, out, path.stem)  # type: ignore[attr-defined]
            print(
                f"    FAILED after {time.perf_counter() - t0:.0f} s; partly executed copy: {html}", flush=True
            )
            raise
        ipynb, html = write_outputs(nb, out, path.stem)
        print(f"    done in {time.perf_counter() - t0:.0f} s -> {html}", flush=True)
    print(f"all {len(paths)} notebook(s) ran in {time.perf_counter() - started:.0f} s; open {out}/*.html")
    return out


__all__ = [
    "CELL_TIMEOUT_S",
    "progress_line",
    "NotebookError",
    "execute_notebook",
    "notebook_paths",
    "run_series",
    "write_figures",
    "write_outputs",
]
