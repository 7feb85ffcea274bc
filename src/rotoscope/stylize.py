"""Applying a filter to a picture: strength, colour preservation, and seamless tiling of large images.

Large images are cut into overlapping tiles blended with feathered weights. Instance norm would give every tile
its own statistics (a visible patchwork), so the statistics are first measured on a downscaled copy of the
whole image and then held fixed for every tile.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .config import ApplySettings  # noqa: F401 - the settings a picture is painted with, re-exported here
from .devices import autocast, paint_precision, pick_device
from .engines import PRECISIONS_OF, pick_engine, require_engine, runner as engine_runner
from .errors import RotoscopeError
from .filter import Filter
from .guided import guided_upsample, guided_upsample_frame, reduced_size
from .images import as_float, longer_side, resize_longer, split_alpha, to_image, to_uint8_tensor
from .network import FilterNet

# pixels per network call (config.ApplySettings says why this many)
MAX_TILE_PIXELS = ApplySettings().max_tile_pixels
TILE_OVERLAP = 64


def resolve(filt: Filter, settings: ApplySettings, shape: tuple[int, int],
            video: bool = False) -> tuple[ApplySettings, list[str]]:
    """Settings with `auto` precision and engine replaced by what this machine does best for pictures of about
    `shape` (h, w) (for `video`, frames painted while other threads decode and encode), and the lines that say
    what was chosen and why."""
    settings.validate()
    device = pick_device(settings.device)
    try:
        prec = paint_precision(settings.precision, device)
    except ValueError as e:
        raise RotoscopeError(str(e)) from None
    explicit = settings.precision != "auto"
    if settings.engine == "auto":
        shape = reduced_size(*shape, settings.paint_scale)  # the network sees the reduced picture
        picked = pick_engine(filt.net, device, prec, explicit, shape, video)
        engine, precision, engine_line = picked.engine, picked.precision, picked.line()
        why = f"the fastest engine here runs {precision}"
    else:
        engine, precision = settings.engine, prec.value
        require_engine(engine)  # a missing package is one line now, before anything is painted or said
        if precision not in PRECISIONS_OF[engine] and not explicit:
            precision = "fp32"
        engine_line, why = f"engine: {engine} {precision} (as asked)", f"{engine} runs {precision}"
    prec_line = prec.line() if precision == prec.value else f"precision: {precision} ({prec.reason}; {why})"
    return dataclasses.replace(settings, precision=precision, engine=engine), [prec_line, engine_line]


def prepare_net(net: FilterNet, device: torch.device, precision: str = "fp32") -> FilterNet:
    """Eval mode on the device, in the layout and number format that paint fastest there.

    CPU: channels_last (the fast layout for oneDNN/AMX), and for bf16 a bf16 copy of the weights: autocast would
    otherwise re-cast every weight on every call, a quarter of a frame's time (benchmarks/bench_apply.py).
    CUDA (an H200, benchmarks/bench_gpu.py): fp32 stays in the plain layout, the fastest eager path measured; bf16
    and fp16 get a copy of the weights in that format and channels_last (full at 1080p: 13.9 and 13.1 ms against
    16.5 under autocast).
    """
    net = net.to(device).eval()
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if device.type == "cuda":
        return copy.deepcopy(net).to(memory_format=torch.channels_last).to(half) if half else net
    net = net.to(memory_format=torch.channels_last)
    if precision == "bf16" and device.type == "cpu":
        net = copy.deepcopy(net).to(torch.bfloat16)
    return net


def run_net(net: FilterNet, x: torch.Tensor, precision: str, on_device: bool = False) -> torch.Tensor:
    """The network on x, as float32 on the CPU (or left on the network's device)."""
    p = next(net.parameters())
    # weights already held in bf16 or fp16 (prepare_net) need no autocast: under it, pads and upsampling would run
    # in fp32 with casts on both sides (15% of a frame's time on a CPU)
    held = p.dtype in (torch.bfloat16, torch.float16)
    precision = "fp32" if held else precision
    # the layout prepare_net chose: channels_last, except fp32 on a GPU
    layout = torch.channels_last if held or p.device.type != "cuda" else torch.contiguous_format
    with torch.no_grad(), autocast(p.device, precision):  # no_grad, not inference_mode: callers edit in place
        y = net(x.to(p.device, p.dtype).contiguous(memory_format=layout))
    return y.float() if on_device else y.float().cpu()


@contextlib.contextmanager
def frozen_norm_stats(net: nn.Module, stats: list[tuple[torch.Tensor, torch.Tensor]]):
    """Make every InstanceNorm use the given (mean, var) instead of each input's own statistics."""
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    saved = [(m.track_running_stats, m.running_mean, m.running_var) for m in norms]
    try:
        for m, (mean, var) in zip(norms, stats):
            m.track_running_stats, m.running_mean, m.running_var = True, mean, var
        yield
    finally:
        for m, (t, rm, rv) in zip(norms, saved):
            m.track_running_stats, m.running_mean, m.running_var = t, rm, rv


def measure_norm_stats(net: FilterNet, x: torch.Tensor, precision: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel mean and variance that each InstanceNorm sees on input x (batch of one)."""
    stats = []

    def hook(_m, inp, _out):
        t = inp[0].float()
        stats.append((t.mean((0, 2, 3)), t.var((0, 2, 3), unbiased=False)))

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    try:
        run_net(net, x, precision)
    finally:
        for h in hooks:
            h.remove()
    return stats


class TorchRunner:
    """Runs a filter network with PyTorch: runner(x) -> stylized, runner(x, stats) with frozen norm statistics,
    runner.measure(x) -> those statistics. export.OnnxRunner is the onnxruntime twin."""

    def __init__(self, net: FilterNet, precision: str):
        self.net, self.precision = net, precision

    def __call__(self, x: torch.Tensor, stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        with frozen_norm_stats(self.net, stats) if stats is not None else contextlib.nullcontext():
            return run_net(self.net, x, self.precision)

    def measure(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return measure_norm_stats(self.net, x, self.precision)


def resolve_for(filt: Filter, settings: ApplySettings, img: Image.Image) -> ApplySettings:
    """resolve() for the size this image will be painted at (settings already resolved are returned as they are)."""
    if settings.resolved:
        return settings
    w, h = longer_side(*img.size, settings.size)
    return resolve(filt, settings, (h, w))[0]


def make_runner(filt: Filter, settings: ApplySettings):
    """The network runner resolved settings ask for (see resolve())."""
    if not settings.resolved:
        raise ValueError("resolve() the settings first: precision and engine must not be 'auto'")
    if getattr(filt, "parts", None):  # a mix blended by its painted outputs (mix.Blend): a runner per filter
        from .mix import BlendRunner

        return BlendRunner([make_runner(p, settings) for p in filt.parts], filt.weights)
    return engine_runner(settings.engine, filt.net, pick_device(settings.device), settings.precision)


def ramp(n: int, overlap: int, start: bool, end: bool) -> torch.Tensor:
    """One side of a tile's blend weights: linear ramps over the overlap at ends that touch another tile."""
    r = torch.ones(n)
    k = min(overlap, n)
    lin = (torch.arange(k, dtype=torch.float32) + 0.5) / k
    if start:
        r[:k] = lin
    if end:
        r[n - k:] = torch.minimum(r[n - k:], lin.flip(0))
    return r


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    if n <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(starts))


def stylize_tensor(net, x: torch.Tensor, precision: str = "fp32",
                   max_tile_pixels: int = MAX_TILE_PIXELS, overlap: int = TILE_OVERLAP) -> torch.Tensor:
    """(1, 3, H, W), float in [0, 1] or uint8 -> stylized float, same size; tiled with frozen norm statistics when
    over budget. A big picture can come as uint8: each tile is made float on its own (a 24-megapixel photo is
    288 MB in float, 72 MB in uint8).

    `net` is a FilterNet (run by PyTorch at `precision`) or a runner (TorchRunner, export.OnnxRunner).
    """
    run = TorchRunner(net, precision) if isinstance(net, nn.Module) else net
    _, _, h, w = x.shape
    if h * w <= max_tile_pixels:
        return run(as_float(x))
    # statistics from the whole picture, seen at a size that fits the budget
    s = (max_tile_pixels / (h * w)) ** 0.5
    small = F.interpolate(as_float(x), size=(max(4, int(h * s)), max(4, int(w * s))), mode="area")
    stats = run.measure(small)
    del small
    side = max(4 * overlap, int(max_tile_pixels ** 0.5)) // 4 * 4
    th, tw = min(h, side), min(w, side)
    # each tile's blend weights are (its row's vertical ramp) x (its column's horizontal ramp), feathered on sides
    # that touch another tile; the tiles form a grid, so the weight sum is the outer product of two 1-D sums and
    # no full-size weight image is needed
    rows = {y: ramp(th, overlap, y > 0, y + th < h) for y in tile_starts(h, th, overlap)}
    cols = {x0: ramp(tw, overlap, x0 > 0, x0 + tw < w) for x0 in tile_starts(w, tw, overlap)}
    wy, wx = torch.zeros(h), torch.zeros(w)
    for y, r in rows.items():
        wy[y:y + th] += r
    for x0, c in cols.items():
        wx[x0:x0 + tw] += c
    out = torch.zeros(3, h, w)
    for y, r in rows.items():
        for x0, c in cols.items():
            y_out = run(as_float(x[:, :, y:y + th, x0:x0 + tw]), stats)[0]
            out[:, y:y + th, x0:x0 + tw] += y_out * (r[:, None] * c[None, :])
    return out.div_(wy[:, None]).div_(wx[None, :]).unsqueeze(0)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack([y, (b - y) * 0.564 + 0.5, (r - y) * 0.713 + 0.5], 1)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    y, cb, cr = x.unbind(1)
    r = y + 1.403 * (cr - 0.5)
    b = y + 1.773 * (cb - 0.5)
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return torch.stack([r, g, b], 1).clamp(0, 1)


def finish(photo: torch.Tensor, styled: torch.Tensor, strength: float, preserve_colors: bool) -> torch.Tensor:
    """Colour preservation (luminance transfer, Gatys et al. 2016) then blending by strength.

    Works in place on `styled` where it can (large pictures): callers hand over the network's output. `photo`
    may be uint8: it is made float only when one of the two needs it.
    """
    if preserve_colors or strength < 1:
        photo = as_float(photo)
    if preserve_colors:
        ys, yp = rgb_to_ycbcr(styled), rgb_to_ycbcr(photo)
        styled = ycbcr_to_rgb(torch.cat([ys[:, :1], yp[:, 1:]], 1))
    if strength < 1:
        styled = torch.lerp(photo, styled, strength)
    return styled.clamp_(0, 1)


def paint(run, x: torch.Tensor, st: ApplySettings) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] (or uint8 for one big picture) -> painted float, same size.

    At `st.paint_scale` < 1 the network paints a smaller copy and guided upsampling (guided.py) lifts the result
    back with the photo's full-resolution edges: a quarter of the work at 0.5, and bigger strokes."""
    h, w = x.shape[-2:]
    rh, rw = reduced_size(h, w, st.paint_scale)
    if (rh, rw) == (h, w):
        if x.shape[0] == 1 or h * w > st.max_tile_pixels:
            return torch.cat([stylize_tensor(run, x[i:i + 1], st.precision, st.max_tile_pixels) for i in range(len(x))])
        return run(x)
    if reduced_on_cpu(h, w, st):
        u8 = x if x.dtype == torch.uint8 else x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
        out = paint_reduced_frames(run, list(u8.permute(0, 2, 3, 1).contiguous().numpy()), st)
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255)
    full = as_float(x)  # bigger pictures (tiled) and GPUs: the tensor version
    # bilinear with antialiasing: the area filter's look, 3x faster on the CPU here (adaptive pooling is slow)
    small = F.interpolate(full, size=(rh, rw), mode="bilinear", antialias=True, align_corners=False)
    lo = torch.cat([stylize_tensor(run, small[i:i + 1], st.precision, st.max_tile_pixels) for i in range(len(small))])
    return guided_upsample(lo, full, photo_lo=small)


