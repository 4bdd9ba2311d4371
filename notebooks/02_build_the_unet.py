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
# # 2. Build the U-Net
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dagm-tutorial/dagm-unet/blob/main/notebooks/02_build_the_unet.ipynb)
#
# *Part 2 of 6: 1 data · **2 the network** · 3 training with BCE · 4 training with Dice ·
# 5 comparison and edges · 6 your own images.*
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
import keras
from keras import layers

from dagm_helpers.infer import predict_proba
from dagm_helpers.model import gflops, small_unet
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
#
# We now write it with the Keras functional API, one piece at a time.

# %% [markdown]
# ## The building block: two 3x3 convolutions
#
# Every level, down or up, runs the same unit: two 3x3 convolutions with ReLU. `padding="same"`
# keeps the map's size, so only the poolings change it. The weights start from He initialisation,
# which is scaled for ReLU; with Keras' default (Glorot) the network sometimes "died" early in
# training here, every output stuck at 0. Each layer gets a name, so a summary or an error message
# says where it is (`enc2_conv1` is the first convolution of encoder level 2).


# %%
def conv_block(x, filters, name):
    """Two 3x3 'same' convolutions with ReLU."""
    x = layers.Conv2D(
        filters, 3, padding="same", activation="relu", kernel_initializer="he_normal", name=f"{name}_conv1"
    )(x)
    return layers.Conv2D(
        filters, 3, padding="same", activation="relu", kernel_initializer="he_normal", name=f"{name}_conv2"
    )(x)


# %% [markdown]
# ## One level down, one level up
#
# Going **down**, a level convolves, keeps its result for the skip connection, and halves the size
# with a 2x2 max-pooling (the strongest response of each 2x2 square survives). Going **up**, a
# 2x2 transposed convolution with stride 2 doubles the size (each pixel spreads into a learned 2x2
# patch) with half as many maps as the level has, the skip of the same size is concatenated as
# extra channels, and the block convolves the two together.


# %%
def down(x, filters, name):
    """An encoder level: the block, kept for the skip, then 2x2 max-pooling."""
    skip = conv_block(x, filters, name)
    return layers.MaxPooling2D(2, name=f"{name}_pool")(skip), skip


def up(x, skip, filters, name):
    """A decoder level: 2x2 stride-2 transposed convolution, concatenate the skip, the block."""
    x = layers.Conv2DTranspose(filters // 2, 2, strides=2, padding="same", name=f"{name}_up")(x)
    x = layers.Concatenate(name=f"{name}_concat")([x, skip])
    return conv_block(x, filters, name)


# %% [markdown]
# ## The whole network, and its input scaling
#
# Four levels down, the bottleneck, four levels up, and the 1x1 sigmoid convolution, exactly as
# drawn above. Two details deserve a word:
#
# * **The input is scaled inside the model.** Images arrive as grey values 0..255; networks train
#   best on inputs of order 1. The original tutorial defines a function that divides by 255 but
#   never calls it, so its model trains on raw values. Here the division is the model's first
#   layer, `Rescaling(1/255)`: it is saved with the model, so training, evaluation, a reloaded
#   `.keras` file and the command line all feed raw pixels and can never disagree about scaling.
#   (A `Rescaling` layer rather than a `Lambda`: a saved `Lambda` holds Python code, which Keras
#   refuses to load in its safe mode.)
# * **The output is computed in float32**, even when the rest runs in float16 on a GPU (mixed
#   precision, the `gpu` profile), so probabilities near 0 and 1 keep their precision.
#
# `Input(shape=(None, None, 1))` leaves height and width open: the same network takes any size.


# %%
def build_unet():
    """The tutorial's U-Net: 16-32-64-128-256 filters, raw 0..255 grey values in, probabilities out."""
    image = keras.Input(shape=(None, None, 1), name="image")
    x = layers.Rescaling(1 / 255, name="rescale")(image)
    x, skip1 = down(x, 16, "enc1")  # 512 -> 256
    x, skip2 = down(x, 32, "enc2")  # 256 -> 128
    x, skip3 = down(x, 64, "enc3")  # 128 -> 64
    x, skip4 = down(x, 128, "enc4")  # 64 -> 32
    x = conv_block(x, 256, "bottleneck")
    x = up(x, skip4, 128, "dec4")  # 32 -> 64
    x = up(x, skip3, 64, "dec3")  # 64 -> 128
    x = up(x, skip2, 32, "dec2")  # 128 -> 256
    x = up(x, skip1, 16, "dec1")  # 256 -> 512
    mask = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)
    return keras.Model(image, mask, name="small_unet")


