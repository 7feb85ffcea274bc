"""What training records for its story (`rotoscope explain`): previews of one held-out photo along the way.

The same held-out photo (never trained on) is painted by the network at a few steps, starting with step 0,
when the weights are still random. Previews are small JPEGs in the run folder (runs/NAME/story/), so the filter
file stays small; the card lists them, plus the palettes of the artwork and of the finished filter's outputs
and a per-term loss curve. `explain` works without the run folder too, and says what is missing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..images import to_image
from ..paths import atomic_path

THUMB = 160  # preview side in pixels
PREVIEW_FRACTIONS = (0.01, 0.03, 0.1, 0.3, 1.0)  # early steps change the most, so the schedule is log-like
CURVE_POINTS = 80


def preview_steps(total: int) -> list[int]:
    """Step 0 (random weights) and a few steps spread log-like over the run, ending at the last step."""
    return sorted({0, *(max(1, math.ceil(total * f)) for f in PREVIEW_FRACTIONS)})


def palette(img: Image.Image | np.ndarray, k: int = 6, seed: int = 0) -> list[dict]:
    """The k main colours (k-means on a few thousand pixels), each with its share, most common first."""
    a = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img, dtype=np.float64).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    if len(a) > 4096:
        a = a[rng.choice(len(a), 4096, replace=False)]
    k = min(k, len(np.unique(a, axis=0)))
    centres = a[rng.choice(len(a), k, replace=False)]
    for _ in range(15):
        label = ((a[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        centres = np.array([a[label == i].mean(0) if (label == i).any() else centres[i] for i in range(k)])
    share = np.bincount(label, minlength=k) / len(a)
    order = np.argsort(-share)
    return [{"rgb": [int(round(c)) for c in centres[i]], "share": round(float(share[i]), 3)} for i in order]


def palette_distance(a: list[dict], b: list[dict]) -> float:
    """How far palette b is from palette a: share-weighted mean distance from each colour of a to b's nearest,
    in RGB units (0 = same colours; 441 = black vs white)."""
    if not a or not b:
        return float("nan")
    bc = np.array([c["rgb"] for c in b], dtype=np.float64)
    return float(sum(c["share"] * np.sqrt(((bc - np.array(c["rgb"])) ** 2).sum(1)).min() for c in a)
                 / max(1e-9, sum(c["share"] for c in a)))


def term_curve(history: list[dict], points: int = CURVE_POINTS) -> list[dict]:
    """Every training term (median over each stretch of steps: one batch is noisy), plus lr and gradient norm."""
    if not history:
        return []
    size = max(1, math.ceil(len(history) / points))
    out = []
    for i in range(0, len(history), size):
        rows = history[i:i + size]
        med = {k: float(np.median([r["train"][k] for r in rows])) for k in rows[0]["train"]}
        out.append({"step": rows[-1]["step"], **{k: round(v, 5) for k, v in med.items()},
                    "lr": rows[-1]["lr"], "grad_norm": round(float(np.median([r["grad_norm"] for r in rows])), 4)})
    return out


class Recorder:
    """Paints the fixed preview photo at the scheduled steps and keeps what the card needs."""

    def __init__(self, run_dir: Path, photo: torch.Tensor, photo_name: str, art: Image.Image, total_steps: int,
                 heldout: bool):
        self.dir = Path(run_dir) / "story"
        self.photo = photo[:1].float().cpu()
        self.photo_name = photo_name
        self.heldout = heldout
        self.steps = preview_steps(total_steps)
        self.previews: dict[int, str] = {}
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("preview-*.jpg"):  # a resumed run keeps earlier previews
            try:
                self.previews[int(old.stem.split("-")[1])] = old.name
            except ValueError:
                pass
        self._save(to_image(self.photo), "photo.jpg")
        self._save(art, "artwork.jpg")

    def _save(self, img: Image.Image, name: str) -> None:
        img = img.copy()
        img.thumbnail((THUMB * 2 if name == "artwork.jpg" else THUMB,) * 2, Image.LANCZOS)
        with atomic_path(self.dir / name) as tmp:
            img.convert("RGB").save(tmp, "JPEG", quality=88)

    def paint(self, net) -> torch.Tensor:
        was_training = net.training
        net.eval()
        dev = next(net.parameters()).device
        with torch.no_grad():
            out = net(self.photo.to(dev)).float().cpu()
        net.train(was_training)
        return out

    def maybe_snapshot(self, net, step: int) -> None:
        if step in self.steps:
            name = f"preview-{step:06d}.jpg"
            self._save(to_image(self.paint(net)), name)
            self.previews[step] = name

    def card(self, net, art: Image.Image, holdout: torch.Tensor | None, history: list[dict]) -> dict:
        """The story's part of the card: files, palettes, curves."""
        sample = holdout if holdout is not None else self.photo
        was_training = net.training
        net.eval()
        dev = next(net.parameters()).device
        with torch.no_grad():
            out = torch.cat([net(sample[i:i + 1].to(dev)).float().cpu() for i in range(min(4, len(sample)))])
        net.train(was_training)
        to_arr = lambda t: np.concatenate([np.asarray(to_image(x)) for x in t], 0)  # noqa: E731
        art_pal = palette(art)
        out_pal = palette(to_arr(out))
        photo_pal = palette(to_arr(sample[:4]))
        return {"run_dir": _home_relative(self.dir.parent), "preview_photo": self.photo_name,
                "preview_is_heldout": self.heldout, "photo_file": "story/photo.jpg",
                "artwork_file": "story/artwork.jpg",
                "previews": [{"step": s, "file": f"story/{self.previews[s]}"} for s in sorted(self.previews)],
                "palette_artwork": art_pal, "palette_outputs": out_pal, "palette_photos": photo_pal,
                "palette_distance_outputs": round(palette_distance(art_pal, out_pal), 1),
                "palette_distance_photos": round(palette_distance(art_pal, photo_pal), 1),
                "curve": term_curve(history)}


def preview_photo(data, size: int) -> tuple[torch.Tensor, str, bool]:
    """The photo the previews show: the first held-out photo, else (no held-out photos) the first training photo."""
    import torch.nn.functional as F

    if data.holdout:
        return data.holdout_batch(size)[:1], data.holdout_names[0], True
    img = data.train[0]
    h, w = img.shape[-2:]
    s = min(h, w)
    crop = img[:, :, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True), \
        data.train_names[0], False


def _home_relative(folder: Path) -> str:
    """A run folder as the card records it: relative to ROTOSCOPE_HOME (cards travel with their filters and must
    not carry this machine's paths), or only its name when it lies elsewhere."""
    from ..paths import home

    try:
        return Path(folder).resolve().relative_to(home().resolve()).as_posix()
    except ValueError:
        return Path(folder).name
