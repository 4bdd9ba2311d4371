"""Segmentation losses: pixel-wise BCE, smoothed Dice, the tutorial's Dice, BCE+Dice, focal Tversky.

Every loss is a ``keras.losses.Loss`` subclass registered under the package
``"dagm"``, so a model compiled with it saves to ``.keras`` and loads back with
``safe_mode=True`` and no ``custom_objects``. Each one casts ``y_true`` and
``y_pred`` to float32 before doing anything, so a ``mixed_float16`` model
(or float16 tensors) cannot overflow the sums or underflow the logarithms.

Batch-pooled losses (the Dice family with ``per_image=False``) compute one value
over the whole batch, as the tutorial did (it flattened the batch). Keras losses
reduce a per-sample vector by its mean, so ``call`` returns that batch value
repeated once per sample: the mean (Keras' default reduction) is exactly the
batch value, and so is its gradient. Sample weights are therefore not meaningful
for batch-pooled losses; use ``per_image=True`` when weighting samples.

With ``A`` the predicted probabilities and ``B`` the 0/1 truth, ``|A ∩ B| = Σ a·b``
and ``|A| = Σ a`` (soft, differentiable counts).
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from .config import LOSS_CHOICES
from .errors import ConfigError

EPSILON = 1e-7

__all__ = [
    "LOSS_CHOICES",
    "BCEDiceLoss",
    "DiceLoss",
    "FocalTverskyLoss",
    "PixelBCE",
    "TutorialDiceLoss",
    "get_loss",
]


def _f32(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    return ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")


def _sums(y_true: Any, y_pred: Any, per_image: bool) -> tuple[Any, Any, Any]:
    """(Σ a·b, Σ a, Σ b) per image (shape (B,)) or over the batch (scalar)."""
    axes = tuple(range(1, len(y_pred.shape))) if per_image else None
    return (
        ops.sum(y_true * y_pred, axis=axes),
        ops.sum(y_pred, axis=axes),
        ops.sum(y_true, axis=axes),
    )


def _per_sample(value: Any, y_pred: Any) -> Any:
    """Repeat a batch scalar once per sample so Keras' mean reduction returns it unchanged."""
    first = ops.reshape(y_pred, (ops.shape(y_pred)[0], -1))[:, 0]
    return ops.ones_like(first) * value


