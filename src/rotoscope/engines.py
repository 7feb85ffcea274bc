"""Who runs the filter network when painting: PyTorch, onnxruntime or OpenVINO, and `auto`, the fastest here.

Which engine is fastest depends on the machine (measured on one AMX CPU at 1280x720: OpenVINO bf16 101 ms,
PyTorch bf16 220, onnxruntime fp32 684; capped to AVX2, OpenVINO fp32 was the fastest and bf16 would not
compile), so `auto` times the engines once per machine, network shape, precision and picture size class, on the
network itself, keeps only those whose output stays within MAX_LEVELS of PyTorch fp32, and caches the result
under ROTOSCOPE_HOME (devices.cached). A video is painted while the decoder, flow and encoder threads keep
the other cores busy, and engines do not slow down alike there (2 AVX2 cores, the lite at 512x288: PyTorch fp32
18 -> 33 ms a call beside one busy thread, OpenVINO fp32 14 -> 16), so video calibrates beside a busy thread
(`busy=True`). Every engine is a runner with the same interface: runner(x) paints,
runner(x, stats) paints with frozen norm statistics (tiles), runner.measure(x) gives those statistics.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch

from .config import ApplySettings, fields_of
from .devices import Choice, cached, fingerprint, median_seconds, physical_cores
from .errors import RotoscopeError
from .network import REVISION, FilterNet

ENGINES = fields_of(ApplySettings)["engine"].metadata["choices"]  # the settings table's: auto, torch, onnx, openvino
PRECISIONS_OF = {"torch": ("bf16", "fp16", "fp32"), "onnx": ("fp32",), "openvino": ("bf16", "fp32")}
CALIBRATION_PIXELS = 640 * 360  # larger pictures are timed at this size with their aspect (the ranking held at 720p)
SMALL_PIXELS = 256 * 256  # pictures up to this size share one calibration at 256x256
MAX_LEVELS = 1.0  # mean absolute difference from PyTorch fp32, in levels of 8-bit colour, that an engine may have


def installed(engine: str) -> bool:
    if engine == "torch":
        return True
    mods = {"onnx": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino")}[engine]
    return all(importlib.util.find_spec(m) is not None for m in mods)


def require_engine(engine: str) -> None:
    """Fail with one line saying how to install an engine's packages."""
    if engine == "onnx":
        from .export import require

        require("onnx")
        require("onnxruntime")
    elif engine == "openvino" and not installed("openvino"):
        raise RotoscopeError("--engine openvino needs the packages openvino and onnx: pip install openvino onnx")


# ---------------------------------------------------------------- OpenVINO


