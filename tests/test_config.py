"""Profiles are chosen in one place: argument > $DAGM_PROFILE > auto-detection."""

import pytest

from dagm_helpers import config
from dagm_helpers.errors import ConfigError


def test_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("DAGM_PROFILE", "cpu")
    assert config.resolve_profile("gpu").name == "gpu"


def test_environment_beats_auto(monkeypatch):
    monkeypatch.setenv("DAGM_PROFILE", "cpu")
    assert config.resolve_profile().name == "cpu"


def test_auto_detects_gpu(monkeypatch):
    monkeypatch.delenv("DAGM_PROFILE", raising=False)
    monkeypatch.setattr(config, "gpu_available", lambda: True)
    assert config.resolve_profile().name == "gpu"
    monkeypatch.setattr(config, "gpu_available", lambda: False)
    assert config.resolve_profile().name == "cpu"
    monkeypatch.setenv("DAGM_PROFILE", "auto")
    assert config.resolve_profile().name == "cpu"


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DAGM_PROFILE", "turbo")
    with pytest.raises(
        ConfigError, match=r"unknown profile 'turbo' \(from \$DAGM_PROFILE\).*smoke, cpu, gpu"
    ):
        config.resolve_profile()


def test_overrides_apply_and_none_is_ignored():
    p = config.resolve_profile("cpu", batch_size=3, epochs=None)
    assert p.batch_size == 3 and p.epochs == config.PROFILES["cpu"].epochs
    with pytest.raises(ConfigError, match="unknown profile setting"):
        config.resolve_profile("cpu", batchsize=3)


def test_gpu_profile_is_the_tutorial_recipe():
    p = config.PROFILES["gpu"]
    assert (p.image_size, p.crop_size, p.batch_size, p.learning_rate, p.epochs) == (512, None, 10, 1e-4, 50)


def test_sizes_divisible_by_16():
    for p in config.PROFILES.values():
        assert p.image_size % 16 == 0
        assert p.crop_size is None or p.crop_size % 16 == 0


def test_data_source(monkeypatch):
    monkeypatch.delenv("DAGM_DIR", raising=False)
    assert config.data_source() == "synthetic"
    monkeypatch.setenv("DAGM_DIR", "/data/dagm")
    assert config.data_source() == "/data/dagm"
    assert config.data_source("elsewhere") == "elsewhere"


def test_dagm_home(monkeypatch, tmp_path):
    monkeypatch.setenv("DAGM_HOME", str(tmp_path))
    assert config.dagm_home() == tmp_path


def test_colab_url_points_at_the_notebook():
    url = config.colab_url("notebooks/01_get_the_data.ipynb")
    assert (
        url
        == f"https://colab.research.google.com/github/{config.REPO_SLUG}/blob/main/notebooks/01_get_the_data.ipynb"
    )


def test_every_recipe_option_is_declared_once_and_reaches_profile_config_and_command_line():
    import dataclasses

    from dagm_helpers.cli import build_parser
    from dagm_helpers.training import TrainConfig

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    profile_fields = {f.name for f in dataclasses.fields(config.Profile)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for option in config.RECIPE_OPTIONS:
        assert option.field in profile_fields and option.name in train_fields, option
        for command in ("train", "compare"):
            flags = {s for a in sub.choices[command]._actions for s in a.option_strings}
            assert "--" + option.name.replace("_", "-") in flags, (command, option.name)
        value = 7 if option.type is int else 0.25
        if option.name == "image_size":
            value = 256
        if option.name == "crop_size":
            value = 128
        resolved = TrainConfig(out="x", profile="cpu", **{option.name: value}).resolve_profile()
        assert getattr(resolved, option.field) == value, option