def _check_number(owner: str, name: str, value: Any, minimum: float, *, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        rel = ">" if strict else ">="
        raise ConfigError(f"{owner}: {name} must be a finite number {rel} {minimum}, got {value!r}")
    return float(value)


@keras.saving.register_keras_serializable(package="dagm")
class PixelBCE(keras.losses.Loss):
    """Pixel-wise binary cross-entropy, averaged over pixels (per sample, then over the batch).

    ``-[b log a + (1-b) log(1-a)]`` with ``a`` clipped to ``[1e-7, 1-1e-7]`` in float32.
    """

    def __init__(self, name: str = "bce", reduction: str = "sum_over_batch_size", dtype: Any = None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = _f32(y_true, y_pred)
        p = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
        bce = -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
        return ops.mean(bce, axis=tuple(range(1, len(bce.shape))))


@keras.saving.register_keras_serializable(package="dagm")
class DiceLoss(keras.losses.Loss):
    """Smoothed Dice loss ``1 - (2|A∩B| + s) / (|A| + |B| + s)`` with Laplace smoothing ``s``.

    ``per_image=False`` (default): sums pooled over the whole batch (one value per
    batch, as the tutorial computed it). ``per_image=True``: one Dice per image,
    averaged over the batch. Always in [0, 1]; two empty masks give 0.
    """

    def __init__(
        self,
        smooth: float = 1.0,
        per_image: bool = False,
        name: str = "dice_loss",
        reduction: str = "sum_over_batch_size",
        dtype: Any = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.smooth = _check_number(type(self).__name__, "smooth", smooth, 0.0, strict=True)
        self.per_image = bool(per_image)

    def coefficient(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = _f32(y_true, y_pred)
        inter, pred, true = _sums(y_true, y_pred, self.per_image)
        return (2.0 * inter + self.smooth) / (pred + true + self.smooth)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        loss = 1.0 - self.coefficient(y_true, y_pred)
        return loss if self.per_image else _per_sample(loss, y_pred)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "smooth": self.smooth, "per_image": self.per_image}


@keras.saving.register_keras_serializable(package="dagm")
class TutorialDiceLoss(keras.losses.Loss):
    """The tutorial's Dice: ``-2(|A∩B| + s) / (|A| + |B| + s)``, pooled over the batch.

    Kept only to reproduce the tutorial. Its smoothing term is doubled in the
    numerator, so the "coefficient" is not bounded by 1: two empty masks score
    ``2(0+1)/(0+0+1) = 2`` (loss -2). Prefer ``DiceLoss``.
    """

    def __init__(
        self,
        smooth: float = 1.0,
        name: str = "tutorial_dice_loss",
        reduction: str = "sum_over_batch_size",
        dtype: Any = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.smooth = _check_number(type(self).__name__, "smooth", smooth, 0.0, strict=True)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = _f32(y_true, y_pred)
        inter, pred, true = _sums(y_true, y_pred, per_image=False)
        coef = 2.0 * (inter + self.smooth) / (pred + true + self.smooth)
        return _per_sample(-coef, y_pred)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="dagm")
class BCEDiceLoss(keras.losses.Loss):
    """``bce_weight * PixelBCE + dice_weight * DiceLoss`` (defaults 1 and 1)."""

    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1.0,
        per_image: bool = False,
        name: str = "bce_dice_loss",
        reduction: str = "sum_over_batch_size",
        dtype: Any = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        owner = type(self).__name__
        self.bce_weight = _check_number(owner, "bce_weight", bce_weight, 0.0)
        self.dice_weight = _check_number(owner, "dice_weight", dice_weight, 0.0)
        self.smooth = _check_number(owner, "smooth", smooth, 0.0, strict=True)
        self.per_image = bool(per_image)
        self._bce = PixelBCE()
        self._dice = DiceLoss(smooth=self.smooth, per_image=self.per_image)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = _f32(y_true, y_pred)
        return self.bce_weight * self._bce.call(y_true, y_pred) + self.dice_weight * self._dice.call(
            y_true, y_pred
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "bce_weight": self.bce_weight,
            "dice_weight": self.dice_weight,
            "smooth": self.smooth,
            "per_image": self.per_image,
        }


@keras.saving.register_keras_serializable(package="dagm")
class FocalTverskyLoss(keras.losses.Loss):
    """Focal Tversky loss (Abraham & Khan 2019): ``(1 - TI)^gamma``.

    ``TI = (TP + s) / (TP + alpha·FN + (1-alpha)·FP + s)`` with soft counts
    ``TP = Σ a·b``, ``FN = Σ (1-a)·b``, ``FP = Σ a·(1-b)``. ``alpha`` weighs the
    **false negatives** (missed defect pixels); alpha=0.7 favours recall, alpha=0.5
    gives the Dice loss shape. The exponent is applied as written: ``gamma=0.75``
    is the paper's best setting (it writes ``(1-TI)^(1/γ)`` with γ=4/3). An exponent
    below 1 makes the gradient grow as TI approaches 1, so training keeps pushing on
    small, nearly-right regions instead of flattening out. ``1 - TI`` is clamped at
    1e-7 so the gradient of ``x^0.75`` stays finite when prediction and truth agree.
    Pooled over the batch by default, per image with ``per_image=True``.
    """

    def __init__(
        self,
        alpha: float = 0.7,
        gamma: float = 0.75,
        smooth: float = 1.0,
        per_image: bool = False,
        name: str = "focal_tversky_loss",
        reduction: str = "sum_over_batch_size",
        dtype: Any = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        owner = type(self).__name__
        self.alpha = _check_number(owner, "alpha", alpha, 0.0)
        if self.alpha > 1.0:
            raise ConfigError(f"{owner}: alpha must be in [0, 1] (weight of false negatives), got {alpha!r}")
        self.gamma = _check_number(owner, "gamma", gamma, 0.0, strict=True)
        self.smooth = _check_number(owner, "smooth", smooth, 0.0, strict=True)
        self.per_image = bool(per_image)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = _f32(y_true, y_pred)
        tp, pred, true = _sums(y_true, y_pred, self.per_image)
        fn = true - tp
        fp = pred - tp
        ti = (tp + self.smooth) / (tp + self.alpha * fn + (1.0 - self.alpha) * fp + self.smooth)
        loss = ops.power(ops.maximum(1.0 - ti, EPSILON), self.gamma)
        return loss if self.per_image else _per_sample(loss, y_pred)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "gamma": self.gamma,
            "smooth": self.smooth,
            "per_image": self.per_image,
        }


_FACTORIES = {
    "bce": PixelBCE,
    "dice": DiceLoss,
    "bce_dice": BCEDiceLoss,
    "focal_tversky": FocalTverskyLoss,
    "tutorial_dice": TutorialDiceLoss,
}


def get_loss(name: str, **kwargs: Any) -> keras.losses.Loss:
    """Loss by its command-line name: bce, dice, bce_dice, focal_tversky, tutorial_dice.

    Extra keyword arguments go to the loss class (e.g. ``get_loss("dice", per_image=True)``).
    """
    factory = _FACTORIES.get(name) if isinstance(name, str) else None
    if factory is None:
        raise ConfigError(f"unknown loss {name!r}; choose one of: {', '.join(LOSS_CHOICES)}")
    return factory(**kwargs)
