"""Run profiles, chosen in one place, and the project's few global settings.

A *profile* bundles every knob that has to change between a CI smoke test, a
laptop CPU and a GPU (Colab): image and crop size, batch size, learning rate,
epochs, time budget, how much generated data to make. Everything else in the
package and every notebook asks :func:`resolve_profile` instead of deciding for
itself.

Resolution order: an explicit argument, else the ``DAGM_PROFILE`` environment
variable, else ``gpu`` when TensorFlow sees a GPU and ``cpu`` otherwise.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

PROFILE_NAMES: tuple[str, ...] = ("smoke", "cpu", "gpu")
#: the losses a run can train with (dagm_helpers.losses.get_loss builds them)
LOSS_CHOICES: tuple[str, ...] = ("bce", "dice", "bce_dice", "focal_tversky", "tutorial_dice")
PROFILE_ENV = "DAGM_PROFILE"
DATA_ENV = "DAGM_DIR"
HOME_ENV = "DAGM_HOME"

#: The public repository, defined once: Colab badges and install cells use it.
REPO_SLUG = "dagm-tutorial/dagm-unet"
REPO_URL = f"https://github.com/{REPO_SLUG}"
REPO_BRANCH = "main"


@dataclass(frozen=True)
class Profile:
    """Every setting that differs between the smoke, CPU and GPU recipes."""

    name: str
    #: side of the full images the model sees at evaluation (and in training without crops)
    image_size: int
    #: side of the random training crops, or None to train on full images
    crop_size: int | None
    #: share of crops from defective images centred near a defect (only with crop_size)
    defect_crop_fraction: float
    batch_size: int
    learning_rate: float
    #: "constant" or "cosine" (decay to 1% over the run)
    lr_schedule: str
    epochs: int
    #: optimizer steps per epoch, or None: sized to the time budget when ``budget_schedule``,
    #: else one pass over the training images
    steps_per_epoch: int | None
    #: wall-clock budget for one training run (None: no limit)
    max_minutes: float | None
    mixed_precision: bool
    xla: bool
    #: classes trained on by default
    classes: tuple[int, ...]
    #: images per split and class written by the built-in generator
    synth_images_per_split: int
    #: the share of the training images held out for validation
    val_fraction: float = 0.2
    #: at most this many validation images (all defective ones first), or None for all:
    #: validation runs on full images after every epoch, so it costs time on a CPU
    max_val_images: int | None = None
    #: per-training budget when the whole notebook series runs (three trainings must fit it)
    series_max_minutes: float | None = None
    #: brightness/contrast jitter in training augmentation
    intensity_jitter: bool = False
    #: share of training samples drawn from the defective images (oversampling), or None
    defective_share: float | None = None
    #: size the schedule (steps per epoch) to ``max_minutes`` from the step time measured on this
    #: machine before training, so the run uses its budget on a fast CPU and still decays on a slow one
    budget_schedule: bool = False
    #: keyword options of ``small_unet`` for this profile (``TrainConfig.model`` adds to them)
    model: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def replace(self, **changes) -> Profile:
        """Return a copy with some fields changed (unknown names are an error)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown profile setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """A JSON-friendly dict of all settings."""
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        d["model"] = dict(self.model)
        return d


PROFILES: dict[str, Profile] = {
    # Seconds, for CI: proves every path runs, not that the model learns.
    "smoke": Profile(
        name="smoke",
        image_size=64,
        crop_size=None,
        defect_crop_fraction=0.0,
        batch_size=4,
        learning_rate=1e-3,
        lr_schedule="constant",
        epochs=2,
        steps_per_epoch=3,
        max_minutes=2.0,
        mixed_precision=False,
        xla=False,
        classes=(1,),
        synth_images_per_split=24,
    ),
    # Minutes on 2 CPU cores: the tutorial's U-Net with batch norm, random 160x160 crops (20 per
    # batch: many small crops teach more per second than a few large ones) of which half come
    # from (oversampled) defective images and are mostly centred near the defect, Adam 2e-3
    # decaying to 1% over 6 epochs whose length is sized to the 10-minute budget from the step
    # time measured on the machine, evaluation on full images. Measured in docs/training_recipe.md.
    "cpu": Profile(
        name="cpu",
        image_size=512,
        crop_size=160,
        defect_crop_fraction=0.8,
        defective_share=0.5,
        batch_size=20,
        learning_rate=2e-3,
        lr_schedule="cosine",
        epochs=6,
        steps_per_epoch=None,
        budget_schedule=True,
        max_minutes=10.0,
        mixed_precision=False,
        xla=True,
        classes=(1,),
        synth_images_per_split=300,
        max_val_images=24,
        series_max_minutes=4.0,
        model={"batch_norm": True},
    ),
    # The tutorial's recipe: full 512x512 images, Adam 1e-4, batch 10, 50 epochs.
    "gpu": Profile(
        name="gpu",
        image_size=512,
        crop_size=None,
        defect_crop_fraction=0.0,
        batch_size=10,
        learning_rate=1e-4,
        lr_schedule="constant",
        epochs=50,
        steps_per_epoch=None,
        max_minutes=None,
        mixed_precision=True,
        xla=True,
        classes=(1,),
        synth_images_per_split=575,
    ),
}


