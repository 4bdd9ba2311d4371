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
# # 5. Compare BCE and Dice, and inspect the edges
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dagm-tutorial/dagm-unet/blob/main/notebooks/05_compare_and_inspect_edges.ipynb)
#
# *Part 5 of 6: 1 data · 2 the network · 3 training with BCE · 4 training with Dice ·
# **5 comparison and edges** · 6 your own images.*
#
# The tutorial behind this series claims that, compared with pixel-wise BCE, the smoothed Dice loss
# **converges faster**, reaches a **better IoU** and gives **sharper edges**. Notebooks 3 and 4
# trained one model each under identical conditions; here we put them side by side and check each
# claim on data neither model has seen. (One seed per loss is an anecdote, not a measurement:
# `python -m dagm_helpers compare --seeds 3` repeats the experiment over seeds; its results are in
# `docs/`.)

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
from IPython.display import Markdown, display

from dagm_helpers.data.images import read_image
from dagm_helpers.data.layout import scan
from dagm_helpers.infer import evaluate, load_model, predict_proba, save_model
from dagm_helpers.metrics import best_threshold
from dagm_helpers.notebook import ensure_run, example_images
from dagm_helpers.viz import comparison_table, plot_history, prediction_browser, show_predictions, static_grid

# %% [markdown]
# ## The two models
#
# If notebooks 3 and 4 ran before (in the same runs folder, with the same profile and data), their
# runs are reused; otherwise, for instance when you opened this notebook alone in Colab, the
# missing model is trained now with exactly the same settings.

# %%
runs = {loss: ensure_run(nb, loss) for loss in ("bce", "dice")}

# %% [markdown]
# ## Claim 1: Dice converges faster
#
# Validation IoU and validation Dice on the defective images after every epoch, for both losses on
# the same axes. (The training losses themselves are not comparable: BCE and Dice are different
# functions with different scales.)

# %%
fig = plot_history(
    runs, metrics=("val_iou", "val_dice_defective"), title="BCE vs Dice on the validation images"
)

# %% [markdown]
# ## A threshold chosen on validation
#
# Both networks output probabilities; a defect mask needs a threshold. 0.5 is a convention, not a
# law: a BCE model, pulled towards the background by the imbalance, is often better served by a
# lower one. We choose, per model, the threshold that maximises the pooled Dice on the
# **validation** images (never on the test images, which would flatter the result).

# %%
val_images, val_masks = example_images(nb, split="val", n=None, defective=None)
chosen = {
    name: best_threshold(val_masks, predict_proba(run.model, val_images), metric="dice")
    for name, run in runs.items()
}
thresholds = {name: threshold for name, (threshold, _) in chosen.items()}
for name, (threshold, score) in chosen.items():
    print(f"{name:>4}: threshold {threshold:.2f} gives validation Dice {score:.3f}")

# %% [markdown]
# ## Claim 2: Dice reaches a better IoU, on the test split
#
# Each model at its own validation threshold, on every test image of the profile's classes:
#
# * `pixel_iou`: intersection over union of all defect pixels pooled over the test set;
# * `dice_defective_mean`: the Dice of each defective image, averaged (how well each defect is
#   outlined);
# * `boundary_f1`: how well the predicted *edges* match the label's, within 2 pixels (claim 3);
# * `image_ap`: average precision of "is this image defective?", scoring each image by the mean of
#   its 100 most confident pixels (so a few stray pixels do not condemn a clean image): what a
#   production line would act on.

# %%
test = scan(nb.data_root).filter(classes=nb.profile.classes, split="Test")
table_keys = ("pixel_iou", "dice_defective_mean", "boundary_f1", "image_ap", "threshold")
results = {
    name: evaluate(run.model, test, threshold=thresholds[name], image_size=nb.profile.image_size)
    for name, run in runs.items()
}
display(Markdown(comparison_table(results, keys=table_keys)))

# %% [markdown]
# ## Claim 3: Dice gives sharper edges
#
# Numbers hide *how* a model fails. Below, test images with the true label outlined in green and each
# model's predicted defect edges in magenta. Remember that the green ellipse is a coarse label: a
# prediction that hugs the actual scratch inside it is better than the boundary F1 says.
#
# Move the sliders to browse the test images, change the threshold, and switch between the models.
# (The browser needs a running kernel; a static grid of the same images follows for readers of the
# HTML version.)

# %%
test_images, test_masks = example_images(nb, split="Test", n=8, defective=True)
test_probs = {name: predict_proba(run.model, test_images) for name, run in runs.items()}
browser = prediction_browser(test_images, test_masks, test_probs, threshold=thresholds["dice"])
display(browser)

# %%
fig = static_grid(test_images, test_masks, test_probs, threshold=thresholds, n=4)

# %% [markdown]
# ## Predicting a new image of another size
#
# The tutorial's own images were 500x500. The network is fully convolutional, so it takes any size:
# here a 500x500 crop of a test image at full resolution, predicted by the model that did better on
# the validation images. `predict_proba` pads it to 512, runs the network and crops the result back.

# %%
best = max(chosen, key=lambda name: chosen[name][1])
sample = test.filter(defective=True)[0]
new_image = read_image(sample.image_path, policy="none")[6:506, 6:506]
new_prob = predict_proba(runs[best].model, new_image)
fig = show_predictions(
    new_image[None], None, new_prob[None], threshold=thresholds[best], n=1, title=f"{best} model, 500x500"
)

# %% [markdown]
# ## Saving the model
#
# The `.keras` file holds the architecture, the weights and the input scaling; the project's models
# need no custom code to load, and `load_model` opens them in Keras' safe mode, so a file from an
# untrusted source cannot run code. The file is written atomically: an interrupted save never leaves
# a half-written model behind.

# %%
model_path = nb.runs_dir / "dagm_unet.keras"
save_model(runs[best].model, model_path)
reloaded = load_model(model_path)
difference = np.abs(predict_proba(reloaded, new_image) - new_prob).max()
print(f"reloaded: the probabilities differ by at most {difference:.1e}")
print(f"saved {model_path}; predict a folder of images of any size with:")
print(
    f"  python -m dagm_helpers predict --model {model_path} --input IMAGES/ --out predictions/ --threshold {thresholds[best]:.2f}"
)

# %% [markdown]
# ## What we found
#
# Read the table and the curves above for *your* run; the multi-seed comparison in `docs/` is the
# better evidence. Whatever the outcome, three lessons hold: judge a segmentation model by overlap
# (IoU, Dice) and by image-level detection, never by its loss value; choose the threshold on
# validation data; and look at the edges, because the DAGM labels are coarse ellipses and the
# numbers measured against them have a ceiling below 1.
#
# **Next:** [6. Your own images](06_your_own_images.ipynb).
