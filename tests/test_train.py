"""Training engine: run folder, learning, reproducibility, resume, NaN stop, kill + resume, devices, CLI."""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from _train_child import child_config, make_tiny_dagm

import dagm_helpers.losses  # noqa: F401 - registers the custom objects that checkpoints name
import dagm_helpers.metrics  # noqa: F401
from dagm_helpers.errors import ConfigError, TrainingError
from dagm_helpers.training import HISTORY_COLUMNS, TrainConfig, train

# the module itself (the package re-exports a function of the same name)
train_mod = importlib.import_module("dagm_helpers.training")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STEPS = 6  # steps per epoch of child_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dagm(tmp_path_factory.mktemp("tiny-train"), n_train=16, n_test=6, size=64)


@pytest.fixture(scope="module")
def run3(data, tmp_path_factory):
    """An uninterrupted 3-epoch run of the deterministic child configuration."""
    return train(child_config(data, tmp_path_factory.mktemp("runs") / "full3", 3))


def _weights(path):
    import keras

    return keras.saving.load_model(path, compile=False).get_weights()


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


# ----------------------------------------------------------------------------- run folder
def test_run_folder_files_and_columns(run3):
    d = run3.dir
    for name in ("config.json", "history.csv", "model.keras", "last.keras", "state.json", "metrics.json"):
        assert (d / name).is_file(), name
    with open(d / "history.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == HISTORY_COLUMNS
        rows = list(reader)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("loss", "val_loss", "lr", "elapsed_s"))
    assert all(0.0 <= float(r[k]) <= 1.0 for r in rows for k in ("iou", "dice", "val_iou", "val_dice"))
    elapsed = [float(r["elapsed_s"]) for r in rows]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["profile"]["name"] == "smoke" and cfg["profile"]["crop_size"] == 32
    assert cfg["steps_per_epoch"] == STEPS and cfg["replicas"] == 1 and cfg["global_batch_size"] == 2
    assert cfg["train_config"]["seed"] == 7 and "tensorflow" in cfg["versions"]
    # what the run really used: the smoke profile asks for no XLA; oneDNN as this process has it
    from dagm_helpers.speed.fast import onednn_enabled

    assert cfg["xla"] is False and cfg["onednn"] is onednn_enabled()
    from dagm_helpers import hooks

    assert cfg["precision"] == hooks.training_precision(on_gpu=False)  # bf16 where the CPU has it
    assert cfg["accelerators"] == ["dagm_helpers.speed"]
    state = json.loads((d / "state.json").read_text())
    assert state["epochs_done"] == 3 and state["optimizer_iterations"] == 3 * STEPS
    assert run3.history == train_mod.read_history(d / "history.csv")
    assert run3.metrics["epochs_done"] == 3 and run3.metrics["checkpoint"] == "model.keras"
    # the best checkpoint is the epoch with the highest val_dice_defective
    best = max(range(3), key=lambda i: (float(rows[i]["val_dice_defective"]), -i))
    assert run3.metrics["best_epoch"] == best


def test_checkpoints_load_in_safe_mode_with_optimizer_state(run3):
    from dagm_helpers import infer

    model = infer.load_model(run3.dir / "model.keras")
    assert model.output_shape[-1] == 1
    import keras

    last = keras.saving.load_model(run3.dir / "last.keras", compile=True, safe_mode=True)
    assert int(last.optimizer.iterations) == 3 * STEPS


def test_training_loss_falls(data, tmp_path):
    cfg = child_config(data, tmp_path / "learn", 4)
    cfg.lr, cfg.steps_per_epoch, cfg.batch_size = 3e-3, 10, 4
    run = train(cfg)
    losses = [r["loss"] for r in run.history]
    assert losses[-1] < 0.8 * losses[0], losses


