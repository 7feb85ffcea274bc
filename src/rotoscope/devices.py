"""The machine: which device, which number format and how many threads, chosen by what the hardware does.

Precision `auto` takes bf16 only where the hardware computes it natively: on a CPU without native bf16 (AVX2,
plain AVX-512, most arm64 chips) oneDNN emulates it and a 640x360 frame took 10x longer than in fp32 (7.6x here,
an AMX machine capped with ONEDNN_MAX_CPU_ISA=AVX2: 1845 against 242 ms). Capability queries can be fooled (an
ISA cap, a hypervisor that hides or fakes flags), so a CPU that claims bf16 is also timed once: a bf16 against an
fp32 convolution, cached per machine under ROTOSCOPE_HOME (`machine.json`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass

import torch

from .config import PRECISIONS  # the settings table's list: auto, bf16, fp16, fp32

BF16_MUST_BE = 0.9  # bf16 is chosen on a CPU only when its convolution takes at most this share of fp32's time


@dataclass(frozen=True)
class Choice:
    """A setting chosen for this machine, with the reason, for the one line every run prints."""

    value: str
    reason: str

    def line(self, what: str = "precision") -> str:
        return f"{what}: {self.value} ({self.reason})"


# ---------------------------------------------------------------- device


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(name: str = "auto") -> torch.device:
    """auto: a CUDA GPU, else Apple's mps, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    # a device this machine does not have is one line here, not an assertion deep inside torch later
    from .errors import RotoscopeError

    try:
        device = torch.device(name)
    except RuntimeError:
        raise RotoscopeError(f"unknown device '{name}': use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise RotoscopeError(f"device {name}: no CUDA GPU here (use --device auto or cpu)")
        if device.index is not None and device.index >= count:
            raise RotoscopeError(f"device {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not mps_available():
        raise RotoscopeError(f"device {name}: no Apple GPU (mps) here (use --device auto or cpu)")
    return device


# ---------------------------------------------------------------- the CPU


def cpu_class() -> str:
    """AMX, AVX-512 BF16, AVX-512, AVX2, arm64 or older: the kernels PyTorch and oneDNN will actually use.

    ATEN_CPU_CAPABILITY caps PyTorch's own kernels and ONEDNN_MAX_CPU_ISA oneDNN's, which is why both the
    capability and oneDNN's bf16 support are read, not only the CPU's flags.
    """
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    cap = torch.backends.cpu.get_cpu_capability()
    if cap.startswith("AVX512"):
        if not onednn_bf16():
            return "AVX-512"
        if torch.cpu._is_amx_tile_supported():
            return "AMX"
        return "AVX-512 BF16" if torch.cpu._is_avx512_bf16_supported() else "AVX-512"
    return cap if cap else machine


def onednn_bf16() -> bool:
    """oneDNN's own view: False under ONEDNN_MAX_CPU_ISA=AVX2 even on a CPU whose flags say AMX."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def claims_native_bf16() -> bool:
    """What the capability queries say (they can be wrong: see measure_bf16)."""
    return onednn_bf16() and (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def physical_cores(sysfs: str = "/sys/devices/system/cpu") -> int:
    """Cores this process may run on, counting hyper-threads of one core once (they share its vector units)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        allowed = list(range(os.cpu_count() or 1))
    groups = set()
    for cpu in allowed:
        try:
            with open(f"{sysfs}/cpu{cpu}/topology/thread_siblings_list") as f:
                groups.add(f.read().strip())
        except OSError:
            groups.add(str(cpu))
    return max(1, len(groups))


def configure_threads() -> int:
    """PyTorch's intra-op threads: one per physical core, unless OMP_NUM_THREADS or ROTOSCOPE_THREADS says."""
    env = os.environ.get("ROTOSCOPE_THREADS") or os.environ.get("OMP_NUM_THREADS")
    n = int(env) if env and env.isdigit() and int(env) > 0 else physical_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Have glibc's malloc reuse freed buffers instead of giving them back to the OS: a video render allocates and
    frees frame-sized arrays every frame, and above 128 KiB glibc maps and unmaps each one, so every frame paid
    for zeroing fresh pages (a 720p guided upsampling took 30 ms instead of 10; speed.md, "Real time on 2 cores").
    Process-wide, for the process's life: memory is kept at its peak rather than returned. False where the C
    library is not glibc."""
    import ctypes
    import ctypes.util

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # 32 MiB is the largest threshold glibc accepts (half its per-thread heap): every frame up to 1080p float
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 256 << 20))
    except (OSError, AttributeError):
        return False


def fingerprint() -> str:
    """What the cached measurements depend on: the CPU, the ISA caps in force, the threads and torch."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    caps = [os.environ.get(k, "") for k in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")]
    return "|".join([model, cpu_class(), *caps, str(torch.get_num_threads()), torch.__version__])


# ---------------------------------------------------------------- measurements cached per machine


def _machine_file():
    from .paths import home

    return home() / "machine.json"