def reduced_on_cpu(h: int, w: int, st: ApplySettings) -> bool:
    """Whether an h x w picture is painted reduced on the CPU route (paint_reduced_frames): a paint scale under 1,
    a picture within the tile budget (bigger ones are tiled by the tensor version), and the CPU (a GPU keeps the
    tensors on the device)."""
    return reduced_size(h, w, st.paint_scale) != (h, w) and h * w <= st.max_tile_pixels \
        and pick_device(st.device).type == "cpu"


def paints_reduced_frames(h: int, w: int, st: ApplySettings) -> bool:
    """Whether h x w video frames take the uint8 reduced route (paint_reduced_frames), where the painting at the
    reduced size exists on its own: plain painting (full strength, the artwork's colours) at a paint scale on the
    CPU."""
    return reduced_on_cpu(h, w, st) and st.strength == 1 and not st.preserve_colors


def shrink_frames(rgbs: list[np.ndarray], st: ApplySettings) -> list[np.ndarray]:
    """Same-size uint8 frames -> the same at the paint scale's size (OpenCV's area filter)."""
    h, w = rgbs[0].shape[:2]
    rh, rw = reduced_size(h, w, st.paint_scale)
    return [cv2.resize(np.ascontiguousarray(f), (rw, rh), interpolation=cv2.INTER_AREA) for f in rgbs]


