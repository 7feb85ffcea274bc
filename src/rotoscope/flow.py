"""Optical flow between video frames, backward warping, occlusion masks, and the warping-error metric.

Flow is OpenCV's DIS (Kroeger et al. 2016): CPU only, no downloaded weights, a few milliseconds per frame at
640x360. Conventions, used everywhere in rotoscope:

- frames are H x W x 3 numpy arrays, either uint8 (0-255) or float (0-1);
- `flow(a, b)` returns an H x W x 2 float32 field F (x, y) with a(p) ~ b(p + F(p)): it says where each pixel
  of `a` is found in `b`;
- `warp(img_b, F)` therefore pulls `b` back onto `a`'s pixel grid (backward warping), so `warp(b, flow(a, b))`
  looks like `a` wherever `a`'s pixels are visible in `b`;
- `reliable(F_ab, F_ba)` is 1 where forward and backward flow agree (Sundaram et al. 2010, the mask Ruder et
  al. 2016 and Lai et al. 2018 use) and 0 at occlusions and motion the flow got wrong.
"""

from __future__ import annotations

import threading
from typing import Iterable

import cv2
import numpy as np

from .config import VideoConfig

# flow is computed at most this large (longer side) and scaled up: robust and fast. The default lives with the
# other video settings (VideoConfig.flow_side)
FLOW_MAX_SIDE = VideoConfig.flow_side
# name -> (OpenCV's DIS preset, finest scale or None for the preset's own). OpenCV's presets stop their patch search
# 2 (ultrafast, fast) or 1 (medium) pyramid levels above the frame and interpolate the rest; "fine" is ultrafast
# carried down to every pixel, made for small flow frames: at 160 px (the real-time flow) it left 0.49x the
# per-frame flicker over 192 frames of basketball at 720p where fast at 320 px left 0.65x, in less time (2.3 ms a
# flow against 2.8; benchmarks/results/speed.md, "A finer flow on a smaller frame")
PRESETS = {"ultrafast": (cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, None), "fast": (cv2.DISOPTICAL_FLOW_PRESET_FAST, None),
           "medium": (cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, None), "fine": (cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, 0)}
_local = threading.local()  # DIS objects per thread: they keep internal buffers and are not thread-safe


def _dis(preset: str) -> cv2.DISOpticalFlow:
    cache = _local.__dict__.setdefault("dis", {})
    if preset not in cache:
        base, finest = PRESETS[preset]
        d = cv2.DISOpticalFlow_create(base)
        if finest is not None:
            d.setFinestScale(finest)
        cache[preset] = d, (d.getFinestScale(), d.getPatchSize(), d.getPatchStride())
    d, (finest, patch, stride) = cache[preset]
    # On a frame too small for its pyramid OpenCV's DIS picks a finer scale and smaller patches for itself, and keeps
    # them: every later flow of the thread then ran with other settings (a live test's tiny frames turned the cached
    # ultrafast into "fine"). The preset's own are put back before each flow.
    d.setFinestScale(finest)
    d.setPatchSize(patch)
    d.setPatchStride(stride)
    return d


def frame_float(frame: np.ndarray) -> np.ndarray:
    """uint8 0-255 or float 0-1 -> float32 0-1."""
    if frame.dtype == np.uint8:
        return frame.astype(np.float32) * (1 / 255)
    return frame.astype(np.float32, copy=False)


DIS_MIN_SIDE = 16  # OpenCV's DIS needs 12 px a side or more


