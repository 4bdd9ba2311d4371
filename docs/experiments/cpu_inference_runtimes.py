"""Why ncnn is the CPU inference path: Winograd variants, OpenVINO f32 vs int8 per layer.

    python docs/experiments/cpu_inference_runtimes.py     # about 4 minutes on 2 cores

Prints images/s at 512x512 (8 images of noise; speed does not depend on the weights) for:
OpenVINO float32 and int8 (NNCF) with the time their convolutions take per kernel type
(OpenVINO's ``PERF_COUNT``), and ncnn with each Winograd option. Seen on the CI-like 2-core
AMD EPYC (sixth session, ``docs/performance.md``): OpenVINO f32 3.37 img/s, int8 3.30 (its
``jit_avx2_I8`` convolutions as slow as the ``brgconv_avx2_f32`` ones: no VNNI); ncnn with
Winograd F(4x4,3x3) 4.07, F(6x6) 3.28, F(2x2) 2.95, no Winograd 2.01.
The ncnn rows are the median of three interleaved rounds (seventh session: ncnn's choice 4.20,
F(4x4) only 4.28, bf16 storage 3.51, one thread 2.74).
"""

from __future__ import annotations

import collections
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from dagm_helpers.model import small_unet  # noqa: E402
from dagm_helpers.speed import fast  # noqa: E402

N = 8
ROUNDS = 3


def openvino_rows(model, x: np.ndarray) -> None:
    import openvino as ov

    base = ov.convert_model(model, input=[(-1, -1, -1, 1)])
    quantised = fast._quantize(base, x[..., 0], 16)
    core = ov.Core()
    for name, m in (("f32", base), ("int8", quantised)):
        m = m.clone()
        m.reshape({m.inputs[0]: ov.PartialShape(list(x.shape))})
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True}
        request = core.compile_model(m, "CPU", config).create_infer_request()
        request.infer({0: x})
        start = time.perf_counter()
        request.infer({0: x})
        seconds = time.perf_counter() - start
        per_kernel: dict[str, float] = collections.defaultdict(float)
        for p in request.profiling_info:
            if p.node_type == "Convolution":
                per_kernel[p.exec_type] += p.real_time.total_seconds() * 1e3
        kernels = ", ".join(f"{k} {v:.0f} ms" for k, v in sorted(per_kernel.items(), key=lambda kv: -kv[1]))
        print(f"openvino {name:5s} {N / seconds:5.2f} img/s   convolutions: {kernels}")


def ncnn_rows(model, x: np.ndarray, rounds: int = ROUNDS) -> None:
    """ncnn variants, timed in ``rounds`` interleaved rounds (median shown), max |diff| to ncnn's choice."""
    variants = {
        "ncnn's choice": {},
        "winograd off": {"use_winograd_convolution": False},  # load_net turns it on; this turns it off
        "F(2x2,3x3) only": {"use_winograd43_convolution": False, "use_winograd63_convolution": False},
        "F(4x4,3x3) only": {"use_winograd23_convolution": False, "use_winograd63_convolution": False},
        "F(6x6,3x3) only": {"use_winograd23_convolution": False, "use_winograd43_convolution": False},
        "bf16 storage": {"use_bf16_storage": True, "use_bf16_packed": True},
    }
    runs = {label: fast._ncnn_runner(model, None, **options) for label, options in variants.items()}
    runs["1 thread"] = fast._ncnn_runner(model, 1)
    reference = runs["ncnn's choice"](x[:1])
    diffs = {label: float(np.abs(run(x[:1]) - reference).max()) for label, run in runs.items()}
    rates: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(rounds):
        for label, run in runs.items():
            start = time.perf_counter()
            run(x)
            rates[label].append(N / (time.perf_counter() - start))
    for label in runs:
        print(
            f"ncnn {label:16s} {statistics.median(rates[label]):5.2f} img/s   max |diff| {diffs[label]:.0e}"
        )


def main() -> None:
    model = small_unet()
    x = (np.random.default_rng(0).random((N, 512, 512, 1)) * 255).astype(np.float32)
    openvino_rows(model, x)
    ncnn_rows(model, x)


if __name__ == "__main__":
    main()
