"""The command line: every command the issues name exists; errors are one line, exit 2."""

import errno
import os
import subprocess
import sys

import pytest

from dagm_helpers import cli

COMMANDS = ["download", "info", "synth", "train", "evaluate", "predict", "compare", "bench", "series"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: python -m dagm_helpers " + command in capsys.readouterr().out


def test_error_is_one_line_and_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "dagm_helpers", "info", "/nonexistent/dagm"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "/nonexistent/dagm" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (errno.ENOSPC, "the disk is full: free some space or write elsewhere (--out)"),
        (errno.EROFS, "that place is read-only: write elsewhere (--out)"),
        (errno.EACCES, "no permission there"),
    ],
)
def test_os_errors_name_the_file_and_say_what_to_do(code, advice, monkeypatch, tmp_path, capsys):
    """A full disk, a read-only place or a permission problem met by any command: one error line
    with the file and the fix."""
    from dagm_helpers.data import synth

    target = tmp_path / "data" / "Class1"

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(synth, "synthesize", fail)
    status = cli.main(["synth", "--out", str(tmp_path / "data"), "--classes", "1", "--images-per-split", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and str(target) in err[0] and advice in err[0]