class OpenVinoRunner:
    """Runs a filter with OpenVINO from its ONNX export (export.onnx_bytes); same interface as TorchRunner.

    OpenVINO picks AVX2 / AVX-512 / AMX kernels itself. Its CPU plugin runs bf16 by default where native, so the
    precision is always set explicitly. A model is compiled per input shape (a video's frames share one).
    """

    def __init__(self, net: FilterNet, precision: str = "fp32", threads: int | None = None, weak: bool = False):
        if precision not in PRECISIONS_OF["openvino"]:
            raise ValueError(f"OpenVINO runs bf16 or fp32, not {precision}")
        import openvino as ov

        self.ov, self.core = ov, ov.Core()
        self._net = weakref.ref(net) if weak else (lambda: net)
        # ROTOSCOPE_THREADS caps it as it caps PyTorch's threads: a cluster task owns only the CPUs Ray gave it
        env = os.environ.get("ROTOSCOPE_THREADS", "")
        self.precision = precision
        self.threads = threads or (int(env) if env.isdigit() and int(env) > 0 else physical_cores())
        self.models: dict = {}
        self.lock = threading.Lock()  # one infer request per shape: the server's apply threads take turns
        self.compiled: OrderedDict = OrderedDict()  # (mode, shape) -> infer request, the most recent last

    def _model(self, mode: str):
        if mode not in self.models:
            from .export import onnx_bytes

            fd, path = tempfile.mkstemp(suffix=".onnx")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(onnx_bytes(self._net(), mode))
                self.models[mode] = self.core.read_model(path)
            finally:
                os.unlink(path)
        return self.models[mode]

    KEEP = 4  # compiled shapes kept per runner: a video needs one or two, a server sees pictures of every size

    def _request(self, mode: str, shape: tuple[int, ...]):
        key = (mode, shape)
        if key in self.compiled:
            self.compiled.move_to_end(key)
        else:
            while len(self.compiled) >= self.KEEP:
                self.compiled.popitem(last=False)
            model = self._model(mode).clone()
            model.reshape({"image": list(shape)})
            # unpinned: OpenVINO pins its threads to cores, and two single-threaded processes (two Ray tasks) were
            # pinned to the same one, each painting at half speed (benchmarks/results/cluster.md, 2026-12-04)
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads,
                      "ENABLE_CPU_PINNING": False,
                      "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32"}
            self.compiled[key] = self.core.compile_model(model, "CPU", config).create_infer_request()
        return self.compiled[key]

    def __call__(self, x: torch.Tensor, stats=None) -> torch.Tensor:
        from .export import stats_feed

        feed = {"image": x.float().contiguous().cpu().numpy(), **stats_feed(stats or [])}
        mode = "plain" if stats is None else "frozen"
        with self.lock:
            out = self._request(mode, tuple(x.shape)).infer(feed)
            return torch.from_numpy(out[0].copy())

    def measure(self, x: torch.Tensor):
        with self.lock:
            out = [v.copy() for v in self._request("measure", tuple(x.shape))
                   .infer({"image": x.float().contiguous().cpu().numpy()}).values()][1:]
        return [(torch.from_numpy(out[i]), torch.from_numpy(out[i + 1])) for i in range(0, len(out), 2)]


# ---------------------------------------------------------------- building a runner


def runner(engine: str, net: FilterNet, device: torch.device, precision: str):
    """A runner for one engine at one precision."""
    if engine not in PRECISIONS_OF:
        raise RotoscopeError(f"unknown engine '{engine}': use one of {', '.join(ENGINES)}")
    if engine == "torch":
        from .stylize import TorchRunner, prepare_net

        return TorchRunner(prepare_net(net, device, precision), precision)
    if device.type != "cpu":
        raise RotoscopeError(f"--engine {engine} runs on the CPU; use --engine torch for {device.type}")
    if precision not in PRECISIONS_OF[engine]:
        raise RotoscopeError(f"--engine {engine} runs {' or '.join(PRECISIONS_OF[engine])}, not {precision}")
    require_engine(engine)
    if engine == "onnx":
        from .export import onnx_runner

        return onnx_runner(net)
    return _openvino_runner(net, precision)


_OV: "weakref.WeakKeyDictionary[FilterNet, dict]" = weakref.WeakKeyDictionary()


def _openvino_runner(net: FilterNet, precision: str) -> OpenVinoRunner:
    """One runner per network and precision (a folder of images converts once), dropped with the network."""
    per_net = _OV.setdefault(net, {})
    if precision not in per_net:
        per_net[precision] = OpenVinoRunner(net, precision, weak=True)
    return per_net[precision]


# ---------------------------------------------------------------- auto: the fastest engine on this machine


def calibration_shape(h: int, w: int) -> tuple[int, int]:
    """The size engines are timed at: 256x256 for small pictures, else the picture's aspect at up to
    CALIBRATION_PIXELS, rounded to multiples of 32 so that similar sizes share one measurement."""
    if h * w <= SMALL_PIXELS:
        return 256, 256
    s = min(1.0, (CALIBRATION_PIXELS / (h * w)) ** 0.5)
    return max(32, round(h * s / 32) * 32), max(32, round(w * s / 32) * 32)