def test_profile_model_options_reach_the_model(data, tmp_path, monkeypatch):
    from dagm_helpers import config as config_mod

    smoke = config_mod.PROFILES["smoke"]
    monkeypatch.setitem(config_mod.PROFILES, "smoke", smoke.replace(model={"batch_norm": True}))
    cfg = child_config(data, tmp_path / "bn", 1)
    cfg.profile = "smoke"
    run = train(cfg)
    assert any("_bn" in layer.name for layer in run.model.layers)
    assert run.config["profile"]["model"] == {"batch_norm": True}
    cfg = child_config(data, tmp_path / "plain", 1)
    cfg.profile, cfg.model = "smoke", {"batch_norm": False}  # the config's options win
    assert not any("_bn" in layer.name for layer in train(cfg).model.layers)


def test_no_run_to_resume_and_no_silent_overwrite(data, run3, tmp_path):
    with pytest.raises(TrainingError, match="cannot resume"):
        train(child_config(data, tmp_path / "empty", 2, resume=True))
    with pytest.raises(ConfigError, match="already holds a training run.*--resume"):
        train(child_config(data, run3.dir, 3))


def test_bad_overrides_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="multiple of 16"):
        TrainConfig(out=tmp_path, profile="smoke", crop_size=30).resolve_profile()
    with pytest.raises(ConfigError, match="learning rate"):
        TrainConfig(out=tmp_path, profile="smoke", lr=-1.0).resolve_profile()
    assert TrainConfig(out=tmp_path, profile="cpu", crop_size=0).resolve_profile().crop_size is None


# ----------------------------------------------------------------------------- determinism and resume
def test_same_seed_same_history_and_resume_continues(data, run3, tmp_path):
    """Reproducibility (same seed -> same history) and --resume (epoch count, optimizer state)."""
    two = train(child_config(data, tmp_path / "r", 2))
    for a, b in zip(two.history, run3.history[:2], strict=False):
        for key in ("loss", "iou", "val_loss", "val_dice", "val_dice_defective"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    resumed = train(child_config(data, tmp_path / "r", 3, resume=True))
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2]
    import keras

    last = keras.saving.load_model(tmp_path / "r" / "last.keras", compile=True)
    assert int(last.optimizer.iterations) == 3 * STEPS
    assert resumed.history[2]["elapsed_s"] > resumed.history[1]["elapsed_s"]
    # the resumed run ends where the uninterrupted one did (CPU: bit-identical; tolerance 1e-6)
    assert _max_diff(_weights(tmp_path / "r" / "last.keras"), _weights(run3.dir / "last.keras")) <= 1e-6
    # resuming a finished run trains nothing more and re-evaluates
    again = train(child_config(data, tmp_path / "r", 3, resume=True))
    assert len(again.history) == 3 and again.metrics["epochs_done"] == 3


def test_time_budget_stops_after_the_epoch(data, tmp_path):
    cfg = child_config(data, tmp_path / "budget", 5)
    cfg.max_minutes = 1e-4  # 6 ms: crossed during the first epoch
    run = train(cfg)
    assert run.stopped == "time_budget" and len(run.history) == 1


def test_budget_cuts_an_overlong_epoch_and_discards_it(tmp_path):
    """Past 1.25 x budget + 30 s, an epoch stops after the current batch and is not recorded."""
    import types

    class Model:
        stop_training = False

    prior = [{"epoch": 0, "loss": 1.0, "val_dice_defective": 0.5, "elapsed_s": 100.0}]
    run = types.SimpleNamespace(
        out=tmp_path,
        budget_s=50.0,  # 1.25 * 50 + 30 = 92.5 s < 100 s already spent
        history=list(prior),
        batches=1,
        steps_per_epoch=10,
        epochs=5,
        nan=None,
        budget_stop=None,
        elapsed=lambda: 100.0,
    )
    budget = train_mod.TimeBudget(run)
    budget.set_model(Model())
    budget.on_train_batch_end(0, {"loss": 0.9})
    assert budget.model.stop_training and run.budget_stop == "cut"
    train_mod.TrainingRun.record_epoch(run, 1, {"loss": 0.9})  # the cut epoch: 1 of 10 batches
    assert run.history == prior and not (tmp_path / "history.csv").exists()


