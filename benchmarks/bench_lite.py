"""The lite architecture against the full one and the 2016 baseline: the network alone, then whole videos.

Part 1, the network (median of --runs calls after a warm-up, batch 1, one frame at each --sizes):
  BASELINE         Johnson et al.'s TransformerNet as pytorch/examples publishes it (bench_apply.py), fp32 eager
  full / lite      rotoscope's two architectures (NetConfig(arch=...), default widths), through the path
                   `rotoscope apply` runs (stylize_tensor on an engine runner), every engine x precision this
                   machine runs natively; the fastest row of each architecture is marked. The torch rows
                   "upsampled tensor" time it as before 2026-12-06 (bench_apply.upsampled_tensor).
Part 2, whole videos (--clip, cut to --frames frames and scaled to each size; one untimed warm-up render): fps of
  video.apply_video end to end (decode, paint, flicker reduction, H.264 encode, remux), full against lite, with
  and without flicker reduction, and the full filter painted at --paint-scale with guided upsampling. The
  filters are the shipped great-wave and great-wave-lite when present (weights do not change the time).
  Each render's flicker is measured too (flow.warping_error, against the same network painted frame by frame),
  and a cheaper flow (the real-time one: DIS fine at 160 px) is timed against the flicker it leaves; the last row
  is the real-time settings (config.REAL_TIME, `rotoscope apply --real-time`: paint scale 0.4, DIS fine at 160 px,
  blend 0.85, x264 superfast).
  Each render also reports its stages (video/stages.py): busy milliseconds a frame of decode, flow, masks
  (reader thread), paint, steady (painter thread), upsample and encode (writer thread); the busiest thread bounds
  the fps.

  python benchmarks/bench_lite.py                                   # 1280x720 and 640x360, 48 frames
  ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_lite.py   # as an AVX2-only CPU
  python benchmarks/bench_lite.py --skip-video --sizes 1920x1080
"""

from __future__ import annotations

import argparse
from fractions import Fraction
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_apply import TransformerNet, conv_gflop, in_upsampled_tensor, median_ms, parse_sizes  # noqa: E402
from machine import describe  # noqa: E402

from rotoscope import engines  # noqa: E402
from rotoscope.config import REAL_TIME, NetConfig, VideoConfig  # noqa: E402
from rotoscope.devices import claims_native_bf16  # noqa: E402
from rotoscope.filter import Filter, load_filter  # noqa: E402
from rotoscope.network import build  # noqa: E402
from rotoscope.stylize import ApplySettings, stylize_tensor  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CPU = torch.device("cpu")


def network_rows(sizes, runs: int) -> list[dict]:
    torch.manual_seed(0)
    base = TransformerNet().eval().requires_grad_(False)
    nets = {arch: build(NetConfig(arch=arch)).eval().requires_grad_(False) for arch in ("full", "lite")}
    pairs = [(e, p) for e in ("torch", "onnx", "openvino") if engines.installed(e) for p in engines.PRECISIONS_OF[e]
             if p == "fp32" or (p == "bf16" and claims_native_bf16())]
    rows = []
    for w, h in sizes:
        x = torch.rand(1, 3, h, w)

        def plain(x):
            with torch.inference_mode():
                return base(x)
        ms0 = median_ms(plain, x, runs)
        rows.append({"size": f"{w}x{h}", "variant": "BASELINE TransformerNet fp32 eager", "ms": ms0,
                     "gflop": conv_gflop(base, x)})
        for arch, net in nets.items():
            best = None
            for engine, precision in pairs:
                try:
                    run = engines.runner(engine, net, CPU, precision)
                    ms = median_ms(lambda x, run=run: stylize_tensor(run, x), x, runs)
                except Exception as e:  # noqa: BLE001 - an engine refusing a precision under an ISA cap
                    rows.append({"size": f"{w}x{h}", "variant": f"{arch} {engine} {precision}",
                                 "error": str(e).strip().splitlines()[-1][:80]})
                    continue
                row = {"size": f"{w}x{h}", "variant": f"{arch} {engine} {precision}", "ms": ms,
                       "gflop": conv_gflop(net, x)}
                rows.append(row)
                if best is None or ms < best["ms"]:
                    best = row
                if engine == "torch":  # before 2026-12-06 (bench_apply.upsampled_tensor); not a path apply runs now
                    ms = median_ms(in_upsampled_tensor(lambda x, run=run: stylize_tensor(run, x)), x, runs)
                    rows.append({"size": f"{w}x{h}", "variant": f"{arch} {engine} {precision}, upsampled tensor",
                                 "ms": ms, "gflop": row["gflop"]})
            if best:
                best["best"] = True
        for r in rows:
            if r["size"] == f"{w}x{h}" and "ms" in r:
                r["x"] = ms0 / r["ms"]
        print(f"  {w}x{h} measured", flush=True)
    return rows


