"""Memory: peak RSS of `rotoscope apply` on a 6000x4000 photo (tiled vs not), and of video renders of growing length.

Each measurement runs the real CLI in a fresh child process and reads its peak resident set size
(getrusage RUSAGE_CHILDREN after it exits), so nothing of this process is counted.

  image   a 6000x4000 picture (smooth colour fields and shapes, generated here) through the default-shaped
          network: with the default tiling budget, and with tiling switched off (the baseline: what a naive
          whole-image forward pass costs). Goal: tiled peak under 2 GB.
  video   a generated 1920x1080 clip of N frames for growing N, rendered with a filter of the default shape:
          the peak should not grow with N (the pipeline holds a bounded number of frames whatever the length).

  python benchmarks/bench_memory.py                     # both parts
  python benchmarks/bench_memory.py --frames 24,72      # video lengths
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def peak_rss_of(cmd: list[str], env: dict) -> tuple[float, float]:
    """Run cmd in a child; (peak RSS in MB of that child, wall seconds). Each call uses a fresh interpreter."""
    wrapper = ("import resource, subprocess, sys, json; r = subprocess.run(sys.argv[1:]); "
               "print(json.dumps([r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rc, kb = json.loads(out.stdout.strip().splitlines()[-1])
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return kb / 1024, wall


def make_filter(home: Path) -> str:
    """A filter of the default network shape with random weights (memory does not depend on what it learned)."""
    import torch

    from rotoscope.config import NetConfig, TrainConfig
    from rotoscope.filter import save_filter
    from rotoscope.network import FilterNet

    torch.manual_seed(0)
    cfg = TrainConfig()
    card = {"name": "mem", "architecture": {"type": "FilterNet", **{k: list(v) if k == "channels" else v
                                                                   for k, v in vars(NetConfig()).items()}},
            "backbone": {"name": "random", "weights_sha256": "0" * 64}, "training": cfg.to_dict(),
            "artwork": {"title": "memory benchmark", "sha256": "0" * 64}, "history": {}}
    path = home / "mem.safetensors"
    save_filter(FilterNet(cfg.net), card, path)
    return str(path)


def make_image(path: Path, w: int = 6000, h: int = 4000) -> None:
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / 300) * np.cos(yy / 200)], -1)
    img = Image.fromarray((rgb * 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for i in range(40):
        x, y = (i * 997) % w, (i * 613) % h
        d.ellipse((x, y, x + 400, y + 300), fill=((i * 50) % 256, (i * 90) % 256, (i * 20) % 256))
    img.save(path, quality=92)


def make_clip(path: Path, frames: int, w: int = 1920, h: int = 1080, fps: int = 24) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(frames):
            rgb = np.stack([(xx + 8 * i) % 256, (yy + 4 * i) % 256, ((xx + yy) // 8) % 256], -1).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default="24,96", help="video lengths in frames (1920x1080)")
    ap.add_argument("--skip-image", action="store_true")
    ap.add_argument("--skip-video", action="store_true")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "ROTOSCOPE_HOME": str(tmp / "home"), "PYTHONPATH": str(ROOT / "src")}
        (tmp / "home").mkdir()
        filt = make_filter(tmp / "home")
        cli = [sys.executable, "-m", "rotoscope", "apply", filt]
        rows = []
        if not a.skip_image:
            img = tmp / "big.jpg"
            make_image(img)
            from rotoscope.stylize import MAX_TILE_PIXELS

            # the baseline: the same library call with the tile budget lifted (no CLI flag exists for that)
            untiled = ("import sys; from rotoscope.filter import load_filter; from rotoscope.images import "
                       "open_image, save_image; from rotoscope.stylize import ApplySettings, stylize_image; "
                       "save_image(stylize_image(load_filter(sys.argv[1]), open_image(sys.argv[2]), "
                       "ApplySettings(max_tile_pixels=10**9)), sys.argv[3])")
            for label, cmd in (("6000x4000, tiled (rotoscope apply)", cli + [str(img), "-o", str(tmp / "a.jpg"),
                                                                            "--no-progress"]),
                               ("6000x4000, one pass (BASELINE)", [sys.executable, "-c", untiled, filt, str(img),
                                                                   str(tmp / "b.jpg")])):
                mb, s = peak_rss_of(cmd, env)
                rows.append((label, mb, s))
                print(f"  {label:<34} peak RSS {mb:8.0f} MB   {s:6.1f} s", flush=True)
            print(f"  (tile budget: {MAX_TILE_PIXELS:,} pixels)")
        if not a.skip_video:
            for n in (int(x) for x in a.frames.split(",")):
                clip = tmp / f"clip{n}.mp4"
                make_clip(clip, n)
                mb, s = peak_rss_of(cli + [str(clip), "-o", str(tmp / f"out{n}.mp4"), "--no-progress"], env)
                rows.append((f"1920x1080 video, {n} frames", mb, s))
                print(f"  {'1920x1080 video, %d frames' % n:<34} peak RSS {mb:8.0f} MB   {s:6.1f} s", flush=True)

    print("\n| measurement | peak RSS (MB) | wall (s) |\n| --- | ---: | ---: |")
    for label, mb, s in rows:
        print(f"| {label} | {mb:.0f} | {s:.1f} |")


if __name__ == "__main__":
    main()