def candidates(precision: Choice, explicit: bool) -> list[tuple[str, str]]:
    """(engine, precision) pairs `auto` may choose: any installed engine at the chosen precision, and every one at
    fp32 too when the precision was itself chosen automatically: a faster fp32 engine beats a slower bf16 one, and
    a bf16 painting may be too far from fp32's for one filter (only the engines without bf16 were tried at fp32:
    starry-night's bf16 paintings are 1.7 levels off, so auto took onnxruntime fp32 at 429 ms where OpenVINO fp32
    took 139)."""
    out = []
    for engine in ENGINES[1:]:
        if not installed(engine):
            continue
        if precision.value in PRECISIONS_OF[engine]:
            out.append((engine, precision.value))
        if not explicit and precision.value != "fp32" and "fp32" in PRECISIONS_OF[engine]:
            out.append((engine, "fp32"))
    return out


def _test_image(h: int, w: int) -> torch.Tensor:
    """A smooth picture with edges (random noise would be an unfair input for a filter), fixed by a seed."""
    g = torch.Generator().manual_seed(0)
    small = torch.rand(1, 3, max(2, h // 16), max(2, w // 16), generator=g)
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


CALIBRATION_RUNS = 5  # timed calls per engine after a warm-up; the median is kept (a best-of-2 once ranked
# PyTorch first at 11.7 ms where its calls took 15-19 ms and OpenVINO's 13-14)


@contextlib.contextmanager
def busy_thread():
    """One more thread kept busy while the block runs, as a video render's reader and writer keep the cores
    (NumPy arithmetic on a 720p frame, over and over: one thread, and it releases the GIL, as decoding and
    encoding do)."""
    import numpy as np

    stop = threading.Event()
    frame = np.ones((720, 1280, 3), np.float32)

    def work():
        while not stop.is_set():
            np.sqrt(frame, out=frame)
    t = threading.Thread(target=work, name="calibration neighbour", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def calibrate(net: FilterNet, pairs: list[tuple[str, str]], shape: tuple[int, int], busy: bool = False) -> dict:
    """Milliseconds per picture of `shape` for each (engine, precision) (the median of CALIBRATION_RUNS calls,
    beside a busy thread if `busy`), and the output's distance from PyTorch fp32 in 8-bit levels with these weights
    (`weights`: another filter of the shape has its own distances, see levels_off); an engine that fails here is
    recorded with its error instead."""
    x = _test_image(*shape)
    cpu = torch.device("cpu")
    reference = runner("torch", net, cpu, "fp32")(x)
    table = {}
    for engine, prec in pairs:
        key = f"{engine}/{prec}"
        try:
            run = runner(engine, net, cpu, prec)
            with busy_thread() if busy else contextlib.nullcontext():
                seconds = median_seconds(lambda: run(x), CALIBRATION_RUNS)
            table[key] = {"ms": round(seconds * 1e3, 2), "levels": levels_between(run(x), reference),
                          "weights": weights_key(net)}
        except Exception as e:  # noqa: BLE001 - e.g. OpenVINO refusing bf16 under an ISA cap: not a candidate
            table[key] = {"error": str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__}
    return table


def arch_key(net: FilterNet) -> str:
    """The network's shape and how this version computes it (what its speed depends on), not its weights."""
    import hashlib

    shapes = ";".join(f"{k}:{tuple(v.shape)}" for k, v in net.state_dict().items())
    return f"{type(net).__name__}-r{REVISION}-{hashlib.sha256(shapes.encode()).hexdigest()[:12]}"


_WEIGHTS: "weakref.WeakKeyDictionary[FilterNet, str]" = weakref.WeakKeyDictionary()


def weights_key(net: FilterNet) -> str:
    """A hash of the network's weights: how far an engine's painting lies from PyTorch fp32's depends on them
    (starry-night's bf16 paintings are 1.7 levels off where great-wave's pass), not only on the shape."""
    import hashlib

    if net not in _WEIGHTS:
        h = hashlib.sha256()
        for k, v in net.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
        _WEIGHTS[net] = h.hexdigest()[:16]
    return _WEIGHTS[net]


def levels_between(painted: torch.Tensor, reference: torch.Tensor) -> float:
    """The mean absolute difference of two paintings in [0, 1], in levels of 8-bit colour."""
    return round(float((painted - reference).abs().mean()) * 255, 3)


def levels_off(net: FilterNet, engine: str, precision: str, shape: tuple[int, int]) -> float:
    """How far `engine` at `precision` paints from PyTorch fp32 with this network's weights, in 8-bit levels:
    measured once per filter, engine and calibration size, then cached (the timings are the shape's)."""
    def measure() -> float:
        x, cpu = _test_image(*shape), torch.device("cpu")
        return levels_between(runner(engine, net, cpu, precision)(x), runner("torch", net, cpu, "fp32")(x))
    return _measured_once(f"levels|{weights_key(net)}|{engine}/{precision}|{shape[0]}x{shape[1]}", measure)


_MEMO: dict = {}  # in this process, by machine fingerprint and key: a calibration is not read from disk twice
_CALIBRATING = threading.Lock()  # threads (the server's) wait for one calibration instead of timing side by side


def _measured_once(key: str, measure):
    """What `measure` gives under `key` on this machine: from this process's memo, else the machine's cache, else
    measured (one at a time: never beside another calibration's timing)."""
    memo = (fingerprint(), key)
    if memo not in _MEMO:
        with _CALIBRATING:
            if memo not in _MEMO:
                _MEMO[memo] = cached(key, measure)
    return _MEMO[memo]


def _timings(net: FilterNet, key: str, pairs: list, shape: tuple[int, int], busy: bool) -> dict:
    return _measured_once(key, lambda: calibrate(net, pairs, shape, busy))


@dataclass
class Picked:
    engine: str
    precision: str
    reason: str
    timings: dict

    def line(self) -> str:
        return f"engine: {self.engine} {self.precision} ({self.reason})"


def pick_engine(net: FilterNet, device: torch.device, precision: Choice, explicit: bool,
                shape: tuple[int, int], video: bool = False) -> Picked:
    """The fastest engine for pictures of about `shape` on this machine (measured once, then cached); for
    `video`, the fastest beside a busy thread, as a render's painter runs."""
    if device.type != "cpu":
        return Picked("torch", precision.value, f"{device.type}: PyTorch", {})
    pairs = candidates(precision, explicit)
    if len(pairs) == 1:
        return Picked(*pairs[0], "the only engine installed for this precision", {})
    cal = calibration_shape(*shape)
    key = (f"engines|{arch_key(net)}|{'+'.join('/'.join(p) for p in pairs)}|{cal[0]}x{cal[1]}"
           f"|median{CALIBRATION_RUNS}|w{'|video' if video else ''}")  # |w: levels record their weights
    timings = _timings(net, key, pairs, cal, video)
    mine = weights_key(net)
    timed = sorted((k for k, v in timings.items() if "ms" in v), key=lambda k: timings[k]["ms"])
    passed, off = [], []
    for k in timed:  # fastest first, each checked against PyTorch fp32 with this filter's weights, until one passes
        v = timings[k]
        levels = v["levels"] if v.get("weights", mine) == mine or k == "torch/fp32" \
            else levels_off(net, *k.split("/"), cal)  # (PyTorch fp32 is the reference itself)
        (passed if levels <= MAX_LEVELS else off).append((k, levels))
        if passed:
            break
    if not passed:
        return Picked("torch", precision.value, "no other engine passed its calibration", timings)
    best = passed[0][0]
    engine, prec = best.split("/")
    left_out = dict(off)
    others = ", ".join(f"{k} {timings[k]['ms']:.0f} ms" for k in timed if k not in left_out)
    where = f"{cal[1]}x{cal[0]}{' beside a busy thread, as in a video' if video else ''}"
    refused = "".join(f"; {k} {timings[k]['ms']:.0f} ms left out, {lv:.1f} levels from PyTorch fp32 with this "
                      f"filter" for k, lv in off)
    return Picked(engine, prec, f"fastest here at {where}: {others}{refused}; measured once, cached", timings)
