"""Colab's GPU recipe builds on the installed TensorFlow and Keras (tests/test_colab_runtime.py).

Colab runs the ``gpu`` profile: mixed precision (float16 compute, float32 weights and
output), XLA-compiled training steps and batches of ``batch_size`` full images. Nobody here
has a GPU, so these tests run the same settings on the CPU: build the network under the
``mixed_float16`` policy, compile it with XLA, and take real training steps. CI runs them
twice, with the project's TensorFlow and with Colab's own versions
(``tools/colab_check.py``: TensorFlow 2.20, Keras 3.13), so a version change that breaks
the GPU path fails here first.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from dagm_helpers import losses as losses_mod
from dagm_helpers import metrics as metrics_mod
from dagm_helpers.config import resolve_profile
from dagm_helpers.model import small_unet

SIZE = 64  # the network is fully convolutional: a small side exercises the same graph


@pytest.fixture
def gpu_policy():
    profile = resolve_profile("gpu")
    before = keras.config.dtype_policy()
    if profile.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    yield profile
    keras.config.set_dtype_policy(before)


@pytest.mark.parametrize("loss", ["bce", "dice"])
def test_gpu_profile_builds_compiles_with_xla_and_trains(gpu_policy, loss):
    profile = gpu_policy
    assert profile.mixed_precision and profile.xla and profile.crop_size is None
    keras.utils.set_random_seed(0)
    model = small_unet(**profile.model)
    assert model.count_params() == 1_755_737
    assert model.get_layer("enc1_conv1").compute_dtype == "float16"
    assert model.get_layer("enc1_conv1").variable_dtype == "float32"
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=profile.learning_rate),
        loss=losses_mod.get_loss(loss),
        metrics=[metrics_mod.PixelIoU(name="iou"), metrics_mod.PixelDice(name="dice")],
        jit_compile=profile.xla,
    )
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)  # float16 needs loss scaling
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (profile.batch_size, SIZE, SIZE, 1)).astype("float32")
    y = np.zeros((profile.batch_size, SIZE, SIZE, 1), "float32")
    y[:, 20:40, 24:44] = 1.0
    before = [w.copy() for w in model.get_weights()]
    logs = [model.train_on_batch(x, y, return_dict=True) for _ in range(2)]
    assert all(np.isfinite(v) for row in logs for v in row.values()), logs
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    out = model.predict(x[:2], verbose=0)
    assert out.dtype == np.float32 and out.shape == (2, SIZE, SIZE, 1)
    assert np.all((out >= 0) & (out <= 1))
