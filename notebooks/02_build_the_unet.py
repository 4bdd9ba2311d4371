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
# # 2. Build the U-Net
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dagm-tutorial/dagm-unet/blob/main/notebooks/02_build_the_unet.ipynb)
#
# *Part 2 of 5: 1 data · **2 the network** · 3 training with BCE · 4 training with Dice ·
# 5 comparison and edges.*
#
# A defect detector could say "defective or not" per image. We ask for more: a **probability per
# pixel** that it belongs to a defect, so we can see where the defect is and how big it is. The
# network for that is a U-Net (Ronneberger et al., 2015), here in the small version of the
# tutorial this series follows: 1.76 million parameters, small enough to train on a laptop.

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
import numpy as np

from dagm_helpers.infer import predict_proba
from dagm_helpers.model import gflops, required_multiple, small_unet
from dagm_helpers.notebook import example_images
from dagm_helpers.viz import show_predictions

# %% [markdown]
# ## The architecture
#
# ```
#  input 512x512x1 ──Rescaling(1/255)
#   │  2x conv3x3  16 ─────────────────────────────────────────── concat ─ 2x conv3x3 16 ─ conv1x1 sigmoid ─ 512x512x1
#   ▼  maxpool 256x256                                              ▲ transpose-conv 8
#      2x conv3x3  32 ───────────────────────────────── concat ─ 2x conv3x3 32
#      ▼  maxpool 128x128                                 ▲ transpose-conv 16
#         2x conv3x3  64 ─────────────────── concat ─ 2x conv3x3 64
#         ▼  maxpool 64x64                      ▲ transpose-conv 32
#            2x conv3x3 128 ──── concat ─ 2x conv3x3 128
#            ▼  maxpool 32x32       ▲ transpose-conv 64
#               2x conv3x3 256 (bottleneck, 32x32)
# ```
#
# * **Encoder** (left, going down): at each level two 3x3 convolutions with ReLU find local
#   patterns, then a 2x2 max-pooling halves the resolution. The number of filters doubles at each
#   level (16, 32, 64, 128, 256 in the bottleneck): fewer pixels, more kinds of features, and a
#   wider view of the texture, which is what tells a scratch from the surface's normal grain.
# * **Decoder** (right, going up): a 2x2 transposed convolution with stride 2 doubles the
#   resolution again, then two 3x3 convolutions refine the map.
# * **Skip connections** (the horizontal arrows): the decoder concatenates the encoder's output
#   of the same resolution. The bottleneck knows *what* is there but has lost *where*; the skips
#   bring back the fine detail needed to draw sharp defect edges.
# * **Output**: a 1x1 convolution with a sigmoid gives one probability per pixel.
# * **Scaling inside the model**: the first layer divides grey values by 255, so everything
#   (training, evaluation, prediction) feeds raw pixels. The original tutorial defines such a
#   normalisation but never connects it.
#
# **Why sizes divisible by 16.** Four poolings halve the image four times: 512 → 256 → 128 → 64 →
# 32. On the way up, each upsampled map must have exactly the size of the encoder map it is
# concatenated with, which holds only if every halving was exact, that is if the side is divisible
# by $2^4 = 16$.
#
# **No dense layer, so any size works.** Every layer is a convolution, pooling or concatenation;
# none has a weight per pixel. The same weights therefore apply to a 512x512 image, a 256x256 crop
# (which is how the cpu profile trains quickly) or a 500x500 photo, which the prediction helper
# pads to 512 and crops back.

# %% [markdown]
# ## Build it and count the parameters

# %%
model = small_unet()
model.summary(line_length=110)

# %% [markdown]
# The tutorial's network has exactly **1,755,737** parameters. A 3x3 convolution from $c_{in}$ to
# $c_{out}$ maps has $3 \cdot 3 \cdot c_{in} \cdot c_{out} + c_{out}$ weights, so most of them sit
# in the bottleneck ($3\cdot3\cdot128\cdot256 + 256 = 295{,}168$ and
# $3\cdot3\cdot256\cdot256 + 256 = 590{,}080$).

# %%
# NBVAL_CHECK_OUTPUT
print(f"{model.count_params():,} parameters")

# %%
assert model.count_params() == 1_755_737
assert required_multiple(model) == 16
print(f"one forward pass at 512x512 costs {gflops(model, 512):.1f} GFLOP")

# %% [markdown]
# ## A forward pass at 512x512
#
# The network is untrained: its output is close to 0.5 everywhere, it has no idea yet what a defect
# is. What matters here is the shape: one probability per input pixel.

# %%
images, masks = example_images(nb, split="Test", n=1, defective=True, size=512)
probs = predict_proba(model, images)
assert images.shape == (1, 512, 512) and probs.shape == (1, 512, 512)
assert np.all((probs >= 0) & (probs <= 1))
fig = show_predictions(images, masks, probs, title="Untrained network at 512x512")

# %% [markdown]
# ## A forward pass at an odd size
#
# Called directly, the model refuses a 333x500 image: after four poolings the decoder's maps are
# one pixel off from the encoder's and cannot be concatenated.

# %%
odd = images[0, :333, :500]
try:
    model.predict(odd[None, ..., None], verbose=0)
except Exception as error:  # noqa: BLE001 - showing the failure is the point
    print("direct call fails:", type(error).__name__)

# %% [markdown]
# `predict_proba` pads the image (by reflection) to the next multiple of 16, runs the network and
# crops the result back, so the mask has the input's own size.

# %%
odd_probs = predict_proba(model, odd[None])
assert odd_probs.shape == (1, 333, 500), odd_probs.shape
print("probabilities of shape", odd_probs.shape)

# %% [markdown]
# ## One option the CPU recipe uses: batch normalisation
#
# `small_unet(batch_norm=True)` puts a batch-normalisation layer between every 3x3 convolution
# and its ReLU (and drops the convolution's bias, which the normalisation's shift replaces). The
# network is otherwise the same. The tutorial trains without it, which is fine for 50 epochs on a
# GPU; on two CPU cores, with about 150 training steps to spend, the plain network spends its first
# hundred or more steps predicting "no defect anywhere", while the normalised one starts finding
# defects within a few dozen. The `cpu` profile therefore trains this variant
# ([docs/training_recipe.md](../docs/training_recipe.md) has the measurements).

# %%
bn_model = small_unet(batch_norm=True)
print(
    f"with batch norm: {bn_model.count_params():,} parameters ({bn_model.count_params() - model.count_params():+,})"
)
assert bn_model.count_params() > model.count_params()

# %% [markdown]
# **Next:** [3. Train with binary cross-entropy](03_train_with_bce.ipynb).
