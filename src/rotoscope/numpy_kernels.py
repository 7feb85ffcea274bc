"""NumPy's kernels for this CPU, chosen before NumPy loads: its AVX2 ones on an AMD Zen 4.

Training sorts every step (losses.sort_last, the sliced style and colour terms) with NumPy, whose AVX-512 sort
(x86-simd-sort) writes each partition with a compress-store to memory (vpcompressd/q), an instruction Zen 4 runs
in microcode at over 100 cycles (numpy/x86-simd-sort issue #6). There NumPy's AVX2 sort was 3x faster, a
training step's sorts 1.6-1.9x and the default `rotoscope train` 1.09x (benchmarks/bench_numpy_kernels.py,
speed.md "Training's sorts"). NumPy fixes its kernels when it is first imported (NPY_DISABLE_CPU_FEATURES), so
rotoscope/__init__.py calls choose() before anything imports NumPy. This module imports nothing that would.

Left alone: a program that imported NumPy before rotoscope, an NPY_DISABLE_CPU_FEATURES already set (even empty:
the user's choice), NumPy before 2.4 (other feature names, not tested), and other CPUs: Intel's AVX-512 sort is
that library's fastest path, and Zen 5 is reported to run compress-stores natively (not measured here).
"""

from __future__ import annotations

import os
import sys

ENV = "NPY_DISABLE_CPU_FEATURES"
AVX512_GROUPS = "X86_V4 AVX512_ICL AVX512_SPR"  # NumPy 2.4's names for every AVX-512 dispatch target
ZEN4_FAMILY = 0x19  # AMD family 19h: Zen 3 (no AVX-512) and Zen 4; Zen 5 is 1Ah

# Why NumPy runs its AVX2 kernels in this process (the line training prints), or None: NumPy's own choice
CHOSEN: str | None = None


def cpu_fields(cpuinfo: str) -> dict[str, str]:
    """The first processor's fields of a /proc/cpuinfo text."""
    fields = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def is_zen4(cpuinfo: str) -> bool:
    """An AMD family 19h CPU with AVX-512: Zen 4 (Zen 3, the same family, has no AVX-512)."""
    f = cpu_fields(cpuinfo)
    try:
        family = int(f.get("cpu family", ""))
    except ValueError:
        return False
    return f.get("vendor_id") == "AuthenticAMD" and family == ZEN4_FAMILY and "avx512f" in f.get("flags", "").split()


def features_to_disable(cpuinfo: str, numpy_version: str | None, environ) -> str | None:
    """The NPY_DISABLE_CPU_FEATURES value to set, or None to leave NumPy's choice alone."""
    if ENV in environ or not numpy_version or not is_zen4(cpuinfo):
        return None
    try:
        major, minor = (int(p) for p in numpy_version.split(".")[:2])
    except ValueError:
        return None
    return AVX512_GROUPS if (major, minor) >= (2, 4) else None


def choose() -> str | None:
    """Set NPY_DISABLE_CPU_FEATURES for this process (and its children) where features_to_disable() says so and
    NumPy is not loaded yet; returns the value set."""
    global CHOSEN
    if "numpy" in sys.modules:
        return None
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read()
    except OSError:  # not Linux: nothing to read, nothing chosen
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        numpy_version = version("numpy")
    except PackageNotFoundError:
        return None
    value = features_to_disable(cpuinfo, numpy_version, os.environ)
    if value:
        os.environ[ENV] = value
        CHOSEN = ("AVX2 (AMD Zen 4 runs the compress-stores of NumPy's AVX-512 sort in microcode: "
                  f"{ENV}={value})")
    return value