@dataclass(frozen=True)
class RecipeOption:
    """One setting of the training recipe a user may override: declared once, here.

    ``name`` is the :class:`~dagm_helpers.training.TrainConfig` field and the command-line flag
    (``--max-minutes`` for ``max_minutes``); ``field`` is the :class:`Profile` field it overrides.
    The command line (``train``, ``compare``), ``TrainConfig.resolve_profile`` and ``config.json``
    (the resolved profile) all come from this table.
    """

    name: str
    field: str
    type: type
    help: str


RECIPE_OPTIONS: tuple[RecipeOption, ...] = (
    RecipeOption("epochs", "epochs", int, "epochs"),
    RecipeOption("max_minutes", "max_minutes", float, "time budget of the training, in minutes"),
    RecipeOption("image_size", "image_size", int, "side of the full images (a multiple of 16)"),
    RecipeOption("crop_size", "crop_size", int, "side of the random training crops (0: full images)"),
    RecipeOption("batch_size", "batch_size", int, "batch size (per device)"),
    RecipeOption("lr", "learning_rate", float, "Adam's learning rate"),
    RecipeOption("steps_per_epoch", "steps_per_epoch", int, "optimizer steps per epoch"),
    RecipeOption(
        "defect_crop_fraction",
        "defect_crop_fraction",
        float,
        "share of crops from defective images centred near a defect",
    ),
    RecipeOption(
        "defective_share",
        "defective_share",
        float,
        "share of training samples drawn from defective images (oversampling)",
    ),
    RecipeOption(
        "val_fraction", "val_fraction", float, "share of the training images held out for validation"
    ),
)


def gpu_available() -> bool:
    """True when TensorFlow can see at least one GPU (imports TensorFlow lazily, and quietly)."""
    from .runtime import gpu_names

    return bool(gpu_names())


def profile_name(name: str | None = None) -> str:
    """The profile to use: ``name``, else ``$DAGM_PROFILE``, else auto-detected."""
    source = "argument"
    if not name:
        name, source = os.environ.get(PROFILE_ENV, "").strip(), f"${PROFILE_ENV}"
    if not name or name == "auto":
        return "gpu" if gpu_available() else "cpu"
    name = name.strip().lower()
    if name not in PROFILES:
        raise ConfigError(
            f"unknown profile {name!r} (from {source}); choose one of {', '.join(PROFILE_NAMES)} or 'auto'"
        )
    return name


def resolve_profile(name: str | None = None, **overrides) -> Profile:
    """The :class:`Profile` to use, with optional per-setting overrides.

    >>> resolve_profile("smoke").image_size
    64
    """
    profile = PROFILES[profile_name(name)]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return profile.replace(**overrides) if overrides else profile


def data_source(explicit: str | os.PathLike[str] | None = None) -> str:
    """Where images come from: ``explicit``, else ``$DAGM_DIR``, else ``"synthetic"``."""
    if explicit:
        return str(explicit)
    return os.environ.get(DATA_ENV, "").strip() or "synthetic"


def dagm_home() -> Path:
    """The cache folder for downloads and generated data (``$DAGM_HOME`` or the user cache)."""
    env = os.environ.get(HOME_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("dagm_helpers"))


def in_colab() -> bool:
    """True inside Google Colab."""
    return "COLAB_RELEASE_TAG" in os.environ or "google.colab" in __import__("sys").modules


def colab_url(notebook_path: str) -> str:
    """The 'Open in Colab' link of a notebook at ``notebook_path`` in the repository."""
    return f"https://colab.research.google.com/github/{REPO_SLUG}/blob/{REPO_BRANCH}/{notebook_path}"


__all__ = [
    "DATA_ENV",
    "HOME_ENV",
    "LOSS_CHOICES",
    "PROFILES",
    "PROFILE_ENV",
    "PROFILE_NAMES",
    "RECIPE_OPTIONS",
    "RecipeOption",
    "REPO_URL",
    "Profile",
    "colab_url",
    "dagm_home",
    "data_source",
    "gpu_available",
    "in_colab",
    "profile_name",
    "resolve_profile",
]
