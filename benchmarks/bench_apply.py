"""Apply speed: milliseconds per image for the 2016 baseline network and the ways rotoscope can run its own.

Rows (median of --runs timed calls after one warm-up call; batch of one; random weights, which time the same):
  BASELINE        Johnson et al.'s TransformerNet exactly as pytorch/examples fast_neural_style publishes it
                  (32-64-128 channels, 5 residual blocks, 9x9 outer convs, nearest upsample + conv, affine
                  InstanceNorm, ReLU), defined below, fp32 eager, contiguous layout
  rotoscope ...   FilterNet with the default NetConfig(): fp32 eager; bf16 autocast eager; bf16 weights in
                  channels_last; torch.compile (inductor) of that bf16 model; and the paths `rotoscope apply`
                  actually runs: stylize_tensor with each engine x precision this machine supports (torch fp32
                  and bf16, onnxruntime fp32, OpenVINO fp32 and bf16; bf16 only where native unless
                  --all-precisions), output converted back to fp32 on the CPU as apply does. The row that
                  `--engine auto --precision auto` picks on this machine is marked "<- auto".
  ... upsampled   fp32 eager with the upsamplings convolving the nearest x2 tensor, as before 2026-12-06
                  (network.upsampled_conv computes them at the small resolution; the ONNX export keeps that form)
Columns: ms (median), x baseline (baseline ms / ms), GFLOP per frame (2 x the convolutions' multiply-adds,
counted on the operations run by torch's FlopCounterMode; norms, pads and activations not counted), achieved
GFLOP/s. Rows marked * are paths `rotoscope apply` runs; the fastest of them is named under the table.

  python benchmarks/bench_apply.py                        # 512x512 and 1280x720, 5 runs, all cores
  python benchmarks/bench_apply.py --runs 1 --sizes 256x256 --threads 1 --skip-compile   # a quick check
  ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_apply.py --skip-compile --all-precisions
                                                          # an AVX-512/AMX machine run as the AVX2 class
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from machine import describe  # noqa: E402  (benchmarks/machine.py, beside this script)

# ---------------------------------------------------------------- BASELINE: pytorch/examples fast_neural_style


class ConvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        residual = x
        out = self.relu(self.in1(self.conv1(x)))
        out = self.in2(self.conv2(out))
        return out + residual


class UpsampleConvLayer(nn.Module):
    """Nearest-neighbour upsample, then a reflection-padded conv (pytorch/examples' replacement for a deconv)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        if self.upsample:
            x = nn.functional.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class TransformerNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = ConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = ConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = ConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        self.res1 = ResidualBlock(128)
        self.res2 = ResidualBlock(128)
        self.res3 = ResidualBlock(128)
        self.res4 = ResidualBlock(128)
        self.res5 = ResidualBlock(128)
        self.deconv1 = UpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = UpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def forward(self, X):
        y = self.relu(self.in1(self.conv1(X)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


# ---------------------------------------------------------------- measuring


def conv_gflop(net: nn.Module, x: torch.Tensor) -> float:
    """2 x multiply-adds of every convolution one forward pass of x runs (batch of one), in GFLOP.

    Counted on the operations run (torch's FlopCounterMode), not on the Conv2d modules: the full network's
    upsamplings call F.conv2d with weights derived from their module's (network.upsampled_conv)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / 1e9


@contextlib.contextmanager
def device_types_in(chosen: set[str], device_types: set[str]):
    """Within: one of network.py's sets of device types that take a rewritten form holds these only."""
    saved = set(chosen)
    chosen.clear()
    chosen.update(device_types)
    try:
        yield
    finally:
        chosen.clear()
        chosen.update(saved)


def upsampling_at_small_resolution(device_types: set[str]):
    """Within: network.upsampled_conv computes at the small resolution on these device types only, and convolves
    the nearest x2 tensor elsewhere (its own fallback, the form of the ONNX export and of rotoscope before
    2026-12-06), for rows that time one form against the other."""
    from rotoscope import network

    return device_types_in(network.SMALL_RESOLUTION_UPSAMPLING, device_types)


def upsampled_tensor():
    """Within: the upsamplings convolve the nearest x2 tensor on every device, as before 2026-12-06."""
    return upsampling_at_small_resolution(set())


def in_form(fn, form):
    """fn, each call run within the context manager `form()` returns."""
    def call(*args):
        with form():
            return fn(*args)
    return call


def in_upsampled_tensor(fn):
    """fn, each call run within upsampled_tensor()."""
    return in_form(fn, upsampled_tensor)


def median_ms(fn, x: torch.Tensor, runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def machine(threads: int) -> str:
    from importlib.metadata import PackageNotFoundError, version

    engines = []
    for pkg in ("onnxruntime", "openvino"):
        try:
            engines.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            engines.append(f"{pkg} not installed")
    load = f"load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return f"{describe()}\n{', '.join(engines)}; {threads} thread(s) used; {load}"


def parse_sizes(s: str) -> list[tuple[int, int]]:
    out = []
    for part in s.split(","):
        w, h = part.lower().split("x")
        out.append((int(w), int(h)))
    return out


# ---------------------------------------------------------------- the variants


ENGINE_ROWS = ("torch", "onnx", "openvino")


def variants(skip_compile: bool, threads: int, all_precisions: bool = False):
    """(label, (engine, precision) when `rotoscope apply` runs it, make() -> fn(x), the network whose
    convolutions are counted)."""
    from rotoscope.config import NetConfig
    from rotoscope.network import FilterNet
    from rotoscope.stylize import TorchRunner, prepare_net, stylize_tensor

    torch.manual_seed(0)
    base = TransformerNet().eval().requires_grad_(False)
    net = FilterNet(NetConfig()).eval().requires_grad_(False)
    dev = torch.device("cpu")

    def plain(model):
        def fn(x):
            with torch.inference_mode():
                return model(x)
        return fn

    def autocast_bf16(model):
        def fn(x):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x)
        return fn

    bf16_cl = copy.deepcopy(net).to(torch.bfloat16).to(memory_format=torch.channels_last)

    def bf16_weights(model):
        def fn(x):
            with torch.inference_mode():
                return model(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float()
        return fn

    def apply_path(precision):
        runner = TorchRunner(prepare_net(copy.deepcopy(net), dev, precision), precision)
        return lambda x: stylize_tensor(runner, x)

    rows = [
        ("BASELINE TransformerNet fp32 eager", False, lambda: plain(base), base),
        ("rotoscope fp32 eager", False, lambda: plain(net), net),
        ("rotoscope fp32 eager, upsampled tensor", False, lambda: in_upsampled_tensor(plain(net)), net),
        ("rotoscope bf16 autocast eager", False, lambda: autocast_bf16(net), net),
        ("rotoscope bf16 weights channels_last", False, lambda: bf16_weights(bf16_cl), net),
    ]
    if not skip_compile:
        compiled = {}

        def make_compiled():
            if "m" not in compiled:
                compiled["m"] = torch.compile(copy.deepcopy(bf16_cl), backend="inductor")
            return bf16_weights(compiled["m"])
        rows.append(("rotoscope torch.compile inductor bf16", False, make_compiled, net))
    from rotoscope import engines
    from rotoscope.devices import claims_native_bf16

    def engine_path(engine, precision):
        def make():
            model = copy.deepcopy(net)  # onnx and OpenVINO runners hold their network weakly: keep it alive here
            runner = engines.runner(engine, model, dev, precision)
            return lambda x, model=model: stylize_tensor(runner, x)
        return make

    for engine in ENGINE_ROWS:
        if not engines.installed(engine):
            print(f"{engine} not installed: no {engine} row")
            continue
        for precision in engines.PRECISIONS_OF[engine]:
            if precision == "fp16" or (precision == "bf16" and not (all_precisions or claims_native_bf16())):
                continue
            rows.append((f"apply: {engine} {precision}", (engine, precision), engine_path(engine, precision), net))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed calls per row (the median is reported)")
    ap.add_argument("--sizes", default="512x512,1280x720", help="comma-separated WxH")
    ap.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    ap.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile row (compiling "
                    "takes a minute or more per size)")
    ap.add_argument("--all-precisions", action="store_true", help="bf16 rows even where bf16 is emulated (slow)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    sizes = parse_sizes(args.sizes)
    print(machine(threads))
    print(f"median of {args.runs} run(s) after 1 warm-up, batch 1, random weights; GFLOP = 2 x conv multiply-adds\n")
    head = f"{'variant':<42} {'size':>9} {'ms':>9} {'x base':>7} {'GFLOP':>7} {'GFLOP/s':>8}"
    print(head)
    print("-" * len(head))
    rows = variants(args.skip_compile, threads, args.all_precisions)
    from rotoscope import engines
    from rotoscope.config import NetConfig
    from rotoscope.devices import pick_device, resolve_precision
    from rotoscope.network import FilterNet

    cpu = pick_device("cpu")
    auto_precision = resolve_precision("auto", cpu)
    fastest: dict[tuple[int, int], tuple[str, float, float]] = {}
    for w, h in sizes:
        x = torch.rand(1, 3, h, w)
        picked = engines.pick_engine(FilterNet(NetConfig()), cpu, auto_precision, False, (h, w))
        auto_pick = (picked.engine, picked.precision)
        gflop = {}
        baseline_ms = None
        for label, used, make, counted in rows:
            if id(counted) not in gflop:
                gflop[id(counted)] = conv_gflop(counted, x)
            g = gflop[id(counted)]
            try:
                t0 = time.perf_counter()
                fn = make()
                ms = median_ms(fn, x, args.runs)
                setup = time.perf_counter() - t0 - ms * args.runs / 1000
            except Exception as e:  # torch.compile needs a C++ toolchain; say why a row is missing, go on
                print(f"{label:<42} {w}x{h:<5} skipped: {type(e).__name__}: {str(e).splitlines()[0][:80]}")
                continue
            if baseline_ms is None:
                baseline_ms = ms
            mark = "*" if used else " "
            note = f"  (first call incl. compile {setup:.0f} s)" if "compile" in label and setup > 5 else ""
            note += "  <- auto" if used == auto_pick else ""
            print(f"{mark}{label:<41} {f'{w}x{h}':>9} {ms:9.1f} {baseline_ms / ms:7.2f} {g:7.1f} "
                  f"{g / (ms / 1000):8.1f}{note}", flush=True)
            if used and ((w, h) not in fastest or ms < fastest[(w, h)][1]):
                fastest[(w, h)] = (label, ms, baseline_ms / ms)
        print()
    for (w, h), (label, ms, ratio) in fastest.items():
        print(f"FASTEST PATH `rotoscope apply` RUNS at {w}x{h}: {label}: {ms:.1f} ms, {ratio:.2f}x the baseline")
    print("* = a path `rotoscope apply` runs (stylize_tensor: channels_last input, output back to fp32 on the CPU); "
          "<- auto = what `--engine auto --precision auto` picks here (its own calibration, cached)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
