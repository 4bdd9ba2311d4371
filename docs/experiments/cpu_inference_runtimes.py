"""Why ncnn is the CPU inference path: Winograd variants, OpenVINO f32 vs int8 per layer.

    python docs/experiments/cpu_inference_runtimes.py     # about 3 minutes on 2 cores

Prints images/s at 512x512 (8 images of noise; speed does not depend on the weights) for:
OpenVINO float32 and int8 (NNCF) with the time their convolutions take per kernel type
(OpenVINO's ``PERF_COUNT``), and ncnn with each Winograd option. Seen on the CI-like 2-core
AMD EPYC (sixth session, ``docs/performance.md``): OpenVINO f32 3.37 img/s, int8 3.30 (its
``jit_avx2_I8`` convolutions as slow as the ``brgconv_avx2_f32`` ones: no VNNI); ncnn with
Winograd F(4x4,3x3) 4.07, F(6x6) 3.28, F(2x2) 2.95, no Winograd 2.01.
"""

from __future__ import annotations

import collections
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from dagm_helpers import fast  # noqa: E402
from dagm_helpers.model import small_unet  # noqa: E402

N = 8


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


def ncnn_rows(model, x: np.ndarray) -> None:
    variants = {
        "winograd off": {"use_winograd_convolution": False},  # load_net turns it on; this turns it off
        "F(2x2,3x3) only": {"use_winograd43_convolution": False, "use_winograd63_convolution": False},
        "F(4x4,3x3) only": {"use_winograd23_convolution": False, "use_winograd63_convolution": False},
        "F(6x6,3x3) only": {"use_winograd23_convolution": False, "use_winograd43_convolution": False},
        "ncnn's choice": {},
    }
    for label, options in variants.items():
        run = fast._ncnn_runner(model, None, **options)
        run(x[:1])
        start = time.perf_counter()
        run(x)
        print(f"ncnn {label:16s} {N / (time.perf_counter() - start):5.2f} img/s")


def main() -> None:
    model = small_unet()
    x = (np.random.default_rng(0).random((N, 512, 512, 1)) * 255).astype(np.float32)
    openvino_rows(model, x)
    ncnn_rows(model, x)


if __name__ == "__main__":
    main()
