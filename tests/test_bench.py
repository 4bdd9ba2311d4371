"""``python -m dagm_helpers bench --quick --json``: one JSON object, every key, sane values (not speed)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dagm_helpers.speed import bench

REQUIRED = {
    "baseline_train_img_s",
    "train_img_s",
    "train_speedup",
    "baseline_infer_img_s",
    "infer_img_s",
    "infer_speedup",
    "infer_agreement",
    "gflop_per_image",
    "peak_gflop_s",
    "infer_fraction_of_peak",
    "time_to_quality_s",
    "time_to_quality_speedup",
    "time_to_quality_speedup_is_lower_bound",
    "peak_rss_mb",
    "device",
    "versions",
    "cpu",
    "quick",
}


#: the quick bench measures time to quality on a DAGM folder the test writes (bench --data, as on
#: real DAGM), of a class the smoke profile would not choose by itself (--classes)
QUICK_CLASS = 3


@pytest.fixture(scope="module")
def quick_data(tmp_path_factory) -> Path:
    from _train_child import make_tiny_dagm

    return make_tiny_dagm(tmp_path_factory.mktemp("bench-data") / "dagm", size=128, class_id=QUICK_CLASS)


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory, quick_data):
    env = dict(os.environ, DAGM_HOME=str(tmp_path_factory.mktemp("bench-home")), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-m", "dagm_helpers", "bench", "--quick", "--json", "--data", str(quick_data)]
        + ["--classes", str(QUICK_CLASS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must be exactly one JSON line, got: {proc.stdout[:2000]}"
    return json.loads(lines[0])


def test_quick_bench_has_every_key(quick_result):
    missing = REQUIRED - set(quick_result)
    assert not missing, f"missing keys: {sorted(missing)}"
    assert quick_result["quick"] is True


def test_quick_bench_measured_time_to_quality_on_the_given_data(quick_result, quick_data):
    assert quick_result["time_to_quality_data"] == str(quick_data.resolve())
    assert quick_result["time_to_quality_classes"] == [QUICK_CLASS]


def test_bench_data_without_defective_images_is_refused_before_any_work(tmp_path, capsys):
    from _train_child import make_tiny_dagm

    from dagm_helpers.cli import main

    root = make_tiny_dagm(tmp_path / "dagm", n_train=4, n_test=2, class_id=2)
    assert main(["bench", "--data", str(root), "--classes", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "no defective Train images of class(es) 5" in err[-1]
    assert main(["bench", "--data", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_quick_bench_values_in_range(quick_result):
    r = quick_result
    for key in (
        "baseline_train_img_s",
        "train_img_s",
        "baseline_infer_img_s",
        "baseline_infer_call_img_s",
        "infer_img_s",
        "peak_gflop_s",
        "time_to_quality_s",
        "peak_rss_mb",
    ):
        assert isinstance(r[key], (int, float)) and math.isfinite(r[key]) and r[key] > 0, key
    assert 0.0 <= r["infer_agreement"] <= 1.0
    # a whole predict call holds its batches plus overhead, so per batch it is not faster (with slack
    # for the noise between separate calls)
    assert r["baseline_infer_img_s"] >= 0.8 * r["baseline_infer_call_img_s"]
    # peak_gflop_s is an achieved matmul rate, which OpenVINO's convolutions can beat (1.6 was seen
    # on CI's machine); 3 still catches unit and size-scaling slips (factors of 4 and more)
    assert 0.0 < r["infer_fraction_of_peak"] < 3.0
    assert 20.0 < r["gflop_per_image"] < 22.0  # the tutorial network at 512x512 (about 21.2)
    assert isinstance(r["time_to_quality_speedup_is_lower_bound"], bool)
    assert r["peak_rss_mb"] > 100  # TensorFlow alone takes more
    assert r["versions"]["tensorflow"] and r["versions"]["numpy"]
    if Path("/proc/cpuinfo").exists():  # the CPU named, with the features that decide its speed
        assert r["cpu"]["cpu_model"] and {"avx2", "avx512", "vnni", "amx", "avx512_bf16"} <= set(r["cpu"])
        assert all(isinstance(r["cpu"][k], bool) for k in ("avx2", "avx512", "vnni", "amx", "avx512_bf16"))
    assert "core" in r["device"] or "GPU" in r["device"] or "NVIDIA" in r["device"]


def test_quick_bench_fast_path_ran_with_onednn_and_fast_gradients(quick_result):
    r = quick_result
    # the fast path's own process really had oneDNN on and patched the U-Net's 18 3x3 convolutions
    assert r["train_onednn"] is True
    assert r["train_settings"]["onednn"] is True
    assert r["train_conv_gradient_layers"] == 18
    assert r["train_compute_dtype"] == ("float16" if r["train_settings"]["mixed_precision"] else "float32")
    # train_img_s is the gradient variant train's chooser would keep, by the chooser's own rule
    from dagm_helpers.training import choose_fastest

    rates = {"tf": r["train_tf_gradients_img_s"], "matmul": r["train_matmul_gradients_img_s"]}
    chosen = choose_fastest({k: 1.0 / v for k, v in rates.items()}, plain="tf")
    assert r["train_choice"] == {"conv_gradients": chosen}
    assert r["train_img_s"] == pytest.approx(rates[chosen], rel=1e-9)
    # the fast time to quality trained in a process with oneDNN on, as the command line does
    assert r["time_to_quality_onednn"] is True
    # the fast predictor ran there too, "auto" timed the installed runtimes and kept the fastest
    assert r["infer_onednn"] is True
    probe = r["infer_probe_img_s"]
    if probe:  # ncnn or OpenVINO installed
        assert "tf" in probe and r["infer_paths"]["f32"]["backend"] == max(probe, key=probe.get)
    else:
        assert r["infer_paths"]["f32"]["backend"] == "tf"
    assert isinstance(r["baseline_onednn"], bool)
    for key in ("train_onednn_only_img_s", "infer_predict_onednn_img_s", "peak_rss_mb_fast_path_process"):
        assert isinstance(r[key], (int, float)) and math.isfinite(r[key]) and r[key] > 0, key


def test_quick_bench_measured_the_tutorial_way_in_tensorflows_default_setup(quick_result):
    """The command line turns oneDNN on for itself; the tutorial's side still runs without the switch."""
    env = bench._tutorial_env()
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import tensorflow; from dagm_helpers.speed.fast import onednn_enabled; print(onednn_enabled())",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert quick_result["baseline_onednn"] is (probe.stdout.strip().splitlines()[-1] == "True")
    # every measurement ran in a child: the orchestrating process never imported TensorFlow (600+ MB)
    peaks = quick_result["peak_rss_mb_processes"]
    assert set(peaks) == {
        "fast_path_throughput",
        "fast_time_to_quality",
        "fast_inference",
        "tutorial_measurements",
        "orchestrator",
    }
    assert peaks["orchestrator"] < 300 < peaks["tutorial_measurements"]
    assert quick_result["peak_rss_mb"] == max(peaks.values())


