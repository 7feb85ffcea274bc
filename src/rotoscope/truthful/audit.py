"""What is in a training set, before training on it: sizes, light, colour, duplicates, and how narrow it is.

A filter learns from its photos only. If they are all bright daylight scenes, nothing in training tells the
network what to do with a night scene (the tank detector that learned "bright daylight"). The audit measures
simple, explainable image statistics, finds near-duplicates with a perceptual hash, and says in plain words
when the set is narrow or repetitive. `rotoscope train` stores its summary in the filter card.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..data import FLAT, NEAR_DUPLICATE_BITS, alike_bits, alike_groups, dhashes, hamming, is_flat
from ..errors import RotoscopeError
from ..images import IMAGE_SUFFIXES, load_rgb
from .page import AUDIT_CSS, document, esc, items, page_path, png_bytes, png_img, pyplot

STAT_SIDE = 128  # statistics are measured on a copy whose longer side is this: fast, and size-independent

# Thresholds behind the plain-language labels. Mean luma (Rec. 601, 0..1) of a typical outdoor daylight photo
# is 0.4-0.6, of a night street 0.05-0.2; these cut-offs are deliberately coarse and are named "-like".
NIGHT_BELOW = 0.25
DAY_ABOVE = 0.40
GRAY_BELOW = 0.02  # mean |R-G| + |G-B| below this: a grayscale picture stored as RGB...
# ...and below this share of its mean luma: a dark colour photo has small channel differences too (a darkened tabby
# cat, saturation 0.22: 0.016, 0.17 of its luma; the shared set's grey storm scene 0.054, its grayscale city 0)
GRAY_OF_LUMA = 0.08
FEW_PHOTOS = 8
SMALL_SIDE = 256  # shorter side below this: smaller than the default training crop, will be upscaled
EXTREME_ASPECT = 3.0

# the statistics that describe a photo; also the coordinates of the out-of-distribution check (confidence.py)
STATS = ("brightness", "contrast", "colourfulness", "saturation", "warmth", "edges", "dark_share", "bright_share")
STAT_ABOUT = {
    "brightness": "mean luma, 0 black .. 1 white",
    "contrast": "standard deviation of luma",
    "colourfulness": "Hasler-Süsstrunk colourfulness, 0 gray .. ~110 extremely colourful",
    "saturation": "mean HSV saturation",
    "warmth": "mean red minus mean blue: >0 warm light, <0 cool light",
    "cct_kelvin": "correlated colour temperature of the average colour (McCamy), in kelvin",
    "edges": "mean gradient magnitude of luma: how much fine detail",
    "dark_share": "share of pixels with luma < 0.15",
    "bright_share": "share of pixels with luma > 0.85",
}


@dataclass
class PhotoStats:
    """The measured statistics of one photo."""

    name: str
    width: int
    height: int
    brightness: float
    contrast: float
    colourfulness: float
    saturation: float
    warmth: float
    cct_kelvin: float
    edges: float
    dark_share: float
    bright_share: float
    grayscale: bool
    dhash: str  # 64-bit difference hash, hex
    dhash_mirrored: str = ""  # the mirror image's: a flipped copy is a near-duplicate too

    @property
    def light(self) -> str:
        if self.brightness < NIGHT_BELOW:
            return "night-like"
        return "daylight-like" if self.brightness >= DAY_ABOVE else "dim"

    def vector(self) -> np.ndarray:
        return np.array([getattr(self, k) for k in STATS], dtype=np.float64)


@dataclass
class Audit:
    """The audit of a photo set: per-photo statistics, odd files, near-duplicate pairs and warnings."""

    source: str
    photos: list[PhotoStats]
    odd: list[tuple[str, str]] = field(default_factory=list)  # (file name, why it is odd)
    duplicates: list[tuple[str, str, int]] = field(default_factory=list)  # (a, b, Hamming distance)
    warnings: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.photos)

    def column(self, key: str) -> np.ndarray:
        return np.array([getattr(p, key) for p in self.photos], dtype=np.float64)

    def light_split(self) -> dict[str, int]:
        split = {"night-like": 0, "dim": 0, "daylight-like": 0}
        for p in self.photos:
            split[p.light] += 1
        return split

    def summary(self) -> dict:
        """Compact, JSON-ready summary (for the card): distributions as quantiles, not every photo."""
        aspects = [p.width / p.height for p in self.photos]
        dist = {}
        for key in STATS + ("cct_kelvin",):
            v = self.column(key)
            dist[key] = {q: round(float(x), 4) for q, x in
                         zip(("min", "p10", "median", "p90", "max"), np.percentile(v, [0, 10, 50, 90, 100]))}
        return {
            "source": self.source,
            "count": self.count,
            "size_min": [min(p.width for p in self.photos), min(p.height for p in self.photos)],
            "size_max": [max(p.width for p in self.photos), max(p.height for p in self.photos)],
            "aspect_min": round(min(aspects), 3), "aspect_max": round(max(aspects), 3),
            "distributions": dist,
            "light_split": self.light_split(),
            "grayscale": sum(p.grayscale for p in self.photos),
            "odd": [list(o) for o in self.odd[:20]],
            "near_duplicate_pairs": [list(d) for d in self.duplicates[:20]],
            "near_duplicate_photos": len(duplicate_members(self.duplicates)),
            "diversity": diversity(self),
            "warnings": list(self.warnings),
        }


# ---------------------------------------------------------------- measuring one photo


def _small(img: Image.Image) -> np.ndarray:
    img = img.convert("RGB")
    if max(img.size) > STAT_SIDE:
        s = STAT_SIDE / max(img.size)
        img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BILINEAR)
    return np.asarray(img, dtype=np.float64) / 255.0


def cct_kelvin(rgb_mean: np.ndarray) -> float:
    """Colour temperature of an average sRGB colour: linearise, to CIE xy, McCamy's cubic; clipped to 1000-25000 K."""
    c = np.asarray(rgb_mean, dtype=np.float64)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    x_, y_, z_ = m @ lin
    s = x_ + y_ + z_
    if s <= 1e-9:
        return 6500.0  # black has no colour temperature; call it neutral
    x, y = x_ / s, y_ / s
    n = (x - 0.3320) / (0.1858 - y)
    return float(np.clip(449 * n ** 3 + 3525 * n ** 2 + 6823.3 * n + 5520.33, 1000, 25000))