# ----------------------------------------------------------------------------- NaN
class PoisonWeights:
    """A callback that sets the output layer's kernel to NaN after ``batch`` of ``epoch``.

    The next loss is then NaN on every CPU. (A huge learning rate is not a reliable way to
    get one: on some CPUs' kernels the weights saturate to large finite values instead; and
    a NaN in an inner layer can vanish in the ReLU that follows it.)
    """

    def __new__(cls, epoch: int, batch: int):
        import keras

        class _Poison(keras.callbacks.Callback):
            current = 0

            def on_epoch_begin(self, e, logs=None):
                self.current = e

            def on_train_batch_end(self, b, logs=None):
                if (self.current, b) == (epoch, batch):
                    kernel = self.model.get_layer("mask").kernel
                    kernel.assign(np.full(kernel.shape, np.nan, dtype=kernel.dtype))

        return _Poison()


def test_nan_loss_stops_with_training_error_and_keeps_checkpoint(data, tmp_path):
    cfg = child_config(data, tmp_path / "nan", 3)
    cfg.callbacks = [PoisonWeights(epoch=1, batch=1)]
    with pytest.raises(TrainingError, match="lower learning rate") as info:
        train(cfg)
    assert "nan" in str(info.value).lower() or "inf" in str(info.value).lower()
    weights = _weights(tmp_path / "nan" / "last.keras")  # loadable, and finite
    assert all(np.isfinite(w).all() for w in weights)
    rows = train_mod.read_history(tmp_path / "nan" / "history.csv")
    assert [r["epoch"] for r in rows] == [0] and all(math.isfinite(r["loss"]) for r in rows)


# ----------------------------------------------------------------------------- signals
def test_sigint_in_process_stops_after_the_batch_and_restores_handlers(data, tmp_path):
    import keras

    class CtrlC(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 1:
                os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    cfg = child_config(data, tmp_path / "ctrl-c", 3)
    cfg.callbacks = [CtrlC()]
    with pytest.raises(
        train_mod.TrainingInterrupted, match="SIGINT after 1 completed epoch.*--resume"
    ) as info:
        train(cfg)
    assert info.value.exit_status == 128 + signal.SIGINT
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert [r["epoch"] for r in train_mod.read_history(tmp_path / "ctrl-c" / "history.csv")] == [0]
    import keras

    assert int(keras.saving.load_model(tmp_path / "ctrl-c" / "last.keras").optimizer.iterations) == STEPS


# ----------------------------------------------------------------------------- kill test
def _child(args, **kw):
    env = dict(os.environ, PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, str(HERE / "_train_child.py"), *map(str, args)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def test_sigterm_mid_epoch_keeps_files_and_resume_matches_uninterrupted_run(data, tmp_path):
    epochs = 4
    out, marker = tmp_path / "killed", tmp_path / "mid-epoch-2"
    proc = _child([data, out, epochs, "--marker", marker])
    deadline = time.monotonic() + 300
    while not marker.exists():  # touched in the middle of the second epoch, after epoch 1 was saved
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "child never reached epoch 2"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "interrupted by SIGTERM" in output
    rows = train_mod.read_history(out / "history.csv")
    assert [r["epoch"] for r in rows] == [0]  # the unfinished epoch 2 is not recorded
    import keras

    last = keras.saving.load_model(out / "last.keras", compile=True)
    assert int(last.optimizer.iterations) == STEPS
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]

    # resume to the end in a fresh process, and compare with a run that never stopped
    proc = _child([data, out, epochs, "--resume"])
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output
    assert [r["epoch"] for r in train_mod.read_history(out / "history.csv")] == [0, 1, 2, 3]
    ref = train(child_config(data, tmp_path / "ref", epochs))
    assert len(ref.history) == epochs
    assert _max_diff(_weights(out / "last.keras"), _weights(tmp_path / "ref" / "last.keras")) <= 1e-6


# ----------------------------------------------------------------------------- helpers and strategy
def test_epoch_line_format():
    row = {
        "epoch": 2,
        "loss": 0.41234,
        "iou": 0.5,
        "dice": 0.625,
        "val_loss": 0.4,
        "val_iou": 0.5,
        "val_dice": 0.6,
        "val_dice_defective": 0.71,
        "lr": 9.1e-4,
        "elapsed_s": 37.0,
    }
    assert train_mod.format_epoch_line(row, 40, 12.34, improved=True) == (
        "epoch 3/40 - 12.3s - loss 0.4123 - iou 0.5000 - dice 0.6250 - val_loss 0.4000 - val_iou 0.5000 "
        "- val_dice 0.6000 - val_dice_defective 0.7100 * - lr 9.10e-04 - elapsed 37.0s"
    )


def test_validation_scores_known_answer():
    class Fake:
        def predict(self, x, batch_size, verbose):
            p = np.zeros(x.shape, np.float32)
            p[0, :2, :2] = 0.9  # image 0: predicts 4 px, truth 2 of them + 2 more -> tp 2 fp 2 fn 2
            return p

    images = np.zeros((2, 4, 4), np.uint8)
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, :2, 0] = 1
    masks[0, 2:, 0] = 1
    scores = train_mod.validation_scores(Fake(), images, masks, lambda y, p: 0.5, batch_size=2)
    assert scores["val_iou"] == pytest.approx(2 / 6)
    assert scores["val_dice"] == pytest.approx(4 / 8)
    assert scores["val_dice_defective"] == pytest.approx(0.5)  # only image 0 has a defect
    assert scores["val_loss"] == pytest.approx(0.5)


