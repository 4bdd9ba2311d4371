"""Exceptions raised by dagm_helpers.

Every error the project raises on bad input is one of these. Messages follow one
rule: name the file (or value), say what is wrong, say what to do about it. The
command line turns them into a single ``error: ...`` line and exit status 2.
"""

from __future__ import annotations


class DagmError(Exception):
    """Base class of every error dagm_helpers raises on purpose."""


class ConfigError(DagmError, ValueError):
    """An argument, profile or environment variable has an invalid value."""


class DatasetError(DagmError):
    """A dataset folder, label file, image or mask cannot be used."""


class LabelsFormatError(DatasetError):
    """A ``Labels.txt`` or development-set ``labels.txt`` is malformed."""


class ImageFileError(DatasetError):
    """An image or mask file is empty, truncated, corrupt or of an unusable shape."""


class DownloadError(DagmError):
    """A download failed (network, HTTP status) or its result is unusable."""


class ChecksumError(DownloadError):
    """A downloaded file does not match its recorded checksum or size."""


class ArchiveError(DagmError):
    """An archive is corrupt or unsafe to extract (traversal, links, bombs)."""


class ModelFileError(DagmError):
    """A saved model is missing, corrupt, unsafe, or does not fit the task."""


class TrainingError(DagmError):
    """Training cannot start or continue (NaN loss, bad resume state...)."""


__all__ = [
    "ArchiveError",
    "ChecksumError",
    "ConfigError",
    "DagmError",
    "DatasetError",
    "DownloadError",
    "ImageFileError",
    "LabelsFormatError",
    "ModelFileError",
    "TrainingError",
]
