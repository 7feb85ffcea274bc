"""Video benchmark: flicker (warping error), style kept, and end-to-end fps of `rotoscope apply` on real clips.

For each clip in ../shared/data/video (MANIFEST.csv), the start of the clip (--max-frames) is rendered twice with
the library's own render (video.apply_video, H.264 .mp4 as `rotoscope apply` writes it):
  naive       every frame painted on its own (VideoConfig(stabilize=False)),
  stabilized  the default: each painted frame blended with the previous output warped along the DIS flow.
Then, on the decoded output frames:
  warp err    temporal warping error of Lai et al. 2018 (flow.warping_error): flow and occlusion mask from the
              INPUT frames, output t+1 warped onto t, squared colour error (0-1, summed over RGB) averaged over
              reliable pixels and pairs. The `input` row is the same number for the input clip itself, for scale
              (flow errors, lighting, compression; a filter that blurs can score below it).
  stab/naive  the ratio of the two (target <= 0.5).
  color, gram_*, texture   metrics.style_scores of --style-frames frames spread over 1..n-1 vs the artwork (lower =
              closer to the artwork; the `input` row is the unstyled photo baseline): stabilization must not
              wash the style out, so stabilized should score about the same as naive.
  fps         frames / wall time of the whole apply_video call (probe, decode, flow, network, x264, remux).
An fps section renders one clip (--fps-clip) at each of --sizes, with and without stabilization.

Files in --out (git-ignored): the rendered clips, and <clip>-flicker.png per clip: two consecutive frames of the
input, the naive and the stabilized render, and the temporal error between them (frame t+1 warped back onto t
along the input's flow; bright = flicker, grey = occluded, not scored).

  python benchmarks/bench_video.py                                  # all clips, 48 frames, starry-night
  python benchmarks/bench_video.py --filter my.safetensors --clips basket --max-frames 12 --sizes 640x360
  python benchmarks/bench_video.py --results                        # also append to benchmarks/results/video.md
Timings are wall clock: on a shared machine they include waiting for other jobs (the load average is printed).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rotoscope import flow, metrics, video  # noqa: E402
from rotoscope.config import VideoConfig  # noqa: E402
from rotoscope.devices import pick_device  # noqa: E402
from rotoscope.errors import RotoscopeError  # noqa: E402
from rotoscope.filter import Filter, load_filter  # noqa: E402
from rotoscope.images import resize_longer  # noqa: E402
from rotoscope.stylize import ApplySettings  # noqa: E402

from machine import describe  # noqa: E402  (benchmarks/machine.py, beside this script)

SHARED = ROOT.parent / "shared" / "data"
if not SHARED.exists():
    SHARED = Path("/work/shared/data")
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "video.md"
TARGET_RATIO = 0.5
MODES = ("naive", "stabilized")


# ---------------------------------------------------------------- setup


def machine() -> str:
    cpu = describe()
    import av

    load = " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores{gpu}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"PyAV {av.__version__}, OpenCV {cv2.__version__}, Python {platform.python_version()}; "
            f"load average {load} (1/5/15 min)")


def list_clips(spec: str | None) -> list[Path]:
    folder = SHARED / "video"
    listed = []
    try:
        with open(SHARED / "MANIFEST.csv", newline="") as f:
            listed = [SHARED / r["file"] for r in csv.DictReader(f) if r["kind"] == "video"]
    except OSError:
        pass
    clips = [p for p in listed if p.is_file()] or sorted(p for p in folder.glob("*") if video.is_video_path(p))
    if spec:
        parts = [s.strip().lower() for s in spec.split(",") if s.strip()]
        clips = [p for p in clips if any(s in p.stem.lower() for s in parts)]
    return clips


def find_artwork(filt: Filter, given: str | None) -> Path | None:
    """--artwork, else the file the filter's card names, looked up in ../shared/data/styles."""
    if given:
        return Path(given)
    name = (filt.card.get("artwork") or {}).get("file")
    if name and (SHARED / "styles" / name).is_file():
        return SHARED / "styles" / name
    return None


def parse_sizes(spec: str) -> list[int]:
    """'640x360,1280x720' (or '640,1280') -> longer sides, the render's size option."""
    out = []
    for s in spec.split(","):
        s = s.strip().lower()
        if s:
            out.append(max(int(v) for v in s.split("x")))
    return out


# ---------------------------------------------------------------- rendering


def input_frames(src: video.Source, w: int, h: int, n: int) -> tuple[list[np.ndarray], float | None]:
    """The first n input frames exactly as the render sees them (video.decode at the render's size), and the
    VideoConfig.max_seconds that makes a render stop after exactly those frames (None: the clip is that short)."""
    frames, pts = [], []
    for p, _, rgb in video.decode(src, w, h, warn=lambda s: None):
        if len(frames) == n:  # frame n: cut halfway between its timestamp and the previous one
            return frames, float((pts[-1] + p) / 2 - pts[0]) * float(src.time_base)
        frames.append(rgb)
        pts.append(p)
    return frames, None