def paint_small_frames(run, smalls: list[np.ndarray], st: ApplySettings) -> np.ndarray:
    """Reduced uint8 frames -> their painting, (B, h, w, 3) float32 in [0, 1]: what guided_upsample_frame lifts."""
    return np.concatenate([painted_hwc(stylize_tensor(run, frames_nchw([s]), st.precision, st.max_tile_pixels))
                           for s in smalls])


def paint_reduced_frames(run, rgbs: list[np.ndarray], st: ApplySettings) -> np.ndarray:
    """Same-size uint8 RGB pictures (H, W, 3) -> painted uint8 at `st.paint_scale`, on the CPU: OpenCV scales them
    down, the network paints, guided_upsample_frame lifts the painting back. No float copy of a full-size picture
    is made, and nothing at full size leaves the layout it is decoded in: at 720p the guided step takes 10 ms
    against 45 for the tensor version and its conversions (speed.md)."""
    smalls = shrink_frames(rgbs, st)
    return np.stack([guided_upsample_frame(p, f, s) for p, f, s in zip(paint_small_frames(run, smalls, st), rgbs,
                                                                         smalls)])


# A video frame's conversions to and from the network's layout are done by numpy and OpenCV, not PyTorch: PyTorch
# runs them on its OpenMP threads, which then spin-wait for more work beside the engine, the flow and the encoder
# (a fifth of a 720p lite render's CPU time, perf; benchmarks/results/speed.md, "Real time on 2 cores")
def frames_nchw(rgbs: list[np.ndarray]) -> torch.Tensor:
    """Same-size uint8 frames (H, W, 3) -> (B, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(cv2.dnn.blobFromImages([np.ascontiguousarray(f) for f in rgbs], 1 / 255))


def painted_hwc(y: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float painting -> (B, H, W, 3) float32 numpy, contiguous."""
    return np.ascontiguousarray(y.float().cpu().numpy().transpose(0, 2, 3, 1))


