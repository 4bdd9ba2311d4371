"""Test helper: make a random U-Net's output decisive, so comparing probabilities tests something."""

from __future__ import annotations

import numpy as np


def decisive_head(model, x: np.ndarray, spread: float = 6.0) -> None:
    """Rescale the 1x1 ``mask`` layer so its logits on ``x`` have median 0 and std ``spread``.

    A freshly initialised U-Net gives probabilities within ~0.01 of 0.5 everywhere; after this,
    most are far from 0.5, so thresholded masks and reduced-precision runtimes are really tested.
    """
    import keras

    head = model.get_layer("mask")
    kernel, bias = head.get_weights()
    features = keras.Model(model.inputs, head.input)
    logits = np.asarray(features(x)) @ kernel[0, 0] + bias
    scale = spread / float(np.std(logits))
    head.set_weights([kernel * scale, (bias - float(np.median(logits))) * scale])
