"""fast_predictor: same probabilities as the model on any image size, on every backend; clean fallback."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from _nets import decisive_head  # noqa: E402

from dagm_helpers.errors import ConfigError  # noqa: E402
from dagm_helpers.metrics import dice  # noqa: E402
from dagm_helpers.model import small_unet  # noqa: E402
from dagm_helpers.speed import fast  # noqa: E402

#: float32 runtimes reorder sums differently from TensorFlow; probabilities agree to this
F32_ATOL = 1e-4


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    m = small_unet(filters=4)
    decisive_head(m, np.random.default_rng(2).integers(0, 256, (2, 48, 80, 1)).astype(np.float32))
    return m


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (5, 45, 70)).astype(np.float32)
    # smooth it a little so the U-Net sees structure, keep odd sizes (45 x 70: not multiples of 16)
    smooth = (base + np.roll(base, 1, 1) + np.roll(base, 1, 2) + np.roll(base, (1, 1), (1, 2))) / 4
    return smooth.astype(np.uint8)


def reference(model, images: np.ndarray) -> np.ndarray:
    """model(x) on reflection-padded images (to 48 x 80), cropped back: what every backend must match."""
    x = np.pad(images.astype(np.float32), ((0, 0), (0, 3), (0, 10)), mode="reflect")[..., None]
    return np.asarray(model(x, training=False))[:, :45, :70, 0]


@pytest.mark.parametrize("backend", ["tf", "xla", "openvino", "ncnn"])
def test_float32_backends_match_the_model_on_odd_sizes(model, images, backend):
    if backend == "openvino" and not fast.openvino_available():
        pytest.skip("openvino not installed")
    if backend == "ncnn" and not fast.ncnn_available():
        pytest.skip("ncnn not installed")
    predictor = fast.fast_predictor(model, backend=backend, batch_size=2)
    out = predictor(images)
    assert predictor.backend == backend
    assert out.shape == (5, 45, 70) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference(model, images), atol=F32_ATOL)
    # batches of 2 for 5 images: one full shape and the remainder, each compiled once
    assert sorted(predictor.compiled_shapes) == [(1, 48, 80), (2, 48, 80)]
    predictor(images)
    assert len(predictor.compiled_shapes) == 2


def test_input_forms_agree(model, images):
    predictor = fast.fast_predictor(model, backend="tf", batch_size=8)
    full = predictor(images)
    # float32 sums are reordered between batch sizes and kernels (AVX2, AVX-512, AMX): allow
    # last-bit differences, far below anything that moves a mask
    tol = {"atol": 1e-5, "rtol": 0}
    np.testing.assert_allclose(predictor(images.astype(np.float32)[..., None]), full, **tol)
    np.testing.assert_allclose(predictor(images[2]), full[2], **tol)  # one 2-D image -> (H, W)
    np.testing.assert_allclose(predictor(list(images[:2])), full[:2], **tol)
    assert predictor(images[:0]).shape == (0, 45, 70)


def test_int8_masks_agree_with_float32(model, images):
    if not (fast.openvino_available() and fast.nncf_available()):
        pytest.skip("openvino and nncf needed for int8")
    predictor = fast.fast_predictor(
        model, backend="openvino", precision="int8", batch_size=8, calibration=images
    )
    out = predictor(images)
    ref = reference(model, images)
    assert predictor.precision == "int8"
    assert 0.05 < float(np.mean(ref >= 0.5)) < 0.95  # the masks are not trivially empty or full
    # a random tiny network is harder on int8 than a trained one: pixels within 0.1 of the
    # threshold may flip; everywhere else the masks must agree at Dice >= 0.99
    sure = np.abs(ref - 0.5) >= 0.1
    assert sure.mean() > 0.5
    assert dice((ref >= 0.5)[sure][None], out[sure][None]) >= 0.99
    assert float(np.mean(np.abs(out - ref))) < 0.02


def _record_auto_probes(monkeypatch) -> list[tuple[int, ...]]:
    """On a CPU with ncnn or OpenVINO (else skip): the shapes "auto" times its runtimes on."""
    if not (fast.ncnn_available() or fast.openvino_available()):
        pytest.skip("neither ncnn nor openvino installed: auto is plain TensorFlow")
    monkeypatch.setattr(fast, "_gpu_present", lambda: False)
    probes, fastest = [], fast._fastest
    monkeypatch.setattr(
        fast, "_fastest", lambda runners, probe: probes.append(probe.shape) or fastest(runners, probe)
    )
    return probes


def test_auto_times_the_runtimes_on_a_bounded_crop_of_a_large_first_batch(model, monkeypatch):
    """All runtimes hold their buffers while being timed: the probe is at most AUTO_PROBE_IMAGES
    crops of AUTO_PROBE_SIDE pixels, and the winner then runs the whole batch."""
    probes = _record_auto_probes(monkeypatch)
    big = np.random.default_rng(3).integers(0, 256, (6, 320, 320), dtype=np.uint8)
    predictor = fast.fast_predictor(model, backend="auto", batch_size=6)
    expected = np.asarray(model(big.astype(np.float32)[..., None], training=False))[..., 0]
    np.testing.assert_allclose(predictor(big), expected, atol=F32_ATOL)
    assert probes == [(fast.AUTO_PROBE_IMAGES, fast.AUTO_PROBE_SIDE, fast.AUTO_PROBE_SIDE, 1)]
    assert predictor.backend in predictor.probe_img_s


def test_auto_times_the_cpu_runtimes_on_the_first_batch_and_keeps_the_fastest(model, images, monkeypatch):
    probes = _record_auto_probes(monkeypatch)
    predictor = fast.fast_predictor(model, backend="auto", batch_size=2)
    assert (predictor.backend, predictor.precision) == ("auto", "f32")  # nothing timed yet
    # 5 images in batches of 2: the runtimes are timed on the first (padded) batch, whose
    # output the winner's later batches join
    np.testing.assert_allclose(predictor(images), reference(model, images), atol=F32_ATOL)
    assert probes == [(2, 48, 80, 1)]
    assert predictor.compiled_shapes == [(2, 48, 80), (1, 48, 80)]
    expected = {"tf"} | {name for name in ("ncnn", "openvino") if getattr(fast, f"{name}_available")()}
    assert set(predictor.probe_img_s) == expected
    assert predictor.backend == max(predictor.probe_img_s, key=predictor.probe_img_s.get)
    assert predictor.info()["probe_img_s"] == predictor.probe_img_s and not predictor.candidates
    # later calls run the chosen runtime without timing again
    chosen = predictor.backend
    np.testing.assert_allclose(predictor(images[:1]), reference(model, images[:1]), atol=F32_ATOL)
    assert predictor.backend == chosen
    # int8 is OpenVINO's (ncnn runs float32 here)
    if fast.openvino_available() and fast.nncf_available():
        int8 = fast.fast_predictor(model, backend="auto", precision="int8", calibration=images)
        assert int8.backend == "openvino"


def test_fastest_picks_the_quickest_runner_and_skips_a_failing_one():
    import time

    calls = {"slow": 0, "quick": 0}

    def runner(name, seconds):
        def run(x):
            calls[name] += 1
            time.sleep(seconds)
            return x[..., 0]

        return run

    def broken(x):
        raise RuntimeError("no kernel for this shape")

    probe = np.zeros((4, 16, 16, 1), np.float32)
    with pytest.warns(RuntimeWarning, match="broken failed on the probe batch.*no kernel"):
        name, rates, out = fast._fastest(
            {"slow": runner("slow", 0.03), "broken": broken, "quick": runner("quick", 0.001)}, probe
        )
    assert name == "quick" and set(rates) == {"slow", "quick"} and rates["quick"] > rates["slow"]
    assert 4 / 0.03 > rates["slow"] > 4 / 0.03 / 3  # images per second of the whole batch
    assert out.shape == (4, 16, 16)  # the winner's output on the probe batch, to be reused
    assert calls == {"slow": 1 + fast.AUTO_PROBE_REPEATS, "quick": 1 + fast.AUTO_PROBE_REPEATS}
    with pytest.raises(RuntimeError, match="no kernel"), pytest.warns(RuntimeWarning):
        fast._fastest({"broken": broken}, probe)


def test_auto_skips_ncnn_for_a_layer_it_cannot_export(images, monkeypatch):
    if not fast.ncnn_available():
        pytest.skip("ncnn not installed")
    monkeypatch.setattr(fast, "_gpu_present", lambda: False)
    monkeypatch.setattr(fast, "openvino_available", lambda: False)
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.LeakyReLU(name="leaky")(x)
    odd = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))
    with pytest.warns(RuntimeWarning, match="ncnn cannot convert this model and openvino is not installed"):
        predictor = fast.fast_predictor(odd, backend="auto")
    assert predictor.backend == "tf"
    with pytest.raises(ConfigError, match="'leaky'.*LeakyReLU"):
        fast.fast_predictor(odd, backend="ncnn")


def test_falls_back_to_tensorflow_without_ncnn(model, images, monkeypatch):
    monkeypatch.setattr(fast, "ncnn_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="ncnn is not installed"):
        predictor = fast.fast_predictor(model, backend="ncnn")
    assert predictor.backend == "tf"
    np.testing.assert_allclose(predictor(images), reference(model, images), atol=F32_ATOL)


def test_falls_back_to_tensorflow_without_openvino(model, images, monkeypatch):
    monkeypatch.setattr(fast, "ncnn_available", lambda: False)
    monkeypatch.setattr(fast, "openvino_available", lambda: False)
    monkeypatch.setattr(fast, "_gpu_present", lambda: False)
    with pytest.warns(RuntimeWarning, match="openvino is not installed"):
        predictor = fast.fast_predictor(model, backend="auto")
    assert predictor.backend == "tf" and predictor.precision == "f32"
    np.testing.assert_allclose(predictor(images), reference(model, images), atol=F32_ATOL)
    with pytest.warns(RuntimeWarning, match="pip install"):
        assert fast.fast_predictor(model, backend="openvino", precision="int8").backend == "tf"


def test_bad_arguments_are_config_errors(model):
    with pytest.raises(ConfigError, match="unknown fast backend"):
        fast.fast_predictor(model, backend="onnx")
    with pytest.raises(ConfigError, match="precision"):
        fast.fast_predictor(model, precision="fp8")
    with pytest.raises(ConfigError, match="int8.*openvino"):
        fast.fast_predictor(model, backend="tf", precision="int8")
    with pytest.raises(ConfigError, match="batch_size"):
        fast.fast_predictor(model, batch_size=0)
    with pytest.raises(ConfigError, match="shape"):
        fast.fast_predictor(model, backend="tf")(np.zeros((2, 16, 16, 3)))


def test_training_settings():
    cpu, gpu = fast.training_settings("cpu"), fast.training_settings("gpu")
    keys = {
        "jit_compile",
        "steps_per_execution",
        "mixed_precision",
        "dataset",
        "prefetch",
        "threads",
        "onednn",
        "conv_gradients",
    }
    assert set(cpu) == keys and set(gpu) == keys
    assert cpu["mixed_precision"] is False and gpu["mixed_precision"] is True
    # on a CPU: oneDNN's kernels, which XLA would bypass, and the matrix-product weight gradients
    assert cpu["jit_compile"] is False and cpu["onednn"] is True and cpu["conv_gradients"] == "matmul"
    assert cpu["dataset"] is True
    assert gpu["jit_compile"] is True and gpu["conv_gradients"] is None  # cuDNN's own gradients
    with pytest.raises(ConfigError):
        fast.training_settings("tpu")


_ONEDNN_PROBE = """
import json, sys
from dagm_helpers.speed import fast
before = fast.onednn_enabled()
asked = fast.enable_onednn()
import tensorflow
print(json.dumps({"before": before, "asked": asked, "on": fast.onednn_enabled(), "after_import": fast.enable_onednn()}))
"""


def _onednn_probe(value, code=_ONEDNN_PROBE):
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != fast.ONEDNN_ENV}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if value is not None:
        env[fast.ONEDNN_ENV] = value
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_enable_onednn_before_tensorflow_turns_it_on():
    r = _onednn_probe(None)
    assert r == {"before": None, "asked": True, "on": True, "after_import": True}


def test_enable_onednn_keeps_the_users_choice():
    r = _onednn_probe("0")
    assert r["asked"] is False and r["on"] is False and r["after_import"] is False


@pytest.mark.parametrize(
    "requested, on_gpu, onednn, expected",
    [
        (True, False, True, False),  # CPU with oneDNN: XLA would replace oneDNN's faster kernels
        (True, False, False, True),
        (True, True, True, True),  # GPU: as the profile says
        (False, False, False, False),
        (False, True, False, False),
    ],
)
def test_xla_for_training_gives_way_to_onednn_on_cpu(monkeypatch, requested, on_gpu, onednn, expected):
    monkeypatch.setattr(fast, "onednn_enabled", lambda: onednn)
    assert fast.xla_for_training(requested, on_gpu) is expected


_RUNTIME_PROBE = """
import json
from dagm_helpers.notebook import report_runtime
info = report_runtime()
print(json.dumps({"onednn": info["onednn"]}))
"""

_CLI_PROBE = """
import json, os, sys, tempfile
from dagm_helpers import cli
from dagm_helpers.speed import fast
seen = {}
for argv in (["bench", "--quick", "--baseline-minutes", "-1"], ["info", tempfile.mkdtemp()]):
    cli.main(argv)  # both refuse their input (exit 2) before any real work
    seen[argv[0]] = os.environ.get(fast.ONEDNN_ENV)
