# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Train with the Dice loss
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dagm-tutorial/dagm-unet/blob/main/notebooks/04_train_with_dice.ipynb)
#
# *Part 4 of 6: 1 data · 2 the network · 3 training with BCE · **4 training with Dice** ·
# 5 comparison and edges · 6 your own images.*
#
# Cross-entropy scores every pixel on its own, so the many easy background pixels dominate it. The
# Dice loss scores the *overlap* between the predicted and the true defect region instead: background
# pixels that are correctly left out do not count at all. The tutorial this series follows claims
# that it converges faster, reaches a better IoU and gives sharper edges than BCE. Here we train
# exactly as in notebook 3, changing only the loss; notebook 5 checks the claim.

# %% [markdown]
# ## Setup
#
# **Running this notebook.** In Colab the next cell installs the helper package `dagm_helpers`,
# at the release these notebooks were tested with; on your own machine, install it once from a
# clone of the repository (`pip install -r requirements-dev.txt -e .`). `setup()` then reports
# the Python, TensorFlow and GPU it runs on and picks a *profile*, how big and how long
# everything is: `gpu` when there is a GPU, `cpu` otherwise (minutes on a laptop). Set the
# environment variable `DAGM_PROFILE=smoke` before starting Jupyter for a run of a few seconds
# that only checks that everything works, and `DAGM_DIR` to a folder of real DAGM images.

# %%
import subprocess
import sys

