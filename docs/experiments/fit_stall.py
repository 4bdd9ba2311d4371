"""Where a short ``model.fit`` or ``model.predict`` call spends its wall time on the 2-core CI machine.

    python docs/experiments/fit_stall.py     # about 4 minutes

Prints, for ``fit`` calls of one and two steps (the tutorial's network, 512x512, batch 10,
numpy arrays), when each callback event happens and when the call returns, with the process's
CPU time. Seen on the CI-like machine (fifth session): the steps take 16.7-17 s each with
both cores busy, then ``fit`` idles for 4-7.5 s after ``on_train_end`` before it returns, so
whole calls took 20.5 s and 41.1 s again and again. Timing whole one-step ``fit`` calls
therefore measured this idle time, not training; ``bench`` times the steps instead
(``bench._median_step_s``). A training run is one long ``fit`` call, so it pays this once.

``model.predict`` does the same (seventh session): 8 images at batch 8 reached ``on_predict_end``
after 3.4-3.5 s, and the call returned then or, in 7 of 15 calls (2 of 15 in another run), at
5.16-5.17 s whatever the batch took (CPU idle meanwhile: a fixed wait, it seems, not work). The
median of a few whole calls can therefore land on either mode (1.55 or 2.3 img/s). ``bench``
times predict's batches too, and reports the whole-call rate beside it.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from dagm_helpers.losses import DiceLoss  # noqa: E402
from dagm_helpers.model import small_unet  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 512, 512, 1)).astype(np.float32)
    y = (rng.random((20, 512, 512, 1)) < 0.05).astype(np.float32)
    model = small_unet()
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=DiceLoss())
    t0 = [0.0]

    class Events(keras.callbacks.Callback):
        def _say(self, what: str) -> None:
            print(f"  {time.perf_counter() - t0[0]:7.2f} s  {what}", flush=True)

        def on_train_begin(self, logs=None):
            self._say("train begin")

        def on_train_batch_begin(self, batch, logs=None):
            self._say(f"step {batch} begin")

        def on_train_batch_end(self, batch, logs=None):
            self._say(f"step {batch} end")

        def on_train_end(self, logs=None):
            self._say("train end")

    model.fit(x[:10], y[:10], batch_size=10, epochs=1, verbose=0)  # compiles
    for n in (10, 20, 10, 20):
        t0[0], cpu0 = time.perf_counter(), time.process_time()
        model.fit(x[:n], y[:n], batch_size=10, epochs=1, verbose=0, callbacks=[Events()])
        wall, cpu = time.perf_counter() - t0[0], time.process_time() - cpu0
        print(f"{n} images: fit returned after {wall:.2f} s, CPU time {cpu:.2f} s", flush=True)

    class PredictEvents(keras.callbacks.Callback):
        def on_predict_end(self, logs=None):
            self.end = time.perf_counter() - t0[0]

    model.predict(x[:8], batch_size=8, verbose=0)  # compiles
    for _ in range(15):
        events = PredictEvents()
        t0[0], cpu0 = time.perf_counter(), time.process_time()
        model.predict(x[:8], batch_size=8, verbose=0, callbacks=[events])
        wall, cpu = time.perf_counter() - t0[0], time.process_time() - cpu0
        print(
            f"predict, 8 images: on_predict_end at {events.end:.2f} s, returned after {wall:.2f} s,"
            f" CPU time {cpu:.2f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
