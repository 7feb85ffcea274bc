"""The training set: photos in, a held-out split out, and reproducible random crops for every step."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .errors import RotoscopeError
from .images import list_images, load_rgb, to_tensor

# scikit-image's bundled photographs: they install with the package, so training works with no download.
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "clock", "coins", "moon", "brick", "grass",
                 "gravel", "page")


@dataclass
class Photo:
    name: str
    image: Image.Image


@dataclass
class PhotoSet:
    """Photos split into train and held-out, as tensors resized for crops of `size` pixels."""

    train: list[torch.Tensor]
    holdout: list[torch.Tensor]
    train_names: list[str]
    holdout_names: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why: "unreadable" or "one flat colour"
    source: str = ""
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # original (width, height), for the audit

    def fingerprint(self) -> str:
        """A hash of which photos train and which are held out, by name, and of each one's look (an 8x8 thumbnail in
        16 levels: another decoder's rounding leaves it alone, another photo does not): a resumed run must see the
        same set (another --photos folder was taken silently, its held-out photo one the run had trained on). The
        order they were given in does not count."""
        rows = []
        for side, names, tensors in (("train", self.train_names, self.train), ("holdout", self.holdout_names,
                                                                               self.holdout)):
            for name, t in zip(names, tensors):
                look = F.adaptive_avg_pool2d(t.float().reshape(1, *t.shape[-3:]), 8).mul(15).round().to(torch.uint8)
                rows.append(f"{side}:{name}:{look.numpy().tobytes().hex()}")
        return hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()

    def batch(self, step: int, batch: int, size: int, seed: int) -> torch.Tensor:
        """The crops for one step: a function of (seed, step) only, so a resumed run sees the same data."""
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        crops = []
        for _ in range(batch):
            img = self.train[int(torch.randint(len(self.train), (1,), generator=g))]
            h, w = img.shape[-2:]
            # random scale: a square of side s in [size, min(h, w)], resized to size (zoom augmentation)
            lo, hi = size, min(h, w)
            for _ in range(FLAT_TRIES):  # a window of clear sky or backdrop is drawn again (see crop_is_flat)
                s = lo + int(torch.randint(hi - lo + 1, (1,), generator=g)) if hi > lo else hi
                y = int(torch.randint(h - s + 1, (1,), generator=g))
                x = int(torch.randint(w - s + 1, (1,), generator=g))
                crop = window(img, y, x, s, size)
                if not crop_is_flat(crop):
                    break
            else:  # every try flat (a thin strip of detail): the largest window with the most detail
                s = hi
                y, x = max(((y, x) for y in spread(h - s) for x in spread(w - s)),
                           key=lambda yx: luma_std(window(img, *yx, s, s)))  # ranked before the resize
                crop = window(img, y, x, s, size)
            if torch.rand(1, generator=g) < 0.5:
                crop = crop.flip(-1)
            crops.append(crop)
        return torch.cat(crops)

    def holdout_batch(self, size: int) -> torch.Tensor:
        """Centre crops of every held-out photo: the fixed exam the filter is scored on."""
        out = []
        for img in self.holdout:
            h, w = img.shape[-2:]
            s = min(h, w)
            out.append(window(img, (h - s) // 2, (w - s) // 2, s, size))
        return torch.cat(out)


def sample_photos() -> list[Photo]:
    """The built-in sample set (scikit-image's bundled photos, converted to RGB)."""
    import skimage.data

    photos = []
    for name in SAMPLE_PHOTOS:
        arr = getattr(skimage.data, name)()
        if arr.dtype != np.uint8:
            arr = (arr * 255).astype(np.uint8) if arr.max() <= 1 else arr.astype(np.uint8)
        photos.append(Photo(name, Image.fromarray(arr).convert("RGB")))
    return photos


# A photo whose luminance varies by less than this (8-bit levels, standard deviation) is one flat colour: nothing
# to learn from, and its crops make every instance norm of the filter divide by almost zero, so the gradients grow
# about 300x a norm and overflow (one such photo among six stopped training with a NaN at step 3)
FLAT_STD = 1.0
FLAT = "one flat colour"  # why such a photo was skipped


def is_flat(img: Image.Image) -> bool:
    return float(np.asarray(img.convert("L"), dtype=np.float32).std()) < FLAT_STD


# A photo that is mostly clear sky or studio backdrop is not flat, but many of its crops are, and one flat crop in a
# batch overflows the step as a flat photo does (a photo three quarters one blue stopped training with a NaN at
# step 2). Such a window is drawn again, up to this many times, then the largest window with the most detail is
# taken (a thin strip of detail under a sky); a photo flat everywhere was skipped at load.
FLAT_TRIES = 16
LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # Pillow's "L" conversion


def luma_std(crop: torch.Tensor) -> float:
    """The standard deviation of a (1, 3, h, w) crop's (0-1) luminance, in 8-bit levels."""
    return float((crop * LUMA).sum(1).std()) * 255


def crop_is_flat(crop: torch.Tensor) -> bool:
    """A crop as the network gets it (resized: the zoom-out averages grain away) that is one flat colour."""
    return luma_std(crop) < FLAT_STD


def window(img: torch.Tensor, y: int, x: int, s: int, size: int) -> torch.Tensor:
    """The s x s window of img at (y, x), resized to size x size."""
    crop = img[:, :, y:y + s, x:x + s]
    if s != size:
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return crop


def spread(room: int, n: int = 9) -> list[int]:
    """Up to n offsets from 0 to room, evenly spaced."""
    return sorted({round(i * room / (n - 1)) for i in range(n)})


def folder_photos(folder: str | os.PathLike | list, warn=print) -> tuple[list[Photo], dict[str, str]]:
    """Every usable image in a folder (or of a list of files), and the skipped ones (name -> why): unreadable and
    flat (one-colour) images are skipped with a warning."""
    if isinstance(folder, (list, tuple)):
        if not all(isinstance(p, (str, os.PathLike)) for p in folder):
            raise RotoscopeError("photos: a list of picture files takes paths")
        paths, folder = [Path(p) for p in folder], "the photos given"
    else:
        folder = Path(folder)
        if folder.is_file():  # one picture: a training set of one, by name (a list from Python, a folder otherwise)
            raise RotoscopeError(f"photos takes a folder of pictures (or, from Python, a list of files): {folder} is "
                                 "one file")
        if not folder.is_dir():
            raise RotoscopeError(f"photos folder not found: {folder}")
        paths = list_images(folder)
    photos, reasons = [], []
    unusable = {"unreadable": [], "flat": []}
    for path, name in zip(paths, unique_names(paths)):
        try:
            img = load_rgb(path)
        except RotoscopeError as e:
            reasons.append(f"warning: skipping {e}")
            unusable["unreadable"].append(name)
            continue
        if is_flat(img):
            reasons.append(f"warning: skipping {name}: one flat colour, nothing to learn from")
            unusable["flat"].append(name)
            continue
        photos.append(Photo(name, img))
    if not photos:  # one line: the error says what the warnings would have
        said = [f"{len(names)} {why}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
                for why, names in unusable.items() if names]
        raise RotoscopeError(f"no usable image in {folder}" + (f" ({'; '.join(said)})" if said else ""))
    skipped = {name: {"flat": FLAT}.get(why, why) for why, names in unusable.items() for name in names}
    for line in reasons:
        warn(line)
    return photos, skipped


def unique_names(paths: list[Path]) -> list[str]:
    """Each file's name, numbered where files of a list share one (phones name photos IMG_0001.jpg in every
    folder): the training set keys its photos, their sizes, statistics and the held-out split by name."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        n = seen[p.name] = seen.get(p.name, 0) + 1
        names.append(p.name if n == 1 else f"{p.stem} ({n}){p.suffix}")
    return names


NEAR_DUPLICATE_BITS = 10  # dHash Hamming distance (of 64 bits) at or below which two photos look alike


def dhash(img: Image.Image, side: int = 8) -> int:
    """Difference hash: is each pixel of a (side+1) x side grayscale thumbnail brighter than its right neighbour."""
    g = np.asarray(img.convert("L").resize((side + 1, side), Image.BILINEAR), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def dhashes(img: Image.Image) -> tuple[int, int]:
    """The difference hashes of a picture and of its mirror image: a flipped copy is the same scene."""
    return dhash(img), dhash(ImageOps.mirror(img))


def alike_bits(a: tuple[int, int], b: tuple[int, int]) -> int:
    """How many hash bits two pictures differ in (dhashes), the second as it is or mirrored, whichever is nearer."""
    return min(hamming(a[0], b[0]), hamming(a[0], b[1]))


def alike_groups(names: list[str], pairs) -> list[list[str]]:
    """`names` in groups joined by `pairs` (a, b, ...) of look-alikes, each group in the order of `names` (union-find;
    a pair naming someone not in `names` is ignored)."""
    parent, size = {n: n for n in names}, {n: 1 for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]  # path halving: near-constant time however many photos look alike
            n = parent[n]
        return n

    for a, b, *_ in pairs:
        if a in parent and b in parent:
            ra, rb = sorted((root(a), root(b)), key=size.get)
            if ra != rb:
                parent[ra] = rb
                size[rb] += size[ra]
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(root(n), []).append(n)
    return list(groups.values())


def split_holdout(names: list[str], share: float, alike: list[tuple[str, str]] = ()) -> set[str]:
    """Held-out names chosen by a hash of the name: stable when photos are added, never trained on. Photos that look
    alike (`alike`: pairs of names) fall on the same side: a held-out copy of a training photo is no exam."""
    if len(names) < 2 or share <= 0:
        return set()
    k = min(len(names) - 1, max(1, round(len(names) * share)))

    def rank(n: str) -> str:
        return hashlib.sha256(n.encode()).hexdigest()

    held: set[str] = set()
    for group in sorted(alike_groups(names, alike), key=lambda g: min(map(rank, g))):
        if len(held) + len(group) <= k:  # a group too big for the share left stays in training
            held.update(group)
    return held


def look_alike(photos: list[Photo], levels: float = 12.0) -> list[tuple[str, str]]:
    """Pairs of photos whose perceptual hashes are within NEAR_DUPLICATE_BITS (the audit's near-duplicates; either
    one mirrored) and whose mean colours are within `levels` (the hash sees only shapes: every plain picture has the
    same one)."""
    seen = [(p.name, dhashes(p.image), np.asarray(p.image.resize((16, 16), Image.BILINEAR), np.float32).mean((0, 1)))
            for p in photos]
    return [(a, b) for i, (a, ha, ca) in enumerate(seen) for b, hb, cb in seen[i + 1:]
            if alike_bits(ha, hb) <= NEAR_DUPLICATE_BITS and np.abs(ca - cb).max() <= levels]


def training_scale(img: Image.Image, size: int) -> Image.Image:
    """The photo with its shorter side between size and 2*size: room for scale augmentation, no more pixels."""
    short = min(img.size)
    target = min(max(short, size), 2 * size)
    if short == target:
        return img
    s = target / short
    return img.resize((max(size, round(img.width * s)), max(size, round(img.height * s))), Image.LANCZOS)


def prepare(photos: list[Photo], size: int, holdout: float, skipped: dict[str, str] | None = None,
            source: str = "") -> PhotoSet:
    """Resize each photo once so its shorter side is between size and 2*size (room for scale augmentation)."""
    held = split_holdout([p.name for p in photos], holdout, look_alike(photos) if holdout > 0 else [])
    train, hold, tn, hn = [], [], [], []
    sizes = {p.name: p.image.size for p in photos}
    for p in photos:
        t = to_tensor(training_scale(p.image, size))
        (hold if p.name in held else train).append(t)
        (hn if p.name in held else tn).append(p.name)
    return PhotoSet(train, hold, tn, hn, skipped or {}, source, sizes)


def load_photos(folder: str | os.PathLike | list | None, size: int, holdout: float, warn=print) -> PhotoSet:
    """The training set: a folder's pictures, a list of picture files (the library's train()), or None for the
    sample photos."""
    if folder is None:
        return prepare(sample_photos(), size, holdout, source="scikit-image sample photos")
    listed = isinstance(folder, (list, tuple))
    if not listed and not isinstance(folder, (str, os.PathLike)):
        raise RotoscopeError(f"photos is a folder or a list of picture files, not {type(folder).__name__}")
    photos, skipped = folder_photos(folder, warn)
    return prepare(photos, size, holdout, skipped, source=f"{len(folder)} files" if listed else str(folder))