def cached(key: str, measure):
    """The value measured for this machine under `key`, measuring (and storing) it the first time.

    machine.json holds one section per machine fingerprint, so a home shared by several machines (or one
    machine run with and without an ISA cap) keeps each one's measurements."""
    path = _machine_file()
    fp = fingerprint()
    try:
        store = json.loads(path.read_text())
        store = store if isinstance(store, dict) else {}
    except (OSError, ValueError):
        store = {}
    section = store.get(fp) if isinstance(store.get(fp), dict) else {}
    if key in section:
        return section[key]
    value = section[key] = measure()
    store[fp] = section
    with contextlib.suppress(OSError):  # a read-only home only costs the measurement next time
        from .paths import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(store, indent=1))
    return value


def median_seconds(fn, runs: int, warmup: int = 1) -> float:
    """The median of `runs` timed calls of fn after `warmup` untimed ones (the first compile kernels)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _time(fn, reps: int) -> float:
    fn()  # first call: oneDNN picks and compiles its kernels
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


BF16_KEY = "bf16_conv_1thread"  # "bf16_conv" (two threads, best of 5 each) said 1.0-1.3x fp32's time on a busy
# Zen 4 where it is 0.5x: one thread, runs alternating, the least of 15 each read 0.45-0.53x under the same load
_BENCHMARKING = threading.Lock()


def bf16_benchmark() -> dict:
    """A bf16 against an fp32 3x3 convolution at the filter network's typical width (32 channels, 128x128): on one
    thread, the two alternating, the least time of each. Threads that wait for each other at every call, and load
    arriving during one format's runs, made the ratio say what the machine's load was doing."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 32, 128, 128).contiguous(memory_format=torch.channels_last)
    conv_bf, x_bf = torch.nn.Conv2d(32, 32, 3, padding=1).eval(), x.bfloat16()
    conv_bf.load_state_dict(conv.state_dict())
    conv_bf = conv_bf.to(torch.bfloat16).to(memory_format=torch.channels_last)
    with _BENCHMARKING:  # the thread count is the process's: two first measurements at once would mix it up
        return _bf16_on_one_thread(conv, x, conv_bf, x_bf)


def _bf16_on_one_thread(conv, x, conv_bf, x_bf) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            conv(x), conv_bf(x_bf)  # first calls: oneDNN picks and compiles its kernels
            fp32, bf16 = [], []
            for _ in range(15):
                for fn, times in ((lambda: conv(x), fp32), (lambda: conv_bf(x_bf), bf16)):
                    t = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    return {"fp32_ms": round(min(fp32) * 1e3, 3), "bf16_ms": round(min(bf16) * 1e3, 3), "threads": 1}


@functools.lru_cache(maxsize=None)
def _cpu_bf16_timing(fp: str) -> dict:  # fp: the in-process memo follows the machine's fingerprint
    return cached(BF16_KEY, bf16_benchmark)


def cpu_precision() -> Choice:
    """bf16 where this CPU computes it natively and measurably faster, else fp32."""
    cls = cpu_class()
    if not claims_native_bf16():
        return Choice("fp32", f"this CPU has no native bf16: {cls}")
    t = _cpu_bf16_timing(fingerprint())
    ratio = t["bf16_ms"] / max(t["fp32_ms"], 1e-6)
    if ratio > BF16_MUST_BE:
        return Choice("fp32", f"{cls} claims bf16 but a bf16 convolution took {ratio:.1f}x fp32's time here")
    return Choice("bf16", f"native bf16 on this CPU: {cls}, a convolution {1 / ratio:.1f}x faster than fp32")


def paint_precision(requested: str, device: torch.device) -> Choice:
    """The number format painting uses: as resolve_precision, except that `auto` paints fp32 on a GPU. The filter
    networks are too small to fill a GPU's matrix units; their time goes to norms, pads and layout changes, and
    bf16 made them slower (an H200 at 1080p: full 12.6 ms in fp32 against 16.5 in bf16 autocast, lite 3.3 against
    6.5; benchmarks/results/speed.md, "GPU"). Training keeps bf16 (no slower there, and half the memory)."""
    if requested == "auto" and device.type == "cuda":
        return Choice("fp32", "a GPU paints these small networks fastest in fp32 (bf16 was 1.3-2x slower on an H200)")
    return resolve_precision(requested, device)


def resolve_precision(requested: str, device: torch.device) -> Choice:
    """The number format a run uses: `auto` chooses by the hardware; bf16/fp16/fp32 are taken as asked."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested}")
    if requested != "auto":
        return Choice(requested, "as asked")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Choice("bf16", f"{torch.cuda.get_device_name(device)} computes bf16 natively")
        return Choice("fp16", f"{torch.cuda.get_device_name(device)} has no bf16: fp16 with a loss scaler")
    if device.type == "mps":
        return Choice("fp32", "Apple mps: fp32, its bf16 support depends on the macOS version")
    return cpu_precision()


def autocast(device: torch.device, precision: str):
    """bf16 or fp16 autocast (CPU, CUDA, mps); a no-op context for fp32."""
    if precision in ("bf16", "fp16"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    if precision != "fp32":
        raise ValueError(f"precision must be bf16, fp16 or fp32 here (resolve 'auto' first), not {precision}")
    return contextlib.nullcontext()