def test_tutorial_env_drops_the_onednn_switch_and_the_fast_env_sets_it(monkeypatch):
    from dagm_helpers.speed.fast import ONEDNN_ENV

    monkeypatch.setenv(ONEDNN_ENV, "1")
    monkeypatch.setenv("DAGM_HOME", "/somewhere")
    assert ONEDNN_ENV not in bench._tutorial_env()
    assert bench._tutorial_env()["DAGM_HOME"] == "/somewhere"  # the rest of the environment is kept
    monkeypatch.setenv(ONEDNN_ENV, "0")
    assert bench._fast_path_env()[ONEDNN_ENV] == "1"


def test_child_progress_lines_reach_the_parent_as_they_come(capfd):
    assert bench._in_child("_log", {"msg": "step one"}, dict(os.environ), 120) is None
    assert "[bench] step one" in capfd.readouterr().err


def test_child_failure_is_reported_with_its_error():
    env = dict(os.environ)
    assert bench._in_child(
        "baseline_budget_s", {"fast_ttq_s": 10.0, "elapsed_s": 0.0}, env, 120
    ) == pytest.approx(bench.baseline_budget_s(10.0, 0.0))
    with pytest.raises(RuntimeError, match="baseline_budget_s failed in its own process") as err:
        bench._in_child("baseline_budget_s", {"bogus": 1}, env, 120)
    assert "TypeError" in str(err.value) and "bogus" in str(err.value)


