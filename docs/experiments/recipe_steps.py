"""Recipe exploration for the cpu profile: train for a fixed number of *steps* and score.

Used to choose the cpu profile's recipe (docs/training_recipe.md). Counting steps instead of
seconds keeps comparisons fair on a machine shared with other jobs. Every 25 steps it prints one
JSON line: training loss, mean Dice over the defective validation images (8 of them), image AP
with the highest pixel probability as the score, and the highest pixel probability on a clean
image. (The validation list holds the 8 defective images, 8 clean ones, and the same 8 clean
ones again: a slip, kept so that the documented numbers stay reproducible.) Examples (class 1 of the built-in data, 256x256 crops, batch 8,
BCE + Dice, Adam 1e-3 with cosine decay over --steps):

    python docs/experiments/recipe_steps.py bn      --bn 0.9 --steps 200
    python docs/experiments/recipe_steps.py share   --share 0.5 --frac 0.8 --steps 200
    python docs/experiments/recipe_steps.py bnshare --bn 0.9 --share 0.5 --frac 0.8 --steps 150
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ap = argparse.ArgumentParser()
ap.add_argument("name")
ap.add_argument("--bn", type=float, default=0)  # momentum; 0 = no BN
ap.add_argument("--std", action="store_true")
ap.add_argument("--loss", default="bce_dice")
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--crop", type=int, default=256)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--steps", type=int, default=200)
ap.add_argument("--every", type=int, default=25)
ap.add_argument("--frac", type=float, default=0.6)
ap.add_argument("--bias", type=float, default=None)
ap.add_argument("--cls", type=int, default=1)
ap.add_argument("--warm", type=int, default=0)
ap.add_argument("--share", type=float, default=None)
a = ap.parse_args()
import keras
import tensorflow as tf

from dagm_helpers import metrics
from dagm_helpers.data.layout import scan
from dagm_helpers.data.pipeline import dataset_from_arrays, load_arrays
from dagm_helpers.data.synth import ensure_synthetic
from dagm_helpers.losses import get_loss
from dagm_helpers.model import small_unet

root = ensure_synthetic((a.cls,), 300)
idx = scan(root).filter(classes=[a.cls], split="Train")
tr, va = idx.train_val_split(0.2, seed=0)
x, y = load_arrays(list(tr), size=512)
vs = sorted(list(va), key=lambda s: not s.defective)[:16] + [s for s in va if not s.defective][:8]
vx, vy = load_arrays(vs, size=512)
ds = dataset_from_arrays(
    x,
    y,
    batch_size=a.batch,
    crop_size=a.crop,
    defect_crop_fraction=a.frac,
    defective_share=a.share,
    augment=True,
    shuffle=True,
    repeat=True,
    seed=0,
    steps_per_epoch=a.every,
)


def prep(xb):
    if not a.std:
        return xb
    m = tf.reduce_mean(xb, axis=[1, 2, 3], keepdims=True)
    s = tf.math.reduce_std(xb, axis=[1, 2, 3], keepdims=True)
    return (xb - m) / (s + 1.0) * 255.0


ds = ds.map(lambda xb, yb: (prep(xb), yb))
keras.utils.set_random_seed(0)
m = small_unet(batch_norm=a.bn > 0)
for layer in m.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.momentum = a.bn
if a.bias is not None:
    m.layers[-1].bias.assign([a.bias]) if hasattr(m.layers[-1], "bias") else None
sched = keras.optimizers.schedules.CosineDecay(
    a.lr if not a.warm else 0.0,
    a.steps,
    alpha=0.01,
    warmup_target=a.lr if a.warm else None,
    warmup_steps=a.warm,
)
m.compile(optimizer=keras.optimizers.Adam(sched), loss=get_loss(a.loss), jit_compile=True)
vxp = prep(tf.constant(vx[..., None], tf.float32)).numpy()
dflags = vy.reshape(len(vy), -1).max(1) > 0
t = time.time()
steps = 0
while steps < a.steps:
    h = m.fit(
        ds, epochs=steps // a.every + 1, initial_epoch=steps // a.every, steps_per_epoch=a.every, verbose=0
    )
    steps += a.every
    tt = time.time()
    p = m.predict(vxp, batch_size=8, verbose=0)
    d = metrics.dice_per_image(vy[dflags], p[dflags]).mean()
    sc = metrics.defect_scores(p)
    apv = metrics.average_precision(dflags, sc)
    print(
        json.dumps(
            dict(
                name=a.name,
                steps=steps,
                loss=round(h.history["loss"][-1], 4),
                vdice=round(float(d), 3),
                ap=round(float(apv), 3),
                pmax_clean=round(float(p[~dflags].max()), 3),
                t=round(tt - t),
                evals=round(time.time() - tt, 1),
            )
        ),
        flush=True,
    )
