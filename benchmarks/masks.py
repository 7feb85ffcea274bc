"""Kept faces and people in video: how much the kept region flickers from frame to frame, found afresh on every
frame against steadied (mask.MaskChain: carried along the optical flow, a missed face fading out), and what
finding them costs per frame.

Faces: the clip is made here: a camera panning and zooming slowly over the portrait scikit-image ships (astronaut
Eileen Collins, NASA, public domain), with sensor noise, so the detector sees a slightly different picture on
every frame, as it does in a real clip. People: the two sports clips of the shared data (../shared/data/video),
and the segmenter's time per frame at 640x360 and 1280x720.

  python benchmarks/masks.py [--frames 48] [--size 480x360]
  python benchmarks/masks.py --keep people [--frames 0 (all)]
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
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--keep", choices=("faces", "people"), default="faces")
    args = ap.parse_args()
    if args.keep == "people":
        return people(args)
    args.results = args.results or ROOT / "benchmarks" / "results" / "masks.md"
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


def people(args) -> None:
    """Kept people on the shared sports clips, each frame painted as stored (640x360)."""
    import av

    from rotoscope import flow as fl
    from rotoscope import people as ppl

    shared = next((p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()), None)
    if shared is None:
        sys.exit("needs ../shared/data (the sports clips)")
    n = args.frames if "--frames" in sys.argv else 0
    rows, secs = [], {}
    for name in ("baseball", "basketball"):
        frames = []
        with av.open(str(shared / "video" / f"{name}.mp4")) as c:
            for f in c.decode(video=0):
                frames.append(f.to_ndarray(format="rgb24"))
                if n and len(frames) >= n:
                    break
        raw, steady, flows = [], [], []
        chain, stab = MaskChain(None, "people", 0.01), Stabilizer(0.8, "medium")
        for i, rgb in enumerate(frames):
            fr = Frame(i, i, 1, rgb)
            stab.prepare(fr)  # the flow the render computes anyway for flicker reduction
            raw.append(ppl.person_mask(rgb, 0.01))
            steady.append(1 - chain.next(rgb, fr.warp))
            # the change that the motion does not explain: each mask against the previous one warped along the
            # input's flow (medium DIS, as the render's flicker reduction)
            # (pairs across a cut, where flicker reduction found no usable flow, are left out)
            flows.append(fl.flow(fl.gray(rgb), fl.gray(frames[i - 1])) if fr.warp is not None else None)
        pairs = [k for k in range(1, len(frames)) if flows[k] is not None]

        def moved(masks, flows=flows, pairs=pairs):
            return float(np.mean([np.abs(masks[k] - fl.warp(masks[k - 1], flows[k])).mean() for k in pairs]))

        def plain(masks, pairs=pairs):
            return float(np.mean([np.abs(masks[k] - masks[k - 1]).mean() for k in pairs]))

        lag = float(np.mean([np.abs(a - b).mean() for a, b in zip(steady, raw)]))
        rows.append(f"| {name} ({len(frames)} frames, {frames[0].shape[1]}x{frames[0].shape[0]}; "
                    f"{len(frames) - 1 - len(pairs)} cuts) | {np.mean([m.mean() for m in raw]):.3f} | "
                    f"{moved(raw):.4f} | {moved(steady):.4f} | {plain(raw):.4f} | {plain(steady):.4f} | {lag:.4f} |")
        if name == "baseball":
            for w, h in ((640, 360), (1280, 720)):
                picks = [cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in frames[:40:2]]
                ppl.person_mask(picks[0], 0.01)
                t = []
                for rgb in picks:
                    t0 = time.perf_counter()
                    ppl.person_mask(rgb, 0.01)
                    t.append(time.perf_counter() - t0)
                secs[f"{w}x{h}"] = t
    cmd = "python benchmarks/masks.py --keep people" + (f" --frames {n}" if n else "")
    lines = ["# Kept people in video: flicker of the kept region", "",
             (f"{dt.date.today()}, `{cmd}` (the shared sports clips, feather 0.01; the kept region is the "
              "segmenter's sharpened, feathered person probability)."), "",
             ("| clip | kept share | flicker found afresh | flicker steadied | plain change afresh | plain change "
              "steadied | steadied vs afresh (mean abs) |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |", *rows, "",
             ("Flicker: mean absolute change of the kept weight per pixel from one frame to the next after "
              "following the motion (the previous mask warped along the input's optical flow); plain change: "
              "without warping; frame pairs across a cut are left out. The steadying moves each frame's mask "
              "towards the previous one warped along that same flow, so this measure favours it; the last column "
              "is how far the steadied mask strays from what is found on each frame (its lag behind moving "
              "players)."), "",
             "Finding people (resize to 256x256, the network, scaling up, sharpening, feathering) per frame on "
             "this machine: " + "; ".join(f"{k}: {1000 * np.median(v):.0f} ms median ({1000 * min(v):.0f} ms "
                                          "best)" for k, v in secs.items()) + "."]
    dest = args.results or ROOT / "benchmarks" / "results" / "masks-people.md"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
