"""Masks: which parts of a picture the filter paints. White paints, black keeps the photo, grey blends.

A mask comes from a file (any size: it is resized to the picture), from a folder of per-frame masks (a video),
or from a finder of what to keep: the face detector (`keep="faces"`: faces.py) or the person segmenter
(`keep="people"`: people.py), or both (what is found is kept out of the file's white). Its edges are feathered
(a Gaussian blur over `ApplySettings.feather` of the picture's longer side), so a hard drawn edge does not show.
Where the mask is 0 the output is the photo exactly; where it is 1, the painting.

In a video the mask is steadied like the painting: the previous frame's kept region is carried along the optical
flow (when flicker reduction computed it) and moves only part of the way to what is found on each frame, so a face
that the detector misses for a frame or two fades out over a few frames instead of blinking, and a person's
outline does not shimmer (`MaskChain`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import torch
from PIL import Image

from .config import KEEPS
from .errors import Invalid
from .images import as_shown, as_stored

MaskLike = Union[str, os.PathLike, Image.Image, np.ndarray]
# A video's kept region follows what the detector finds with a lag that differs by direction (carried along the
# flow from frame to frame): it grows 70 % of the way to a newly found face each frame (a new face is 97 % kept
# after three frames) and shrinks 25 % of the way where the detector stops finding one (a face missed for one
# frame stays 75 % kept instead of blinking; gone below 1 % after 16 frames). Box jitter is smoothed both ways.
FACE_GROW = 0.7
FACE_HOLD = 0.75  # the share kept per frame where nothing is found any more (1 - the shrinking rate)
# People are found on every frame by a segmenter whose outline wavers by a few pixels and that drops a limb now and
# then: the kept region grows 70 % and shrinks 40 % of the way to the new outline per frame, along the flow. On the
# shared sports clips this cut the kept region's frame-to-frame change after following the motion by 36 to 39 %
# (benchmarks/results/masks-people.md); slower rates steadied more but lagged further behind moving players.
# Without flow (no flicker reduction, or a cut) people are found afresh: an unwarped region would trail them.
PEOPLE_GROW = 0.7
PEOPLE_SHRINK = 0.4


def read_mask(src: MaskLike) -> np.ndarray:
    """A mask as H x W float32 in [0, 1] at its own size: luminance of an image (transparent pixels count as
    black: kept), or an array (uint8 0-255, bool, or float 0-1). Bad files are one line."""
    if isinstance(src, (list, tuple)):
        try:
            src = np.asarray(src)
        except ValueError:  # rows of different lengths
            raise Invalid("a mask given as a list must be rectangular (rows of one length)") from None
    if isinstance(src, np.ndarray):
        a = src
        if not (np.issubdtype(src.dtype, np.number) or src.dtype == np.bool_):
            raise Invalid(f"a mask array must hold numbers, not {src.dtype}")
        if a.ndim == 3 and a.shape[-1] > 0:  # the channels' mean, judged by the array's own type (a float now)
            a = a[..., :3].mean(-1) if a.shape[-1] >= 3 else a[..., 0]
        if a.ndim != 2 or a.size == 0:
            raise Invalid(f"a mask array must be H x W (or H x W x C), not {src.shape}")
        if src.dtype == np.bool_:
            return a.astype(np.float32)
        if src.dtype == np.uint8:
            return a.astype(np.float32) / 255.0
        a = a.astype(np.float32)
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise Invalid("a float mask array must hold values from 0 to 1")
        return a
    if isinstance(src, Image.Image):
        img, name = src, "mask"
    elif not isinstance(src, (str, os.PathLike)):
        raise Invalid(f"a mask is a file, a PIL image or an array (uint8 0-255, bool, or float 0-1), not "
                      f"{type(src).__name__}")
    else:
        from .images import open_image

        path = Path(src)
        if path.is_dir():
            raise Invalid(f"{path} is a folder: a folder of masks is for a video (one mask per frame)")
        img, name = open_image(path), str(path)  # one-line errors for missing, broken and foreign files
    try:
        from .images import split_alpha

        rgb, alpha = split_alpha(img)
        a = np.asarray(rgb.convert("L"), dtype=np.float32) / 255.0
        if alpha is not None:
            a = a * (np.asarray(alpha, dtype=np.float32) / 255.0)
    except Exception as e:  # noqa: BLE001 - a mode Pillow cannot convert
        raise Invalid(f"{name}: cannot read it as a mask ({e})") from None
    return a


def fit(m: np.ndarray, w: int, h: int) -> np.ndarray:
    """A mask resized to w x h (area averaging when shrinking, bilinear when growing)."""
    if m.shape == (h, w):
        return m
    shrink = m.shape[0] * m.shape[1] > w * h
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def feather(m: np.ndarray, share: float) -> np.ndarray:
    """Edges blurred over `share` of the longer side (a Gaussian of that sigma); 0 leaves the mask hard."""
    sigma = share * max(m.shape)
    if sigma < 0.3:
        return m
    return np.clip(cv2.GaussianBlur(m, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE), 0, 1)


def keep_mask(keep: str | None, rgb: np.ndarray, feather_share: float = 0.0) -> np.ndarray | None:
    """H x W float32, 1 where `keep` asks the photo to be kept (faces, people), or None for nothing to keep. A
    face's ellipse brings its own soft edge; people's outlines are feathered over `feather_share`."""
    if not keep:
        return None
    if keep == "faces":
        from .faces import detect_faces, face_mask

        return face_mask(rgb.shape[:2], detect_faces(rgb))
    if keep == "people":
        from .people import person_mask

        return person_mask(rgb, feather_share)
    raise Invalid(f"unknown keep '{keep}': use {' or '.join(KEEPS)}")


def picture_mask(rgb: np.ndarray, mask: MaskLike | None, keep: str | None, feather_share: float) -> np.ndarray | None:
    """The paint weight for one picture (H x W x 3 uint8): the mask file's, times 1 - the kept regions, feathered;
    None when everything is painted."""
    if mask is None and not keep:
        return None
    h, w = rgb.shape[:2]
    m = fit(read_mask(mask), w, h) if mask is not None else np.ones((h, w), np.float32)
    m = feather(m, feather_share)
    kept = keep_mask(keep, rgb, feather_share)
    if kept is not None:
        m = m * (1 - kept)
    return m.astype(np.float32)


def composite(photo: torch.Tensor, styled: torch.Tensor, m: np.ndarray | None) -> torch.Tensor:
    """(1, 3, H, W) float pictures: m * styled + (1 - m) * photo (photo may be uint8). In place on `styled`."""
    if m is None:
        return styled
    from .images import as_float

    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[None, None]
    return styled.sub_(as_float(photo)).mul_(t).add_(as_float(photo))


def composite_uint8(photo: np.ndarray, styled: np.ndarray, m: np.ndarray | None) -> np.ndarray:
    """The same for H x W x 3 uint8 frames; exact where m is 0 or 1."""
    if m is None:
        return styled
    p, s = photo.astype(np.float32), styled.astype(np.float32)
    return np.clip(p + (s - p) * m[..., None] + 0.5, 0, 255).astype(np.uint8)


def describe(mask: MaskLike | None) -> str | None:
    """What a painted file's provenance says about its mask: the file's name and a hash of its bytes."""
    if mask is None:
        return None
    if isinstance(mask, (str, os.PathLike)):
        p = Path(mask)
        if p.is_file():
            return f"{p.name} sha256:{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}"
        if p.is_dir():  # every mask's name and bytes: an edited mask makes another render (and resume key)
            h = hashlib.sha256()
            for f in frame_masks(p):
                h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
            return f"{p.name}/ (per frame) sha256:{h.hexdigest()[:16]}"
        return p.name
    a = np.asarray(mask if isinstance(mask, np.ndarray) else mask.convert("L"))
    return f"array sha256:{hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]}"


# ---------------------------------------------------------------- video


def frame_masks(folder: Path) -> list[Path]:
    """The masks of a folder, in frame order: numbered files (mask_0001.png ...) by number, else by name."""
    import re

    from .images import IMAGE_SUFFIXES

    files = [p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not p.name.startswith(".")]
    if not files:
        raise Invalid(f"no mask images in {folder}")

    def key(p: Path):
        m = re.search(r"(\d+)$", p.stem)
        return (0, int(m.group(1)), p.name) if m else (1, 0, p.name)

    return sorted(files, key=key)


class MaskChain:
    """The masks of a video's frames, in order: `next(rgb, flow)` gives frame i's paint weight (or None).

    One mask file serves every frame; a folder gives one per frame (its count must cover the clip: checked by
    `check_frames`); `keep="faces"` finds faces on every frame and steadies them: the previous frame's kept
    region, carried along the flow to this frame (`flow` = the Stabilizer's backward flow, when there is one),
    moves towards the faces found on this one, quickly where it grows (FACE_GROW) and slowly where it shrinks
    (FACE_HOLD), so a missed detection does not blink and box jitter is smoothed. `keep="people"` likewise
    (PEOPLE_GROW, PEOPLE_SHRINK), along the flow only: without one the people are found afresh.
    """

    MEMORY = 30  # frames after which a kept face's weight is gone (FACE_HOLD ** 30 < 0.0002; a person's
    # (1 - PEOPLE_SHRINK) ** 30 < 1e-6): a resumed render replays this many frames before its start

    def __init__(self, mask: MaskLike | None, keep: str | None, feather_share: float, rotation: int = 0,
                 flip: bool = False):
        self.keep, self.feather = keep, feather_share
        # frames are painted as stored; a mask is drawn on the picture as shown (rotated by the display matrix,
        # then mirrored where it says so: images.as_shown)
        self.rotation, self.flip = rotation, flip
        self.files: list[Path] | None = None
        self.still: np.ndarray | None = None
        if mask is not None and isinstance(mask, (str, os.PathLike)) and Path(mask).is_dir():
            self.files = frame_masks(Path(mask))
        elif mask is not None:
            self.still = read_mask(mask)
        self._fitted: np.ndarray | None = None
        self.kept: np.ndarray | None = None  # the steadied kept region of the previous frame
        self.index = 0

    @property
    def active(self) -> bool:
        return self.files is not None or self.still is not None or bool(self.keep)

    def check_frames(self, frames: int) -> None:
        if self.files is not None and frames and len(self.files) < frames:
            raise Invalid(f"{len(self.files)} masks in {self.files[0].parent} for {frames} frames: give one mask "
                          "per frame, or one mask file for all")

    def skip(self) -> None:
        """A frame already rendered (a resumed render): its mask is not needed."""
        self.index += 1

    def _upright(self, m: np.ndarray) -> np.ndarray:
        """A picture as shown -> as stored (a mask drawn on the shown clip, faces found upright)."""
        return as_stored(m, self.rotation, self.flip)

    def next(self, rgb: np.ndarray, flow: np.ndarray | None = None) -> np.ndarray | None:
        h, w = rgb.shape[:2]
        i, self.index = self.index, self.index + 1
        if self.files is not None:
            if i >= len(self.files):
                raise Invalid(f"no mask for frame {i + 1}: {self.files[0].parent} holds {len(self.files)}")
            m = feather(fit(self._upright(read_mask(self.files[i])), w, h), self.feather)
        elif self.still is not None:
            if self._fitted is None or self._fitted.shape != (h, w):
                self._fitted = feather(fit(self._upright(self.still), w, h), self.feather)
            m = self._fitted
        else:
            m = None
        if self.keep:
            # faces and people are found upright
            found = self._upright(keep_mask(self.keep, as_shown(rgb, self.rotation, self.flip), self.feather))
            people = self.keep == "people"
            if self.kept is not None and self.kept.shape == found.shape and (flow is not None or not people):
                from . import flow as fl

                prev = fl.warp(self.kept, flow) if flow is not None else self.kept
                grow, shrink = (PEOPLE_GROW, PEOPLE_SHRINK) if people else (FACE_GROW, 1 - FACE_HOLD)
                rate = np.where(found > prev, np.float32(grow), np.float32(shrink))
                found = prev + rate * (found - prev)
            self.kept = found
            m = (m if m is not None else np.ones((h, w), np.float32)) * (1 - found)
        return m


def flicker(masks: list[np.ndarray]) -> float:
    """Mean absolute change of a mask from one frame to the next (0 = steady): the number beside the eye."""
    if len(masks) < 2:
        return 0.0
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(masks, masks[1:])]))