# %% [markdown]
# **Why sizes divisible by 16.** Four poolings halve the image four times: 512 → 256 → 128 → 64 →
# 32. On the way up, each upsampled map must have exactly the size of the encoder map it is
# concatenated with, which holds only if every halving was exact, that is if the side is divisible
# by $2^4 = 16$.
#
# **No dense layer, so any size works.** Every layer is a convolution, pooling or concatenation;
# none has a weight per pixel. The same weights therefore apply to a 512x512 image, a 160x160 crop
# (which is how the cpu profile trains quickly) or a 500x500 photo, which the prediction helper
# pads to 512 and crops back.

# %% [markdown]
# ## Build it and count the parameters

# %%
model = build_unet()
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
print(f"one forward pass at 512x512 costs {gflops(model, 512):.1f} GFLOP")

# %% [markdown]
# ## A forward pass at 512x512
#
# The network is untrained: its output is close to 0.5 everywhere, it has no idea yet what a defect
# is. What matters here is the shape: one probability per input pixel.

# %%
images, masks = example_images(nb, split="Test", n=1, defective=True, size=512)
probs = model.predict(images[..., None], verbose=0)[..., 0]
print(
    "image",
    images.shape,
    "->",
    "probabilities",
    probs.shape,
    f"between {probs.min():.2f} and {probs.max():.2f}",
)
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
# `predict_proba` from the helper package pads the image (by reflection) to the next multiple of
# 16, runs the network and crops the result back, so the mask has the input's own size. Large
# images are cut into overlapping tiles.

# %%
odd_probs = predict_proba(model, odd[None])
print("probabilities of shape", odd_probs.shape)

# %% [markdown]
# ## The same network from the helper package, and its options
#
# The later notebooks and the command line build the network with `dagm_helpers.model.small_unet`.
# Called without arguments it is *this* network, layer for layer: the same layers with the same
# settings, computing the same outputs from the same weights (the project's tests check it).
# Its options change one thing each: `filters`, `width` and `depth` scale it, `dropout`,
# `upsampling="bilinear"` and `block="dense"` swap a part.
#
# One option matters here: `batch_norm=True` puts a batch-normalisation layer between every 3x3
# convolution and its ReLU (and drops the convolution's bias, which the normalisation's shift
# replaces). The tutorial trains without it, which is fine for 50 epochs on a GPU; on two CPU
# cores, with a few hundred training steps to spend, the plain network spends its first hundred
# or more steps predicting "no defect anywhere", while the normalised one starts finding defects
# within a few dozen. The `cpu` profile therefore trains this variant
# ([docs/training_recipe.md](../docs/training_recipe.md) has the measurements).

# %%
same = small_unet()
bn_model = small_unet(batch_norm=True)
print(f"small_unet(): {same.count_params():,} parameters, the network above")
print(
    f"small_unet(batch_norm=True): {bn_model.count_params():,} ({bn_model.count_params() - same.count_params():+,})"
)
print("one normalised block:", [layer.__class__.__name__ for layer in bn_model.layers[2:5]])

# %% [markdown]
# **Next:** [3. Train with binary cross-entropy](03_train_with_bce.ipynb).
