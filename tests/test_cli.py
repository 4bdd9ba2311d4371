"""The command line: every command the issues name exists; errors are one line, exit 2."""

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
