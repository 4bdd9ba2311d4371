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
# # 6. Your own images
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dagm-tutorial/dagm-unet/blob/main/notebooks/06_your_own_images.ipynb)
#
# *Part 6 of 6: 1 data · 2 the network · 3 training with BCE · 4 training with Dice ·
# 5 comparison and edges · **6 your own images**.*
#
# Notebooks 1 to 5 learned on DAGM. This one does the whole job on a folder of *your* images: it
# shows what was found, trains with the CPU recipe, chooses the threshold on validation images,
# scores images the model never saw, predicts a new image of another size and exports the model.
# Every step is also one command, shown at the end.
#
# ## What to collect
#
# * **Images as the camera gives them**: PNG, JPEG, BMP or TIFF, any size (also not square, up to
#   64 megapixels), 8 or 16 bit, grey or colour (colour becomes grey, said in one warning per folder).
#   If your defects differ from the surface in colour rather than brightness (rust, stains),
#   train a colour model instead: `train --channels 3`, or `model={"input_channels": 3}` in the
#   `run_config(...)` call below.
# * **Defective and clean images.** Segmentation learns from the defective ones: start with a few
#   dozen defective images (more kinds of defect need more) and at least as many clean ones, from
#   the same line and lighting. The clean images teach the model what *not* to flag.
# * **A mask per defective image**, the same size as its image, white (255, or 1) on the defect and
#   black elsewhere; a palette PNG works too (index 0 is background). An image without a mask is
#   clean. If you label with LabelMe, CVAT or Label Studio,
#   `python -m dagm_helpers masks --from labelme|coco SRC --out DIR/masks` draws the masks for you.
#
# The folder:
#
# ```
# DIR/images/part_001.png   DIR/masks/part_001.png   (defective: it has a mask)
# DIR/images/part_002.jpg                            (clean: no mask)
# ```
#
# With only `images/` and `masks/`, a fifth of the defective and a fifth of the clean images
# become the **Test** images, chosen from their file names, so every command and every run sees the
# same ones. To fix the split yourself, use `DIR/train/`, `DIR/val/` and `DIR/test/`, each with
# `images/` and `masks/`.
#
# **How exact must a mask be?** The model learns the edges you draw. DAGM's labels are coarse
# ellipses around each defect, and a model trained on them cannot score a Dice of 1 against them:
# part of every label is background. The same holds for your labels: a loose outline caps the
# numbers you will measure, and sloppy outlines teach sloppy edges. Outline the defect itself, the
# same way on every image.

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
import shutil

import numpy as np
from PIL import Image

from dagm_helpers.data.export import to_plain
from dagm_helpers.data.images import load_sample, read_image
from dagm_helpers.data.layout import format_counts, is_plain, scan
from dagm_helpers.infer import export_model, predict_files, predict_proba
from dagm_helpers.notebook import run_config
from dagm_helpers.training import train
from dagm_helpers.viz import class_grid, show_predictions

# %% [markdown]
# ## Your folder
#
# Point `DAGM_DIR` at your folder before starting Jupyter (or pass `setup(data="...")`), and the
# next cell uses it. Without one, it writes a folder in this layout from the data the series uses
# (the generator, or DAGM if `DAGM_DIR` points there): links to the images and their masks, all
# in one `images/` and one `masks/` folder, so the split is chosen as it would be for you.

# %%
if is_plain(scan(nb.data_root)):
    own_dir = nb.data_root
else:
    own_dir = nb.runs_dir / "own_images"
    if not own_dir.exists():
        to_plain(nb.data_root, classes=nb.profile.classes, out=own_dir, merge=True)
own = nb.with_data(own_dir)
index = scan(own_dir)
print(own_dir)
print(format_counts(index.counts()))

# %% [markdown]
# "share" is the share of defective images, "defect pixels" the share of all pixels that are
# defect: the class imbalance of notebook 3, for your data. A few examples, label outlines in green:

# %%
examples = list(index.filter(defective=True))[:2] + list(index.filter(defective=False))[:2]
fig = class_grid(examples, per_class=4)