def test_quick_bench_reports_every_inference_path_and_the_chosen_one(quick_result):
    from dagm_helpers.speed import fast

    r = quick_result
    paths = r["infer_paths"]
    int8_expected = fast.openvino_available() and fast.nncf_available()
    assert set(paths) == ({"f32", "int8"} if int8_expected else {"f32"})
    assert paths["f32"]["precision"] == "f32"
    # float32 is the reference's arithmetic: its masks are the reference's
    assert paths["f32"]["agreement"] > 0.999 and paths["f32"]["max_abs_diff"] < 1e-3
    if int8_expected:
        assert (paths["int8"]["backend"], paths["int8"]["precision"]) == ("openvino", "int8")
        assert r["infer_calibration_images"] == 8
        assert 0.0 <= paths["int8"]["agreement"] <= 1.0
    chosen = r["infer_path"]
    assert chosen == bench.choose_infer_path(paths)
    assert r["infer_img_s"] == paths[chosen]["img_s"]
    assert r["infer_agreement"] == paths[chosen]["agreement"]
    assert r["infer_backend"] == paths[chosen]["backend"]
    for name in paths:
        assert r[f"infer_{name}_speedup"] == pytest.approx(paths[name]["img_s"] / r["baseline_infer_img_s"])


def test_choose_infer_path_takes_the_fastest_path_that_agrees():
    f32 = {"img_s": 5.0, "agreement": 1.0}
    assert bench.choose_infer_path({"f32": f32, "int8": {"img_s": 9.0, "agreement": 0.995}}) == "int8"
    # faster but its masks differ too much: not counted
    assert bench.choose_infer_path({"f32": f32, "int8": {"img_s": 9.0, "agreement": 0.985}}) == "f32"
    assert bench.choose_infer_path({"f32": f32, "int8": {"img_s": 4.0, "agreement": 0.999}}) == "f32"
    # nothing agrees (a broken build): the float32 path, whose agreement is then reported as it is
    assert bench.choose_infer_path({"f32": {"img_s": 5.0, "agreement": 0.5}}) == "f32"
    assert bench.INFER_AGREEMENT_MIN == 0.99


def test_samples_for_calibration_are_half_defective_and_for_comparison_defective_first():
    from types import SimpleNamespace

    def samples(flags):
        return [SimpleNamespace(defective=f, i=i) for i, f in enumerate(flags)]

    many = samples([False] * 30 + [True] * 10)
    picked = bench._pick_samples(many, 8, mixed=True)
    assert [s.defective for s in picked] == [True] * 4 + [False] * 4
    assert [s.i for s in picked] == [30, 31, 32, 33, 0, 1, 2, 3]  # in order within each kind
    assert [s.defective for s in bench._pick_samples(many, 8, mixed=False)] == [True] * 8
    # one kind runs short: the other fills up
    few_defective = bench._pick_samples(samples([True] * 2 + [False] * 30), 8, mixed=True)
    assert sum(s.defective for s in few_defective) == 2 and len(few_defective) == 8
    few_clean = bench._pick_samples(samples([True] * 30 + [False]), 8, mixed=True)
    assert sum(not s.defective for s in few_clean) == 1 and len(few_clean) == 8
    assert len(bench._pick_samples(samples([True, False]), 8, mixed=True)) == 2


