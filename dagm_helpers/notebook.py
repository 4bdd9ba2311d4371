"""What the notebooks call: their setup, the runs they share, example images.

Every notebook starts with the same setup cell: (in Colab only) install the package,
then ``nb = setup()``, which imports TensorFlow quietly, says which Python, TensorFlow
and GPU it runs on, and picks the profile and the data. In the test suite
``conftest.py`` exports ``DAGM_EXPECT_PROFILE=smoke``: :func:`setup` then refuses any
other profile, so CI cannot silently train for real (``tests/test_test_mode.py``
asserts that the check is active in the notebooks' kernels).

The tools that keep the committed notebooks clean (stripping outputs, the checked
outputs' references) and the headless series runner are not for the lessons: they
live in :mod:`dagm_helpers.tooling`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import Profile, dagm_home, data_source, gpu_available, in_colab, resolve_profile
from .errors import ConfigError

#: environment variable the test suite sets: the profile every notebook must run in
EXPECT_PROFILE_ENV = "DAGM_EXPECT_PROFILE"
#: environment variable for the folder of training runs (default ``./runs``)
RUNS_ENV = "DAGM_RUNS"
#: environment variable capping each training run's minutes (the series runner sets it)
MINUTES_ENV = "DAGM_MAX_MINUTES"


@dataclass(frozen=True)
class NotebookSetup:
    """What a notebook runs with: profile, data folder, runs folder."""

    profile: Profile
    data_source: str
    data_root: Path
    runs_dir: Path
    gpu: bool
    colab: bool

    def describe(self) -> str:
        """Three short lines for the notebook's output."""
        data = "built-in DAGM-like generator" if self.data_source == "synthetic" else "DAGM images"
        return "\n".join(
            [
                f"profile : {self.profile.name} (image {self.profile.image_size}px, batch {self.profile.batch_size},"
                f" {self.profile.epochs} epochs, classes {list(self.profile.classes)})",
                f"data    : {data} in {self.data_root}",
                f"runs    : {self.runs_dir}   GPU: {'yes' if self.gpu else 'no'}",
            ]
        )

    def with_data(self, source: str | os.PathLike[str]) -> NotebookSetup:
        """The same setup reading its images from ``source`` (a folder, or ``"synthetic"``)."""
        from .data import resolve_data

        source = str(source)
        return dataclasses.replace(
            self, data_source=source, data_root=Path(resolve_data(source, self.profile))
        )


def report_runtime() -> dict[str, str | bool | None]:
    """Print and return Python and TensorFlow versions, whether a GPU (or Colab) is present, and
    what an installed accelerator says about the CPU path (oneDNN's kernels on or off).
    TensorFlow is imported without its C++ start-up lines
    (:func:`dagm_helpers.runtime.import_tensorflow`)."""
    from . import hooks
    from .runtime import gpu_names, import_tensorflow

    tf = import_tensorflow()
    gpus = gpu_names()
    info: dict[str, str | bool | None] = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "gpu": bool(gpus),
        "colab": in_colab(),
        "onednn": hooks.cpu_state().get("onednn"),
    }
    where = "Colab" if info["colab"] else platform.node() or "this machine"
    gpu = f"GPU present ({', '.join(gpus)})" if gpus else "no GPU: the cpu profile trains on crops"
    line = f"Python {info['python']}, TensorFlow {info['tensorflow']} on {where}; {gpu}"
    if info["onednn"] is not None:
        line += "; oneDNN CPU kernels " + ("on" if info["onednn"] else "off")
    print(line)
    return info


