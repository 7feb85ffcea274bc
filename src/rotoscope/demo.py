"""`rotoscope demo`: the whole idea in a few minutes, with nothing to download but the offline backbone.

The artwork is drawn here by code (a constructivist propaganda poster: flat red, black and cream geometry, so
nothing is copied from anywhere), the photos are scikit-image's bundled ones, and the result is a before/after
sheet. `draw_artwork` (swirling strokes) is the tests' small stand-in artwork.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import Conflict, RotoscopeError

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


POSTER_RED, POSTER_BLACK, POSTER_CREAM = (196, 30, 36), (24, 20, 20), (236, 224, 196)


def draw_poster(width: int = 600, height: int = 800, seed: int = 0) -> Image.Image:
    """A constructivist propaganda poster drawn by code: flat red, black and cream geometry, a red wedge into a
    pale circle, rays, factory blocks, heavy lettering, printed on grainy paper with the red plate a little off
    register. The demo's artwork: the kind of picture rotoscope's first user trained on."""
    rng = np.random.default_rng(seed)
    W, H = width, height
    s = min(W, H) / 600  # every length is in units of a 600 px poster
    red = Image.new("L", (W, H), 0)  # the two printing plates, drawn separately, then inked on paper
    black = Image.new("L", (W, H), 0)
    r, k = ImageDraw.Draw(red), ImageDraw.Draw(black)
    # rays from the lower left, alternate wedges inked black
    ox, oy = -0.1 * W, 1.05 * H
    for i in range(4):
        a0 = math.radians(-80 + i * 13)
        a1 = a0 + math.radians(0.9)
        far = 2.2 * max(W, H)
        pts = [(ox, oy), (ox + far * math.cos(a0), oy + far * math.sin(a0)), (ox + far * math.cos(a1), oy + far * math.sin(a1))]
        k.polygon(pts, fill=255)
    # a broad black diagonal band and a pale circle sitting on it
    band = [(0, 0.62 * H), (W, 0.30 * H), (W, 0.44 * H), (0, 0.76 * H)]
    # a red sun, half hidden behind the band
    sx, sy, sr = 0.22 * W, 0.66 * H, 95 * s
    r.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], fill=255)
    k.polygon(band, fill=255)
    # a paper-coloured circle cut out of the band, and the red wedge driving into it
    cx, cy, rad = 0.66 * W, 0.37 * H, 120 * s
    k.ellipse([cx - rad - 14 * s, cy - rad - 14 * s, cx + rad + 14 * s, cy + rad + 14 * s], fill=255)
    k.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=0)
    r.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=0)
    r.polygon([(0.04 * W, 0.17 * H), (cx + 0.3 * rad, cy + 0.1 * rad), (0.10 * W, 0.36 * H)], fill=255)
    # factory blocks and chimneys along the bottom, black; smoke as red discs
    x = 0.02 * W
    while x < W:
        bw, bh = rng.uniform(40, 90) * s, rng.uniform(60, 160) * s
        k.rectangle([x, H - bh, x + bw, H], fill=255)
        if rng.random() < 0.5:
            cw, ch = 14 * s, rng.uniform(120, 220) * s
            k.rectangle([x + bw * 0.3, H - ch, x + bw * 0.3 + cw, H], fill=255)
            for j in range(3):
                d = (18 + 7 * j) * s
                px, py = x + bw * 0.3 + cw / 2 + j * 16 * s, H - ch - (j + 1) * 22 * s
                r.ellipse([px - d / 2, py - d / 2, px + d / 2, py + d / 2], fill=255)
        x += bw + rng.uniform(4, 16) * s
    # heavy lettering on a red bar across the top, and a black bar with cream letters
    r.rectangle([0, 0.04 * H, W, 0.04 * H + 78 * s], fill=255)
    k.rectangle([0, 0.04 * H, W, 0.04 * H + 78 * s], fill=0)
    font = ImageFont.load_default(size=max(8, int(64 * s)))
    heavy = max(1, int(3 * s))
    r.text((0.05 * W, 0.04 * H + 4 * s), "ROTOSCOPE", fill=0, font=font, stroke_width=heavy, stroke_fill=0)
    k.text((0.05 * W, 0.04 * H + 4 * s), "ROTOSCOPE", fill=255, font=font, stroke_width=heavy, stroke_fill=255)
    k.rectangle([0.48 * W, 0.83 * H - 44 * s, W, 0.83 * H], fill=255)
    small = ImageFont.load_default(size=max(8, int(26 * s)))
    k.text((0.51 * W, 0.83 * H - 38 * s), "PAINT EVERY FRAME", fill=0, font=small, stroke_width=1, stroke_fill=0)
    # ink on paper: red plate shifted a few pixels (misregistration), grain everywhere, halftone in the sun
    paper = np.empty((H, W, 3), np.float32)
    paper[:] = POSTER_CREAM
    shift = (int(rng.integers(2, 5) * s), int(rng.integers(1, 4) * s))
    red_a = np.roll(np.asarray(red, np.float32) / 255, shift, axis=(0, 1))
    yy, xx = np.mgrid[0:H, 0:W]
    dots = ((np.sin(xx * 0.55) * np.sin(yy * 0.55)) > 0.2).astype(np.float32)
    in_sun = ((xx - sx) ** 2 + (yy - sy) ** 2) < sr ** 2
    red_a = np.where(in_sun, red_a * (0.55 + 0.45 * dots), red_a)
    black_a = np.asarray(black, np.float32) / 255
    img = paper * (1 - red_a[..., None]) + np.array(POSTER_RED, np.float32) * red_a[..., None]
    img = img * (1 - black_a[..., None]) + np.array(POSTER_BLACK, np.float32) * black_a[..., None]
    grain = rng.normal(0, 7, (H, W, 1)).astype(np.float32)
    blotch = np.asarray(Image.fromarray(rng.integers(0, 255, (H // 16 + 1, W // 16 + 1), dtype=np.uint8))
                        .resize((W, H), Image.BICUBIC), np.float32)[..., None]
    img = img + grain + (blotch - 128) * 0.06
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


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
# Compared by eye on the sheets at the same time budget (vgg16-hed then): 280 steps of batch 2 at lr 1.5e-3 drew
# strokes and outlines and kept the photos' shapes; 140 steps of batch 4 only tinted the photos; lr 2-3e-3
# dissolved the faces. On EfficientNet-Lite0 with the default weights of then (content 5, style 10, Gram), 130 steps
# painted the photos as flat red, black and cream poster shapes (cat and text readable; a pale face can fade)
RECIPE = {"size": 128, "batch": 2, "lr": 1.5e-3, "eval_every": 50, "checkpoint_every": 50,
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


def resumed_steps(name: str) -> int | None:
    """The step count of the demo run that was interrupted, from its checkpoint (None when it cannot be read: train's
    resume says why)."""
    from .paths import runs_dir
    from .train import CHECKPOINT, checkpoint_state

    path = runs_dir() / name / CHECKPOINT
    try:
        return int(checkpoint_state(path)["config"]["steps"])
    except Exception:  # noqa: BLE001
        return None


DEMO_TITLE = "rotoscope demo poster (constructivist, drawn by code)"


def refuse_someone_elses(name: str) -> None:
    """The demo replaces its own filter and run from a run before, never a filter of the name that the user trained
    (a user's own 'demo' was silently replaced), nor an interrupted training of another artwork."""
    from .filter import read_card
    from .paths import filters_dir
    from .train import run_of

    mine = filters_dir() / f"{name}.safetensors"
    if mine.exists():
        try:
            title = (read_card(mine).get("artwork") or {}).get("title")
        except Exception:  # noqa: BLE001 - unreadable: not provably the demo's, so kept
            title = None
        if title != DEMO_TITLE:
            raise Conflict(f"a filter named '{name}' exists and the demo did not make it"
                           f"{f' (its artwork: {title})' if title else ''}; the demo would replace it: give the "
                           f"demo another name (--name), or remove yours first (rotoscope rm {name})")
    run = run_of(name)  # None for an unreadable checkpoint: a fresh run replaces it, as ever
    if run is not None and not run["finished"]:
        import hashlib
        import tempfile

        from .images import save_image

        with tempfile.TemporaryDirectory() as d:  # the poster as the demo writes it: what its runs record
            drawn = hashlib.sha256(save_image(draw_poster(), Path(d) / "poster.png").read_bytes()).hexdigest()
        if run["artwork_sha256"] != drawn:
            raise Conflict(f"an interrupted training of another artwork is kept as '{name}': the demo would start "
                           f"over it; give the demo another name (--name), or continue that training (rotoscope "
                           f"train ... --name {name} --resume)")


def run_demo(out_dir: Path, steps: int | None = None, backbone: str = "auto", log=print, progress: bool = True,
             name: str = "demo", seconds: float = TRAIN_SECONDS, resume: bool = False) -> Path:
    from .backbones import load_backbone, resolve_name
    from .config import TrainConfig
    from .data import sample_photos
    from .images import save_image
    from .stylize import ApplySettings, stylize_image
    from .train import require_checkpoint, train

    if steps is not None:  # a bad count is said before any work
        TrainConfig().replace(steps=steps).validate()
    if resume:  # so is nothing to resume: before the drawing and the timing
        require_checkpoint(name)
    refuse_someone_elses(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    art_path = out_dir / "demo-artwork.png"
    save_image(draw_poster(), art_path)
    log(f"drew the artwork (a constructivist poster): {art_path}")

    chosen = resolve_name(backbone)
    try:
        load_backbone(chosen)
    except RotoscopeError as e:
        if backbone != "auto":
            raise
        log(f"warning: {e}\nwarning: falling back to the random backbone: palette and grain only, no strokes")
        chosen = "random"
    cfg = TrainConfig().replace(backbone=chosen, **RECIPE)
    if steps is None and resume:  # the interrupted run's own count: timing the machine again would change it
        steps = resumed_steps(name)
    if steps is None:
        per_step = seconds_per_step(cfg, log)
        steps = budget_steps(per_step, seconds)
        log(f"demo: {per_step:.2f} s per step here, so {steps} steps (about {steps * per_step / 60:.1f} min of "
            f"training; `--steps N` to choose)")
    cfg = cfg.replace(steps=steps)
    filt = train(art_path, name, None, cfg, title=DEMO_TITLE, log=log, progress=progress, resume=resume)

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
