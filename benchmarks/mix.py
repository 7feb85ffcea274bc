"""Mixing filters: weight interpolation against blending the painted outputs, by eye and by number.

For one pair of shipped filters (default great-wave and starry-night) and two held-out photos, paint mixes from
0 to 1 both ways and write
  docs/mix.jpg                     rows: photo x method, columns: the second filter's share 0, 0.25, ... 1
  benchmarks/results/mix.md        per method and share, means over the photos: colour, texture and Gram
                                   distances from each artwork, SSIM to the photo, stroke contrast

  python benchmarks/mix.py
  python benchmarks/mix.py --pair the-scream,la-calanque --photos kodim05.png,tabby_cat.jpg --size 384
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rotoscope import metrics  # noqa: E402
from rotoscope.config import ApplySettings  # noqa: E402
from rotoscope.filter import load_filter  # noqa: E402
from rotoscope.images import load_rgb, resize_longer  # noqa: E402
from rotoscope.mix import load_mix  # noqa: E402
from rotoscope.stylize import stylize_image  # noqa: E402

DATA = next((p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()), None)
ARTWORKS = {"great-wave": "hokusai_great_wave.jpg", "starry-night": "van_gogh_starry_night.jpg",
            "the-scream": "munch_the_scream.jpg", "composition-vii": "kandinsky_composition_vii.jpg",
            "la-calanque": "signac_la_calanque.jpg", "hibiscus-parrots": "tiffany_hibiscus_and_parrots.png"}
SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)
METHODS = ("weights", "outputs")


def stroke_contrast(img) -> float:
    """Mean gradient magnitude of the luminance: how strongly strokes and edges stand out (a blend of two
    unrelated stroke patterns averages them away)."""
    gx, gy = metrics._sobel(metrics.luminance(metrics.as_array(img)))
    return float(np.hypot(gx, gy).mean() * 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="great-wave,starry-night")
    ap.add_argument("--photos",
                    default="portrait_smiling_woman.png,golden_gate_bridge_fog.jpg,tabby_cat.jpg,kodim05.png",
                    help="photos in ../shared/data/content (held out of the shipped filters' training)")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--sheet", type=Path, default=ROOT / "docs" / "mix.jpg")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "mix.md")
    args = ap.parse_args()
    if DATA is None:
        sys.exit("needs ../shared/data (content photos and the artworks)")
    a, b = args.pair.split(",")
    photos = [resize_longer(load_rgb(DATA / "content" / p), args.size) for p in args.photos.split(",")]
    arts = {n: resize_longer(load_rgb(DATA / "styles" / ARTWORKS[n]), args.size) for n in (a, b)}
    art_gram = {n: metrics.gram_matrices(im) for n, im in arts.items()}
    st = ApplySettings(engine="torch", precision="fp32")
    for f in (a, b):
        load_filter(f)  # unknown names fail here, before any painting
    rows: list[dict] = []
    tiles: dict[tuple, Image.Image] = {}
    t0 = time.perf_counter()
    for method in METHODS:
        for s in SHARES:
            filt = load_mix(f"{a}:{1 - s:g}+{b}:{s:g}", method)
            for k, photo in enumerate(photos):
                out = stylize_image(filt, photo, st)
                tiles[(k, method, s)] = out
                g = metrics.gram_matrices(out)
                rows.append({"method": method, "share": s, "photo": k,
                             **{f"colour_{n}": metrics.color_distance(out, arts[n]) for n in (a, b)},
                             **{f"texture_{n}": metrics.texture_distance(out, arts[n]) for n in (a, b)},
                             **{f"gram_{n}": metrics.gram_distance_from(g, art_gram[n]) for n in (a, b)},
                             "ssim": metrics.ssim_luminance(out, photo), "strokes": stroke_contrast(out)})
    seconds = time.perf_counter() - t0
    write_sheet(args.sheet, photos, tiles, a, b)
    write_table(args.results, rows, a, b, args, seconds)
    print(f"wrote {args.sheet} and {args.results} ({seconds:.0f} s)")


def write_sheet(path: Path, photos, tiles, a: str, b: str) -> None:
    w, h = tiles[(0, METHODS[0], 0.0)].size
    th = 200
    scale = th / h
    tw = round(w * scale)
    label_w, head = 150, 24
    rows = [(k, m) for k in range(len(photos)) for m in METHODS]
    sheet = Image.new("RGB", (label_w + (len(SHARES) + 1) * (tw + 4), head + len(rows) * (th + 4)), "white")
    d = ImageDraw.Draw(sheet)
    d.text((label_w, 6), "photo", fill="black")
    for j, s in enumerate(SHARES):
        d.text((label_w + (j + 1) * (tw + 4), 6), f"{a} {1 - s:g} + {b} {s:g}", fill="black")
    for r, (k, m) in enumerate(rows):
        y = head + r * (th + 4)
        d.text((6, y + th // 2), f"photo {k + 1}: {m}", fill="black")
        sheet.paste(photos[k].resize((tw, th)), (label_w, y))
        for j, s in enumerate(SHARES):
            sheet.paste(tiles[(k, m, s)].convert("RGB").resize((tw, th)), (label_w + (j + 1) * (tw + 4), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, quality=88, optimize=True)  # a JPEG in docs/ (the PNG is 3 MB); Pillow ignores it for PNG


def write_table(path: Path, rows: list[dict], a: str, b: str, args, seconds: float) -> None:
    cols = [f"colour_{a}", f"colour_{b}", f"texture_{a}", f"texture_{b}", f"gram_{a}", f"gram_{b}", "ssim",
            "strokes"]
    lines = [f"# Mixing filters: {a} + {b}", "",
             f"{dt.date.today()}, `python benchmarks/mix.py --pair {args.pair} --photos {args.photos} --size "
             f"{args.size}`; means over the {len(args.photos.split(','))} photos; {seconds:.0f} s on this machine. "
             "Share = the second filter's weight. Distances from each artwork (lower = closer): colour (Lab "
             "sliced Wasserstein), texture (gradient histograms), Gram (random backbone); SSIM to the photo "
             "(content kept); strokes = mean gradient magnitude (contrast of strokes and edges).", "",
             "| method | share | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 2)]
    for m in METHODS:
        for s in SHARES:
            sel = [r for r in rows if r["method"] == m and r["share"] == s]
            lines.append(f"| {m} | {s:g} | " + " | ".join(f"{np.mean([r[c] for r in sel]):.3f}" for c in cols)
                         + " |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