def test_default_strategy_on_one_cpu():
    strategy = train_mod.choose_strategy()
    assert strategy.num_replicas_in_sync == 1


MIRRORED = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[3])
    from _train_child import child_config
    from dagm_helpers.training import choose_strategy, train
    devices = ["/cpu:0", "/cpu:1"]
    strategy = choose_strategy(devices)
    assert type(strategy).__name__ == "MirroredStrategy" and strategy.num_replicas_in_sync == 2
    cfg = child_config(sys.argv[1], sys.argv[2], 1)
    cfg.devices = devices
    run = train(cfg)
    print("RESULT", json.dumps({"config": run.config, "history": run.history}))
    """
)


def test_mirrored_strategy_on_two_logical_cpus_scales_batch_and_lr(data, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(data), str(tmp_path / "mirrored"), str(HERE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    cfg = result["config"]
    assert cfg["strategy"] == "MirroredStrategy" and cfg["replicas"] == 2
    assert cfg["global_batch_size"] == 2 * 2  # per-replica batch 2 x 2 replicas
    assert cfg["learning_rate"] == pytest.approx(2 * 1e-3)  # smoke lr scaled linearly
    assert len(result["history"]) == 1 and math.isfinite(result["history"][0]["loss"])


def test_cli_train_end_to_end(tmp_path):
    out = tmp_path / "cli-run"
    proc = subprocess.run(
        [
            sys.executable, "-m", "dagm_helpers", "train", "--data", "synthetic", "--classes", "1",
            "--loss", "dice", "--profile", "smoke", "--out", str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"run saved in {out}" in proc.stdout
    assert "epoch 2/2 - " in proc.stdout  # one line per epoch when not a terminal
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("images", "dice_defective_mean", "pixel_iou", "image_ap", "threshold"):
        assert key in metrics
    assert metrics["images"] > 0
    rows = train_mod.read_history(out / "history.csv")
    assert len(rows) == 2


def test_cli_recipe_options_reach_the_config():
    from dagm_helpers.cli import build_parser

    base = ["train", "--out", "r", "--profile", "cpu"]
    args = build_parser().parse_args(
        [*base, "--no-batch-norm", "--defective-share", "0", "--defect-crop-fraction", "0.6"]
    )
    cfg = TrainConfig.from_cli(args)
    assert cfg.model == {"batch_norm": False}
    profile = cfg.resolve_profile()
    assert profile.defective_share == 0.0 and profile.defect_crop_fraction == 0.6
    cfg = TrainConfig.from_cli(build_parser().parse_args(base))
    assert cfg.model == {} and cfg.resolve_profile().model == {"batch_norm": True}  # the cpu recipe
    with pytest.raises(ConfigError, match="defective share must be between 0 and 1"):
        TrainConfig.from_cli(build_parser().parse_args([*base, "--defective-share", "2"])).resolve_profile()


def test_every_recipe_option_reaches_train_and_compare_alike(monkeypatch):
    """`train` and `compare` share their recipe options; none may be dropped on the way."""
    from dagm_helpers import experiment
    from dagm_helpers.cli import build_parser

    options = [
        "--profile", "cpu", "--epochs", "3", "--max-minutes", "4", "--image-size", "256",
        "--crop-size", "128", "--batch-size", "6", "--lr", "0.002", "--steps-per-epoch", "7",
        "--defect-crop-fraction", "0.5", "--defective-share", "0.4", "--no-batch-norm",
    ]  # fmt: skip
    expected = dict(
        epochs=3, max_minutes=4.0, image_size=256, crop_size=128, batch_size=6, lr=0.002,
        steps_per_epoch=7, defect_crop_fraction=0.5, defective_share=0.4, model={"batch_norm": False},
    )  # fmt: skip
    cfg = TrainConfig.from_cli(build_parser().parse_args(["train", "--out", "r", *options]))
    assert {k: getattr(cfg, k) for k in expected} == expected
    profile = cfg.resolve_profile()
    assert (profile.steps_per_epoch, profile.crop_size, profile.batch_size) == (7, 128, 6)

    seen = {}
    monkeypatch.setattr(experiment, "compare", lambda **kw: seen.update(kw))
    args = build_parser().parse_args(["compare", "--out", "c", "--seeds", "1", *options])
    experiment.compare_cli(args)
    assert {k: seen[k] for k in expected} == expected and seen["seeds"] == 1


# ----------------------------------------------------------------------------- a schedule sized to the budget
def test_budget_schedule_is_sized_from_measured_step_time_and_kept_on_resume(data, tmp_path, monkeypatch):
    """The cpu profile's schedule: steps per epoch from the step and validation times measured on
    this machine, recorded in config.json, and the same when the run resumes."""
    # the cpu profile asks for XLA, which this process (oneDNN off) would honour: compiling every
    # probe and the run with XLA took most of this test's time and is not what it checks
    monkeypatch.setattr(train_mod.hooks, "training_jit", lambda requested, on_gpu: False)
    config = TrainConfig(
        out=tmp_path / "sized",
        data=str(data),
        classes=(1,),
        loss="dice",
        profile="cpu",
        image_size=64,
        crop_size=32,
        batch_size=2,
        epochs=2,
        max_minutes=0.2,
        seed=3,
        verbose=0,
        evaluate_test=False,
        model={"filters": 4},
    )
    run = train(config)
    saved = json.loads((tmp_path / "sized" / "config.json").read_text())
    schedule = saved["schedule"]
    assert schedule["sized_to_budget"] is True and schedule["epochs"] == 2 and schedule["budget_s"] == 12.0
    left = schedule["budget_s"] - schedule["probe_s"] - 2 * schedule["measured_validation_s"]
    expected = max(1, int(left * train_mod.SCHEDULE_FILL / (2 * schedule["measured_step_s"])))
    assert saved["steps_per_epoch"] == schedule["steps_per_epoch"] == expected
    assert saved["train_config"]["steps_per_epoch"] == expected  # what --resume reads back
    assert schedule["planned_training_s"] <= schedule["budget_s"]
    assert len(run.history) >= 1
    resumed = train_mod.TrainingRun(TrainConfig(out=tmp_path / "sized", resume=True, verbose=0))
    assert resumed.steps_per_epoch == expected and resumed.schedule == schedule


def test_profiles_without_a_budget_schedule_keep_their_steps(run3):
    assert run3.config["schedule"] == {"sized_to_budget": False} and run3.config["steps_per_epoch"] == STEPS


# ----------------------------------------------------------------------------- the threshold
def test_the_run_chooses_its_threshold_on_validation_and_commands_use_it(run3, tmp_path):
    from dagm_helpers.infer import model_threshold

    metrics = json.loads((run3.dir / "metrics.json").read_text())
    assert metrics["threshold_source"] == "validation" and 0.0 < metrics["threshold"] < 1.0
    assert 0.0 <= metrics["val_dice_at_threshold"] <= 1.0
    assert model_threshold(run3.dir / "model.keras") == metrics["threshold"]  # evaluate/predict default
    assert model_threshold(run3.dir / "model.keras", 0.3) == 0.3  # an explicit --threshold wins
    assert model_threshold(tmp_path / "no_run_here.keras") == 0.5


def test_no_defective_validation_image_means_threshold_half_with_a_warning(tmp_path):
    import types

    run = types.SimpleNamespace(out=tmp_path, val_y=np.zeros((3, 8, 8), np.uint8))
    with pytest.warns(RuntimeWarning, match="validation images hold no defect.*using 0.5"):
        chosen = train_mod.TrainingRun.choose_threshold(run, model=None)
    assert chosen == {"threshold": 0.5, "threshold_source": "default"}


def test_a_run_never_changes_keras_global_dtype_policy(data, tmp_path):
    """The run's precision (bfloat16 on some CPUs) applies inside run.scope() only."""
    import keras

    before = keras.mixed_precision.global_policy().name
    run = train_mod.TrainingRun(child_config(data, tmp_path / "policy", 1))
    assert keras.mixed_precision.global_policy().name == before
    with run.scope():
        assert keras.mixed_precision.global_policy().name == run.precision
    assert keras.mixed_precision.global_policy().name == before


