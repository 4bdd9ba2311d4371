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
# # 1. Get the data: DAGM 2007
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dagm-tutorial/dagm-unet/blob/main/notebooks/01_get_the_data.ipynb)
#
# *Part 1 of 6 of a series that trains a small U-Net to find surface defects:
# **1 data** · 2 the network · 3 training with BCE · 4 training with Dice · 5 comparison and edges ·
# 6 your own images.*
#
# **DAGM 2007** is the data set of the DAGM/GNNS competition *"Weakly Supervised Learning for
# Industrial Optical Inspection"* (HCI Heidelberg). It has ten classes of grey-level textures,
# 512x512 pixels each, that look like machined or woven surfaces; every class has its own kind of
# defect (scratches, spots, stains, distorted texture). Classes 1-6 have 575 training and 575 test
# images, classes 7-10 twice as many; about one image in eight (13%) is defective.
#
# **Why the labels are coarse ellipses.** The competition was about *weak* supervision: instead of
# outlining each defect pixel by pixel, the organisers drew one ellipse around it. Labels like that
# are cheap to make on a production line, but they also cover defect-free pixels around the defect.
# Two consequences run through the whole series:
#
# * a perfect defect detector does not reach IoU 1 against the ellipse: the ellipse is bigger than
#   the defect, so every score we report has a ceiling below 1;
# * the network may learn the defect's true shape while being "wrong" at the ellipse's edge: notebook 5
#   looks at those edges on purpose.
#
# This notebook gets the images (the real data set or a built-in stand-in), counts them, shows
# examples with their label outlines and measures how rare defect pixels are.

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
from dagm_helpers.data.download import download
from dagm_helpers.data.layout import format_counts, scan
from dagm_helpers.data.pipeline import load_arrays
from dagm_helpers.notebook import use_drive_cache
from dagm_helpers.viz import class_grid, foreground_share, plot_foreground_share

# %% [markdown]
# ## Where the images come from
#
# Three ways, in order of preference for a first run:
#
# 1. **The built-in generator** (the default, offline): DAGM-like textures and defects written in
#    exactly the official layout, labelled with coarse ellipses. Nothing to download; good enough
#    to learn the method, not to report results on real DAGM.
# 2. **A local copy of DAGM**: set the environment variable `DAGM_DIR` to the folder holding
#    `Class1/`, `Class2/`, ... (the official layout, a nested mirror or the 2007 `ClassN_def`
#    development set all work) before starting Jupyter.
# 3. **Download in Colab**: set `DOWNLOAD_REAL_DAGM = True` below. The archives come from the
#    data set's Zenodo record, are checked and unpacked once; with `CACHE_ON_DRIVE = True` they are
#    kept on your Google Drive, so a new Colab session does not download them again.

# %% tags=["parameters"]
DOWNLOAD_REAL_DAGM = False  # True: download the real classes of the profile (Colab, or anywhere online)
CACHE_ON_DRIVE = False  # Colab only: keep the download on Google Drive between sessions

# %%
if CACHE_ON_DRIVE:
    use_drive_cache()
if DOWNLOAD_REAL_DAGM:
    nb = nb.with_data(download(classes=nb.profile.classes))
print(nb.describe())

# %% [markdown]
# ## How many images, how many defective
#
# The data set is organised as `ClassN/Train/NNNN.PNG` with the masks in
# `ClassN/Train/Label/NNNN_label.PNG` and an index file `Labels.txt` saying which images are
# defective. `scan` reads that layout and returns a plain index of samples.

# %%
index = scan(nb.data_root)
counts = index.counts()

# %%
# NBVAL_CHECK_OUTPUT
print(format_counts(counts))

# %% [markdown]
# ## Examples per class
#
# Defective images come first in each row; the label ellipse is outlined in green (the colour of
# the *truth* in every figure of the series; predictions will be magenta). Notice how loosely the
# ellipse fits the defect, and how subtle some defects are against their texture.

# %%
fig = class_grid(index.filter(split="Train"), per_class=4)

# %% [markdown]
# ## Defect pixels are rare
#
# The network will classify every pixel as *defect* or *background*. How balanced is that
# problem? We load the training images of the profile's classes at the size the model will see
# and count mask pixels.

# %%
train_samples = index.filter(classes=nb.profile.classes, split="Train")
images, masks = load_arrays(train_samples, size=nb.profile.image_size)
share = foreground_share(masks)
print(
    f"{share['images']} images, {100 * share['defective_images']:.1f}% of them defective; defect pixels: "
    f"{100 * share['pixel_share']:.3f}% of all, {100 * share['share_in_defective']:.2f}% of a defective image"
)

# %%
fig = plot_foreground_share(masks, title="Defect pixels in the training images")

# %% [markdown]
# Well under one pixel in a hundred is a defect pixel, and most images have none at all. A network
# that answers "background" everywhere is right about 99% of the pixels, and that is exactly the trap
# notebook 3 runs into with pixel-wise cross-entropy, and notebook 4 tries to avoid with the Dice loss.
#
# **Next:** [2. Build the U-Net](02_build_the_unet.ipynb).
