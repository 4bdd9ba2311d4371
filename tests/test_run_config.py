"""notebook.run_config: one training configuration for notebooks 3-5, and the series budget."""

from __future__ import annotations

import math

import pytest

from dagm_helpers.config import PROFILES
from dagm_helpers.errors import ConfigError
from dagm_helpers.notebook import MINUTES_ENV, NotebookSetup, run_config


def _setup(tmp_path, profile="cpu"):
    return NotebookSetup(
        profile=PROFILES[profile],
        data_source="synthetic",
        data_root=tmp_path / "data",
        runs_dir=tmp_path / "runs",
        gpu=False,
        colab=False,
    )


def test_same_data_seed_and_budget_for_every_loss(tmp_path, monkeypatch):
    monkeypatch.delenv(MINUTES_ENV, raising=False)
    bce, dice = run_config(_setup(tmp_path), "bce"), run_config(_setup(tmp_path), "dice")
    assert (bce.loss, dice.loss) == ("bce", "dice")
    assert bce.out == tmp_path / "runs" / "bce" and dice.out == tmp_path / "runs" / "dice"
    differ = {k for k, v in bce.as_dict().items() if dice.as_dict()[k] != v}
    assert differ == {"loss", "out"}
    assert bce.max_minutes is None and bce.epochs is None  # the profile's own budget and schedule
    assert bce.evaluate_test is False  # notebook 5 evaluates on the Test split
    assert run_config(_setup(tmp_path), "bce", evaluate_test=True).evaluate_test is True


def test_series_budget_shortens_the_schedule_in_proportion(tmp_path, monkeypatch):
    cpu = PROFILES["cpu"]
    monkeypatch.setenv(MINUTES_ENV, str(cpu.max_minutes / 2))
    config = run_config(_setup(tmp_path), "dice")
    assert config.max_minutes == cpu.max_minutes / 2
    assert config.epochs == math.ceil(cpu.epochs / 2)
    assert config.resolve_profile().epochs == config.epochs
    # a budget above the profile's keeps the full schedule; explicit epochs win
    monkeypatch.setenv(MINUTES_ENV, str(cpu.max_minutes * 3))
    assert run_config(_setup(tmp_path), "dice").epochs is None
    monkeypatch.setenv(MINUTES_ENV, "1")
    assert run_config(_setup(tmp_path), "dice", epochs=7).epochs == 7


@pytest.mark.parametrize("value", ["soon", "0", "-3"])
def test_bad_series_budget_is_a_clear_error(tmp_path, monkeypatch, value):
    monkeypatch.setenv(MINUTES_ENV, value)
    with pytest.raises(ConfigError, match="DAGM_MAX_MINUTES must be"):
        run_config(_setup(tmp_path), "dice")
