"""Reading a clip's frames as the painter gets them (video.decode): an everyday 8-bit clip against 10-bit SDR and
HDR ones, whose colours are converted to BT.709 SDR (video/source.py, colour_plan).

  python benchmarks/bench_decode.py                    # 1280x720 and 1920x1080, 48 frames each
  python benchmarks/bench_decode.py --sizes 3840x2160 --frames 24

The clips are made here from a shared photo panning sideways (H.264, CRF 12): 8-bit BT.709; 10-bit BT.709; 10-bit
HLG BT.2020 and PQ BT.2020 (the photo's light re-encoded as a phone would store it, SDR white at HLG 75% and PQ
203 nits). For each: the first frame's time (which carries the conversion's set-up), the mean of the others, and the
mean as a ratio to the 8-bit clip's in the same run. Also writes benchmarks/out/decode_hdr.png (the photo | the HLG
clip as rotoscope reads it | as FFmpeg's plain numbers) to look at. The time to open each clip (probe, where an
HDR clip's conversion is tried once a process) is shown too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_paint_scale import photo  # noqa: E402
from machine import describe  # noqa: E402

from rotoscope import video  # noqa: E402

BT709_TO_2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]])
# name: (bits, (matrix, primaries, transfer) in FFmpeg's numbers)
CLIPS = {"8-bit BT.709": (8, (1, 1, 1)), "10-bit BT.709": (10, (1, 1, 1)), "10-bit HLG BT.2020": (10, (9, 9, 18)),
         "10-bit PQ BT.2020": (10, (9, 9, 16))}


def encoded(srgb: np.ndarray, transfer: int) -> tuple[np.ndarray, str]:
    """Photo pixels in [0, 1] -> the signal a camera would store for that transfer, and the YUV matrix to use."""
    if transfer not in (16, 18):
        return srgb, "709"
    lin = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    lin = np.clip(lin @ BT709_TO_2020.T, 0, None)
    if transfer == 18:  # HLG OETF on scene light, SDR white at 75%
        e = lin * 0.265
        a, b, c = 0.17883277, 0.28466892, 0.55991073
        return np.where(e <= 1 / 12, np.sqrt(3 * e), a * np.log(np.maximum(12 * e - b, 1e-9)) + c), "2020"
    y = (lin * 203 / 10000) ** 0.1593017578125  # PQ inverse EOTF, SDR white at 203 nits
    return ((0.8359375 + 18.8515625 * y) / (1 + 18.6875 * y)) ** 78.84375, "2020"


def make_clip(path: Path, img: Image.Image, frames: int, bits: int, tags: tuple[int, int, int]) -> Path:
    import av

    w, h = img.size[0] - 4 * frames, img.size[1]
    sig, matrix = encoded(np.asarray(img) / 255.0, tags[2])
    kr, kb = {"709": (0.2126, 0.0722), "2020": (0.2627, 0.0593)}[matrix]
    y = kr * sig[..., 0] + (1 - kr - kb) * sig[..., 1] + kb * sig[..., 2]
    cb, cr = (sig[..., 2] - y) / (2 * (1 - kb)), (sig[..., 0] - y) / (2 * (1 - kr))
    top = 1 << (bits - 8)
    fmt = "yuv420p" if bits == 8 else "yuv420p10le"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"crf": "12", "bf": "0"})
        s.width, s.height, s.pix_fmt = w, h, fmt
        cc = s.codec_context
        cc.color_range, (cc.colorspace, cc.color_primaries, cc.color_trc) = 1, tags
        for k in range(frames):
            x = 4 * k
            planes = [(16 + 219 * y[:, x:x + w]) * top, ((128 + 224 * cb) * top)[::2, x:x + w:2],
                      ((128 + 224 * cr) * top)[::2, x:x + w:2]]
            f = av.VideoFrame(w, h, fmt)
            for plane, values in zip(f.planes, planes):
                rows = np.frombuffer(plane, np.uint8 if bits == 8 else np.uint16).reshape(plane.height, -1)
                rows[:, :values.shape[1]] = np.clip(np.round(values), 0, 255 * top)
            f.pts, f.color_range = k, 1
            f.colorspace, f.color_primaries, f.color_trc = tags
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def timed_decode(path: Path) -> tuple[float, list[float], np.ndarray, str]:
    t = time.perf_counter()
    src = video.probe(path)  # an HDR clip's conversion is tried here first (source._refused)
    opened = time.perf_counter() - t
    times, first = [], None
    t = time.perf_counter()
    for _, _, rgb in video.decode(src, src.width, src.height, print):
        now = time.perf_counter()
        times.append(now - t)
        first = rgb if first is None else first
        t = now
    return opened, times, first, src.colour


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1280x720,1920x1080")
    ap.add_argument("--frames", type=int, default=48)
    a = ap.parse_args()
    print(describe())
    print(f"\n{a.frames} frames a clip; open = probe's ms (an HDR clip's conversion tried); first = the first "
          "frame's ms (the conversion's set-up); then = mean ms of the others; ratio = then / the 8-bit clip's")
    print(f"{'size':>10} {'clip':>20} {'open ms':>8} {'first ms':>9} {'then ms':>8} {'ratio':>6}  said")
    with tempfile.TemporaryDirectory() as tmp:
        for size in a.sizes.split(","):
            w, h = map(int, size.split("x"))
            img = photo(w + 4 * a.frames, h, "beach_city_sunset.jpg")
            base = None
            for name, (bits, tags) in CLIPS.items():
                clip = make_clip(Path(tmp) / f"{name.replace(' ', '_')}.mp4", img, a.frames, bits, tags)
                video.source._refused.cache_clear()  # each clip pays its own trial, as a new process would
                opened, times, first, said = timed_decode(clip)
                then = float(np.mean(times[1:])) * 1000
                base = base or then
                print(f"{size:>10} {name:>20} {opened * 1000:>8.0f} {times[0] * 1000:>9.0f} {then:>8.1f} "
                      f"{then / base:>6.2f}  "
                      f"{said.split(':')[1].strip() if said else '-'}")
                if name.startswith("10-bit HLG") and size == a.sizes.split(",")[0]:
                    import av

                    with av.open(str(clip)) as c:
                        raw = next(c.decode(video=0)).to_ndarray(format="rgb24")
                    shown = [np.asarray(img.crop((0, 0, w, h))), first, raw]
                    out = ROOT / "benchmarks" / "out" / "decode_hdr.png"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.concatenate([s[:, :w // 2] for s in shown], 1)).save(out)
                    print(f"{'':>10} wrote {out} (photo | HLG as rotoscope reads it | as plain numbers, left halves)")


if __name__ == "__main__":
    main()