def runs_dir(base: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding training runs: ``base``, else ``$DAGM_RUNS``, else ``./runs`` (created)."""
    path = Path(base or os.environ.get(RUNS_ENV, "").strip() or "runs").expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def downloaded_dagm() -> Path | None:
    """The real DAGM folder a previous download left in the cache (``$DAGM_HOME/dagm2007``), if any."""
    folder = dagm_home() / "dagm2007"
    return folder if folder.is_dir() and any(folder.glob("Class*")) else None


def check_expected_profile(profile: Profile) -> None:
    """Raise :class:`ConfigError` when ``$DAGM_EXPECT_PROFILE`` is set and names another profile."""
    expected = os.environ.get(EXPECT_PROFILE_ENV, "").strip()
    if expected and expected != profile.name:
        raise ConfigError(
            f"this run expects the {expected!r} profile (${EXPECT_PROFILE_ENV}) but resolved {profile.name!r}; "
            f"set DAGM_PROFILE={expected} or unset {EXPECT_PROFILE_ENV}"
        )


def setup(
    profile: str | None = None,
    data: str | os.PathLike[str] | None = None,
    runs: str | os.PathLike[str] | None = None,
    quiet: bool = False,
) -> NotebookSetup:
    """The one call of every notebook's setup cell: runtime, profile and data, printed and returned.

    It imports TensorFlow without its start-up log lines and reports Python,
    TensorFlow and the GPU (:func:`report_runtime`). Profile: ``profile``, else
    ``$DAGM_PROFILE``, else ``gpu``/``cpu`` by hardware; when ``$DAGM_EXPECT_PROFILE``
    is set (the test suite sets it), any other profile is an error. Data: ``data``,
    else ``$DAGM_DIR``, else (in Colab) a previous download, else the built-in generator
    for the profile's classes.
    """
    from .data import resolve_data

    if not quiet:
        report_runtime()
    prof = resolve_profile(profile)
    check_expected_profile(prof)
    source = data_source(data)
    if source == "synthetic" and in_colab() and downloaded_dagm() is not None:
        source = str(downloaded_dagm())
    result = NotebookSetup(
        profile=prof,
        data_source=source,
        data_root=Path(resolve_data(source, prof)),
        runs_dir=runs_dir(runs),
        gpu=gpu_available(),
        colab=in_colab(),
    )
    if not quiet:
        print(result.describe())
    return result


# ----------------------------------------------------------------------------- training runs and examples
def run_config(setup: NotebookSetup, loss: str, seed: int = 0, name: str | None = None, **overrides):
    """The :class:`~dagm_helpers.training.TrainConfig` every notebook trains ``loss`` with.

    One place, so notebooks 3, 4 and 5 use the same data, seed and budget and
    differ only in the loss. The run goes to ``runs_dir/<name or loss>``: when that folder
    holds a run with the same loss, seed, profile and data (Colab disconnected, the
    kernel was restarted, or it finished), it is resumed; anything else there is
    replaced. ``$DAGM_MAX_MINUTES`` (set by the series runner) caps the time budget
    of each run; below the profile's own budget it also shortens the schedule
    (epochs) in proportion. The Test split is left to notebook 5
    (``evaluate_test=False`` unless overridden).
    """
    from .training import TrainConfig

    minutes = os.environ.get(MINUTES_ENV, "").strip()
    if minutes and "max_minutes" not in overrides:
        try:
            budget = float(minutes)
        except ValueError:
            raise ConfigError(f"${MINUTES_ENV} must be a number of minutes, got {minutes!r}") from None
        if not budget > 0:
            raise ConfigError(f"${MINUTES_ENV} must be positive, got {minutes!r}")
        overrides["max_minutes"] = budget
        full = setup.profile
        if "epochs" not in overrides and full.max_minutes and budget < full.max_minutes:
            # a shorter budget runs a proportionally shorter schedule, so that the learning
            # rate still decays to its end instead of being cut off while it is high
            overrides["epochs"] = max(1, math.ceil(full.epochs * budget / full.max_minutes))
    # notebook 5 evaluates both models on the Test split, at thresholds chosen on validation;
    # evaluating here too would cost the series minutes for numbers nobody reads
    overrides.setdefault("evaluate_test", False)
    config = TrainConfig(
        out=setup.runs_dir / (name or loss),
        data=setup.data_source,
        loss=loss,
        profile=setup.profile.name,
        seed=seed,
        overwrite=True,
        **overrides,
    )
    if same_run(Path(config.out), config, needed=("config.json", "last.keras")):
        config.resume, config.overwrite = True, False
    return config


def load_run(folder: str | os.PathLike[str]):
    """A finished run read back from its folder (``model.keras``, ``history.csv``, ``metrics.json``)."""
    import json

    from .history import read_history
    from .infer import load_model
    from .training import Run

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    return Run(
        folder, load_model(folder / "model.keras"), read_history(folder / "history.csv"), metrics, config
    )


#: the files of a finished run
FINISHED = ("config.json", "history.csv", "model.keras", "metrics.json")


def same_run(folder: Path, config, needed: Sequence[str] = FINISHED) -> bool:
    """True when ``folder`` holds the files ``needed`` of a run made with ``config``'s loss, seed,
    profile and data (by default: a finished run)."""
    import json

    if not all((folder / name).is_file() for name in needed):
        return False
    try:
        saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    train_config, profile = saved.get("train_config", {}), saved.get("profile", {})
    return (
        train_config.get("loss") == config.loss
        and train_config.get("seed") == config.seed
        and profile.get("name") == config.resolve_profile().name
        and str(train_config.get("data")) == str(config.data)
    )


def ensure_run(setup: NotebookSetup, loss: str, seed: int = 0):
    """The run notebooks 3/4 trained for ``loss`` if it is there and finished, else train it now."""
    from .training import train

    config = run_config(setup, loss, seed)
    if same_run(Path(config.out), config):
        print(f"reusing the {loss} run in {config.out}")
        return load_run(config.out)
    print(f"no finished {loss} run in {config.out}: training it now")
    return train(config)


def example_images(
    setup: NotebookSetup,
    split: str = "val",
    n: int | None = 4,
    defective: bool | None = True,
    size: int | None = None,
    seed: int = 0,
):
    """``(images, masks)`` uint8 arrays of ``n`` evenly spaced samples of the profile's classes.

    ``split``: ``"val"`` (the validation images training held out, same seed),
    ``"Train"`` or ``"Test"``; ``defective``: True, False or None (all);
    ``n=None``: every matching sample; ``size``: default the profile's image size.
    """
    import numpy as np

    from .data.layout import scan
    from .data.pipeline import load_arrays

    index = scan(setup.data_root).filter(classes=setup.profile.classes)
    if split == "val":
        samples = index.filter(split="Train").train_val_split(setup.profile.val_fraction, seed=seed)[1]
    else:
        samples = index.filter(split=split)
    if defective is not None:
        samples = samples.filter(defective=defective)
    if len(samples) == 0:
        raise ConfigError(f"no {split} samples (defective={defective}) in {setup.data_root}")
    if n is not None and n < len(samples):
        samples = [samples[int(i)] for i in np.linspace(0, len(samples) - 1, n).round()]
    return load_arrays(samples, size=size or setup.profile.image_size)


def validation_figure(setup: NotebookSetup, model, title: str, n: int = 4):
    """Predict ``n`` defective validation images with ``model`` and draw them (truth green, prediction magenta)."""
    from .infer import predict_proba
    from .viz import show_predictions

    images, masks = example_images(setup, split="val", n=n)
    probs = predict_proba(model, images)
    assert probs.shape == images.shape and 0.0 <= probs.min() <= probs.max() <= 1.0, probs.shape
    return show_predictions(images, masks, probs, title=title)


def use_drive_cache(folder: str = "/content/drive/MyDrive/dagm_cache") -> Path:
    """In Colab: mount Google Drive and keep downloads there (sets ``$DAGM_HOME``)."""
    if not in_colab():
        raise ConfigError("use_drive_cache() only works inside Google Colab; set DAGM_HOME instead")
    from google.colab import drive  # type: ignore[import-not-found]

    drive.mount("/content/drive")
    os.environ["DAGM_HOME"] = folder
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder)


__all__ = [
    "EXPECT_PROFILE_ENV",
    "RUNS_ENV",
    "NotebookSetup",
    "MINUTES_ENV",
    "check_expected_profile",
    "ensure_run",
    "example_images",
    "same_run",
    "load_run",
    "run_config",
    "downloaded_dagm",
    "report_runtime",
    "runs_dir",
    "setup",
    "use_drive_cache",
    "validation_figure",
]
