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
# # 3. Train with binary cross-entropy
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dagm-tutorial/dagm-unet/blob/main/notebooks/03_train_with_bce.ipynb)
#
# *Part 3 of 6: 1 data · 2 the network · **3 training with BCE** · 4 training with Dice ·
# 5 comparison and edges · 6 your own images.*
#
# The obvious loss for a per-pixel yes/no answer is the one every classifier uses: binary
# cross-entropy, averaged over pixels. This notebook trains the U-Net with it and looks at what the
# class imbalance of notebook 1 does to it. Notebook 4 trains the same network, on the same data,
# with the same seed and budget, with the Dice loss instead; notebook 5 compares the two.

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
import math

import keras
from keras import ops

from dagm_helpers.losses import PixelBCE
from dagm_helpers.metrics import PixelDice, PixelIoU
from dagm_helpers.model import small_unet
from dagm_helpers.notebook import example_images, run_config, validation_figure
from dagm_helpers.training import Checkpoints, Progress, TimeBudget, TrainingRun
from dagm_helpers.viz import foreground_share, plot_history

# %% [markdown]
# ## Pixel-wise binary cross-entropy
#
# For an image of $N$ pixels with labels $y_i \in \{0, 1\}$ (1 = defect) and predicted
# probabilities $p_i$, the loss is the mean over pixels of the negative log-likelihood:
#
# $$\mathcal{L}_{\mathrm{BCE}} = -\frac{1}{N}\sum_{i=1}^{N}\Big[\,y_i \log p_i + (1 - y_i)\log(1 - p_i)\Big].$$
#
# In Keras 3 code, with `keras.ops` (which runs on any backend): the probabilities are kept a hair
# away from 0 and 1 so that the logarithms stay finite, and everything is computed in float32,
# also when the network itself runs in float16 on a GPU.


# %%
def bce_loss(y_true, y_pred, eps=1e-7):
    """Binary cross-entropy averaged over every pixel of the batch."""
    y = ops.cast(y_true, "float32")
    p = ops.clip(ops.cast(y_pred, "float32"), eps, 1.0 - eps)
    return ops.mean(-(y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p)))


# %% [markdown]
# The package has the same loss as a Keras `Loss` class, `PixelBCE` (the tests check that the two
# agree). Training uses the class: a model saved with it names its loss, so the checkpoint loads
# back with its optimizer, which is what resuming needs.
#
# Every pixel counts the same. That is BCE's problem here: when only a fraction $\pi$ of the
# pixels are defect pixels, a network that ignores the image and predicts $p_i = \pi$ everywhere
# already reaches the loss
#
# $$H(\pi) = -\pi\log\pi - (1-\pi)\log(1-\pi),$$
#
# which is tiny for small $\pi$. Most of the gradient comes from the background, which the network
# quickly gets right; the few defect pixels pull weakly. On our training images:

# %%
train_images, train_masks = example_images(nb, split="Train", n=None, defective=None)
pi = foreground_share(train_masks)["pixel_share"]
print(f"defect pixels: {100 * pi:.2f}%")
print(
    f"BCE of the constant prediction p = {pi:.4f}: {float(bce_loss(train_masks, ops.full(train_masks.shape, pi))):.4f}"
)
print(f"BCE of predicting 0.5 everywhere (an untrained network): {math.log(2):.4f}")

# %% [markdown]
# A loss of a few hundredths therefore does not mean the network finds defects: watch the
# validation IoU, not the loss. (IoU, the *intersection over union* of the predicted and the true
# defect pixels, is 0 for a network that predicts no defect at all, however low its loss.)

# %% [markdown]
# ## The run: data, schedule and a folder that survives a disconnect
#
# `run_config` holds every setting the series trains with (profile, data, seed 0, the run folder
# `runs/bce`), so notebook 4 differs only in the loss. `TrainingRun` then does the preparation
# that is the same for every training: it splits the training images into training and
# validation images (seeded, so both notebooks hold out the same ones), decodes them once into
# memory, and sets the schedule. The `gpu` profile is the tutorial's recipe (full images, Adam
# 1e-4, batch 10, 50 epochs). The `cpu` profile has to learn in minutes on two cores, and three
# changes, each measured, make that possible:
#
# * **crops**: the network is fully convolutional, so it trains on random 160x160 crops, 20 per
#   batch (a tenth of the work per sample; many small crops taught it more per second than a few
#   256x256 ones), and is still validated and tested on full 512x512 images;
# * **oversampling**: only about one image in seven has a defect, so half of the training crops are
#   drawn from defective images, most of them centred near the defect;
# * **batch normalisation** after every convolution (`small_unet(batch_norm=True)`, notebook 2):
#   the plain network sat at "no defect anywhere" for its first few hundred steps, the normalised
#   one starts finding defects within a few dozen.
#
# If the run folder already holds an unfinished run with these settings (Colab disconnected, the
# kernel restarted), the run continues it instead of starting over.

