"""The flicker reduction's optical flow: cheaper settings against the flicker they leave, on every shared clip.

The flow (DIS, flow.py) is a large share of a fast render's time (bench_lite.py). It is computed on frames scaled
down to `VideoConfig.flow_side` (longest side) and scaled up; DIS's preset trades accuracy for speed. For each
shared clip (cut to --frames frames), each filter and each flow setting below, one render with flicker reduction
is scored against the same filter painted frame by frame: x per frame = warping error (flow.warping_error, Lai
et al. 2018) of the steadied render / that of the per-frame one; the goal of issues 8 and 16 is at most 0.5.
DIS's own time per flow is measured alone on the clip's frames at each setting's size.

  python benchmarks/bench_flow.py                     # 24 frames a clip, great-wave and great-wave-lite
  python benchmarks/bench_flow.py --frames 48 --results
  python benchmarks/bench_flow.py --settings "ultrafast 640,fine 160"   # some of the settings
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lite import SHARED, decoded, make_clip, shipped_or_random  # noqa: E402
from machine import describe  # noqa: E402

from rotoscope import flow  # noqa: E402
from rotoscope.config import VideoConfig  # noqa: E402
from rotoscope.stylize import ApplySettings  # noqa: E402
from rotoscope.video import apply_video  # noqa: E402

# setting label -> VideoConfig fields; the first is the default
SETTINGS = {"medium 640": {}, "fast 640": {"flow_preset": "fast"}, "medium 320": {"flow_side": 320},
            "fast 480": {"flow_preset": "fast", "flow_side": 480},
            "fast 320": {"flow_preset": "fast", "flow_side": 320},
            "ultrafast 320": {"flow_preset": "ultrafast", "flow_side": 320},
            "fine 160": {"flow_preset": "fine", "flow_side": 160},
            "ultrafast 640": {"flow_preset": "ultrafast"}}  # rotoscope live's flow until 2026-12-05
CLIPS = [("basketball", 1280, 720), ("baseball", 640, 360), ("flower_blooming", 960, 540)]


def dis_ms(frames, preset: str, side: int) -> float:
    """Median ms of one flow (both directions are computed per frame: twice this) at a setting, alone."""
    times = []
    for a, b in zip(frames, frames[1:]):
        t = time.perf_counter()
        flow.flow(a, b, side, preset)
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--results", type=Path, nargs="?", const=ROOT / "benchmarks" / "results" / "video.md")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated labels of the settings to run")
    a = ap.parse_args()
    chosen = [s.strip() for s in a.settings.split(",")]
    unknown = [s for s in chosen if s not in SETTINGS]
    if unknown:
        ap.error(f"unknown setting(s) {unknown}: choose from {list(SETTINGS)}")
    settings = {k: SETTINGS[k] for k in chosen}
    lite = shipped_or_random("great-wave-lite", "lite")
    filters = {"full": (shipped_or_random("great-wave", "full"), {}), "lite": (lite, {}),
               "lite at paint scale 0.5": (lite, {"paint_scale": 0.5})}
    head = describe()
    print(head, flush=True)
    lines = ["| clip | filter | per-frame warp err | " + " | ".join(settings) + " |",
             "| --- | --- | ---: | " + " | ".join("---:" for _ in settings) + " |"]
    timing = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, w, h in CLIPS:
            src = make_clip(SHARED / "video" / f"{name}.mp4", tmp / f"{name}.mp4", w, h, a.frames)
            inp = decoded(src)
            timing[f"{name} {w}x{h}"] = {k: dis_ms(inp, VideoConfig(**v).flow_preset, VideoConfig(**v).flow_side)
                                         for k, v in settings.items()}
            for label, (filt, over) in filters.items():
                st, out = ApplySettings(**over), tmp / "out.mp4"
                apply_video(filt, src, out, st, VideoConfig(stabilize=False), warn=lambda s: None)
                naive = flow.warping_error(decoded(out), inp)
                cells = []
                for fields in settings.values():
                    apply_video(filt, src, out, st, VideoConfig(**fields), warn=lambda s: None)
                    cells.append(f"{flow.warping_error(decoded(out), inp) / naive:.2f}")
                lines.append(f"| {name} {w}x{h} | {filt.name} {label} | {naive:.5f} | " + " | ".join(cells) + " |")
                print(lines[-1], flush=True)
    lines += ["", "| clip | " + " | ".join(f"{k} (ms)" for k in settings) + " |",
              "| --- | " + " | ".join("---:" for _ in settings) + " |"]
    lines += [f"| {clip} | " + " | ".join(f"{v:.1f}" for v in row.values()) + " |" for clip, row in timing.items()]
    notes = [f"- cells of the first table: warping error with flicker reduction at that flow setting / per frame "
             f"(goal <= 0.5); {a.frames} frames a clip; blend 0.8",
             "- second table: one DIS flow alone, median over the clip's frame pairs, at the setting's preset and "
             "size (the flicker reduction computes two a frame, forward and backward)"]
    text = "\n".join(lines + [""] + notes)
    print("\n" + text)
    if a.results:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        with open(a.results, "a") as f:
            some = "" if list(settings) == list(SETTINGS) else f' --settings "{",".join(settings)}"'
            f.write(f"\n## {stamp}: flow settings for flicker reduction\n\n`python benchmarks/bench_flow.py "
                    f"--frames {a.frames}{some} --results`\n\n- machine: {head}\n\n{text}\n")
        print(f"appended to {a.results}")


if __name__ == "__main__":
    main()
