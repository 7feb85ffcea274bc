"""Painting at a reduced scale with guided upsampling (guided.py): speed and content kept, against full resolution.

  python benchmarks/bench_paint_scale.py                      # great-wave, a 1280x720 photo, scales 1, 0.5, 0.35
  python benchmarks/bench_paint_scale.py --filter starry-night --width 1920 --height 1080
  python benchmarks/bench_paint_scale.py --photos holdout       # scores averaged over quality.py's 8 held-out
                                                                # photos, each cropped and scaled to the size

For each paint scale: the median time of a whole picture's paint (network plus guided upsampling, the engine and
precision `auto` picks here, resolved once beforehand), and the content scores against the photo (SSIM and edge
correlation, metrics.py), each as a ratio to the full-resolution painting measured in the same run. The goal of
issue 16: >= 3x faster at 720p with the content scores within 5% of full resolution. Also writes
benchmarks/out/paint_scale.png (full | 0.5 | 0.35 crops side by side) to look at.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

from rotoscope import metrics  # noqa: E402
from rotoscope.config import ApplySettings  # noqa: E402
from rotoscope.filter import load_filter  # noqa: E402
from rotoscope.images import load_rgb  # noqa: E402
from rotoscope.stylize import resolve_for, stylize_image  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def photo(width: int, height: int, name: str = "new_york_taxis.jpg") -> Image.Image:
    """A shared photo cropped and scaled to the frame size (a synthetic one when the data is absent)."""
    src = SHARED / "content" / name
    img = load_rgb(src) if src.exists() else Image.effect_mandelbrot((width, height), (-2, -1.2, 1, 1.2), 60).convert("RGB")
    w, h = img.size
    s = max(width / w, height / h)
    img = img.resize((round(w * s), round(h * s)), Image.LANCZOS)
    w, h = img.size
    return img.crop(((w - width) // 2, (h - height) // 2, (w - width) // 2 + width, (h - height) // 2 + height))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--filter", default="great-wave")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--scales", default="1,0.5,0.35")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--photos", default="new_york_taxis.jpg",
                    help="comma-separated shared photos, or 'holdout' (quality.py's 8); scores are their mean, times "
                         "the first one's")
    a = ap.parse_args()
    print(describe())
    filt = load_filter(a.filter)
    if a.photos == "holdout":
        from quality import HOLDOUT

        names = list(HOLDOUT)
    else:
        names = a.photos.split(",")
    imgs = [photo(a.width, a.height, n) for n in names]
    img = imgs[0]
    rows, shown = [], []
    for scale in (float(x) for x in a.scales.split(",")):
        st = resolve_for(filt, ApplySettings(paint_scale=scale), img)
        stylize_image(filt, img, st)  # warm-up: engine compile for this shape
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            out = stylize_image(filt, img, st)
            times.append(time.perf_counter() - t)
        scores = [metrics.content_scores(metrics.as_array(o), metrics.as_array(i))
                  for i, o in zip(imgs, [out] + [stylize_image(filt, i, st) for i in imgs[1:]])]
        ssim, edges = (statistics.mean(c[k] for c in scores) for k in ("ssim", "edges"))
        rows.append((scale, statistics.median(times), ssim, edges, st.engine, st.precision))
        shown.append(out)
    base = rows[0]
    print(f"\nfilter {a.filter}, {a.width}x{a.height}, median of {a.repeats}; ratios against paint scale {base[0]}; "
          f"scores: mean over {len(imgs)} photo(s) ({', '.join(names)})")
    print(f"{'scale':>6} {'engine':>14} {'ms':>8} {'speed-up':>9} {'ssim':>7} {'ssim/full':>10} {'edges':>7} {'edges/full':>11}")
    for scale, t, ssim, edges, engine, precision in rows:
        print(f"{scale:>6} {engine + ' ' + precision:>14} {t * 1000:>8.0f} {base[1] / t:>8.2f}x {ssim:>7.3f} "
              f"{ssim / base[2]:>10.3f} {edges:>7.3f} {edges / base[3]:>11.3f}")
    crop = (a.width // 3, a.height // 4, a.width // 3 + 400, a.height // 4 + 300)
    sheet = Image.new("RGB", (400 * (len(shown) + 1) + 10 * len(shown), 300), "white")
    for i, im in enumerate([img] + shown):
        sheet.paste(im.crop(crop), (i * 410, 0))
    out = ROOT / "benchmarks" / "out" / "paint_scale.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(f"wrote {out} (photo | " + " | ".join(f"scale {r[0]}" for r in rows) + ", a 400x300 crop)")


if __name__ == "__main__":
    main()