def gray(frame: np.ndarray) -> np.ndarray:
    """H x W x 3 (uint8 or float 0-1) -> H x W uint8 luminance, what DIS works on."""
    if frame.dtype != np.uint8:
        frame = (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame


def flow(a: np.ndarray, b: np.ndarray, max_side: int = FLOW_MAX_SIDE, preset: str = "medium") -> np.ndarray:
    """Dense flow from frame a to frame b (H x W x 2, pixels): a(p) ~ b(p + F(p)). Frames or gray images.

    `preset` is DIS's speed/accuracy trade-off; the warping-error metric always uses medium."""
    ga, gb = gray(a), gray(b)
    h, w = ga.shape
    size = work_size(h, w, max_side)
    if size != (w, h):
        ga, gb = cv2.resize(ga, size, interpolation=cv2.INTER_AREA), cv2.resize(gb, size, interpolation=cv2.INTER_AREA)
    elif min(h, w) < DIS_MIN_SIDE:  # DIS refuses frames under 12 px a side: flow on an enlarged copy, scaled back
        size = (max(w, DIS_MIN_SIDE), max(h, DIS_MIN_SIDE))
        ga, gb = cv2.resize(ga, size, interpolation=cv2.INTER_LINEAR), cv2.resize(gb, size,
                                                                                 interpolation=cv2.INTER_LINEAR)
    f = _dis(preset).calc(ga, gb, None)
    return resize_flow(f, w, h) if size != (w, h) else f


def work_size(h: int, w: int, max_side: int = FLOW_MAX_SIDE) -> tuple[int, int]:
    """(w, h) that flow is computed at for an h x w frame: at most max_side on the longer side."""
    s = min(1.0, max_side / max(h, w))
    return (max(DIS_MIN_SIDE, round(w * s)), max(DIS_MIN_SIDE, round(h * s))) if s < 1 else (w, h)


def resize_flow(f: np.ndarray, w: int, h: int) -> np.ndarray:
    """A flow field resampled to w x h, its vectors scaled with it (they are in pixels of the grid they live on)."""
    # scaled on the small grid, then resized: the same numbers (interpolation is linear), a quarter of the work
    scale = np.array([w / f.shape[1], h / f.shape[0]], np.float32)
    return cv2.resize(f * scale, (w, h), interpolation=cv2.INTER_LINEAR)


def _grid(h: int, w: int) -> np.ndarray:
    """(h, w, 2) float32 pixel coordinates (x, y), cached per thread for a few sizes (a render warps at its flow
    size and at the frame's)."""
    cache = _local.__dict__.setdefault("grids", {})
    if (h, w) not in cache:
        if len(cache) >= 4:
            cache.clear()
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        cache[(h, w)] = np.dstack([gx, gy])
    return cache[(h, w)]


def _sq_norm(f: np.ndarray) -> np.ndarray:
    """|F(p)|^2 of a (h, w, 2) float32 field -> (h, w) float32."""
    return cv2.transform(cv2.multiply(f, f), np.ones((1, 2), np.float32))


def warp(img: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Backward warp: out(p) = img(p + F(p)), bilinear, edges replicated. Keeps img's dtype and channels."""
    h, w = f.shape[:2]
    return cv2.remap(img, cv2.add(_grid(h, w), f), None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def reliable(f_ab: np.ndarray, f_ba: np.ndarray) -> np.ndarray:
    """H x W float32 mask on a's grid: 1 where the forward-backward round trip a -> b -> a returns home.

    The criterion of Sundaram et al. 2010 (used by Ruder et al. 2016): |F_ab + F_ba(p + F_ab)|^2 <=
    0.01 (|F_ab|^2 + |F_ba(p + F_ab)|^2) + 0.5. Pixels of a that are occluded in b, or leave the frame, fail.
    """
    # OpenCV's whole-array operations: the numpy version took 12 ms at 640x360, this one 2 (speed.md)
    back = warp(f_ba, f_ab)
    lhs = _sq_norm(cv2.add(f_ab, back))
    rhs = cv2.addWeighted(_sq_norm(f_ab), 0.01, _sq_norm(back), 0.01, 0.5)
    h, w = f_ab.shape[:2]
    inside = cv2.inRange(cv2.add(_grid(h, w), f_ab), (0.0, 0.0), (w - 1.0, h - 1.0))
    ok = cv2.bitwise_and(cv2.compare(lhs, rhs, cv2.CMP_LE), inside)
    return ok.astype(np.float32) * (1 / 255)


def pair_warping_error(out_a: np.ndarray, out_b: np.ndarray, in_a: np.ndarray, in_b: np.ndarray) -> float:
    """Lai et al. 2018 for one pair: mean over reliable pixels of |out_a - warp(out_b, flow(in_a, in_b))|^2.

    Colours in 0-1 (uint8 is scaled), summed over the three channels per pixel as in Lai et al.'s code.
    """
    f_ab, f_ba = flow(in_a, in_b), flow(in_b, in_a)
    m = reliable(f_ab, f_ba)
    diff = frame_float(out_a) - warp(frame_float(out_b), f_ab)
    n = m.sum()
    if n == 0:
        return 0.0
    return float(((diff ** 2).sum(-1) * m).sum() / n)


def warping_error(frames_out: Iterable[np.ndarray], frames_in: Iterable[np.ndarray]) -> float:
    """Temporal warping error (Lai et al. 2018, "Learning Blind Video Temporal Consistency"), lower is steadier.

    frames_out: the stylized frames; frames_in: the input frames they were made from, same count and size.
    Each is H x W x 3 RGB, uint8 (0-255) or float (0-1). For every consecutive pair (t, t+1) the flow is taken
    on the *input* frames, output t+1 is warped back onto t, and the squared colour difference is averaged over
    the pixels the forward-backward check marks non-occluded; the result is the mean over pairs. Iterables are
    consumed frame by frame, so a long clip can be scored as a generator without holding it in memory.
    """
    total, pairs = 0.0, 0
    prev_out = prev_in = None
    for o, i in zip(frames_out, frames_in, strict=True):
        if o.shape[:2] != i.shape[:2]:
            raise ValueError(f"output frame {o.shape[:2]} and input frame {i.shape[:2]} differ in size")
        if prev_out is not None:
            total += pair_warping_error(prev_out, o, prev_in, i)
            pairs += 1
        prev_out, prev_in = o, i
    if pairs == 0:
        raise ValueError("warping error needs at least two frames")
    return total / pairs
