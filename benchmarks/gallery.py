"""The README's gallery: every shipped filter on photos none of them was trained on, as one committed JPEG.

  python benchmarks/gallery.py                      # -> docs/gallery.jpg
  python benchmarks/gallery.py --arch lite          # the lite versions -> docs/gallery-lite.jpg
  python benchmarks/gallery.py --photos 3 --cell 180

One row per shipped filter: its artwork (from ../shared/data/styles, or the poster drawn by rotoscope.demo), then
the filter applied at longer side --size to the held-out photos of benchmarks/quality.py (never in any filter's
training set). Labels give the filter's name and its card's backbone, steps, style term, content weight and layer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import HOLDOUT, SHARED  # noqa: E402

from rotoscope.config import TrainConfig, with_unrecorded  # noqa: E402
from rotoscope.filter import SHIPPED_DIR, load_filter_file, read_card  # noqa: E402
from rotoscope.images import load_rgb, resize_longer  # noqa: E402
from rotoscope.stylize import ApplySettings, stylize_image  # noqa: E402

# the photos shown: a face, fog, a street, machines, fur (held out of every shipped filter's training)
SHOWN = ("portrait_smiling_woman.png", "golden_gate_bridge_fog.jpg", "new_york_taxis.jpg", "kodim05.png",
         "tabby_cat.jpg")


def artwork_of(card: dict) -> Image.Image | None:
    """The artwork a shipped filter was trained on: the shared file its card names, or the drawn poster."""
    src = (card.get("artwork") or {}).get("file") or ""
    if "poster" in src or "poster" in (card.get("artwork") or {}).get("title", "").lower():
        from rotoscope.demo import draw_poster

        return draw_poster()
    path = SHARED / "styles" / Path(src).name
    return load_rgb(path) if src and path.exists() else None


def fit(img: Image.Image, cell: int) -> Image.Image:
    """Centre-crop to a square cell: rows line up whatever the photos' shapes."""
    w, h = img.size
    s = min(w, h)
    return img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((cell, cell), Image.LANCZOS)


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=4)
    ap.add_argument("--cell", type=int, default=168)
    ap.add_argument("--size", type=int, default=512, help="longer side the photos are painted at")
    ap.add_argument("--arch", choices=("full", "lite"), default="full", help="which shipped networks to show")
    ap.add_argument("--out", type=Path, default=None, help="default: docs/gallery.jpg (lite: docs/gallery-lite.jpg)")
    a = ap.parse_args(argv)
    a.out = a.out or ROOT / "docs" / ("gallery.jpg" if a.arch == "full" else f"gallery-{a.arch}.jpg")
    assert set(SHOWN) <= set(HOLDOUT), "the gallery shows held-out photos only"
    photos = [resize_longer(load_rgb(SHARED / "content" / n), a.size) for n in SHOWN[:a.photos]]
    files = [f for f in sorted(SHIPPED_DIR.glob("*.safetensors"))
             if read_card(f)["architecture"].get("arch", "full") == a.arch]
    pad, label, cell = 6, 16, a.cell
    cols = 1 + len(photos)
    sheet = Image.new("RGB", (pad + cols * (cell + pad), pad + (len(files) + 1) * (cell + label + pad)), (250, 250, 248))
    d = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    d.text((pad, pad), "artwork | held-out photos:", fill=(40, 40, 40), font=font)
    for j, p in enumerate(photos):
        x = pad + (j + 1) * (cell + pad)
        d.text((x, pad), SHOWN[j].split(".")[0][:24], fill=(40, 40, 40), font=font)  # all held out
        sheet.paste(fit(p, cell), (x, pad + label))
    settings = ApplySettings(precision="fp32", engine="torch")
    default_style_size = TrainConfig().style_size  # labels name the style size only where a filter differs
    for i, f in enumerate(files, start=1):
        filt = load_filter_file(f)
        y = pad + i * (cell + label + pad)
        tr = with_unrecorded(filt.card.get("training", {}))
        net = tr.get("net", {})
        arch = "x".join(str(c) for c in net.get("channels", [])) if net else ""
        bb = filt.card.get("backbone", {})
        at = "+".join(bb.get("content_layers", []))  # where the content term compares: as much the recipe as its weight
        style_size = tr.get("style_size", default_style_size)
        d.text((pad, y), f"{filt.name}: {bb.get('name', '?')}, {tr.get('steps', '?')} steps, {arch}, "
               f"{tr.get('style_match', '?')} style term, content {tr.get('content_weight', '?')}"
               + (f" at {at}" if at else "")
               + (f", style size {style_size}" if style_size != default_style_size else ""),
               fill=(40, 40, 40), font=font)
        art = artwork_of(filt.card)
        if art is not None:
            sheet.paste(fit(art, cell), (pad, y + label))
        for j, p in enumerate(photos):
            sheet.paste(fit(stylize_image(filt, p, settings), cell), (pad + (j + 1) * (cell + pad), y + label))
        print(f"{filt.name} done", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(a.out, quality=88, optimize=True)  # JPEG: a PNG of painted photos is 4.5 MB
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.1f} MB)")
    return a.out


if __name__ == "__main__":
    main()