REPO_URL = "https://github.com/dagm-tutorial/dagm-unet"
RELEASE = "v0.2.0"  # the release of dagm_helpers these notebooks were tested with
if "google.colab" in sys.modules:  # elsewhere the package is installed already
    package = f"dagm-helpers @ git+{REPO_URL}@{RELEASE}"
    command = [sys.executable, "-m", "pip", "install", "-q", package]
    pip = subprocess.run(command, capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(
            f"pip could not install {package}:\n{pip.stderr[-1500:]}\nCheck that the runtime is online "
            f"and run this cell again, or upload a copy of {REPO_URL} and run `!pip install -e <folder>`."
        )

from dagm_helpers.notebook import setup

nb = setup()  # Python, TensorFlow and GPU; the profile and the data

# %%
import keras
import numpy as np
from keras import ops

from dagm_helpers.losses import DiceLoss
from dagm_helpers.metrics import PixelDice, PixelIoU
from dagm_helpers.model import small_unet
from dagm_helpers.notebook import run_config, validation_figure
from dagm_helpers.training import Checkpoints, Progress, TimeBudget, TrainingRun
from dagm_helpers.viz import plot_history

# %% [markdown]
# ## The Dice coefficient and the smoothed Dice loss
#
# For two sets of pixels, the true defect $B$ and the predicted defect $A$, the Dice coefficient
# (Sørensen–Dice) is twice the overlap over the total size:
#
# $$\mathrm{Dice}(A, B) = \frac{2\,|A \cap B|}{|A| + |B|} \in [0, 1].$$
#
# To train with it, the sets become *soft*: with probabilities $p_i$ and labels $y_i \in \{0,1\}$,
# $|A \cap B| = \sum_i p_i y_i$, $|A| = \sum_i p_i$ and $|B| = \sum_i y_i$, which are
# differentiable. The loss is one minus the coefficient, with a smoothing term $s$:
#
# $$\mathcal{L}_{\mathrm{Dice}} = 1 - \frac{2\sum_i p_i y_i + s}{\sum_i p_i + \sum_i y_i + s}, \qquad s = 1.$$
#
# The sums run over all pixels of the whole batch: one value per batch, as in the tutorial. In
# `keras.ops`, computed in float32 whatever precision the network runs in:


# %%
def dice_loss(y_true, y_pred, smooth=1.0):
    """1 - (2 sum(p y) + s) / (sum(p) + sum(y) + s), summed over every pixel of the batch."""
    y = ops.cast(y_true, "float32")
    p = ops.cast(y_pred, "float32")
    return 1.0 - (2.0 * ops.sum(p * y) + smooth) / (ops.sum(p) + ops.sum(y) + smooth)


# %% [markdown]
# **Add-one smoothing.** Most batches contain defect-free images, and a batch can be entirely
# defect-free. Without $s$ such a batch gives $0/0$ when the network (correctly) predicts nothing.
# Adding $s = 1$ to numerator and denominator, as Laplace's add-one rule does for counts, makes it
# $1/1$: a perfect score, loss 0, and finite gradients everywhere. For a real defect of a few
# thousand pixels the extra 1 changes the value by a fraction of a percent. On a clean batch, every
# false-positive "pixel" costs: with $F = \sum_i p_i$ the loss is $1 - 1/(F + 1)$.
#
# **Dice is not IoU.** The IoU (Jaccard index) is $|A \cap B| / |A \cup B|$. The two are linked by
# $\mathrm{Dice} = 2\,\mathrm{IoU} / (1 + \mathrm{IoU})$, so they rank single predictions the same
# way, but Dice is always the larger number (IoU 0.5 is Dice 0.67) and their averages over images
# differ. We train with Dice and report both.
#
# ## What the original tutorial wrote, and what is wrong with it
#
# The tutorial's version, translated from the old Keras backend (`K.sum`, `K.flatten`) to
# `keras.ops`. The tutorial calls it "IOU", although it computes a Dice coefficient:


# %%
def tutorial_dice_coefficient(y_true, y_pred, smooth=1.0):
    """The tutorial's "IOU": 2 (sum(p y) + s) / (sum(p) + sum(y) + s). Its loss is minus this."""
    y = ops.cast(y_true, "float32")
    p = ops.cast(y_pred, "float32")
    return 2.0 * (ops.sum(p * y) + smooth) / (ops.sum(p) + ops.sum(y) + smooth)


# %% [markdown]
# Two things are wrong with it:
#
# * **The smoothing is doubled in the numerator**, $2(|A \cap B| + s)$ instead of
#   $2|A \cap B| + s$, so the "coefficient" is not bounded by 1. Two empty masks score 2: a batch
#   without defects, predicted empty, beats a perfect prediction on a defective batch (score
#   about 1), so the loss rewards clean batches more than finding defects.
# * **The name**: it is a Dice coefficient, not an IoU. The two differ (IoU 0.5 is Dice 0.67), and a
#   table that calls its Dice "IoU" overstates the overlap.
#
# Checking both on a clean batch predicted empty, and on a defect predicted perfectly:

# %%
empty = np.zeros((2, 32, 32, 1), dtype="float32")
defect = empty.copy()
defect[:, 8:24, 8:24] = 1.0
for what, y in (("clean batch, predicted empty", empty), ("defect, predicted perfectly", defect)):
    print(
        f"{what:>30}: smoothed Dice loss {float(dice_loss(y, y)):.4f}, "
        f"tutorial's coefficient {float(tutorial_dice_coefficient(y, y)):.4f}"
    )

# %% [markdown]
# The package holds the standard form as the Keras `Loss` class `DiceLoss` (the tests check that it
# equals `dice_loss` above), and the tutorial's as `loss="tutorial_dice"`, for reproducing it.

# %% [markdown]
# ## Training
#
# Exactly notebook 3's steps: the same `run_config` (same profile, data, seed and time budget) with
# the loss changed, the run in `runs/dice`.

# %%
run = TrainingRun(run_config(nb, "dice"))
with run.scope():
    model = small_unet(**run.profile.model)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=run.learning_rate),
        loss=DiceLoss(),
        metrics=[PixelIoU(name="iou"), PixelDice(name="dice")],
        jit_compile=run.jit_compile,
    )
run.restore(model)
history = model.fit(
    run.train_ds,
    epochs=run.epochs,
    initial_epoch=run.initial_epoch,
    steps_per_epoch=run.steps_per_epoch,
    callbacks=[Checkpoints(run), TimeBudget(run), Progress(run)],
    verbose=run.fit_verbose,
    shuffle=False,  # run.train_ds shuffles itself, by seed and epoch
)
dice = run.finish()
print(f"best epoch {dice.best_epoch + 1} of {len(dice.history)}; stopped by: {dice.stopped}")

# %% [markdown]
# ## Curves
#
# The Dice loss starts near 1 (an untrained network overlaps the defects hardly at all) and falls as
# the overlap grows. Its value is not comparable with BCE's, but the validation IoU is: notebook 5
# draws both models on the same axes.

# %%
fig = plot_history({"dice": dice.history}, metrics=("loss", "val_iou"), title="Dice: loss and validation IoU")

# %% [markdown]
# ## Predictions on validation images
#
# The same validation images as in notebook 3. Dice-trained probabilities tend to be close to 0 or
# 1 (the loss rewards committing to a region), so the threshold matters less than with BCE.

# %%
fig = validation_figure(nb, dice.model, title="Dice model on validation images")

# %% [markdown]
# **Next:** [5. Compare BCE and Dice, and inspect the edges](05_compare_and_inspect_edges.ipynb).
