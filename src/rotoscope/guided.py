"""Guided upsampling: paint at a reduced resolution, then restore the full-resolution edges from the photo.

The filter's cost grows with the pixels it paints. Painting a 1280x720 frame at half size costs a quarter, and a
fast guided filter (He, Sun and Tang 2010; the "fast" variant of He and Sun 2015) lifts the result back: at low
resolution it fits, in every small window, the painting as a linear function of the photo's luminance
(painted = a * luminance + b), smooths a and b, upsamples them, and applies them to the full-resolution
luminance. The painting keeps its colours and strokes; the photo lends its sharp edges. A side effect users ask
for: the strokes of a filter trained on 256 px crops get bigger on big pictures.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)
# how much local contrast in the photo (variance of luminance in 0-1) counts as an edge to restore. 1e-2 left
# paintings at a paint scale soft: on three 720p pictures at 0.5, 1e-3 kept SSIM with the photo at 0.96-1.04x and
# edge correlation at 1.00-1.03x of full-resolution painting (full and lite great-wave; 1e-2: 0.87-0.96x and
# 0.99-1.02x), with the same distance from the artwork's texture and colour (speed.md, 2026-12-04)
EPS = 1e-3
# the least gain the photo's fine detail (luminance finer than the painted pixels) passes with. Where the photo is
# smooth at the reduced size the fitted gain a falls to 0 and that detail was dropped: the full filter at 0.5 kept
# 0.947x the edge correlation of full-resolution painting (the city at dusk 0.81x). With a floor of 0.4: 0.990x
# (0.93x), SSIM 1.18x, the same distance from the artwork's texture and colour (8 photos at 720p, speed.md)
DETAIL = 0.4


def box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)x(2r+1) window, edges mirrored, same size out. Pooled channels-last: twice as fast on the
    CPU as NCHW (our measurement), and faster than separable 1-D means or a cumulative sum."""
    if r <= 0:
        return x
    small = min(x.shape[-1], x.shape[-2]) <= r  # smaller than the window: replicate instead of reflect
    x = F.pad(x, (r, r, r, r), mode="replicate" if small else "reflect").contiguous(memory_format=torch.channels_last)
    return F.avg_pool2d(x, 2 * r + 1, stride=1).contiguous()


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(LUMA, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * w).sum(1, keepdim=True)


def guided_upsample(painted_lo: torch.Tensor, photo_hi: torch.Tensor, radius: int = 1, eps: float = EPS,
                    photo_lo: torch.Tensor | None = None, detail: float = DETAIL) -> torch.Tensor:
    """(B, 3, h, w) painting at low resolution + (B, 3, H, W) photo -> (B, 3, H, W) painting with the photo's edges.

    `radius` is in low-resolution pixels; `eps` is how much local contrast in the photo counts as an edge (larger:
    smoother, more of the painting's own look; smaller: more of the photo's detail). `photo_lo`: the photo at the
    painting's size, if the caller has it (saves a downscale). `detail`: the least gain of the photo's luminance
    detail finer than the painted pixels (DETAIL).
    """
    x = painted_lo.float()
    guide_hi = luminance(photo_hi.float())
    if photo_lo is not None:
        guide_lo = luminance(photo_lo.float())
    else:
        guide_lo = F.interpolate(guide_hi, size=x.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
    # the four local means in one pass: guide, painting, guide x painting, guide^2
    means = box(torch.cat([guide_lo, x, guide_lo * x, guide_lo * guide_lo], 1), radius)
    mean_i, mean_p, mean_ip, mean_ii = means[:, :1], means[:, 1:4], means[:, 4:7], means[:, 7:]
    a = (mean_ip - mean_i * mean_p) / (mean_ii - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    a, b = box(torch.cat([a, b], 1), radius).split(3, 1)
    a, b = lift_fine_detail(a, b, guide_lo, detail)
    ab = F.interpolate(torch.cat([a, b], 1), size=photo_hi.shape[-2:], mode="bilinear", align_corners=False)
    return torch.addcmul(ab[:, 3:], ab[:, :3], guide_hi).clamp_(0, 1).to(painted_lo.dtype)


def lift_fine_detail(a, b, guide_lo, detail: float):
    """a and b (low resolution, smoothed) changed so that a * guide_hi + b also passes the guide's detail finer than
    the painted pixels, guide_hi - up(guide_lo), with a gain of at least `detail`: a' = max(a, detail) and
    b' = b - (a' - a) * guide_lo, folded in before the upscale, so it costs nothing at full size. Tensors (images)
    and numpy arrays (video frames) alike."""
    if detail <= 0:
        return a, b
    lifted = a.clip(min=detail)
    return lifted, b - (lifted - a) * guide_lo


def guided_upsample_frame(painted_lo: np.ndarray, photo_hi: np.ndarray, photo_lo: np.ndarray, radius: int = 1,
                          eps: float = EPS, detail: float = DETAIL) -> np.ndarray:
    """The same filter on one video frame on the CPU, with OpenCV: painted_lo (h, w, 3) float32 in [0, 1], photo_hi
    (H, W, 3) and photo_lo (h, w, 3) uint8 RGB -> (H, W, 3) uint8, rounded.

    A frame stays in the layout it is decoded and encoded in, and nothing at full resolution is more than a
    resize, a multiply and a rounding add: 10x less time at 720p than guided_upsample plus the tensor round trip
    (speed.md). The guide's luminance is taken in 8 bits, so results differ from guided_upsample's by a level or
    so on a few pixels (tests/test_guided.py). A uint8 painting (a video's steadied chain) is read as level / 255."""
    if painted_lo.dtype == np.uint8:
        painted_lo = cv2.multiply(painted_lo, (1 / 255,) * 4, dtype=cv2.CV_32F)
    k = (2 * radius + 1, 2 * radius + 1)  # cv2.blur mirrors edges as box() does (BORDER_REFLECT_101)
    g_lo = cv2.cvtColor(photo_lo, cv2.COLOR_RGB2GRAY).astype(np.float32) * (1 / 255)
    g3 = cv2.merge([g_lo, g_lo, g_lo])
    mean_i, mean_p = cv2.blur(g_lo, k), cv2.blur(painted_lo, k)
    mean_ip, mean_ii = cv2.blur(cv2.multiply(painted_lo, g3), k), cv2.blur(cv2.multiply(g_lo, g_lo), k)
    mean_i3 = cv2.merge([mean_i, mean_i, mean_i])
    var3 = cv2.merge([mean_ii - mean_i * mean_i + eps] * 3)
    a = cv2.divide(mean_ip - cv2.multiply(mean_i3, mean_p), var3)
    b = (mean_p - cv2.multiply(a, mean_i3)) * 255  # in 8-bit levels, so that the full-size sum rounds directly
    a, b = lift_fine_detail(cv2.blur(a, k), cv2.blur(b, k), g3 * 255, detail)
    h, w = photo_hi.shape[:2]
    a = cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)
    b = cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR)
    g_hi = cv2.cvtColor(cv2.cvtColor(photo_hi, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return cv2.add(cv2.multiply(a, g_hi, dtype=cv2.CV_32F), b, dtype=cv2.CV_8U)  # saturated and rounded


def reduced_size(h: int, w: int, scale: float, least: int = 16) -> tuple[int, int]:
    """The size painted at for a paint scale (at least `least` pixels a side; 1.0 = as given)."""
    if scale >= 1.0:
        return h, w
    return min(h, max(least, round(h * scale))), min(w, max(least, round(w * scale)))
