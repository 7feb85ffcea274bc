"""Numbers beside the pictures: how much of the artwork's style a result carries, and how much of the photo.

Style fidelity (result vs artwork; 0 = same statistics, larger = further):
  gram      Gram-matrix distance in a fixed backbone (relative Frobenius error per style layer, averaged).
            The `random` VGG needs no download; `vgg16-hed` is what training optimises, so it is also reported
            when cached but it is the training loss's own yardstick, not an independent judge.
  color     sliced Wasserstein distance between the pixel colour distributions in CIE Lab, scaled so that a
            uniform colour shift by dE Lab units scores dE. Independent of any network; blind to layout.
  texture   distance between gradient-orientation and gradient-magnitude histograms of the luminance, at two
            scales (total-variation distance of histograms, 0..1). Independent of any network.
Recognisability (result vs a gallery of artworks): rank every artwork of the gallery by its colour distance, its
texture distance, and both (each distance divided by its median over the gallery, then summed); a filter whose
result puts its own artwork first is recognisably that artwork's filter. Network-free on purpose: a filter must
not be judged by the network it was trained against.
Content preservation (result vs photo; 1 = identical):
  ssim      SSIM of the luminance (Wang et al. 2004, Gaussian window, sigma 1.5).
  edges     Pearson correlation of the Sobel edge maps of the luminance (after a sigma-1 blur).

Every metric works on images resized to the same longer side first (`size`), so scores are comparable across
photos of any resolution.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import RotoscopeError
from .images import load_rgb, resize_longer

SCORE_SIZE = 384  # longer side at which results and artworks are compared (the training style_size)
# the least a picture may measure a side at the scoring size: SSIM's window is 7 px, and the loss networks' pooling
# needs 16 (a thinner photo is skipped, saying why, where it crashed inside the backbone)
MIN_SCORE_SIDE = 16
STYLE_METRICS = ("gram_random", "gram_vgg16-hed", "color", "texture")
CONTENT_METRICS = ("ssim", "edges")
COLOR_DIRECTIONS = 256
COLOR_QUANTILES = 256
ORIENT_BINS = 12
MAG_EDGES = np.concatenate([[0.0], np.geomspace(0.01, 2.0, 15), [np.inf]])  # Sobel magnitudes of Y in [0, 1]


# ---------------------------------------------------------------- helpers


def as_array(img) -> np.ndarray:
    """PIL image, (1,3,H,W)/(3,H,W) tensor or HxWx3 array (uint8 0-255, or float 0-1) -> float64 HxWx3 RGB in
    [0, 1]."""
    if isinstance(img, Image.Image):
        return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    if isinstance(img, torch.Tensor):
        t = img.detach().float().cpu()
        t = t[0] if t.dim() == 4 else t
        return t.permute(1, 2, 0).clamp(0, 1).numpy().astype(np.float64)
    if not isinstance(img, np.ndarray):
        raise RotoscopeError(f"expected a picture (PIL image, array or tensor), not {type(img).__name__}")
    if img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        raise RotoscopeError(f"expected an RGB image, got an array of shape {img.shape}")
    if img.dtype == np.uint8:  # a picture's own numbers: 65.0 was the colour distance of one from itself
        return img.astype(np.float64) / 255.0
    arr = img.astype(np.float64)
    # a little past 0 or 1 (a network's overshoot) is clipped; a picture on the 0-255 scale in floats is refused
    if not np.isfinite(arr).all() or arr.min() < -0.5 or arr.max() > 1.5:
        raise RotoscopeError("a float image array must hold values from 0 to 1 (uint8 holds 0-255)")
    return np.clip(arr, 0, 1)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma in [0, 1]."""
    return rgb @ np.array([0.299, 0.587, 0.114])


# ---------------------------------------------------------------- style: colour


