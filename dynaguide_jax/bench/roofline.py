"""Physical floors for the benchmarks: a run can be no faster than its FLOPs at the device's peak, nor
than reading its weights once per use at the device's memory bandwidth."""
from __future__ import annotations

import jax
import numpy as np

# dense peaks per device: (bf16 TFLOP/s, fp32 TFLOP/s (TF32 on NVIDIA tensor cores), HBM TB/s);
# first match of the device kind wins, so the more specific names come first
DEVICE_PEAKS = {
    "H100 PCIe": (756.0, 378.0, 2.0),
    "H100": (989.0, 495.0, 3.35),
    "H200": (989.0, 495.0, 4.8),
    "A100": (312.0, 156.0, 2.0),
    "TPU v5 lite": (197.0, None, 0.82),
    "TPU v5p": (459.0, None, 2.76),
    "TPU v4": (275.0, None, 1.2),
}


def device_peaks(kind: str) -> tuple[float | None, float | None, float] | None:
    """``(bf16 TFLOP/s, fp32 TFLOP/s or None, HBM TB/s)`` of a device kind, None when unknown (CPUs)."""
    return next((v for k, v in DEVICE_PEAKS.items() if k.lower() in kind.lower()), None)


def params_bytes(params, dtype: str) -> int:
    """Bytes of a params pytree stored in the compute ``dtype``."""
    item = np.dtype(jax.numpy.dtype(dtype)).itemsize
    return sum(int(np.prod(np.shape(x))) * item for x in jax.tree.leaves(params))


def floor_fields(kind: str, dtype: str, flops: float, weight_bytes: float, seconds: float) -> dict:
    """Benchmark row fields: the FLOP floor (``flops`` at peak), the memory floor (``weight_bytes``
    at HBM bandwidth), the larger one and ``measured / floor``; "n/a" where the peaks are unknown."""
    peaks = device_peaks(kind)
    peak = None if peaks is None else peaks[0 if dtype in ("bfloat16", "float16") else 1]
    if peaks is None or peak is None:
        return {"floor_ms": "n/a", "floor_bound": "n/a", "time_over_floor": "n/a"}
    flop_s, mem_s = flops / (peak * 1e12), weight_bytes / (peaks[2] * 1e12)
    floor = max(flop_s, mem_s)
    return {"floor_flops_ms": round(flop_s * 1e3, 4), "floor_hbm_ms": round(mem_s * 1e3, 4),
            "floor_ms": round(floor * 1e3, 4), "floor_bound": "flops" if flop_s >= mem_s else "hbm",
            "time_over_floor": round(seconds / floor, 2) if floor > 0 else "n/a"}