# %% [markdown]
# ## Train
#
# `train` runs the steps notebooks 3 and 4 showed one by one (the `TrainingRun`, `compile`, `fit`
# with checkpoints and the time budget) in one call, with the Dice loss and the profile's recipe.
# Images of your own are not resized: each is cut into tiles of the profile's image size at its
# own resolution, and training takes random crops of those, so a small defect on a large image
# keeps its pixels. A fifth of the training images is held out for validation; after training the
# run chooses on them the threshold that maximises Dice, and scores the Test images at it.

# %%
own_run = train(run_config(own, "dice", name="own_dice", evaluate_test=True))
m = own_run.metrics
print(f"threshold {m['threshold']:.2f}, chosen on {m['threshold_source']}")
print(
    f"Test: {m['images']} images ({m['defective_images']} defective); Dice per defective image "
    f"{m['dice_defective_mean']:.3f}; image AP {m['image_ap']}; clean images passed (TNR) {m['tnr']}"
)

# %% [markdown]
# ## How to judge the result
#
# * **Image level first**: does the model flag the right parts? `image_ap` (average precision of the
#   defect score, 1 = every defective image ranked above every clean one) and `tnr` (the share of
#   clean parts passed at the threshold) say what a line operator sees.
# * **Then the masks**: the Dice per defective image says how well the outline matches yours, up to
#   the ceiling your labels set. Look at the pictures, not only the number.
# * **Few Test images, noisy numbers**: with ten defective Test images one miss moves the Dice
#   by 0.1. Judge on as many Test images as you can spare, and never tune on them.
# * In the `smoke` profile (CI) the run is seconds long and the numbers mean nothing.

# %%
test = list(index.filter(split="Test", defective=True))[:3]
pairs = [load_sample(s, policy="none") for s in test]  # (image, mask), each at its own size
images, truth = [image for image, _ in pairs], [mask for _, mask in pairs]
probs = [predict_proba(own_run.model, image) for image in images]
fig = show_predictions(
    images, truth, probs, threshold=m["threshold"], title="Test images the model never saw"
)

# %% [markdown]
# ## A new image of another size
#
# The network is fully convolutional, so it takes any size; sides that are not a multiple of 16 are
# padded and cropped back, large images are predicted in tiles. Here a Test image is mirrored out to
# 600 x 820 pixels and predicted by `predict_files`, what `python -m dagm_helpers predict` runs: a
# mask and an overlay per image and a `predictions.csv` with the defect score and the decision.

# %%
new_dir = nb.runs_dir / "own_new_images"
shutil.rmtree(new_dir, ignore_errors=True)
new_dir.mkdir(parents=True)
image = images[0]
height, width = image.shape
bigger = np.pad(image, ((0, max(0, 600 - height)), (0, max(0, 820 - width))), mode="reflect")[:600, :820]
Image.fromarray(bigger).save(new_dir / "new_part.png")
summary = predict_files(
    own_run.dir / "model.keras", new_dir, new_dir / "predictions", threshold=m["threshold"]
)
print((new_dir / "predictions" / "predictions.csv").read_text())

# %%
overlay = read_image(new_dir / "predictions" / "new_part_overlay.png", policy="none")
print(f"the overlay is {overlay.shape[1]} x {overlay.shape[0]} pixels, like its image")

# %% [markdown]
# ## Export
#
# `export_model` writes a TensorFlow SavedModel that runs without this package (TensorFlow Serving,
# any TensorFlow program), for any image size that is a multiple of 16, and a `dagm_export.json`
# with the run's threshold and how to feed the model.

# %%
export_dir = nb.runs_dir / "own_dice_export"
shutil.rmtree(export_dir, ignore_errors=True)
export_model(own_run.dir / "model.keras", export_dir)
print(sorted(p.name for p in export_dir.iterdir()))

# %% [markdown]
# ## The same from a terminal
#
# ```
# python -m dagm_helpers info DIR
# python -m dagm_helpers train --data DIR --loss dice --out runs/mine
# python -m dagm_helpers evaluate --model runs/mine/model.keras --data DIR
# python -m dagm_helpers predict --model runs/mine/model.keras --input NEW_IMAGES/ --out predictions/
# python -m dagm_helpers export --model runs/mine/model.keras --out exported/
# ```
#
# `train` records in `runs/mine/split.json` which images it trained and validated on, and
# `evaluate` leaves those out, even after you add images to the folder. `predict` and `evaluate`
# use the threshold the run chose unless you pass `--threshold`.
