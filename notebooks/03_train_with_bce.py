# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
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
# *Part 3 of 5: 1 data · 2 the network · **3 training with BCE** · 4 training with Dice ·
# 5 comparison and edges.*
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

from dagm_helpers.notebook import check_run, example_images, run_config, validation_figure
from dagm_helpers.training import train
from dagm_helpers.viz import foreground_share, plot_history

# %% [markdown]
# ## Pixel-wise binary cross-entropy
#
# For an image of $N$ pixels with labels $y_i \in \{0, 1\}$ (1 = defect) and predicted
# probabilities $p_i$, the loss is the mean over pixels of the negative log-likelihood:
#
# $$\mathcal{L}_{\mathrm{BCE}} = -\frac{1}{N}\sum_{i=1}^{N}\Big[\,y_i \log p_i + (1 - y_i)\log(1 - p_i)\Big].$$
#
# Every pixel counts the same. That is its problem here: when only a fraction $\pi$ of the pixels
# are defect pixels, a network that ignores the image and predicts $p_i = \pi$ everywhere already
# reaches the loss
#
# $$H(\pi) = -\pi\log\pi - (1-\pi)\log(1-\pi),$$
#
# which is tiny for small $\pi$. Most of the gradient comes from the background, which the network
# quickly gets right; the few defect pixels pull weakly. On our training images:

# %%
train_images, train_masks = example_images(nb, split="Train", n=None, defective=None)
pi = foreground_share(train_masks)["pixel_share"]
trivial_loss = -pi * math.log(pi) - (1 - pi) * math.log(1 - pi)
print(f"defect pixels: {100 * pi:.2f}%  ->  BCE of the constant prediction p = {pi:.4f}: {trivial_loss:.4f}")
print(f"(for comparison, an untrained network predicting 0.5 everywhere scores log 2 = {math.log(2):.4f})")

# %% [markdown]
# A loss of a few hundredths therefore does not mean the network finds defects: watch the
# validation IoU, not the loss. (IoU, the *intersection over union* of the predicted and the true
# defect pixels, is 0 for a network that predicts no defect at all, however low its loss.)

# %% [markdown]
# ## Training
#
# `run_config` holds every setting the series trains with (profile, data, seed 0, run folder
# `runs/bce`), so notebook 4 differs only in the loss. The `gpu` profile is the tutorial's recipe
# (full images, Adam 1e-4, batch 10, 50 epochs). The `cpu` profile has to learn in minutes on two
# cores, and three changes, each measured, make that possible:
#
# * **crops**: the network is fully convolutional, so it trains on random 160x160 crops, 20 per
#   batch (a tenth of the work per sample; many small crops taught it more per second than a few
#   256x256 ones), and is still validated and tested on full 512x512 images;
# * **oversampling**: only about one image in seven has a defect, so half of the training crops are
#   drawn from defective images, most of them centred near the defect;
# * **batch normalisation** after every convolution (`small_unet(batch_norm=True)`): the plain
#   network sat at "no defect anywhere" for its first few hundred steps, the normalised one starts
#   finding defects within a few dozen.
#
# Progress appears below as it trains.

# %%
config = run_config(nb, "bce")
run = train(config)

# %%
print(check_run(run, nb.profile))  # finite losses, falling training loss, metrics within [0, 1]

# %% [markdown]
# ## Curves
#
# Training loss (solid) and validation loss (dashed) on the left; validation IoU on the right.

# %%
fig = plot_history({"bce": run.history}, metrics=("loss", "val_iou"), title="BCE: loss and validation IoU")

# %% [markdown]
# ## Predictions on validation images
#
# Defective validation images the network did not train on: the true ellipse in green, the
# prediction at threshold 0.5 in magenta. A BCE model is often *timid*: its probabilities stay
# below 0.5 on faint defects, so parts of them go missing at the default threshold. Notebook 5
# picks a better threshold on the validation set.

# %%
fig = validation_figure(nb, run.model, title="BCE model on validation images")

# %% [markdown]
# The test split stays untouched until notebook 5, which evaluates this model next to the Dice
# model's, each at a threshold chosen on the validation images.
#
# **Next:** [4. Train with the Dice loss](04_train_with_dice.ipynb).
