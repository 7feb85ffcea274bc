"""`rotoscope live -o`: what recording costs a frame, x264 (live.Recording) against OpenCV's MPEG-4 Part 2 writer.

Live encodes inside its frame loop, so the writer's milliseconds come out of the frame rate. For each --sizes, the
first --frames frames of --clip, painted by the great-wave filter once beforehand (so the frames are paintings, as
live records them), are written --repeats times by each writer, alternating; the table gives milliseconds a frame,
the speed against OpenCV's writer in the same round, the file's size and the luma PSNR of what a player decodes
against the frames given (each against the Y its own stream was converted with: BT.709 for x264 at 720 lines and
up, BT.601 otherwise and for OpenCV), and whether a browser plays the file; then what converting a frame to yuv420p
costs with a reformatter set up afresh each frame and with one kept for the stream.

  python benchmarks/bench_recording.py
  ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_recording.py   # as an AVX2-only CPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_apply import parse_sizes  # noqa: E402
from bench_lite import shipped_or_random  # noqa: E402
from machine import describe  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
KR_KB = {"BT.709": (0.2126, 0.0722), "BT.601": (0.299, 0.114)}


def painted_frames(clip: Path, w: int, h: int, n: int) -> list[np.ndarray]:
    import av
    import cv2

    from rotoscope.stylize import ApplySettings, make_runner
    from rotoscope.video.render import stylize_frames

    filt = shipped_or_random("great-wave", "full")
    run = make_runner(filt, ApplySettings(engine="torch", precision="fp32"))
    with av.open(str(clip)) as c:
        frames = [cv2.resize(f.to_ndarray(format="rgb24"), (w, h), interpolation=cv2.INTER_AREA)
                  for _, f in zip(range(n), c.decode(video=0))]
    return [stylize_frames(run, [f], ApplySettings(engine="torch", precision="fp32"))[0] for f in frames]


def write_opencv(path: Path, frames: list[np.ndarray], fps: float) -> None:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def write_x264(path: Path, frames: list[np.ndarray], fps: float) -> None:
    from rotoscope.live import Recording

    h, w = frames[0].shape[:2]
    rec = Recording(path, w, h, fps, real_time=False)
    for i, f in enumerate(frames):
        rec.write(f, i / fps)
    rec.close()


def luma_psnr(path: Path, frames: list[np.ndarray], matrix: str) -> float:
    """Mean PSNR of the decoded Y plane against the frames' own limited-range Y under `matrix`."""
    import av

    kr, kb = KR_KB[matrix]
    errs = []
    with av.open(str(path)) as c:
        for f, ref in zip(c.decode(video=0), frames):
            y = f.to_ndarray(format="gray") if f.format.name == "gray" else np.asarray(f.planes[0]).reshape(
                f.planes[0].height, f.planes[0].line_size)[:, :f.planes[0].width]
            r, g, b = (ref[..., i].astype(np.float64) for i in range(3))
            want = 16 + 219 * (kr * r + (1 - kr - kb) * g + kb * b) / 255
            errs.append(np.mean((y[:ref.shape[0], :ref.shape[1]].astype(np.float64) - want) ** 2))
    return float(np.mean([10 * np.log10(255 ** 2 / max(e, 1e-9)) for e in errs]))


def conversion_ms(frames: list[np.ndarray]) -> tuple[float, float]:
    """Milliseconds a frame for RGB -> yuv420p (BT.709): frame.reformat, which sets swscale up every call, against
    one VideoReformatter kept for the stream (what video.output.h264_frame does)."""
    import av
    from av.video.reformatter import VideoReformatter

    t0 = time.perf_counter()
    for f in frames:
        av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p", dst_colorspace="ITU709")
    t1 = time.perf_counter()
    kept = VideoReformatter()
    for f in frames:
        kept.reformat(av.VideoFrame.from_ndarray(f, format="rgb24"), format="yuv420p", dst_colorspace="ITU709")
    t2 = time.perf_counter()
    return 1000 * (t1 - t0) / len(frames), 1000 * (t2 - t1) / len(frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1280x720,640x360")
    ap.add_argument("--clip", type=Path, default=SHARED / "video" / "basketball.mp4")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if not a.clip.exists():
        sys.exit(f"no clip at {a.clip}: pass --clip")
    import torch

    torch.set_num_threads(1)  # live paints on the other core's time; the writers run on one thread here
    print(describe())
    rows, conversions = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in parse_sizes(a.sizes):
            frames = painted_frames(a.clip, w, h, a.frames)
            conversions += [(f"{w}x{h}", r + 1, *conversion_ms(frames)) for r in range(a.repeats)]
            for r in range(a.repeats):
                base = None
                for label, write, suffix in (("OpenCV mp4v", write_opencv, ".mp4"),
                                             ("x264 ultrafast", write_x264, ".mp4")):
                    path = Path(tmp) / f"{label.split()[0]}-{w}x{h}-{r}{suffix}"
                    t0 = time.perf_counter()
                    write(path, frames, 25.0)
                    ms = 1000 * (time.perf_counter() - t0) / len(frames)
                    base = base or ms
                    matrix = "BT.709" if label.startswith("x264") and h >= 720 else "BT.601"
                    rows.append({"size": f"{w}x{h}", "round": r + 1, "writer": label, "ms": ms, "x": base / ms,
                                 "kib": path.stat().st_size / 1024, "psnr": luma_psnr(path, frames, matrix),
                                 "browser": "yes" if label.startswith("x264") else "no (MPEG-4 Part 2)"})
                    print(f"  {w}x{h} round {r + 1} {label}: {ms:.1f} ms a frame", flush=True)
    print("\n| size | round | writer | ms a frame | x OpenCV | KiB | luma PSNR dB | plays in a browser |\n"
          "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['size']} | {r['round']} | {r['writer']} | {r['ms']:.1f} | {r['x']:.2f} | {r['kib']:.0f} | "
              f"{r['psnr']:.1f} | {r['browser']} |")
    print("\nRGB -> yuv420p, ms a frame\n\n| size | round | frame.reformat | kept VideoReformatter |\n"
          "| --- | ---: | ---: | ---: |")
    for size, r, fresh, kept in conversions:
        print(f"| {size} | {r} | {fresh:.2f} | {kept:.2f} |")


if __name__ == "__main__":
    main()
