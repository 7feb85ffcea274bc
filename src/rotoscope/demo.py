"""`rotoscope demo`: the whole idea in a few minutes, with nothing to download but the offline backbone.

The artwork is drawn here by code (swirling brush strokes in a bold palette, so nothing is copied from
anywhere), the photos are scikit-image's bundled ones, and the result is a before/after sheet.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import RotoscopeError

PALETTE = [(18, 32, 92), (32, 70, 160), (60, 120, 200), (240, 200, 60), (250, 230, 140), (230, 120, 30),
           (20, 20, 30), (120, 190, 200)]


def draw_artwork(size: int = 512, seed: int = 0) -> Image.Image:
    """Swirling strokes following a vortex flow field: a stand-in for an expressionist night sky."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), (24, 40, 100))
    d = ImageDraw.Draw(img)
    vortices = [(rng.uniform(0, size), rng.uniform(0, size), rng.choice([-1, 1]) * rng.uniform(0.6, 1.4))
                for _ in range(5)]

    def angle(x, y):
        vx, vy = 1.0, 0.25  # a drift from left to right, bent by each vortex
        for cx, cy, s in vortices:
            dx, dy = x - cx, y - cy
            r2 = dx * dx + dy * dy + 400.0
            vx += -s * dy * 300 / r2
            vy += s * dx * 300 / r2
        return math.atan2(vy, vx)

    for i in range(2600):
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        # colour by place: bright swirls near vortex centres, blues elsewhere, dark outlines sometimes
        near = min(math.hypot(x - cx, y - cy) for cx, cy, _ in vortices)
        if rng.random() < 0.08:
            color = PALETTE[6]
        elif near < size * 0.09:
            color = PALETTE[rng.choice([3, 4, 5])]
        else:
            color = PALETTE[rng.choice([0, 1, 2, 2, 7])]
        jitter = rng.integers(-18, 19, 3)
        color = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(color, jitter))
        pts = [(x, y)]
        for _ in range(int(rng.integers(5, 12))):
            a = angle(x, y)
            x, y = x + 6 * math.cos(a), y + 6 * math.sin(a)
            pts.append((x, y))
        d.line(pts, fill=color, width=int(rng.integers(4, 9)), joint="curve")
    return img


