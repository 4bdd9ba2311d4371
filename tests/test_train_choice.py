"""``train`` chooses its CPU training settings by measurement: the decision on fake timings, the
record and the per-machine cache, explicit choices. That the variant it may choose trains the same
weights as TensorFlow's own gradients (float32) is
``tests/test_conv_grad.py::test_patched_unet_trains_to_the_same_weights_and_saves_plain_conv2d``."""

from __future__ import annotations

import importlib
import json

import pytest
from _train_child import make_tiny_dagm

from dagm_helpers import hooks
from dagm_helpers.errors import ConfigError
from dagm_helpers.training import TrainConfig, choose_fastest, option_label

train_mod = importlib.import_module("dagm_helpers.training")


@pytest.mark.parametrize(
    "times, expected",
    [
        ({"tf": 2.0, "matmul": 1.5}, "matmul"),  # clearly faster: chosen
        ({"tf": 2.0, "matmul": 2.5}, "tf"),  # slower (the Intel case of issue 24): plain stays
        ({"tf": 2.0, "matmul": 1.97}, "tf"),  # 1.5% faster is timing noise: plain stays
        ({"tf": float("nan"), "matmul": 1.0}, "matmul"),  # a failed timing never wins
        ({"tf": float("inf"), "matmul": float("nan")}, "tf"),  # nothing timed: plain
    ],
)
def test_choose_fastest_keeps_plain_tensorflow_unless_clearly_beaten(times, expected):
    assert choose_fastest(times, plain="tf") == expected


def test_labels_spell_options_as_the_command_line_does():
    assert option_label({"conv_gradients": None}) == "conv_gradients=tf"
    assert option_label({"conv_gradients": "matmul"}) == "conv_gradients=matmul"
    assert option_label({}) == "plain"


def test_the_speed_package_offers_gradients_on_a_cpu_only():
    if not hooks.accelerators():
        pytest.skip("no accelerator installed")
    assert hooks.training_options(on_gpu=False) == {"conv_gradients": [None, "matmul"]}
    assert hooks.training_options(on_gpu=True) == {}


@pytest.fixture
def data(tmp_path_factory, monkeypatch):
    # the cpu profile asks for XLA, which this test process (oneDNN off) would honour: compiling
    # every probe with XLA costs minutes and is not what is tested here
    monkeypatch.setattr(train_mod.hooks, "training_jit", lambda requested, on_gpu: False)
    return make_tiny_dagm(tmp_path_factory.mktemp("choice-data"), n_train=12, n_test=4, size=64)


def _cpu_config(data, out, **kw) -> TrainConfig:
    base = dict(
        out=out,
        data=str(data),
        classes=(1,),
        loss="dice",
        profile="cpu",
        image_size=64,
        crop_size=32,
        batch_size=2,
        epochs=1,
        max_minutes=0.1,
        seed=3,
        verbose=0,
        evaluate_test=False,
        model={"filters": 4},
    )
    base.update(kw)
    return TrainConfig(**base)


def test_cpu_profile_times_the_variants_records_and_caches_the_choice(data, tmp_path, monkeypatch):
    if not hooks.accelerators():
        pytest.skip("no accelerator installed: nothing to choose")
    monkeypatch.setenv("DAGM_HOME", str(tmp_path / "home"))
    run = _prepared(_cpu_config(data, tmp_path / "first"))
    first = run.settings()["cpu_choice"]  # what config.json records
    assert first["source"] == "measured" and run.train_options == first["chosen"]
    assert set(first["step_s"]) == {"conv_gradients=tf", "conv_gradients=matmul"}
    assert all(t > 0 for t in first["step_s"].values())
    plain, chosen = first["step_s"]["conv_gradients=tf"], first["step_s"][option_label(first["chosen"])]
    assert first["speedup_vs_plain"] == pytest.approx(plain / chosen, rel=1e-2)
    cache = json.loads((tmp_path / "home" / train_mod.CHOICE_CACHE).read_text())
    assert len(cache) == 1 and next(iter(cache.values()))["chosen"] == first["chosen"]
    # the next run on this machine with the same setting reuses it: only the chosen variant is
    # probed again (to size the schedule)
    monkeypatch.setattr(train_mod.TrainingRun, "_probe_step_s", _no_more_variant_timing(first))
    second = _prepared(_cpu_config(data, tmp_path / "second"))
    assert second.cpu_choice["source"] == "cached" and second.cpu_choice["chosen"] == first["chosen"]
    assert second.train_options == first["chosen"]


def _prepared(config: TrainConfig):
    """A TrainingRun set up (data, choice, schedule) but not trained; its folder is released."""
    run = train_mod.TrainingRun(config)
    train_mod.unlock_run_dir(run.out)
    return run


def _no_more_variant_timing(first: dict):
    """A probe that only the schedule's own sizing (the chosen variant) may call."""
    original = train_mod.TrainingRun._probe_step_s

    def probe(self, options):
        assert options == first["chosen"], "a cached choice must not be timed again"
        return original(self, options)

    return probe


def test_an_explicit_choice_is_kept_and_an_unknown_one_refused(data, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGM_HOME", str(tmp_path / "home"))
    run = _prepared(_cpu_config(data, tmp_path / "explicit", train_options={"conv_gradients": None}))
    assert run.cpu_choice["source"] == "explicit" and run.train_options.get("conv_gradients") is None
    assert run.settings()["train_config"]["train_options"] == {"conv_gradients": None}
    assert not (tmp_path / "home" / train_mod.CHOICE_CACHE).exists()  # nothing was timed
    with pytest.raises(ConfigError, match="conv_gradients=fourier is not available here"):
        _prepared(_cpu_config(data, tmp_path / "bad", train_options={"conv_gradients": "fourier"}))
