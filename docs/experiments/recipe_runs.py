"""Full 10-minute runs of cpu-recipe variants, scored on a separate development set.

Used to choose the cpu profile's crops, batch and learning rate (docs/training_recipe.md,
"Full-budget runs on a development set"). Each run is a real ``dagm_helpers.train`` call with
the ``cpu`` profile and a 10-minute budget (no Test evaluation), followed by
``dagm_helpers.evaluate`` on the Test split of class 1 generated with seed 7: 300 images
that neither training nor the project's reported Test numbers (seed 0) use, so choosing the
recipe on them does not leak into the Test split. One JSON line per run is printed and
appended to ``--log``.

    python docs/experiments/recipe_runs.py crop256 --crop 256 --batch 8 --lr 1e-3 --steps 25
    python docs/experiments/recipe_runs.py crop160 --crop 160 --batch 20 --lr 1e-3 --steps 25
    python docs/experiments/recipe_runs.py crop128 --crop 128 --batch 32 --lr 1e-3 --steps 25
    python docs/experiments/recipe_runs.py crop160lr2 --crop 160 --batch 20 --lr 2e-3 --steps 25
    python docs/experiments/recipe_runs.py share35 --crop 160 --batch 20 --lr 2e-3 --steps 25 --share 0.35
    python docs/experiments/recipe_runs.py perimage --crop 256 --batch 8 --lr 1e-3 --steps 25 --per-image-dice

Unset options take the ``cpu`` profile's values. ``--hard-pixels F`` adds the mean BCE of
each crop's hardest fraction F of pixels to the loss (online hard-pixel mining; it made the
network predict nothing, see the write-up).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ap = argparse.ArgumentParser()
ap.add_argument("name")
ap.add_argument("--crop", type=int)
ap.add_argument("--batch", type=int)
ap.add_argument("--lr", type=float)
ap.add_argument("--steps", type=int, help="steps per epoch")
ap.add_argument("--share", type=float, help="defective share (oversampling)")
ap.add_argument("--per-image-dice", action="store_true", help="BCE + per-image (not batch-pooled) Dice")
ap.add_argument(
    "--hard-pixels", type=float, help="add the mean BCE of each crop's hardest fraction of pixels"
)
ap.add_argument("--minutes", type=float, default=10.0)
ap.add_argument("--out", default="runs/recipe")
ap.add_argument("--log", default="runs/recipe/results.jsonl")
a = ap.parse_args()

import keras  # noqa: E402
from keras import ops  # noqa: E402

from dagm_helpers import infer, training  # noqa: E402
from dagm_helpers import losses as L  # noqa: E402
from dagm_helpers.data.layout import scan  # noqa: E402
from dagm_helpers.data.synth import ensure_synthetic  # noqa: E402

make_loss = L.get_loss


@keras.saving.register_keras_serializable(package="recipe_runs")
class HardPixelLoss(keras.losses.Loss):
    """BCE + Dice plus the mean BCE of each sample's hardest ``fraction`` of pixels."""

    def __init__(self, fraction=0.02, name="hard_pixel", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.fraction, self.inner = fraction, make_loss("bce_dice")

    def call(self, y_true, y_pred):
        y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        p = ops.clip(y_pred, 1e-7, 1 - 1e-7)
        bce = -(y_true * ops.log(p) + (1 - y_true) * ops.log(1 - p))
        n = int(bce.shape[1] * bce.shape[2])
        top, _ = ops.top_k(ops.reshape(bce, (-1, n)), max(1, int(self.fraction * n)))
        return self.inner.call(y_true, y_pred) + ops.mean(top, axis=1)

    def get_config(self):
        return {**super().get_config(), "fraction": self.fraction}


if a.per_image_dice:
    L.get_loss = lambda name, **kw: make_loss(name, **{"per_image": True, **kw})
if a.hard_pixels:
    L.get_loss = lambda name, **kw: HardPixelLoss(a.hard_pixels)

out = os.path.join(a.out, a.name)
config = training.TrainConfig(
    out=out,
    data="synthetic",
    classes=(1,),
    loss="bce_dice",
    profile="cpu",
    crop_size=a.crop,
    batch_size=a.batch,
    lr=a.lr,
    steps_per_epoch=a.steps,
    defective_share=a.share,
    max_minutes=a.minutes,
    overwrite=True,
    evaluate_test=False,
    verbose=2,
)
start = time.time()
training.train(config)
train_s = time.time() - start
dev = ensure_synthetic((1,), 300, seed=7)
result = infer.evaluate(
    os.path.join(out, "model.keras"), list(scan(dev).filter(classes=[1], split="Test")), progress=False
)
keys = ("dice_defective_mean", "image_ap", "image_auroc", "tpr", "tnr", "pixel_iou", "boundary_f1")
line = json.dumps(
    {"name": a.name, "train_s": round(train_s), **{k: round(result[k], 3) for k in keys}, "args": vars(a)}
)
print(line, flush=True)
os.makedirs(os.path.dirname(a.log) or ".", exist_ok=True)
with open(a.log, "a") as f:
    f.write(line + "\n")