def make_clip(src: Path, dest: Path, w: int, h: int, frames: int) -> Path:
    """The first `frames` frames of a shared clip scaled to w x h, as H.264 (near-lossless)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dest), "w") as out:
        vin = inp.streams.video[0]
        rate = Fraction(vin.average_rate or 25)
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
        vout.time_base = 1 / rate
        vout.options = {"crf": "12", "preset": "veryfast"}
        n = 0
        for frame in inp.decode(vin):
            scaled = frame.reformat(w, h, "yuv420p")
            scaled.pts, scaled.time_base = n, 1 / rate  # a fresh clock: the source's time base is not the output's
            for pkt in vout.encode(scaled):
                out.mux(pkt)
            n += 1
            if n == frames:
                break
        for pkt in vout.encode():
            out.mux(pkt)
    return dest


def shipped_or_random(name: str, arch: str) -> Filter:
    try:
        return load_filter(name)
    except Exception:  # noqa: BLE001 - not shipped yet: random weights time the same
        torch.manual_seed(0)
        net = build(NetConfig(arch=arch)).eval().requires_grad_(False)
        return Filter(f"random {arch}", {"name": f"random {arch}", "architecture": {"arch": arch}}, net)


def decoded(path: Path) -> list:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# the cheaper flicker reduction of the real-time settings: DIS fine on frames scaled to 160 px (VideoConfig.flow_side)
# instead of medium at 640
QUICK_FLOW = {k: REAL_TIME[1][k] for k in ("flow_preset", "flow_side")}


def video_rows(clip: Path, sizes, frames: int, paint_scale: float, only: str = "", engine: str = "auto") -> list[dict]:
    from rotoscope import flow
    from rotoscope.video import apply_video, make_job, run_job

    full, lite = shipped_or_random("great-wave", "full"), shipped_or_random("great-wave-lite", "lite")
    ps = f"paint scale {paint_scale:g}"
    half = {"paint_scale": paint_scale}
    rt_paint, rt_video = REAL_TIME
    rt, x264 = f"paint scale {rt_paint['paint_scale']:g}", rt_video["preset"]
    # (label, filter, ApplySettings fields, VideoConfig fields, the per-frame label its flicker is compared with);
    # flicker reduction, DIS medium at 640 px and x264 veryfast are VideoConfig's defaults
    variants = [("full, per frame", full, {}, {"stabilize": False}, None),
                ("full, flicker reduction", full, {}, {}, "full, per frame"),
                (f"full at {ps}, flicker reduction", full, half, {}, "full, per frame"),
                ("lite, per frame", lite, {}, {"stabilize": False}, None),
                ("lite, flicker reduction", lite, {}, {}, "lite, per frame"),
                (f"lite at {ps}, per frame", lite, half, {"stabilize": False}, None),
                (f"lite at {ps}, flicker reduction", lite, half, {}, f"lite at {ps}, per frame"),
                (f"lite at {ps}, flicker reduction, quick flow", lite, half, QUICK_FLOW, f"lite at {ps}, per frame"),
                (f"lite at {rt}, per frame, {x264}", lite, rt_paint, {"stabilize": False, "preset": x264}, None),
                (f"lite at {rt}, DIS fast at 320 px, {x264} (the real-time settings before 2026-12-05)", lite,
                 rt_paint, {**rt_video, "flow_preset": "fast", "flow_side": 320, "blend": 0.8},
                 f"lite at {rt}, per frame, {x264}"),
                (f"lite at {rt}, quick flow, {x264}, blend 0.8 (the real-time settings before 2026-12-06)", lite,
                 rt_paint, {**rt_video, "blend": 0.8}, f"lite at {rt}, per frame, {x264}"),
                (f"lite at {rt}, quick flow, {x264} (real-time settings)", lite, rt_paint, rt_video,
                 f"lite at {rt}, per frame, {x264}")]
    if only:  # the rows whose label holds the text, and the per-frame rows they are compared with
        keep = {v[0] for v in variants if only in v[0]}
        keep |= {v[4] for v in variants if v[0] in keep and v[4]}
        variants = [v for v in variants if v[0] in keep]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for w, h in sizes:
            src = make_clip(clip, tmp / f"in-{w}x{h}.mp4", w, h, frames)
            inp = decoded(src)
            base, errs = None, {}
            for label, filt, over, video_over, naive in variants:
                settings = ApplySettings(**{"engine": engine, **over})
                video = VideoConfig(**video_over)
                out = tmp / "out.mp4"
                apply_video(filt, src, out, settings, video, warn=lambda s: None)  # warm-up: calibration, compile
                out.unlink()
                t = time.perf_counter()
                job = make_job(filt, src, out, settings, video)
                run_job(job, warn=lambda s: None)
                s = time.perf_counter() - t
                errs[label] = flow.warping_error(decoded(out), inp)  # Lai et al. 2018, lower is steadier
                out.unlink()
                fps = frames / s
                base = base or fps
                rows.append({"size": f"{w}x{h}", "variant": label, "filter": filt.name, "s": s, "fps": fps,
                             "x": fps / base, "stages": job.stages.to_dict(), "warp": errs[label],
                             "vs_naive": errs[label] / errs[naive] if naive else None})
                print(f"  {w}x{h} {label}: {fps:.1f} fps; warping error {errs[label]:.5f}; {job.stages.summary()}",
                      flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1280x720,640x360")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--clip", type=Path, default=SHARED / "video" / "basketball.mp4")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--paint-scale", type=float, default=0.5)
    ap.add_argument("--skip-video", action="store_true")
    ap.add_argument("--skip-network", action="store_true", help="only the whole-video part")
    ap.add_argument("--only", default="", help="only the video rows whose label holds this text, e.g. 'lite at'")
    ap.add_argument("--engine", default="auto", help="the video rows' engine (auto: the one `rotoscope apply` picks)")
    a = ap.parse_args()
    sizes = parse_sizes(a.sizes)
    print(describe())
    print(f"network: median of {a.runs} calls after a warm-up, batch 1; GFLOP = 2 x conv multiply-adds\n")
    rows = [] if a.skip_network else network_rows(sizes, a.runs)
    print("\n| variant | size | ms | x baseline | GFLOP |\n| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | {r['size']} | refused: {r['error']} | | |")
        else:
            name = f"**{r['variant']}** (fastest {r['variant'].split()[0]})" if r.get("best") else r["variant"]
            print(f"| {name} | {r['size']} | {r['ms']:.1f} | {r['x']:.1f} | {r['gflop']:.1f} |")
    if a.skip_video:
        return
    if not a.clip.exists():
        sys.exit(f"no clip at {a.clip}: pass --clip, or --skip-video")
    print(f"\nvideo: {a.frames} frames of {a.clip.name} scaled to each size; apply_video end to end\n", flush=True)
    vrows = video_rows(a.clip, sizes, a.frames, a.paint_scale, a.only, a.engine)
    stages = list(vrows[0]["stages"]["ms_per_frame"]) if vrows else []
    print("\nper stage: busy milliseconds a frame in the thread that runs it (reader: decode, flow, masks; painter: "
          "paint, steady; writer: upsample, encode); the busiest thread bounds the fps\n")
    print("warp err: flow.warping_error of the output (Lai et al. 2018); x per frame: against the same network and "
          "scale painted frame by frame (the goal: at most 0.5)\n")
    print("| variant | size | filter | s | fps | x full | warp err | x per frame | " + " | ".join(stages)
          + " | busiest |\n| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | "
          + " | ".join("---:" for _ in stages) + " | --- |")
    for r in vrows:
        st = r["stages"]
        cells = " | ".join(f"{st['ms_per_frame'][k]:.1f}" for k in stages)
        top = st["bottleneck"]
        naive = f"{r['vs_naive']:.2f}" if r["vs_naive"] is not None else ""
        print(f"| {r['variant']} | {r['size']} | {r['filter']} | {r['s']:.1f} | {r['fps']:.1f} | {r['x']:.2f} | "
              f"{r['warp']:.5f} | {naive} | {cells} | {top} {st['thread_ms_per_frame'][top]:.0f} ms |")


if __name__ == "__main__":
    main()
