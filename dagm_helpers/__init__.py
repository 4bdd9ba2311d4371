"""Helpers for the DAGM 2007 surface-defect U-Net notebook series.

The notebooks import everything they need from here. Heavy modules (TensorFlow)
load lazily, on first use of a name that needs them, so ``import dagm_helpers``
and the command line's ``--help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

#: the release; the notebooks' setup cell installs the git tag ``v<__version__>`` in Colab
__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # config
    "Profile": "config",
    "PROFILES": "config",
    "resolve_profile": "config",
    "data_source": "config",
    "gpu_available": "config",
    "dagm_home": "config",
    "colab_url": "config",
    "REPO_URL": "config",
    # errors
    "DagmError": "errors",
    "ConfigError": "errors",
    "DatasetError": "errors",
    "LabelsFormatError": "errors",
    "ImageFileError": "errors",
    "DownloadError": "errors",
    "ChecksumError": "errors",
    "ArchiveError": "errors",
    "ModelFileError": "errors",
    "TrainingError": "errors",
    # data
    "resolve_data": "data",
    # data.layout
    "Ellipse": "data.layout",
    "Sample": "data.layout",
    "SampleIndex": "data.layout",
    "scan": "data.layout",
    "format_counts": "data.layout",
    "parse_labels_txt": "data.layout",
    "parse_ellipse_labels": "data.layout",
    # data.images
    "read_image": "data.images",
    "read_mask": "data.images",
    "ellipse_mask": "data.images",
    "load_sample": "data.images",
    # data.download
    "download": "data.download",
    "safe_extract": "data.download",
    # data.synth
    "synthesize": "data.synth",
    "ensure_synthetic": "data.synth",
    # data.pipeline
    "load_arrays": "data.pipeline",
    "make_dataset": "data.pipeline",
    # model
    "small_unet": "model",
    "gflops": "model",
    "required_multiple": "model",
    # losses
    "get_loss": "losses",
    "DiceLoss": "losses",
    "TutorialDiceLoss": "losses",
    "BCEDiceLoss": "losses",
    "FocalTverskyLoss": "losses",
    "PixelBCE": "losses",
    # metrics
    "iou": "metrics",
    "dice": "metrics",
    "iou_per_image": "metrics",
    "dice_per_image": "metrics",
    "boundary_f1": "metrics",
    "defect_scores": "metrics",
    "image_level": "metrics",
    "best_threshold": "metrics",
    "PixelIoU": "metrics",
    "PixelDice": "metrics",
    # infer
    "load_model": "infer",
    "predict_proba": "infer",
    "evaluate": "infer",
    "predict_files": "infer",
    # training
    "TrainConfig": "training",
    "Run": "training",
    "train": "training",
    # experiment
    "compare": "experiment",
    # viz
    "TRUTH_COLOR": "viz",
    "PRED_COLOR": "viz",
    "edge_overlay": "viz",
    "class_grid": "viz",
    "plot_history": "viz",
    "show_predictions": "viz",
    "static_grid": "viz",
    "comparison_table": "viz",
    "prediction_browser": "viz",
    "plot_foreground_share": "viz",
    "foreground_share": "viz",
    # notebook
    "setup": "notebook",
    "runs_dir": "notebook",
    "save_model": "infer",
    "TrainingRun": "training",
    "Checkpoints": "training",
    "TimeBudget": "training",
    "Progress": "training",
    "holdout_split": "data.holdout",
    # maintainers' tools
    "run_series": "tooling.series",
    # the optional speed package (dagm_helpers.speed, plugged in through dagm_helpers.hooks)
    "fast_predictor": "speed.fast",
    "run_benchmark": "speed.bench",
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