def output_frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def render(filt: Filter, clip: Path, dest: Path, settings: ApplySettings, stabilize: bool,
           max_seconds: float | None) -> float:
    """One fresh render with the library's render function; returns its wall time in seconds."""
    for stale in dest.parent.glob(f".{video.glob_escape(dest.name)}.rotoscope-*"):  # never time a resume
        shutil.rmtree(stale, ignore_errors=True)
    notes: list[str] = []
    t0 = time.perf_counter()
    job = video.make_job(filt, clip, dest, settings, VideoConfig(stabilize=stabilize, max_seconds=max_seconds))
    video.run_job(job, warn=notes.append)
    wall = time.perf_counter() - t0
    for line in notes:
        print(f"    {line}")
    print(f"    {job.stages.summary()}")  # where the time went, stage by stage: the bottleneck is the busiest thread
    return wall


# ---------------------------------------------------------------- scoring and pictures


def style_of(frames: list[np.ndarray], idx: list[int], ref: dict, backbones: tuple[str, ...]) -> dict[str, float]:
    rows = []
    for i in idx:
        img = resize_longer(Image.fromarray(frames[i]), metrics.SCORE_SIZE)
        rows.append(metrics.style_scores(metrics.as_array(img), ref, backbones))
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def error_map(a: np.ndarray, b: np.ndarray, f_ab: np.ndarray, mask: np.ndarray, gain: float) -> np.ndarray:
    """|a - warp(b)| per pixel (mean over RGB) x gain, as a heat map; unreliable pixels grey."""
    d = np.abs(flow.frame_float(a) - flow.warp(flow.frame_float(b), f_ab)).mean(-1)
    heat = cv2.applyColorMap(np.clip(d * gain * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    heat = heat.copy()
    heat[mask < 0.5] = 96
    return heat


def flicker_sheet(path: Path, t: int, rows: dict[str, list[np.ndarray]], inp: list[np.ndarray],
                  werr: dict[str, float], title: str, max_tile: int = 640, gain: float = 4.0) -> Path:
    """Rows input / naive / stabilized; columns frame t, frame t+1, temporal error t+1 -> t."""
    a, b = inp[t], inp[t + 1]
    f_ab, f_ba = flow.flow(a, b), flow.flow(b, a)
    mask = flow.reliable(f_ab, f_ba)
    h, w = a.shape[:2]
    s = min(1.0, max_tile / w)
    tw, th = round(w * s), round(h * s)
    pad, head, label_h = 6, 22, 18
    sheet = Image.new("RGB", (3 * tw + 4 * pad, head + len(rows) * (th + label_h + pad) + pad), "white")
    d = ImageDraw.Draw(sheet)
    d.text((pad, 5), title, fill="black")
    for r, (name, frames) in enumerate(rows.items()):
        tiles = [frames[t], frames[t + 1], error_map(frames[t], frames[t + 1], f_ab, mask, gain)]
        labels = [f"{name}: frame {t}", f"{name}: frame {t + 1}",
                  f"{name}: |t - warp(t+1)| x{gain:g}  (warp err of the clip {werr[name]:.5f})"]
        y = head + r * (th + label_h + pad)
        for c, (tile, label) in enumerate(zip(tiles, labels)):
            x = pad + c * (tw + pad)
            d.text((x, y + 2), label, fill="black")
            img = Image.fromarray(tile)
            sheet.paste(img.resize((tw, th), Image.LANCZOS) if s < 1 else img, (x, y + label_h))
    sheet.save(path)
    return path


# ---------------------------------------------------------------- tables


def fmt_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|"]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    ap.add_argument("--filter", default="starry-night", help="filter name or .safetensors path")
    ap.add_argument("--artwork", help="artwork for the style scores (default: the one the filter's card names, "
                                      "from ../shared/data/styles)")
    ap.add_argument("--clips", help="comma-separated parts of clip names (default: every clip)")
    ap.add_argument("--max-frames", type=int, default=48, help="frames rendered from the start of each clip")
    ap.add_argument("--clip-size", type=int, help="longer side for the per-clip renders (default: the clip's own)")
    ap.add_argument("--sizes", default="640x360,1280x720", help="fps section: render sizes ('' to skip)")
    ap.add_argument("--fps-clip", help="fps section: clip name part (default: the first clip)")
    ap.add_argument("--style-frames", type=int, default=3, help="frames per render scored against the artwork")
    ap.add_argument("--precision", default="auto", help="auto (the default of `rotoscope apply`), bf16 or fp32")
    ap.add_argument("--engine", default="auto", help="auto (the default of `rotoscope apply`), torch, onnx, openvino")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "video",
                    help="folder for the rendered clips and flicker pictures (git-ignored)")
    ap.add_argument("--results", type=Path, nargs="?", const=DEFAULT_RESULTS,
                    help=f"also append the tables as markdown here (bare flag: {DEFAULT_RESULTS.relative_to(ROOT)})")
    args = ap.parse_args()
    if args.max_frames < 2:
        ap.error("--max-frames must be at least 2 (the warping error needs pairs)")
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    try:
        filt = load_filter(args.filter)
    except RotoscopeError as e:
        print(f"error: {e}")
        return 2
    clips = list_clips(args.clips)
    if not clips:
        print(f"error: no clips matching {args.clips!r} in {SHARED / 'video'}")
        return 2
    artwork = find_artwork(filt, args.artwork)
    backbones = metrics.default_backbones()
    ref = metrics.artwork_reference(artwork, metrics.SCORE_SIZE, backbones) if artwork else None
    sizes = parse_sizes(args.sizes)
    args.out.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)

    arch = filt.card.get("architecture", {})
    steps = (filt.card.get("timings") or {}).get("steps") or (filt.card.get("training") or {}).get("steps")
    header = [
        f"machine: {machine()}",
        f"filter: {filt.name} ({filt.path}; card {filt.card_hash}; channels {arch.get('channels')}, "
        f"{arch.get('res_blocks')} res blocks{f', {steps} training steps' if steps else ''}); "
        f"device {device}, precision {args.precision}",
        f"artwork for the style scores: {artwork.name if artwork else 'none (pass --artwork)'}; "
        f"backbones {', '.join(backbones)}",
        f"render: video.apply_video -> H.264 .mp4, VideoConfig() defaults (crf {VideoConfig().crf}, "
        f"blend {VideoConfig().blend}) except stabilize; first {args.max_frames} frames of each clip",
    ]
    print("\n".join(header), flush=True)

    settings = lambda size: ApplySettings(size=size, precision=args.precision, device=args.device,  # noqa: E731
                                          engine=args.engine)

    # warm-up (untimed): first network call, oneDNN kernels, PyAV/x264 start-up
    src0 = video.probe(clips[0])
    w0, h0 = video.output_size(src0.width, src0.height, args.clip_size, even=True)
    _, ms0 = input_frames(src0, w0, h0, 4)
    render(filt, clips[0], args.out / "warmup.mp4", settings(args.clip_size), True, ms0)
    (args.out / "warmup.mp4").unlink(missing_ok=True)

    style_keys = [f"gram_{b}" for b in backbones] + ["color", "texture"] if ref else []
    head = ["clip", "mode", "frames", "resolution", "warp err", "stab/naive"] + style_keys + ["fps"]
    rows: list[list[str]] = []
    verdicts = []
    timed: dict[tuple, dict[str, float]] = {}  # (clip, w, h, frames) -> wall seconds per mode, reused by the fps part
    for clip in clips:
        src = video.probe(clip)
        w, h = video.output_size(src.width, src.height, args.clip_size, even=True)
        print(f"\n{clip.name}: {src.width}x{src.height} @ {float(src.rate):.3f} fps, rendering "
              f"{min(args.max_frames, src.frames or args.max_frames)} frames at {w}x{h}", flush=True)
        inp, max_seconds = input_frames(src, w, h, args.max_frames)
        n = len(inp)
        outs, fps, werr = {}, {}, {}
        for mode in MODES:
            dest = args.out / f"{clip.stem}-{mode}.mp4"
            wall = render(filt, clip, dest, settings(args.clip_size), mode == "stabilized", max_seconds)
            outs[mode] = output_frames(dest)
            if len(outs[mode]) != n or outs[mode][0].shape != inp[0].shape:
                raise SystemExit(f"{dest}: {len(outs[mode])} frames of {outs[mode][0].shape}, expected {n} of "
                                 f"{inp[0].shape}")
            fps[mode] = n / wall
            timed.setdefault((clip, w, h, n), {})[mode] = wall
            print(f"  {mode}: {wall:.1f} s ({fps[mode]:.2f} fps) -> {dest}", flush=True)
        t0 = time.perf_counter()
        werr["input"] = flow.warping_error(inp, inp)
        for mode in MODES:
            werr[mode] = flow.warping_error(outs[mode], inp)
        ratio = werr["stabilized"] / werr["naive"] if werr["naive"] else float("nan")
        # spread over frames 1..n-1: frame 0 is the same in both modes (nothing to blend with yet)
        k = max(1, min(args.style_frames, n - 1))
        idx = sorted({round((j + 1) * (n - 1) / k) for j in range(k)})
        style = {}
        if ref:
            style["input"] = style_of(inp, idx, ref, backbones)
            for mode in MODES:
                style[mode] = style_of(outs[mode], idx, ref, backbones)
        print(f"  scored in {time.perf_counter() - t0:.1f} s" + (f" (style on frames {idx})" if ref else ""), flush=True)
        res = f"{w}x{h}"
        for mode in ("input", *MODES):
            row = [clip.stem, mode, str(n), res, f"{werr[mode]:.5f}",
                   f"{ratio:.2f}" if mode == "stabilized" else ""]
            row += [f"{style[mode][k]:.3f}" for k in style_keys] if ref else []
            row.append(f"{fps[mode]:.2f}" if mode in fps else "")
            rows.append(row)
        verdicts.append((clip.stem, ratio))
        t = n // 2 - 1 if n >= 2 else 0
        sheet = flicker_sheet(args.out / f"{clip.stem}-flicker.png", t,
                              {"input": inp, "naive": outs["naive"], "stabilized": outs["stabilized"]}, inp, werr,
                              f"{clip.name} {res}, filter {filt.name}: frames {t} and {t + 1}; heat = temporal error "
                              f"along the input's flow (grey: occluded, not scored)")
        print(f"  wrote {sheet}", flush=True)

    fps_rows: list[list[str]] = []
    if sizes:
        fclip = (list_clips(args.fps_clip) or [None])[0] if args.fps_clip else clips[0]
        if fclip is None:
            raise SystemExit(f"no clip matching --fps-clip {args.fps_clip!r}")
        src = video.probe(fclip)
        print(f"\nfps: {fclip.name}, first {args.max_frames} frames", flush=True)
        for size in sizes:
            w, h = video.output_size(src.width, src.height, size, even=True)
            inp, max_seconds = input_frames(src, w, h, args.max_frames)
            walls = timed.get((fclip, w, h, len(inp)), {})
            for mode in MODES:
                if mode in walls:
                    print(f"  {w}x{h} {mode}: {walls[mode]:.1f} s, the render of the clip table", flush=True)
                    continue
                dest = args.out / f"fps-{fclip.stem}-{w}x{h}-{mode}.mp4"
                walls[mode] = render(filt, fclip, dest, settings(size), mode == "stabilized", max_seconds)
                print(f"  {w}x{h} {mode}: {walls[mode]:.1f} s ({len(inp) / walls[mode]:.2f} fps)", flush=True)
            for mode in MODES:
                extra = f"{100 * (walls[mode] / walls['naive'] - 1):+.0f} %" if mode == "stabilized" else ""
                fps_rows.append([fclip.stem, mode, str(len(inp)), f"{w}x{h}", f"{walls[mode]:.1f}",
                                 f"{len(inp) / walls[mode]:.2f}", f"{1000 * walls[mode] / len(inp):.0f}", extra])
    fps_head = ["clip", "mode", "frames", "resolution", "wall s", "fps", "ms/frame", "time vs naive"]

    notes = [f"warp err: Lai et al. 2018 on the output frames with the input's flow (flow.warping_error), lower is "
             "steadier; input = the input clip's own score, for scale (flow errors, lighting, compression; a filter "
             f"that blurs can score below it); target stab/naive <= {TARGET_RATIO}."]
    if ref:
        notes.append(f"style (gram_*, color, texture): metrics.style_scores at {metrics.SCORE_SIZE} px of "
                     f"{args.style_frames} frames spread over frames 1..n-1 vs {artwork.name}, mean; lower = closer "
                     "to the artwork; input = the unstyled frames.")
    notes.append("fps: end to end = frames / wall time of one video.apply_video call (probe, decode, flow, network, "
                 "x264, remux; after an untimed warm-up render).")
    verdict = "; ".join(f"{c} {r:.2f} {'ok' if r <= TARGET_RATIO else 'ABOVE TARGET'}" for c, r in verdicts)
    total = time.perf_counter() - t_start

    print("\n" + fmt_table(head, rows))
    if fps_rows:
        print("\n" + fmt_table(fps_head, fps_rows))
    print("\n" + "\n".join(notes))
    print(f"stabilized/naive warping error: {verdict}")
    print(f"total {total / 60:.1f} min; files in {args.out}")

    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        cmd = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0])), *sys.argv[1:]])
        md = [f"\n## {dt.datetime.now():%Y-%m-%d %H:%M}: {filt.name}, {args.max_frames} frames per clip\n",
              f"`{cmd}`\n", *[f"- {line}" for line in header], "",
              md_table(head, rows), ""]
        if fps_rows:
            md += [md_table(fps_head, fps_rows), ""]
        md += [*[f"- {line}" for line in notes], f"- stabilized/naive warping error: {verdict}",
               f"- total {total / 60:.1f} min", ""]
        new = not args.results.exists()
        with open(args.results, "a") as f:
            if new:
                f.write("# Video benchmark (benchmarks/bench_video.py)\n")
            f.write("\n".join(md))
        print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