def test_quick_bench_ratios_are_consistent(quick_result):
    r = quick_result
    assert r["train_speedup"] == pytest.approx(r["train_img_s"] / r["baseline_train_img_s"], rel=1e-6)
    assert r["infer_speedup"] == pytest.approx(r["infer_img_s"] / r["baseline_infer_img_s"], rel=1e-6)
    assert r["time_to_quality_speedup"] == pytest.approx(
        r["baseline_time_to_quality_s"] / r["time_to_quality_s"], rel=1e-6
    )
    gflop = r["gflop_per_image"] * (r["infer_image_size"] / 512) ** 2
    assert r["infer_fraction_of_peak"] == pytest.approx(
        r["infer_img_s"] * gflop / r["peak_gflop_s"], rel=1e-6
    )


def test_time_it_takes_the_median():
    calls = []
    durations = iter([0.0, 0.03, 0.0, 0.01])  # warmup, then three timed calls

    def fn():
        import time

        calls.append(1)
        time.sleep(next(durations))

    seconds = bench.time_it(fn, repeats=3, warmup=1)
    assert len(calls) == 4
    assert 0.009 <= seconds < 0.025  # the median of (0.03, 0.0, 0.01): 0.01 plus overhead


def test_reference_copy_runs_the_trained_network_itself_batch_norm_included():
    """The full bench trains the cpu profile's network (with batch norm): the reference must be that network."""
    import numpy as np

    from dagm_helpers.model import small_unet

    trained = small_unet(batch_norm=True)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    trained(x, training=True)  # move the batch-norm statistics away from their initial values
    ref = bench.reference_copy(trained)
    assert ref is not trained and len(ref.weights) == len(trained.weights) > len(small_unet().weights)
    assert all(np.array_equal(a, b) for a, b in zip(ref.get_weights(), trained.get_weights(), strict=True))
    assert ref.optimizer is not None and ref.loss.name == "dice_loss"
    np.testing.assert_allclose(ref.predict(x, verbose=0), trained.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("minutes", ["0", "-3", "nan"])
def test_bad_baseline_minutes_is_refused_before_any_work(minutes, capsys):
    from dagm_helpers.cli import main

    assert main(["bench", "--baseline-minutes", minutes]) != 0
    err = capsys.readouterr().err
    assert "--baseline-minutes must be a positive number" in err and minutes in err


def test_baseline_budget_fills_what_is_left_of_the_full_run():
    # 8 minutes spent, fast path at 300 s: 30 min - 8 min - margin, below 10.5 x 300 s
    left = bench.FULL_RUN_BUDGET_S - 480.0 - bench.FULL_RUN_MARGIN_S
    assert bench.baseline_budget_s(300.0, 480.0) == pytest.approx(left)
    assert 480.0 + bench.baseline_budget_s(300.0, 480.0) < bench.FULL_RUN_BUDGET_S


def test_baseline_budget_never_exceeds_the_factor_nor_falls_below_the_floor():
    # a fast path at 60 s needs only 630 s of baseline for the bound, even with time left
    assert bench.baseline_budget_s(60.0, 300.0) == pytest.approx(bench.BASELINE_BUDGET_FACTOR * 60.0)
    # the run is already late: the baseline still gets the minimum, not a negative budget
    assert bench.baseline_budget_s(300.0, 1750.0) == bench.BASELINE_BUDGET_MIN_S


def test_baseline_budget_with_a_stated_cap():
    # --baseline-minutes 60: the cap replaces the 30-minute plan, the factor still limits it
    assert bench.baseline_budget_s(300.0, 1000.0, cap_s=3600.0) == pytest.approx(3150.0)
    assert bench.baseline_budget_s(400.0, 1000.0, cap_s=3600.0) == pytest.approx(3600.0)
    # a cap below the minimum is honoured
    assert bench.baseline_budget_s(300.0, 0.0, cap_s=120.0) == pytest.approx(120.0)


def test_tutorial_time_to_quality_validates_on_the_defective_validation_images_only(tmp_path):
    from dagm_helpers.data.layout import scan
    from dagm_helpers.data.synth import synthesize

    root = synthesize(tmp_path / "data", classes=[1], images_per_split=60)
    _, val_set = scan(root).filter(classes=(1,), split="Train").train_val_split(val_fraction=0.2, seed=0)
    n_defective = sum(s.defective for s in val_set)
    assert 0 < n_defective < len(val_set)  # the data must tell "defective only" from "all"

    out = bench._tutorial_time_to_quality(root, (1,), size=64, budget_s=0.5, check_every=1)
    assert out["val_images"] == n_defective
    assert out["steps"] >= 1 and 0.0 <= out["best_val_dice_defective"] <= 1.0
    assert out["seconds"] is None or out["seconds"] <= out["elapsed_s"]


def test_median_step_times_the_steps_not_the_idle_time_after_them(monkeypatch):
    # a fake fit on a fake clock: steps of known length, then a long idle before it returns
    # (what a real fit call sometimes does on CI's machine); the warm-up call is not timed
    now = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: now[0])
    calls = []
    lengths = iter([(9.0, 9.0), (2.0, 4.0), (3.0, 5.0)])  # warm-up, then two timed calls

    def fake_fit(callbacks):
        calls.append(len(callbacks))
        for i, length in enumerate(next(lengths)):
            for cb in callbacks:
                cb.on_train_batch_begin(i)
            now[0] += length
            for cb in callbacks:
                cb.on_train_batch_end(i)
        now[0] += 100.0  # idle after the last step

    assert bench._median_step_s(fake_fit, repeats=2) == pytest.approx(3.5)  # median of 2, 4, 3, 5
    assert calls == [0, 1, 1]  # warm-up without the timer, then one timer per repeat


