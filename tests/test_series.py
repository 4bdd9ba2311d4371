"""The headless series runner (tests/test_series.py): executed notebooks and HTML, clear failures."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from dagm_helpers.tooling.series import NotebookError, notebook_paths, run_series


def _write(path, *sources):
    cells = [new_markdown_cell("# tiny")] + [new_code_cell(s) for s in sources]
    nbformat.write(
        new_notebook(
            cells=cells,
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        ),
        path,
    )
    return path


def test_notebook_paths_order_and_names(tmp_path):
    for name in ("02_b.ipynb", "01_a.ipynb", "notes.ipynb"):
        _write(tmp_path / name, "1")
    assert [p.name for p in notebook_paths(folder=tmp_path)] == ["01_a.ipynb", "02_b.ipynb"]
    assert [p.name for p in notebook_paths(["02", "01_a"], folder=tmp_path)] == ["02_b.ipynb", "01_a.ipynb"]
    with pytest.raises(NotebookError, match="unknown notebook '07'"):
        notebook_paths(["07"], folder=tmp_path)


def test_run_series_writes_executed_notebooks_and_html(tmp_path, capsys):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _write(
        folder / "01_first.ipynb",
        "import os\nprint('profile', os.environ['DAGM_PROFILE'], 'headless', os.environ['DAGM_HEADLESS'])",
    )
    _write(
        folder / "02_second.ipynb",
        "x = 6 * 7\nx",
        "print('Epoch 1/1')\nprint('1/1 - loss: 1.0 - val_loss: 2.0')",
    )
    out = run_series(out=tmp_path / "build", profile="smoke", folder=folder, timeout=120)
    assert out == (tmp_path / "build").resolve()
    for stem in ("01_first", "02_second"):
        assert (out / f"{stem}.ipynb").is_file() and (out / f"{stem}.html").is_file()
    first = nbformat.read(out / "01_first.ipynb", as_version=4)
    assert first.cells[1].outputs[0]["text"] == "profile smoke headless 1\n"  # both reached the kernel
    second = nbformat.read(out / "02_second.ipynb", as_version=4)
    assert second.cells[1].outputs[0]["data"]["text/plain"] == "42"
    assert "42" in (out / "02_second.html").read_text()
    assert not list(out.glob(".tmp-*"))  # atomic writes leave no temporary files
    printed = capsys.readouterr().out
    assert "[1/2] 01_first.ipynb" in printed and "[2/2] 02_second.ipynb" in printed and str(out) in printed
    assert "    Epoch 1/1: loss: 1.0 - val_loss: 2.0\n" in printed  # training progress, relayed live


def test_displayed_figures_are_written_as_png_files(tmp_path):
    import base64

    from dagm_helpers.tooling.series import write_figures

    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("fig", outputs=[_png_output(png), _png_output(png)]),
        nbformat.v4.new_code_cell("print(1)", outputs=[nbformat.v4.new_output("stream", text="1\n")]),
        nbformat.v4.new_code_cell("fig2", outputs=[_png_output(png)]),
    ]
    folder = tmp_path / "figures"
    folder.mkdir()
    (folder / "05_x_9.png").write_bytes(b"stale")  # from an earlier run: removed
    (folder / "04_y_1.png").write_bytes(b"other")  # another notebook's: kept
    paths = write_figures(nb, folder, "05_x")
    assert [p.name for p in paths] == ["05_x_1.png", "05_x_2.png", "05_x_3.png"]
    assert all(p.read_bytes() == png for p in paths)
    assert sorted(p.name for p in folder.iterdir()) == [
        "04_y_1.png",
        "05_x_1.png",
        "05_x_2.png",
        "05_x_3.png",
    ]


def _png_output(png: bytes):
    import base64

    return nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(png).decode()})


def test_a_failing_notebook_stops_the_series_with_a_clear_error(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _write(folder / "01_ok.ipynb", "1 + 1")
    _write(folder / "02_broken.ipynb", "a = 1", "raise ValueError('the data folder is empty')", "b = 2")
    _write(folder / "03_never.ipynb", "1")
    with pytest.raises(NotebookError) as info:
        run_series(out=tmp_path / "build", folder=folder, timeout=120)
    message = str(info.value)
    assert "02_broken.ipynb" in message and "code cell 2" in message
    assert "ValueError: the data folder is empty" in message and "\x1b[" not in message
    assert (tmp_path / "build" / "02_broken.html").is_file()  # partly executed copy for inspection
    assert not (tmp_path / "build" / "03_never.ipynb").exists()  # stopped at the first failure


def test_progress_line_turns_keras_progress_bars_into_one_line_per_epoch():
    from dagm_helpers.tooling.series import progress_line

    assert progress_line("[train] runs/bce: 19 train / 5 val images\n", None) == (
        "[train] runs/bce: 19 train / 5 val images",
        None,
    )
    line, epoch = progress_line("Epoch 1/2\n", None)
    assert line is None and epoch == "Epoch 1/2"
    bar = "\r\x1b[1m1/3\x1b[0m \x1b[32m━━━━\x1b[0m 2s/step - loss: 0.6168"
    assert progress_line(bar, epoch) == (None, "Epoch 1/2")  # a redraw without newline: not yet
    done = (
        "\x08\x08\x08\r\x1b[1m3/3\x1b[0m ━━━━ 0s 40ms/step - loss: 0.5202 - val_loss: 0.3597 - lr: 0.0010\n"
    )
    assert progress_line(done, epoch) == ("Epoch 1/2: loss: 0.5202 - val_loss: 0.3597 - lr: 0.0010", None)
    assert progress_line("some other output\n", None) == (None, None)
