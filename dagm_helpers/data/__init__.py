"""The data layer: files -> sample index (layout) -> arrays or tf.data (pipeline).

Kept light on purpose: importing ``dagm_helpers.data`` loads neither TensorFlow
nor the generator; :func:`resolve_data` imports the generator only when asked
for synthetic data.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import config
from ..errors import DatasetError

SYNTHETIC = "synthetic"


def resolve_data(source: str | os.PathLike[str] | None = None, profile: config.Profile | None = None) -> Path:
    """The root folder of the images to use.

    ``source`` None means :func:`config.data_source` (``$DAGM_DIR``, else the
    generator); ``"synthetic"`` means the cached generated set for the profile's
    classes and size (generated on first use); anything else is a folder that must exist.
    """
    source = config.data_source(source)
    if str(source).strip().lower() == SYNTHETIC:
        from .synth import ensure_synthetic

        profile = profile if profile is not None else config.resolve_profile()
        return ensure_synthetic(profile.classes, profile.synth_images_per_split)
    path = Path(source).expanduser()
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise DatasetError(
            f"data folder {path} {what}; download DAGM with `python -m dagm_helpers download --dest DIR` "
            f"and pass that folder, or use `--data synthetic` for the built-in generator"
        )
    return path


__all__ = ["SYNTHETIC", "resolve_data"]