def test_median_step_times_predict_batches_too(monkeypatch):
    # the inference baseline: predict's batches are timed, not the idle time after the call
    now = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: now[0])

    def fake_predict(callbacks):
        for i, length in enumerate((1.0, 3.0)):
            for cb in callbacks:
                cb.on_train_batch_begin(i)  # the wrong phase's hooks must not be what is timed
                cb.on_predict_batch_begin(i)
            now[0] += length
            for cb in callbacks:
                cb.on_predict_batch_end(i)
            now[0] += 50.0
        now[0] += 100.0

    assert bench._median_step_s(fake_predict, repeats=1, phase="predict") == pytest.approx(2.0)
    with pytest.raises(ValueError, match="phase"):
        bench._median_step_s(fake_predict, repeats=1, phase="evaluate")


def test_peak_rss_of_a_child_is_its_own_not_its_parents():
    """A small child of a big parent reports its own peak (getrusage's ru_maxrss carries the parent's)."""
    import numpy as np

    if not os.path.exists("/proc/self/status"):
        pytest.skip("VmHWM is Linux's")
    ballast = np.ones(400 * 1024 * 1024 // 8)  # 400 MB resident in this process
    assert bench.peak_rss_mb() >= 400
    child = subprocess.run(
        [sys.executable, "-c", "from dagm_helpers.speed import bench; print(bench.peak_rss_mb())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(child.stdout.strip()) < 300  # a Python importing numpy, not this process's 400+ MB
    del ballast


def test_fast_path_throughput_honours_mixed_precision_for_the_fast_model_only(monkeypatch):
    """The gpu settings train in mixed precision; the tutorial's models in the same process stay float32."""
    import keras

    from dagm_helpers.speed import fast

    gpu_like = dict(fast.training_settings("cpu"), onednn=False, mixed_precision=True, conv_gradients=None)
    monkeypatch.setattr(fast, "training_settings", lambda device=None: gpu_like)
    before = keras.mixed_precision.global_policy().name
    out = bench.fast_path_throughput(size=32, batch=2, n=4, repeats=1)
    assert out["train_compute_dtype"] == "float16"
    assert out["train_settings"]["mixed_precision"] is True
    assert keras.mixed_precision.global_policy().name == before == "float32"
    assert out["train_img_s"] > 0 and out["train_onednn_only_img_s"] > 0