print(json.dumps(seen))
"""


def test_notebooks_first_cell_turns_onednn_on_and_says_so():
    assert _onednn_probe(None, _RUNTIME_PROBE) == {"onednn": True}
    assert _onednn_probe("0", _RUNTIME_PROBE) == {"onednn": False}


def test_command_line_turns_onednn_on_for_every_command():
    # bench too: it measures in processes of its own, the tutorial's way without the switch
    # (tests/test_bench.py checks that side)
    assert _onednn_probe(None, _CLI_PROBE) == {"bench": "1", "info": "1"}
    assert _onednn_probe("0", _CLI_PROBE) == {"bench": "0", "info": "0"}  # the user's choice is kept


def test_openvino_runners_share_one_core(model, images, monkeypatch):
    """Every OpenVINO runner in a process uses one ``Core``: with one Core per runner, a test
    process that had converted many models crashed (segmentation fault) later on."""
    if not fast.openvino_available():
        pytest.skip("openvino not installed")
    import openvino as ov

    made = []
    real_core = ov.Core

    def counting_core(*args, **kwargs):
        made.append(1)
        return real_core(*args, **kwargs)

    fast._openvino_core.cache_clear()
    monkeypatch.setattr(ov, "Core", counting_core)
    try:
        for _ in range(3):
            predictor = fast.fast_predictor(model, backend="openvino", batch_size=2)
            np.testing.assert_allclose(predictor(images), reference(model, images), atol=F32_ATOL)
    finally:
        fast._openvino_core.cache_clear()
    assert len(made) == 1


@pytest.mark.parametrize(
    ("features", "onednn", "expected"),
    [
        ({"amx_bf16": True, "avx512_bf16": True}, True, True),
        ({"amx_bf16": False, "avx512_bf16": True}, True, True),
        ({"amx_bf16": False, "avx512_bf16": False}, True, False),  # no bf16 instructions
        ({}, True, False),  # not Linux, or flags unknown
        ({"amx_bf16": True, "avx512_bf16": True}, False, False),  # oneDNN off: no bf16 kernels
    ],
)
def test_bf16_only_on_cpus_with_bf16_instructions(monkeypatch, features, onednn, expected):
    monkeypatch.setattr(fast, "cpu_features", lambda: features)
    monkeypatch.setattr(fast, "onednn_enabled", lambda: onednn)
    assert fast.bf16_capable() is expected
    assert fast.cpu_training_precision(on_gpu=False) == "float32"  # the default until measured


def test_cpu_features_names_the_cpu_and_its_flags():
    features = fast.cpu_features()
    if not features:
        pytest.skip("no /proc/cpuinfo here")
    assert features["cpu_model"] and set(fast.CPU_FLAGS) <= set(features)
    assert all(isinstance(features[name], bool) for name in fast.CPU_FLAGS)
