"""Threads in a video render: do the H.264 decoder and encoder threads starve the filter network?

Renders the start of one shared clip with `video.apply_video` (stabilized, as `rotoscope apply` does) at each
--codec-threads setting (VideoConfig.codec_threads: 0 = FFmpeg's own choice, about one thread per core and more),
alternating settings over --repeats rounds so that drift on a shared machine hits them alike. Prints the median
fps per setting and its ratio to FFmpeg's default, on the machine class stated (benchmarks/machine.py).

  python benchmarks/bench_threads.py                                   # 640x360, 24 frames, 0,1,2 threads
  python benchmarks/bench_threads.py --size 1280 --frames 12 --settings 0,1
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

from machine import describe  # noqa: E402
from rotoscope import video  # noqa: E402
from rotoscope.config import VideoConfig  # noqa: E402
from rotoscope.devices import configure_threads  # noqa: E402
from rotoscope.filter import load_filter  # noqa: E402
from rotoscope.stylize import ApplySettings, resolve  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "video"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default="basket", help="part of a clip name in ../shared/data/video")
    ap.add_argument("--filter", default="great-wave")
    ap.add_argument("--size", type=int, default=640, help="longer side of the render")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--settings", default="0,1,2", help="codec threads to compare (0 = FFmpeg's choice)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    clip = next((p for p in sorted(SHARED.iterdir()) if args.clip in p.name and p.suffix in (".mp4", ".mov",
                                                                                               ".webm", ".mkv")), None)
    if clip is None:
        raise SystemExit(f"no clip matching {args.clip!r} in {SHARED}")
    configure_threads()
    print(describe())
    filt = load_filter(args.filter)
    src = video.probe(clip)
    w, h = video.output_size(src.width, src.height, args.size, even=True)
    settings, lines = resolve(filt, ApplySettings(size=args.size), (h, w), video=True)  # as `rotoscope apply` picks
    print(f"{clip.name}, first {args.frames} frames at {w}x{h}, stabilized; " + "; ".join(lines))
    max_seconds = args.frames / float(src.rate)
    threads = [int(t) for t in args.settings.split(",")]
    walls: dict[int, list[float]] = {t: [] for t in threads}
    with tempfile.TemporaryDirectory() as d:
        video.apply_video(filt, clip, Path(d) / "warm.mp4", settings, VideoConfig(max_seconds=max_seconds),
                          warn=lambda s: None)  # warm-up: engine compiled, caches filled
        for _ in range(args.repeats):
            for t in threads:
                t0 = time.perf_counter()
                video.apply_video(filt, clip, Path(d) / f"t{t}.mp4", settings,
                                  VideoConfig(max_seconds=max_seconds, codec_threads=t), warn=lambda s: None)
                walls[t].append(time.perf_counter() - t0)
    base = statistics.median(walls[threads[0]])
    print(f"\n{'codec threads':<16} {'median s':>9} {'fps':>7} {'x first':>8}")
    for t in threads:
        m = statistics.median(walls[t])
        label = f"{t} (FFmpeg's)" if t == 0 else str(t)
        print(f"{label:<16} {m:9.2f} {args.frames / m:7.2f} {base / m:8.2f}")
    print(f"\nmedian of {args.repeats} rounds; x first = the first setting's time / this one's (higher is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