def measure(name: str, img: Image.Image, size: tuple[int, int] | None = None) -> PhotoStats:
    """All statistics of one photo. `size` is the original size when `img` is a resized copy."""
    a = _small(img)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    rg, yb = r - g, 0.5 * (r + g) - b
    colourful = 255 * (np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    chroma = np.abs(rg).mean() + np.abs(g - b).mean()
    plain, mirrored = dhashes(img)
    mx, mn = a.max(-1), a.min(-1)
    sat = np.where(mx > 1e-6, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    # np.gradient needs two samples a side: a 1-pixel-wide picture (1x1, 70000x10 shrunk) is edge-padded to two
    gy, gx = np.gradient(np.pad(luma, [(0, max(0, 2 - n)) for n in luma.shape], mode="edge"))
    w, h = size or img.size
    return PhotoStats(
        name=name, width=int(w), height=int(h),
        brightness=float(luma.mean()), contrast=float(luma.std()), colourfulness=float(colourful),
        saturation=float(sat.mean()), warmth=float(r.mean() - b.mean()),
        cct_kelvin=cct_kelvin(a.reshape(-1, 3).mean(0)), edges=float(np.hypot(gx, gy).mean()),
        dark_share=float((luma < 0.15).mean()), bright_share=float((luma > 0.85).mean()),
        grayscale=bool(chroma < GRAY_BELOW and chroma <= GRAY_OF_LUMA * luma.mean()),
        dhash=f"{plain:016x}", dhash_mirrored=f"{mirrored:016x}")


# ---------------------------------------------------------------- the whole set


def near_duplicates(photos: list[PhotoStats], bits: int = NEAR_DUPLICATE_BITS) -> list[tuple[str, str, int]]:
    """Every pair whose perceptual hashes differ in at most `bits` of 64 bits, either one mirrored."""
    hashes = [(int(p.dhash, 16), int(p.dhash_mirrored or p.dhash, 16)) for p in photos]
    pairs = []
    for i in range(len(photos)):
        for j in range(i + 1, len(photos)):
            d = alike_bits(hashes[i], hashes[j])
            if d <= bits:
                pairs.append((photos[i].name, photos[j].name, d))
    return pairs


def duplicate_members(pairs) -> set[str]:
    """Photos that repeat another: in each group of look-alikes, every member but the first by name."""
    names = sorted({n for a, b, _ in pairs for n in (a, b)})
    return {n for group in alike_groups(names, pairs) for n in group[1:]}


def diversity(audit: Audit) -> dict:
    """How spread out the set is: mean pairwise hash distance (32 of 64 bits is 'unrelated') and stat ranges."""
    hashes = [int(p.dhash, 16) for p in audit.photos]
    pair = [hamming(hashes[i], hashes[j]) for i in range(len(hashes)) for j in range(i + 1, len(hashes))]
    b = audit.column("brightness")
    c = audit.column("colourfulness")
    return {"mean_hash_distance": round(float(np.mean(pair)), 1) if pair else None,
            "brightness_range": [round(float(b.min()), 3), round(float(b.max()), 3)],
            "colourfulness_range": [round(float(c.min()), 1), round(float(c.max()), 1)],
            "light_kinds": sum(1 for v in audit.light_split().values() if v)}


def narrowness_warnings(audit: Audit) -> list[str]:
    """Plain-language warnings when the set is small, narrow or repetitive."""
    n = audit.count
    out = []
    if n < FEW_PHOTOS:
        out.append(f"only {n} photo{'s' if n != 1 else ''}: a filter learns from very little and may not "
                   f"generalise; {FEW_PHOTOS * 3} or more varied photos are better")
    split = audit.light_split()
    if n >= 2:
        if split["daylight-like"] == n:
            out.append(f"all {n} photos are bright daylight-like scenes: a filter trained on them may behave "
                       "differently on night scenes")
        elif split["night-like"] == n:
            out.append(f"all {n} photos are dark, night-like scenes: a filter trained on them may behave "
                       "differently on daylight scenes")
        elif split["night-like"] == 0:
            out.append(f"none of the {n} photos is a dark, night-like scene: check the filter on night scenes "
                       "before trusting it on them")
        elif n >= 10 and split["night-like"] < 0.1 * n:
            k = split["night-like"]
            out.append(f"only {k} of the {n} photos {'is a dark, night-like scene' if k == 1 else 'are dark, night-like scenes'}: "
                       "the filter saw few of them, check it on night scenes")
        gray = sum(p.grayscale for p in audit.photos)
        if gray == n:
            out.append(f"all {n} photos are grayscale: the filter never saw colour photos")
        elif gray > n / 2:
            out.append(f"{gray} of {n} photos are grayscale: the filter saw few colour photos")
        warm = audit.column("warmth")
        if (warm > 0.05).all():
            out.append(f"all {n} photos have warm (reddish) light: cool or blue scenes are outside what it saw")
        elif (warm < -0.05).all():
            out.append(f"all {n} photos have cool (bluish) light: warm scenes are outside what it saw")
        col = audit.column("colourfulness")
        if gray < n and col.max() - col.min() < 10:
            out.append(f"the {n} photos are all about equally colourful (colourfulness "
                       f"{col.min():.0f}-{col.max():.0f}): the set is narrow in colour")
    dup = duplicate_members(audit.duplicates)
    if dup and len(dup) >= max(1, 0.2 * n):
        out.append(f"{len(dup)} of {n} photos are near-duplicates of another photo in the set: the set is "
                   "repetitive, so the filter sees fewer distinct scenes than the count suggests")
    return out


def audit_images(images: list[tuple[str, Image.Image]], source: str = "", sizes: dict | None = None,
                 odd: list[tuple[str, str]] | None = None) -> Audit:
    """Audit named images (already loaded). `sizes` gives original sizes when the images are resized copies."""
    if not images:
        raise RotoscopeError("nothing to audit: no photos")
    sizes = sizes or {}
    photos = [measure(name, img, sizes.get(name)) for name, img in images]
    odd = list(odd or [])
    for p in photos:
        if p.grayscale:
            odd.append((p.name, "grayscale"))
        if min(p.width, p.height) < SMALL_SIDE:
            odd.append((p.name, f"small ({p.width}x{p.height}): upscaled for training, may look soft"))
        if max(p.width, p.height) / max(1, min(p.width, p.height)) > EXTREME_ASPECT:
            odd.append((p.name, f"extreme aspect ratio ({p.width}x{p.height}): training uses square crops"))
    audit = Audit(source, photos, odd, near_duplicates(photos))
    audit.warnings = narrowness_warnings(audit)
    return audit


def audit_folder(folder: str | os.PathLike | None) -> Audit:
    """Audit a folder of photos, or the built-in sample set when folder is None. Unreadable files are 'odd'."""
    if folder is None:
        from ..data import sample_photos

        return audit_images([(p.name, p.image) for p in sample_photos()], "scikit-image sample photos")
    folder = Path(folder)
    if folder.is_file():
        raise RotoscopeError(f"{folder} is one file: the audit reads a folder of photos (the one training would read "
                             f"with --photos)")
    if not folder.is_dir():
        raise RotoscopeError(f"photos folder not found: {folder}")
    images, odd = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            odd.append((path.name, "not an image file (ignored by training)"))
            continue
        try:
            img = load_rgb(path)
        except RotoscopeError as e:
            odd.append((path.name, f"unreadable ({str(e).split(': ', 1)[-1]})"))
            continue
        if is_flat(img):
            odd.append((path.name, f"{FLAT} (skipped by training)"))
            continue
        images.append((path.name, img))
    if not images:
        raise RotoscopeError(f"no usable image in {folder}" + (f" ({len(odd)} odd files)" if odd else ""))
    return audit_images(images, str(folder), odd=odd)


# ---------------------------------------------------------------- reporting


def format_audit(audit: Audit) -> str:
    """The terminal summary."""
    s = audit.summary()
    d = s["distributions"]
    lines = [f"photos        {s['count']} from {s['source']}",
             f"sizes         {s['size_min'][0]}x{s['size_min'][1]} .. {s['size_max'][0]}x{s['size_max'][1]}, "
             f"aspect {s['aspect_min']:.2f} .. {s['aspect_max']:.2f}"]
    for key in ("brightness", "contrast", "colourfulness", "saturation", "warmth", "cct_kelvin", "edges"):
        q = d[key]
        fmt = "{:.0f}" if key in ("cct_kelvin", "colourfulness") else "{:.3f}"
        lines.append(f"{key:<14}min {fmt.format(q['min'])}  median {fmt.format(q['median'])}  "
                     f"max {fmt.format(q['max'])}   ({STAT_ABOUT[key]})")
    sp = s["light_split"]
    lines.append(f"light         {sp['daylight-like']} daylight-like, {sp['dim']} dim, {sp['night-like']} night-like "
                 f"(mean luma >= {DAY_ABOVE}, between, < {NIGHT_BELOW})")
    lines.append(f"grayscale     {s['grayscale']}")
    div = s["diversity"]
    lines.append(f"duplicates    {len(audit.duplicates)} near-duplicate pair(s) (dHash distance <= "
                 f"{NEAR_DUPLICATE_BITS}/64); mean distance between photos {div['mean_hash_distance']}/64 "
                 "(about 32 means unrelated)")
    for a, b, dist in audit.duplicates[:10]:
        lines.append(f"              {a} ~ {b} ({dist})")
    for name, why in audit.odd[:20]:
        lines.append(f"odd file      {name}: {why}")
    for w in audit.warnings:
        lines.append(f"warning       {w}")
    if not audit.warnings:
        lines.append("warnings      none: the set is not obviously narrow or repetitive (the audit cannot see "
                     "subject matter, only light, colour and detail)")
    return "\n".join(lines)


# Each histogram's axis: the statistic's whole usual range, so that a set of near-identical photos is one tall bar
# (on an axis fitted to the data, 0.146-0.158 looked as spread as 0-1), and an axis label in words
HISTOGRAMS = {"brightness": ((0, 1), "mean luma: 0 black, 1 white"),
              "contrast": ((0, 0.4), "spread of luma (standard deviation)"),
              "colourfulness": ((0, 120), "colourfulness: 0 grey, ~110 extremely colourful"),
              "saturation": ((0, 1), "mean saturation: 0 grey, 1 pure colours"),
              "cct_kelvin": ((1500, 12000), "colour temperature of the average colour, K (low: warm)"),
              "edges": ((0, 0.12), "fine detail (mean luma gradient)")}


def histogram_png(audit: Audit, width: float = 11.0) -> bytes:
    """A grid of histograms of each statistic over its usual range (HISTOGRAMS), as PNG bytes."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    fig, axes = pyplot().subplots(2, 3, figsize=(width, width * 0.55), dpi=90)
    for ax, (key, ((lo, hi), label)) in zip(axes.flat, HISTOGRAMS.items()):
        v = np.clip(audit.column(key), lo, hi)  # beyond the usual range: counted in the end bins
        ax.hist(v, bins=20, range=(lo, hi), color="#4a6fa5", edgecolor="white")
        ax.set_title(key.replace("_", " ").replace("cct kelvin", "colour temperature"), fontsize=10)
        ax.set_xlabel(label, fontsize=8)
        ax.set_xlim(lo, hi)
        ax.tick_params(labelsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # photos are counted whole
        if key == "cct_kelvin":
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
        if key == "brightness":
            ax.axvline(NIGHT_BELOW, color="#333", ls="--", lw=1, label=f"night-like below {NIGHT_BELOW}")
            ax.axvline(DAY_ABOVE, color="#c90", ls="--", lw=1, label=f"daylight-like above {DAY_ABOVE}")
            ax.legend(fontsize=7, loc="upper right", frameon=False)
    axes.flat[0].set_ylabel("photos")
    axes.flat[3].set_ylabel("photos")
    fig.tight_layout()
    return png_bytes(fig)


def audit_html_section(audit: Audit, text: bool = True) -> str:
    """The audit as an HTML fragment (histograms embedded), shared by the audit page and `rotoscope explain`."""
    img = png_img(histogram_png(audit), "histograms of the photo statistics")
    if not text:
        return img
    warn = items(audit.warnings) or "<li>none</li>"
    return f"{img}<h3>Warnings</h3><ul class=warn>{warn}</ul><pre>{esc(format_audit(audit))}</pre>"


def write_audit_page(audit: Audit, path: str | os.PathLike) -> Path:
    """A self-contained HTML page (or, for a .png path, just the histograms)."""
    from ..paths import atomic_path

    path = page_path(path, other=(".png",))
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".png":
            tmp.write_bytes(histogram_png(audit))
        else:
            body = (f"<h1>Photo set audit</h1><p>{audit.count} photos from {esc(audit.source)}</p>"
                    f"{audit_html_section(audit)}")
            tmp.write_text(document(f"rotoscope audit: {audit.source}", AUDIT_CSS, body), encoding="utf-8")
    return path


def stats_dict(p: PhotoStats) -> dict:
    return asdict(p)


def audit_photoset(data) -> Audit:
    """Audit the photos a training run loaded (data.PhotoSet): training and held-out photos, original sizes."""
    from ..images import to_image

    images = [(n, to_image(t)) for n, t in zip(data.train_names + data.holdout_names, data.train + data.holdout)]
    odd = [(n, f"{why} (skipped)") for n, why in data.skipped.items()]
    return audit_images(images, data.source, sizes=data.sizes, odd=odd)
