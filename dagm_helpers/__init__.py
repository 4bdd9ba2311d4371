"""Helpers for the DAGM 2007 surface-defect U-Net notebook series.

The notebooks import everything they need from here. Heavy modules (TensorFlow)
load lazily, on first use of a name that needs them, so ``import dagm_helpers``
and the command line's ``--help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # config
    "Profile": "config",
    "resolve_profile": "config",
    "data_source": "config",
    "gpu_available": "config",
    "dagm_home": "config",
    # errors
    "DagmError": "errors",
    "DatasetError": "errors",
    "ModelFileError": "errors",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dagm_helpers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)
