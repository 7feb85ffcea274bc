"""Kept faces in video: how much the kept region flickers from frame to frame, found afresh on every frame
against steadied (mask.MaskChain: carried along the optical flow, a missed face fading out), and what finding
faces costs per frame.

The clip is made here: a camera panning and zooming slowly over the portrait scikit-image ships (astronaut
Eileen Collins, NASA, public domain), with sensor noise, so the detector sees a slightly different picture on
every frame, as it does in a real clip.

  python benchmarks/masks.py [--frames 48] [--size 480x360]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rotoscope import faces  # noqa: E402
from rotoscope.mask import MaskChain, flicker  # noqa: E402
from rotoscope.video.source import Frame  # noqa: E402
from rotoscope.video.steady import Stabilizer  # noqa: E402


def clip(frames: int, w: int, h: int, seed: int = 0) -> list[np.ndarray]:
    import skimage.data

    src = skimage.data.astronaut()
    rng = np.random.default_rng(seed)
    out = []
    for i in range(frames):
        t = i / max(1, frames - 1)
        zoom = 1.0 + 0.15 * t  # a slow zoom in while panning left to right
        cw, ch = 400 / zoom, 300 / zoom
        x0, y0 = 20 + 60 * t, 10 + 10 * np.sin(3 * t)
        crop = cv2.getRectSubPix(src, (int(cw), int(ch)), (x0 + cw / 2, y0 + ch / 2))
        f = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        f += rng.normal(0, 4, f.shape)  # sensor noise
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", default="480x360")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "masks.md")
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))
    frames = clip(args.frames, w, h)
    raw, steady, found, secs = [], [], [], []
    chain, stab = MaskChain(None, "faces", 0.0), Stabilizer(0.8, "medium")
    for i, rgb in enumerate(frames):
        t = time.perf_counter()
        fs = faces.detect_faces(rgb)
        secs.append(time.perf_counter() - t)
        found.append(len(fs))
        raw.append(faces.face_mask((h, w), fs))
        fr = Frame(i, i, 1, rgb)
        stab.prepare(fr)  # the flow the render computes anyway for flicker reduction
        steady.append(1 - chain.next(rgb, fr.warp))
    # flicker measured where it shows: the change of the kept region between frames, after following the
    # camera (the mask of frame t-1 warped onto frame t along the input's flow), so motion itself is not counted
    def moved(masks):
        from rotoscope import flow as fl

        diffs = []
        for k in range(1, len(masks)):
            f_back = fl.flow(fl.gray(frames[k]), fl.gray(frames[k - 1]))
            diffs.append(np.abs(masks[k] - fl.warp(masks[k - 1], f_back)).mean())
        return float(np.mean(diffs))

    r, s = moved(raw), moved(steady)
    missed = sum(n == 0 for n in found)
    lines = ["# Kept faces in video: flicker of the kept region", "",
             f"{dt.date.today()}, `python benchmarks/masks.py --frames {args.frames} --size {args.size}` (a pan "
             "and zoom over scikit-image's astronaut portrait, with noise).", "",
             "| kept region | flicker (mean change per frame, after following the motion) | plain change per frame |",
             "| --- | ---: | ---: |",
             f"| found afresh on every frame | {r:.4f} | {flicker(raw):.4f} |",
             f"| steadied (mask.MaskChain) | {s:.4f} | {flicker(steady):.4f} |", "",
             f"Frames with no face found: {missed} of {len(frames)}; faces found per frame: "
             f"{min(found)} to {max(found)}. Finding faces took {1000 * np.mean(secs):.0f} ms a frame at "
             f"{w}x{h} (median {1000 * np.median(secs):.0f} ms) on this machine."]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