# ----------------------------------------------------------------------------- one writer, damaged checkpoints
def test_a_second_training_into_the_same_folder_fails_at_once(data, tmp_path):
    """Another process holding the run folder's lock: a clear error, and the first run's files untouched."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from dagm_helpers.training import lock_run_dir
        lock_run_dir({str(tmp_path / "busy")!r})
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match="being written by another training run"):
            train(child_config(data, tmp_path / "busy", 1))
    finally:
        holder.kill()
        holder.wait()
    run = train(child_config(data, tmp_path / "busy", 1))  # the killed holder's lock is gone with it
    assert len(run.history) == 1


def test_leftover_temporary_checkpoints_are_removed_when_a_run_starts(data, tmp_path):
    out = tmp_path / "tmp-left"
    out.mkdir()
    (out / ".tmp-abc123-last.keras").write_bytes(b"x" * 1000)  # what a SIGKILL mid-save leaves
    train(child_config(data, out, 1))
    assert not list(out.glob(".tmp-*"))


@pytest.mark.parametrize("damage", ["truncate", "empty", "foreign"])
def test_resume_from_a_damaged_or_foreign_checkpoint_is_one_clear_error(data, run3, tmp_path, damage):
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(run3.dir, out)
    last = out / "last.keras"
    if damage == "truncate":
        last.write_bytes(last.read_bytes()[:1000])
    elif damage == "empty":
        last.write_bytes(b"")
    else:  # a different network's checkpoint
        from dagm_helpers.model import small_unet

        small_unet(filters=2, depth=2).save(last)
    with pytest.raises(TrainingError, match="cannot resume from .*last.keras.*--overwrite") as info:
        train(child_config(data, out, 4, resume=True))
    assert "Traceback" not in str(info.value)


def test_the_command_line_can_overwrite_a_run(data, run3, tmp_path):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(run3.dir, out)
    args = ["train", "--data", str(data), "--profile", "smoke", "--out", str(out), "--epochs", "1"]
    from dagm_helpers import cli

    assert cli.main(args) == 2  # already holds a run: the hint names the options that exist
    assert cli.main([*args, "--overwrite"]) == 0


def test_a_one_image_training_set_trains_with_a_warning_that_nothing_validates_it(tmp_path):
    """One training image: nothing can be held out, which is said, and the run still completes."""
    import dataclasses

    data = make_tiny_dagm(tmp_path / "one", n_train=1, n_test=2, size=64, odd_defective=True)
    config = dataclasses.replace(child_config(data, tmp_path / "run", 1), steps_per_epoch=2, verbose=0)
    with pytest.warns(
        RuntimeWarning, match=r"only 1 training image\(s\), so none is held out for validation"
    ):
        result = train(config)
    metrics = json.loads((result.dir / "metrics.json").read_text())
    assert metrics["threshold"] == 0.5 and metrics["threshold_source"] == "default"
    assert (result.dir / "model.keras").is_file()
