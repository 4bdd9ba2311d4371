"""Tiny DAGM-layout data for the pipeline and training tests, and a training child process.

As a module: :func:`make_tiny_dagm` writes a small, trivially learnable data set in the
official layout (``Class1/{Train,Test}/NNNN.PNG``, ``Label/NNNN_label.PNG``,
``Label/Labels.txt``): grey noise with bright elliptical defects that match their masks.

As a script (``python tests/_train_child.py DATA OUT EPOCHS [--resume] [--marker FILE]``): trains the
deterministic smoke configuration used by the kill test, printing a line per epoch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def make_tiny_dagm(
    root: str | Path,
    n_train: int = 16,
    n_test: int = 8,
    size: int = 64,
    seed: int = 0,
    class_id: int = 1,
    odd_defective: bool = False,
) -> Path:
    """Write ``n_train``/``n_test`` images per split of class ``class_id`` under ``root``; return root.

    Every other image is defective (the even ids, or with ``odd_defective`` the odd ones, so that a
    one-image split is defective): a bright filled ellipse (grey 220 on ~100 +- 12 noise) whose
    mask is exactly the ellipse, so a U-Net learns it in a few dozen steps.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for split, n in (("Train", n_train), ("Test", n_test)):
        folder = root / f"Class{class_id}" / split
        (folder / "Label").mkdir(parents=True, exist_ok=True)
        lines = ["1"]
        for i in range(1, n + 1):
            sid = f"{i:04d}"
            img = np.clip(rng.normal(100, 12, (size, size)), 0, 255)
            defective = i % 2 == int(odd_defective)
            if defective:
                cy, cx = rng.uniform(size * 0.2, size * 0.8, 2)
                a, b = rng.uniform(size * 0.06, size * 0.15, 2)
                mask = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 <= 1.0
                img[mask] = 220
                Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "Label" / f"{sid}_label.PNG")
                lines.append(f"{sid}\t1\t{sid}.PNG\t0\t{sid}_label.PNG")
            else:
                lines.append(f"{sid}\t0\t{sid}.PNG\t0\t0\t")
            Image.fromarray(img.astype(np.uint8)).save(folder / f"{sid}.PNG")
        (folder / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")
    return root


def _marker_callback(marker: str | Path):
    """A callback that slows batches a little and touches ``marker`` in the middle of epoch 2."""
    import time

    import keras

    class Marker(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.05)
            if self.epoch >= 1 and batch == 2:
                Path(marker).touch()

    return Marker()


def child_config(
    data: str | Path, out: str | Path, epochs: int, resume: bool = False, marker: str | Path | None = None
):
    """The deterministic configuration the kill test trains (smoke profile, tiny data)."""
    from dagm_helpers.training import TrainConfig

    return TrainConfig(
        callbacks=[_marker_callback(marker)] if marker else [],
        out=out,
        data=str(data),
        classes=(1,),
        loss="bce_dice",
        profile="smoke",
        epochs=epochs,
        steps_per_epoch=6,
        batch_size=2,
        image_size=64,
        crop_size=32,
        defect_crop_fraction=0.5,
        max_minutes=10.0,
        seed=7,
        resume=resume,
        verbose=2,
        evaluate_test=False,
        model={"filters": 4},
    )


def main(argv: list[str]) -> int:
    from dagm_helpers.training import TrainingInterrupted, train

    data, out, epochs = argv[0], argv[1], int(argv[2])
    resume = "--resume" in argv
    marker = argv[argv.index("--marker") + 1] if "--marker" in argv else None
    try:
        train(child_config(data, out, epochs, resume, marker))
    except TrainingInterrupted as exc:
        print(f"child: {exc}", flush=True)
        return exc.exit_status
    print("child: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