def sheet(rows: list[tuple[Image.Image, Image.Image]], art: Image.Image, cell: int = 256,
          titles: tuple[str, str] = ("photo", "painted")) -> Image.Image:
    """A before/after contact sheet: the artwork on top, then photo | result rows."""
    pad, label = 8, 20
    w = 2 * cell + 3 * pad
    art_t = art.copy()
    art_t.thumbnail((w - 2 * pad, cell))
    h = pad + label + art_t.height + pad + len(rows) * (cell + pad) + label
    out = Image.new("RGB", (w, h), (250, 250, 248))
    d = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    d.text((pad, pad), "artwork", fill=(40, 40, 40), font=font)
    out.paste(art_t, ((w - art_t.width) // 2, pad + label))
    y = pad + label + art_t.height + pad
    d.text((pad, y), titles[0], fill=(40, 40, 40), font=font)
    d.text((2 * pad + cell, y), titles[1], fill=(40, 40, 40), font=font)
    y += label
    for before, after in rows:
        for i, im in enumerate((before, after)):
            t = im.copy()
            t.thumbnail((cell, cell))
            out.paste(t, (pad + i * (cell + pad) + (cell - t.width) // 2, y + (cell - t.height) // 2))
        y += cell + pad
    return out


# the demo trains for about this long whatever the machine (steps = budget / measured seconds per step), so that
# it finishes in under 5 minutes on a 2-core AVX2 CPU in fp32 and gets more steps where steps are cheap
TRAIN_SECONDS = 170
MIN_STEPS, MAX_STEPS = 120, 400
# the demo's recipe, over TrainConfig's defaults: small crops, and a short run tuned to show the style quickly.
# Compared by eye on the sheets at the same time budget: 280 steps of batch 2 at lr 1.5e-3 and style weight 7
# drew strokes and outlines in the artwork's blues and creams and kept the photos' shapes; 140 steps of batch 4 at
# the defaults only tinted the photos; lr 2-3e-3 with style weight 10 dissolved the faces into texture
RECIPE = {"size": 128, "batch": 2, "lr": 1.5e-3, "style_weight": 7.0, "eval_every": 50, "checkpoint_every": 50,
          "preview_every": 100}


def budget_steps(per_step: float, seconds: float = TRAIN_SECONDS) -> int:
    """Steps that fit the time budget at this many seconds a step, within MIN_STEPS..MAX_STEPS, in tens."""
    return int(min(MAX_STEPS, max(MIN_STEPS, seconds / max(per_step, 1e-6))) // 10 * 10)


def seconds_per_step(cfg, log=print) -> float:
    """Time two training steps (train.train_step, after one to warm up) of the demo's network, loss and precision on
    this machine."""
    import time

    import torch

    from .devices import pick_device, resolve_precision
    from .train import FixedBatch, loss_network, new_network, train_step

    device = pick_device(cfg.device)
    cfg = cfg.replace(precision=resolve_precision(cfg.precision, device).value, init="random")
    # the loss network exactly as train() sets it up (bf16 backbone after the fp32 style target), on a stand-in
    # artwork: the drawn one is not needed to time a step
    backbone, target, weights = loss_network(cfg, draw_artwork(64), None, device)
    g = torch.Generator().manual_seed(0)
    net, opt, scaler, _init = new_network(cfg, device, log=lambda line: None)
    data = FixedBatch(torch.rand(cfg.batch, 3, cfg.size, cfg.size, generator=g))
    times = []
    for step in range(3):
        t = time.perf_counter()
        train_step(step, cfg, net, opt, scaler, data, backbone, target, weights, device)
        times.append(time.perf_counter() - t)
    return sum(times[1:]) / 2


def run_demo(out_dir: Path, steps: int | None = None, backbone: str = "auto", log=print, progress: bool = True,
             name: str = "demo", seconds: float = TRAIN_SECONDS) -> Path:
    from .backbones import load_backbone, resolve_name
    from .config import TrainConfig
    from .data import sample_photos
    from .images import save_image
    from .stylize import ApplySettings, stylize_image
    from .train import train

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    art_path = out_dir / "demo-artwork.png"
    save_image(draw_artwork(), art_path)
    log(f"drew the artwork: {art_path}")

    chosen = resolve_name(backbone)
    try:
        load_backbone(chosen)
    except RotoscopeError as e:
        if backbone != "auto":
            raise
        log(f"warning: {e}\nwarning: falling back to the random backbone: palette and grain only, no strokes")
        chosen = "random"
    cfg = TrainConfig().replace(backbone=chosen, **RECIPE)
    if not steps:
        per_step = seconds_per_step(cfg, log)
        steps = budget_steps(per_step, seconds)
        log(f"demo: {per_step:.2f} s per step here, so {steps} steps (about {steps * per_step / 60:.1f} min of "
            f"training; `--steps N` to choose)")
    cfg = cfg.replace(steps=steps)
    filt = train(art_path, name, None, cfg, title="rotoscope demo swirls (drawn by code)", log=log,
                 progress=progress)

    photos = {p.name: p.image for p in sample_photos()}
    shown = [n for n in filt.card["photos"]["holdout_names"]] + ["astronaut", "chelsea", "rocket"]
    rows = []
    for n in dict.fromkeys(shown):  # held-out photos first: the honest test
        img = photos[n]
        img.thumbnail((384, 384))
        rows.append((img, stylize_image(filt, img, ApplySettings())))
    path = save_image(sheet(rows[:4], Image.open(art_path).convert("RGB")), out_dir / "demo-sheet.png")
    log(f"the filter is saved as '{name}': try `rotoscope apply {name} YOUR_PHOTO.jpg`")
    return path