# %%
run = TrainingRun(run_config(nb, "bce"))
print(
    f"{len(run.train_set)} training and {len(run.val_set)} validation images; "
    f"{run.epochs} epochs of {run.steps_per_epoch} steps with batches of {run.batch_size}"
)

# %% [markdown]
# ## The model, compiled
#
# `compile` ties the network to how it learns:
#
# * **the optimizer**: Adam, at the profile's learning rate; in the `cpu` profile the rate decays
#   along a cosine to 1% of its start over the run (`run.learning_rate` is that schedule);
# * **the loss**: the BCE written above;
# * **the metrics** reported after every batch: pixel IoU and Dice at threshold 0.5, pooled over
#   all pixels of the epoch;
# * **`jit_compile`**: whether XLA compiles the training step (on a GPU it does; on a CPU the
#   profile decides).
#
# The model is built and compiled inside `run.scope()`: the run's precision (bfloat16 on a CPU
# that has bfloat16 instructions, float16 on a GPU; float32 otherwise) and, with several GPUs or
# a TPU, its distribution strategy, which makes every weight on each device.

# %%
with run.scope():
    model = small_unet(**run.profile.model)  # notebook 2's network; batch norm in the cpu profile
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=run.learning_rate),
        loss=PixelBCE(),
        metrics=[PixelIoU(name="iou"), PixelDice(name="dice")],
        jit_compile=run.jit_compile,
    )

# %% [markdown]
# ## `fit`
#
# `run.train_ds` is the `tf.data` pipeline of training batches: random crops (or full images),
# oversampled defects, flips and 90° turns, a function of the seed and the epoch only, so a resumed
# run sees exactly the batches an uninterrupted one would have. Three callbacks from the package
# do the bookkeeping around `fit`:
#
# * `Checkpoints(run)`: after every epoch it scores the full-size validation images, appends a row
#   to `runs/bce/history.csv` and saves `model.keras` (the best epoch so far) and `last.keras`
#   (with the optimizer's state: what a resumed run continues from). It stops on a NaN loss, and
#   "Interrupt kernel" stops after the current batch with the last epoch's files intact;
# * `TimeBudget(run)`: stops at the end of the epoch in which the profile's time budget runs out;
# * `Progress(run)`: one line per epoch in logs, where a progress bar would be noise.
#
# `run.restore(model)` loads the weights and optimizer state of an interrupted run (and otherwise
# saves a first checkpoint, so that even a run killed in its first epoch can resume).

# %%
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
bce = run.finish()  # the best checkpoint, the history of every epoch, and what stopped the run
print(f"best epoch {bce.best_epoch + 1} of {len(bce.history)}; stopped by: {bce.stopped}")

# %% [markdown]
# ## Curves
#
# Training loss (solid) and validation loss (dashed) on the left; validation IoU on the right.

# %%
fig = plot_history({"bce": bce.history}, metrics=("loss", "val_iou"), title="BCE: loss and validation IoU")

# %% [markdown]
# ## Predictions on validation images
#
# Defective validation images the network did not train on: the true ellipse in green, the
# prediction at threshold 0.5 in magenta. A BCE model is often *timid*: its probabilities stay
# below 0.5 on faint defects, so parts of them go missing at the default threshold. Notebook 5
# picks a better threshold on the validation set.

# %%
fig = validation_figure(nb, bce.model, title="BCE model on validation images")

# %% [markdown]
# The test split stays untouched until notebook 5, which evaluates this model next to the Dice
# model's, each at a threshold chosen on the validation images. The same training runs from a
# terminal as `python -m dagm_helpers train --loss bce --out runs/bce`.
#
# **Next:** [4. Train with the Dice loss](04_train_with_dice.ipynb).