@lru_cache(maxsize=4)
def _directions(n: int) -> np.ndarray:
    """n unit vectors spread evenly over the sphere (Fibonacci lattice): deterministic, no sampling noise."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    r = np.sqrt(1 - z * z)
    phi = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)


def lab_pixels(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(np.clip(rgb, 0, 1)).reshape(-1, 3)


def color_signature(img) -> np.ndarray:
    """(quantiles, directions): the Lab pixels' quantiles along fixed directions, what color_distance compares."""
    q = (np.arange(COLOR_QUANTILES) + 0.5) / COLOR_QUANTILES
    return np.quantile(lab_pixels(as_array(img)) @ _directions(COLOR_DIRECTIONS).T, q, axis=0)


def color_distance(a, b) -> float:
    """Sliced Wasserstein-1 distance of the Lab colour distributions, in Lab units.

    Each direction's 1-D Wasserstein distance is the mean gap between matched quantiles. Averaged over the sphere,
    a uniform shift by vector v gives |v|/2, so the result is doubled: a shift by dE scores dE.
    """
    return float(2 * np.abs(color_signature(a) - color_signature(b)).mean())


# ---------------------------------------------------------------- style: texture


def _sobel(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    return ndimage.sobel(y, axis=1, mode="reflect") / 8, ndimage.sobel(y, axis=0, mode="reflect") / 8


def gradient_histograms(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orientation histogram (weighted by gradient magnitude, orientation mod 180 deg) and magnitude histogram."""
    gx, gy = _sobel(luminance(rgb))
    mag = np.hypot(gx, gy) * 4  # x4: a black-white step edge scores about 1
    theta = np.mod(np.arctan2(gy, gx), np.pi)
    orient, _ = np.histogram(theta, bins=ORIENT_BINS, range=(0, np.pi), weights=mag)
    mags, _ = np.histogram(mag, bins=MAG_EDGES)
    orient = orient / orient.sum() if orient.sum() > 0 else np.full(ORIENT_BINS, 1 / ORIENT_BINS)
    return orient, mags / mags.sum()


def texture_distance(a, b) -> float:
    """Mean total-variation distance of gradient-orientation and -magnitude histograms, at full and half scale.

    0 = the same gradient statistics; 1 = disjoint (e.g. only vertical edges vs only horizontal ones, at every
    scale, and the same contrast).
    """
    return _texture_between(texture_signature(a), texture_signature(b))


def texture_signature(img) -> list[np.ndarray]:
    """The histograms texture_distance compares: orientation and magnitude, at full and half scale."""
    rgb = as_array(img)
    return [h for scale in (1, 2) for h in gradient_histograms(_downscale(rgb, scale))]


def _texture_between(sa: list[np.ndarray], sb: list[np.ndarray]) -> float:
    return float(np.mean([0.5 * np.abs(x - y).sum() for x, y in zip(sa, sb)]))


def _downscale(rgb: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return rgb
    h, w = rgb.shape[0] // f * f, rgb.shape[1] // f * f
    return rgb[:h, :w].reshape(h // f, f, w // f, f, 3).mean((1, 3))


# ---------------------------------------------------------------- style: Gram matrices in a backbone


@lru_cache(maxsize=4)
def _backbone(name: str):
    """A frozen loss network, loaded once per scoring process (every result is scored with it)."""
    from .backbones import load_backbone

    return load_backbone(name, device="cpu")


def _style_features(img, backbone: str) -> dict[str, torch.Tensor]:
    bb = _backbone(backbone)
    x = torch.from_numpy(as_array(img)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        return bb(x, bb.spec.style_layers)


def _grams(feats: dict[str, torch.Tensor], temperatures: dict[str, float] | None) -> dict[str, torch.Tensor]:
    from .losses import gram, style_features

    return {k: gram(style_features(v, (temperatures or {}).get(k)))[0] for k, v in feats.items()}


def gram_matrices(img, backbone: str = "random", temperatures: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """The Gram matrices the backbone's style loss compares (through the softmax at `temperatures` for SWAG)."""
    return _grams(_style_features(img, backbone), temperatures)


def reference_grams(img, backbone: str = "random") -> tuple[dict[str, torch.Tensor], dict[str, float] | None]:
    """A reference's (the artwork's) Gram matrices and, for a backbone whose spec asks for a softmax (SWAG), the
    temperatures fixed from it, as training fixes them; one pass through the backbone."""
    from .losses import feature_temperatures

    feats = _style_features(img, backbone)
    temps = feature_temperatures(feats) if _backbone(backbone).spec.softmax else None
    return _grams(feats, temps), temps


def gram_distance_from(ga: dict[str, torch.Tensor], gb: dict[str, torch.Tensor]) -> float:
    """Mean over style layers of ||Ga - Gb||_F / ||Gb||_F (b is the reference, usually the artwork)."""
    return float(np.mean([float(torch.linalg.norm(ga[k] - gb[k]) / (torch.linalg.norm(gb[k]) + 1e-12)) for k in gb]))


def gram_distance(a, b, backbone: str = "random") -> float:
    """Style distance of a from reference b as a fixed backbone sees it: 0 = same feature co-activations."""
    grams_b, temps = reference_grams(b, backbone)
    return gram_distance_from(gram_matrices(a, backbone, temps), grams_b)


# ---------------------------------------------------------------- content


def ssim_luminance(a, b) -> float:
    """SSIM of the luminance channels (same size required): 1 = identical."""
    from skimage.metrics import structural_similarity

    ya, yb = luminance(as_array(a)), luminance(as_array(b))
    if ya.shape != yb.shape:
        raise RotoscopeError(f"ssim needs images of the same size, got {ya.shape[::-1]} and {yb.shape[::-1]}")
    return float(structural_similarity(ya, yb, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def edge_map(rgb: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    gx, gy = _sobel(ndimage.gaussian_filter(luminance(rgb), 1.0, mode="reflect"))
    return np.hypot(gx, gy)


def edge_correlation(a, b) -> float:
    """Pearson correlation of the edge maps (same size required): 1 = edges in the same places, 0 = unrelated."""
    ea, eb = edge_map(as_array(a)).ravel(), edge_map(as_array(b)).ravel()
    if ea.shape != eb.shape:
        raise RotoscopeError("edge correlation needs images of the same size")
    if ea.std() == 0 or eb.std() == 0:
        return 1.0 if np.array_equal(ea, eb) else 0.0
    return float(np.corrcoef(ea, eb)[0, 1])


# ---------------------------------------------------------------- recognisability: is it that artwork's filter?


@dataclass
class Gallery:
    """Candidate artworks at the scoring size, their colour and texture signatures computed once."""

    names: list[str]
    color: list[np.ndarray]
    texture: list[list[np.ndarray]]


def gallery(artworks: dict[str, object], size: int | None = SCORE_SIZE) -> Gallery:
    """name -> artwork (path or image) into a Gallery, each at longer side `size` (None: as given)."""
    if len(artworks) < 2:
        raise RotoscopeError("a recognisability gallery needs at least two artworks")
    names, color, texture = [], [], []
    for name, art in artworks.items():
        if isinstance(art, (np.ndarray, torch.Tensor)):
            art = Image.fromarray((as_array(art) * 255).round().astype(np.uint8))
        img = art if isinstance(art, Image.Image) else load_rgb(art)
        rgb = as_array(resize_longer(img, size) if size else img)
        names.append(name)
        color.append(color_signature(rgb))
        texture.append(texture_signature(rgb))
    return Gallery(names, color, texture)


RECOGNISE_BY = ("texture", "color", "both")


def rank_artworks(result, gal: Gallery) -> dict[str, list[str]]:
    """The gallery's artworks ordered from closest to furthest from `result`, by texture, colour and both.

    "both" adds the two distances after dividing each by its median over the gallery, so neither unit dominates.
    """
    sc, st = color_signature(result), texture_signature(result)
    dc = np.array([2 * np.abs(sc - c).mean() for c in gal.color])
    dt = np.array([_texture_between(st, t) for t in gal.texture])
    both = dc / (np.median(dc) + 1e-12) + dt / (np.median(dt) + 1e-12)
    # stable sort: ties keep gallery order, so the same inputs always give the same ranks
    order = {k: [gal.names[i] for i in np.argsort(d, kind="stable")] for k, d in
             (("texture", dt), ("color", dc), ("both", both))}
    return order


@dataclass
class Recognition:
    """Where each result ranks its own artwork in the gallery (1 = first), and the rates over all results."""

    ranks: list[dict] = field(default_factory=list)  # {"filter", "photo", "artwork", "texture": r, "color": r, ...}
    gallery_size: int = 0

    def summary(self, rows: list[dict] | None = None) -> dict[str, float]:
        rows = self.ranks if rows is None else rows
        out = {}
        for k in RECOGNISE_BY:
            r = np.array([row[k] for row in rows], dtype=float)
            out[f"{k}_top1"] = float((r == 1).mean()) if len(r) else float("nan")
            out[f"{k}_top3"] = float((r <= 3).mean()) if len(r) else float("nan")
            out[f"{k}_mean_rank"] = float(r.mean()) if len(r) else float("nan")
        return out

    def by_filter(self) -> dict[str, dict[str, float]]:
        names = dict.fromkeys(r["filter"] for r in self.ranks)
        return {n: self.summary([r for r in self.ranks if r["filter"] == n]) for n in names}

    def to_dict(self) -> dict:
        return {"gallery_size": self.gallery_size, "summary": self.summary(), "by_filter": self.by_filter(),
                "ranks": self.ranks}


def recognise(results: list[tuple[str, str, str, object]], gal: Gallery) -> Recognition:
    """(filter name, its artwork's gallery name, photo name, result image) -> the rank of that artwork per result."""
    rec = Recognition(gallery_size=len(gal.names))
    for filt, art, photo, result in results:
        if art not in gal.names:
            raise RotoscopeError(f"artwork '{art}' is not in the gallery ({len(gal.names)} artworks)")
        order = rank_artworks(result, gal)
        rec.ranks.append({"filter": filt, "artwork": art, "photo": photo,
                          **{k: order[k].index(art) + 1 for k in RECOGNISE_BY},
                          "closest": order["both"][0]})
    return rec


def format_recognition(rec: Recognition) -> str:
    """Per filter: top-1 and top-3 rates and the mean rank of its own artwork, by texture, colour and both."""
    lines = [f"recognisability: rank of the filter's own artwork among {rec.gallery_size} (1 = first)",
             f"{'filter':<22}" + "".join(f"{k + ' top1':>13}{k + ' top3':>13}{k + ' rank':>13}" for k in RECOGNISE_BY)]
    rows = {**rec.by_filter(), "all": rec.summary()}
    for name, s in rows.items():
        lines.append(f"{name:<22}" + "".join(f"{s[k + '_top1']:>13.0%}{s[k + '_top3']:>13.0%}"
                                           f"{s[k + '_mean_rank']:>13.1f}" for k in RECOGNISE_BY))
    return "\n".join(lines)


# ---------------------------------------------------------------- scoring a filter


def default_backbones() -> tuple[str, ...]:
    """`random` always; `vgg16-hed` too when its weights are already cached (scoring never downloads)."""
    from .backbones import available

    return ("random", "vgg16-hed") if available("vgg16-hed") else ("random",)


def style_scores(result, art_ref: dict, backbones: tuple[str, ...]) -> dict[str, float]:
    """Style distances of one result from the artwork (art_ref from `artwork_reference`)."""
    temps = art_ref.get("temperatures", {})
    s = {f"gram_{b}": gram_distance_from(gram_matrices(result, b, temps.get(b)), art_ref["gram"][b]) for b in backbones}
    s["color"] = color_distance(result, art_ref["rgb"])
    s["texture"] = texture_distance(result, art_ref["rgb"])
    return s


def content_scores(result, photo) -> dict[str, float]:
    return {"ssim": ssim_luminance(result, photo), "edges": edge_correlation(result, photo)}


def at_scoring_size(img: Image.Image, size: int, what: str) -> Image.Image:
    """`img` at longer side `size`, refused (one line) where a side is then under MIN_SCORE_SIDE."""
    img = resize_longer(img, size)
    if min(img.size) < MIN_SCORE_SIDE:
        raise RotoscopeError(f"{what} is {img.width}x{img.height} at the scoring size ({size}): too small to score "
                             f"(at least {MIN_SCORE_SIDE} px a side)")
    return img


def artwork_reference(artwork, size: int = SCORE_SIZE, backbones: tuple[str, ...] = ("random",)) -> dict:
    """The artwork at the scoring size and its Gram matrices, computed once per scoring run."""
    img = artwork if isinstance(artwork, Image.Image) else load_rgb(artwork)
    what = "the artwork" if isinstance(artwork, Image.Image) else f"the artwork {Path(artwork).name}"
    rgb = as_array(at_scoring_size(img, size, what))
    refs = {b: reference_grams(rgb, b) for b in backbones}
    return {"rgb": rgb, "gram": {b: g for b, (g, _) in refs.items()}, "temperatures": {b: t for b, (_, t) in refs.items()}}


@dataclass
class ScoreReport:
    """Per-photo scores of a filter's results, plus the same style scores of the unstyled photos as a baseline."""

    filter: str
    rows: list[dict] = field(default_factory=list)  # {"photo": name, "result": {...}, "photo_baseline": {...}}
    backbones: tuple[str, ...] = ()
    has_artwork: bool = False
    recognition: "Recognition | None" = None  # where each result ranks the artwork among others (--among)
    skipped: list[dict] = field(default_factory=list)  # {"file": path, "reason": why}: photos or artworks unread

    def mean(self, which: str = "result") -> dict[str, float]:
        keys = [k for k in self.rows[0][which]] if self.rows else []
        return {k: float(np.mean([r[which][k] for r in self.rows])) for k in keys}

    def to_dict(self) -> dict:
        return {"filter": self.filter, "backbones": list(self.backbones), "has_artwork": self.has_artwork,
                "mean": self.mean(), "photo_baseline_mean": self.mean("photo_baseline") if self.has_artwork else {},
                "rows": self.rows, "recognition": self.recognition.to_dict() if self.recognition else None,
                "skipped": self.skipped}


def score_results(pairs: list[tuple[str, Image.Image, Image.Image]], artwork=None, size: int = SCORE_SIZE,
                  backbones: tuple[str, ...] | None = None, name: str = "") -> ScoreReport:
    """Score (photo name, photo, result) triples; style metrics only when an artwork (path or image) is given."""
    backbones = tuple(backbones or default_backbones())
    ref = artwork_reference(artwork, size, backbones) if artwork is not None else None
    report = ScoreReport(name, backbones=backbones, has_artwork=ref is not None)
    for photo_name, photo, result in pairs:
        photo = at_scoring_size(photo.convert("RGB"), size, photo_name)
        result = result.convert("RGB").resize(photo.size, Image.LANCZOS) if result.size != photo.size else result
        p, r = as_array(photo), as_array(result)
        row = {"photo": photo_name, "result": content_scores(r, p), "photo_baseline": {}}
        if ref is not None:
            row["result"].update(style_scores(r, ref, backbones))
            row["photo_baseline"] = style_scores(p, ref, backbones)
        report.rows.append(row)
    return report


def score_filter(filt, photos: list[str | os.PathLike], artwork: str | os.PathLike | None = None,
                 size: int = SCORE_SIZE, backbones: tuple[str, ...] | None = None,
                 precision: str = "auto", among: list[str | os.PathLike] | None = None) -> ScoreReport:
    """Apply a filter (Filter, name or path) to photos at longer side `size` and score the results.

    `among`: other artworks; each result then ranks its own artwork (which `artwork` must name) among them.
    """
    from .apply import skip_reason
    from .mix import as_filter
    from .stylize import ApplySettings, stylize_image

    filt = as_filter(filt)  # a Filter, a name, a path or a mix spec
    if isinstance(photos, (str, os.PathLike)):  # one photo, not its name's characters
        photos = [photos]
    if not photos:
        raise RotoscopeError("no photos to score")
    settings = ApplySettings(size=size, precision=precision, device="cpu").validate()
    if size < MIN_SCORE_SIDE:
        raise RotoscopeError(f"a scoring size of {size} px is too small: at least {MIN_SCORE_SIDE}")
    if artwork is not None:  # an unreadable or too thin artwork is said before any photo is painted
        at_scoring_size(load_rgb(artwork), size, f"the artwork {Path(artwork).name}")
    # as `apply` does with a folder: a file that cannot be read or painted is skipped, saying why, not the end of
    # the run (a folder of 200 photos with one broken JPEG is still worth scoring); none at all is an error
    pairs, skipped = [], []
    for p in photos:
        try:
            img = at_scoring_size(load_rgb(p), size, Path(p).name)
            pairs.append((Path(p).name, img, stylize_image(filt, img, settings)))
        except RotoscopeError as e:
            skipped.append({"file": str(p), "reason": skip_reason(Path(p), e)})
    if not pairs:
        raise RotoscopeError(skipped[0]["reason"] if len(skipped) == 1 else
                             f"none of the {len(skipped)} photos could be scored: {skipped[0]['reason']}")
    report = score_results(pairs, artwork, size, backbones, name=filt.name)
    report.skipped = skipped
    if among is not None:  # an empty list too: a folder with no artwork in it is said, not a missing table
        if artwork is None:
            raise RotoscopeError("ranking among artworks needs the filter's own artwork (--artwork)")
        own = Path(artwork)
        arts = {}
        for a in map(Path, among):
            if a.resolve() != own.resolve():  # unique names: two files with one stem stay two artworks
                arts[a.name if a.stem in arts or a.stem == own.stem else a.stem] = a
        arts, unread = _artworks_read(arts, size)
        report.skipped += unread
        if not arts and unread:
            raise RotoscopeError(f"--among: none of the {len(unread)} other artwork(s) could be read: "
                                 f"{unread[0]['reason']}")
        if not arts:
            raise RotoscopeError("--among: no other artwork to rank against")
        key = f"{own.stem} (the filter's own)"
        gal = gallery({key: own, **arts}, size)
        report.recognition = recognise([(filt.name, key, n, r) for n, _, r in pairs], gal)
    return report


def _artworks_read(arts: dict[str, Path], size: int) -> tuple[dict[str, Image.Image], list[dict]]:
    """The artworks read at the scoring size, and those that could not be read with the reason."""
    from .apply import skip_reason

    read, unread = {}, []
    for name, a in arts.items():
        try:
            read[name] = at_scoring_size(load_rgb(a), size, a.name)
        except RotoscopeError as e:
            unread.append({"file": str(a), "reason": skip_reason(a, e)})
    return read, unread


def format_report(report: ScoreReport) -> str:
    """A plain-text table: one row per photo, the mean, and the unstyled photos' style scores as a baseline."""
    keys = list(report.rows[0]["result"]) if report.rows else []
    width = max([len(r["photo"]) for r in report.rows] + [14])
    head = f"{'photo':<{width}}  " + "  ".join(f"{k:>14}" for k in keys)
    lines = [head]
    for r in report.rows:
        lines.append(f"{r['photo']:<{width}}  " + "  ".join(f"{r['result'][k]:>14.4f}" for k in keys))
    mean = report.mean()
    lines.append(f"{'mean':<{width}}  " + "  ".join(f"{mean[k]:>14.4f}" for k in keys))
    if report.has_artwork:
        base = report.mean("photo_baseline")
        lines.append(f"{'unstyled photo':<{width}}  " + "  ".join(
            f"{base[k]:>14.4f}" if k in base else f"{'':>14}" for k in keys))
        lines.append("style (gram_*, color, texture): distance from the artwork, lower is closer; "
                     "content (ssim, edges): similarity to the photo, 1 = identical")
    else:
        lines.append("content only (ssim, edges; 1 = identical to the photo): pass --artwork for the style scores")
    if report.recognition:
        lines += ["", format_recognition(report.recognition)]
    return "\n".join(lines)