TO_8BIT = (255.0,) * 4  # a scalar for every channel (OpenCV 4 reads a bare number as (v, 0, 0, 0))


def to_uint8(f: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] -> uint8, rounded and saturated."""
    return cv2.multiply(f, TO_8BIT, dtype=cv2.CV_8U)


def painted_uint8(y: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float painting in [0, 1] -> (B, H, W, 3) uint8, rounded and saturated."""
    return np.stack([to_uint8(f) for f in painted_hwc(y)])


def on_gpu(run) -> bool:
    """Whether a runner paints with PyTorch on a device other than the CPU."""
    return isinstance(run, TorchRunner) and next(run.net.parameters()).device.type != "cpu"


def paints_frames_on_device(run, h: int, w: int, st: ApplySettings) -> bool:
    """Whether h x w frames take paint_frames_on_device: a GPU runner, whole frames (no paint scale, no tiles)."""
    return on_gpu(run) and reduced_size(h, w, st.paint_scale) == (h, w) and h * w <= st.max_tile_pixels


def paint_frames_on_device(run: TorchRunner, rgbs: list[np.ndarray], st: ApplySettings) -> np.ndarray:
    """Same-size uint8 frames (H, W, 3) -> painted uint8, every conversion on the network's device: 8-bit frames
    go there and come back (a quarter of float32's bytes each way) and no float copy is made on the host. On an
    H200 the host side of the float route took 60 ms of a 1080p frame whose network took 3-16 (speed.md, "GPU")."""
    device = next(run.net.parameters()).device
    with torch.no_grad():
        u8 = torch.from_numpy(np.stack([np.ascontiguousarray(f) for f in rgbs])).to(device)
        x = u8.permute(0, 3, 1, 2).float().div_(255)
        y = finish(x, run_net(run.net, x, run.precision, on_device=True), st.strength, st.preserve_colors)
        return y.mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def stylize_image(filt: Filter, img: Image.Image, settings: ApplySettings | None = None,
                  mask=None) -> Image.Image:
    """Paint one PIL image with a filter; returns RGB, or RGBA when the input had alpha (alpha kept).

    `mask` (a path, PIL image or array; any size) says where to paint: white paints, black keeps the photo, grey
    blends (mask.py); `settings.keep="faces"` keeps the faces found.
    Settings still `auto` are resolved for this picture's size (a calibration the first time; see resolve())."""
    st = settings or ApplySettings()
    if not 0 <= st.strength <= 1:
        raise ValueError("strength must be between 0 and 1")
    rgb, alpha = split_alpha(img)
    rgb = resize_longer(rgb, st.size)
    st = resolve_for(filt, st, rgb)
    runner = make_runner(filt, st)
    photo = to_uint8_tensor(rgb)  # made float tile by tile, and as a whole only if finish() needs it
    styled = finish(photo, paint(runner, photo, st), st.strength, st.preserve_colors)
    if mask is not None or st.keep:
        from .mask import composite, picture_mask

        styled = composite(photo, styled, picture_mask(np.asarray(rgb), mask, st.keep, st.feather))
    del photo
    out = to_image(styled)
    if alpha is not None:
        out.putalpha(alpha.resize(out.size, Image.LANCZOS) if alpha.size != out.size else alpha)
    return out


def training_preview(net: FilterNet, photo: Image.Image, size: int) -> Image.Image:
    """A network in training painting `photo` (longer side `size`), as the server's job previews show it: on the
    network's own device, with PyTorch, its training mode given back afterwards."""
    was_training = net.training
    device = str(next(net.parameters()).device)
    try:
        return stylize_image(Filter("preview", {}, net), photo, ApplySettings(size=size, device=device, engine="torch"))
    finally:
        net.train(was_training)


def provenance(filt: Filter, settings: ApplySettings, source: str | None = None) -> dict:
    from . import __version__

    return {"filter": filt.name, "card_hash": filt.card_hash, "settings": settings.to_dict(),
            "artwork": filt.card.get("artwork", {}).get("title"), "backbone": filt.card.get("backbone", {}).get("name"),
            "source": source, "rotoscope_version": __version__}
