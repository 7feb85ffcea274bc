"""What the benchmarks ran on: one line of CPU facts, shared by every script in benchmarks/."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "?"


def cpu_flags() -> str:
    """The matrix-math features that decide bf16 speed: AMX tiles, AVX-512 BF16, or neither."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "?"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    found = [f for f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f") if f in flags]
    return ", ".join(found) or "no AVX-512/AMX"


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def cpu_class() -> str:
    """AMX, AVX-512 BF16, AVX-512, AVX2 or arm64: the class the kernels in use belong to (rotoscope.devices reads
    PyTorch's capability and oneDNN's bf16 support, so ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 reads AVX2)."""
    from rotoscope.devices import cpu_class as cls

    return cls()


def caps_in_force() -> str:
    """ISA caps set in the environment (they make an AVX-512/AMX machine behave like a smaller one). OpenCV (optical
    flow, resizing, the video path's guided upsampling) ignores the first two and dispatches its own AVX-512 kernels
    unless OPENCV_CPU_DISABLE=AVX512-SKX,AVX512-CLX is set too: said here when it is missing."""
    caps = [f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "OPENCV_CPU_DISABLE")
            if os.environ.get(k)]
    if os.environ.get("ONEDNN_MAX_CPU_ISA") and not os.environ.get("OPENCV_CPU_DISABLE") and _opencv_avx512():
        caps.append("but OpenCV still uses AVX-512: add OPENCV_CPU_DISABLE=AVX512-SKX,AVX512-CLX")
    return ", ".join(caps) or "none"


def _opencv_avx512() -> bool:
    """Whether OpenCV dispatches AVX-512 kernels here (features it may use are starred, disabled ones end in ?)."""
    try:
        import cv2
    except ImportError:
        return False
    return any(f.startswith("*AVX512") and not f.endswith("?") for f in cv2.getCPUFeaturesLine().split())


def describe() -> str:
    """One line: model, class, flags, caps, cores and threads, what `auto` chooses for precision."""
    import torch

    from rotoscope.devices import physical_cores, pick_device, resolve_precision

    choice = resolve_precision("auto", pick_device("cpu"))
    return (f"CPU: {cpu_model()}; class {cpu_class()} (flags: {cpu_flags()}; caps: {caps_in_force()}); "
            f"{physical_cores()} physical core(s), {torch.get_num_threads()} torch thread(s); "
            f"torch {torch.__version__}; auto {choice.line()}")
