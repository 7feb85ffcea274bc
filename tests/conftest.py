"""Shared fixtures: tiny images, an isolated ROTOSCOPE_HOME, the shared data folder when present."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Tests use tiny tensors: one thread is as fast as two there, and far faster when the cores are busy
# (measured: a tiny FilterNet forward took 5 ms on one thread, 170 ms on two, on a loaded 2-core machine).
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def rotoscope_home(tmp_path, monkeypatch):
    """Every test gets its own empty registry, runs and cache."""
    home = tmp_path / "rotoscope-home"
    monkeypatch.setenv("ROTOSCOPE_HOME", str(home))
    return home


def make_image(path, size=(48, 40), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return Path(path)


@pytest.fixture
def tiny_image(tmp_path):
    return make_image(tmp_path / "tiny.png")


def make_scene(path, seed=0, brightness=0.6, size=(96, 64), gray=False):
    """A distinct synthetic 'photo': a smooth colour gradient with a few shapes, scaled to a mean brightness."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    # a low-frequency random colour field (what a perceptual hash sees) plus a few sharp shapes
    field = (rng.uniform(0, 255, (4, 6, 3))).astype(np.uint8)
    img = Image.fromarray(field, "RGB").resize((w, h), Image.BICUBIC)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = rng.integers(0, w - 8), rng.integers(0, h - 8)
        box = [int(x0), int(y0), int(x0 + rng.integers(6, w // 2)), int(y0 + rng.integers(6, h // 2))]
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=fill)
    a = np.asarray(img, dtype=np.float64) / 255
    if gray:
        a = a.mean(-1, keepdims=True).repeat(3, -1)
    luma = (a * [0.299, 0.587, 0.114]).sum(-1).mean()
    a = np.clip(a * (brightness / max(luma, 1e-3)), 0, 1)
    Image.fromarray((a * 255 + 0.5).astype(np.uint8), "RGB").save(path)
    return Path(path)


@pytest.fixture
def tiny_filter(rotoscope_home):
    """A registry filter named 'tiny' with an untrained 8-16-16 network: instant to load and apply."""
    from rotoscope.config import NetConfig
    from rotoscope.filter import registry_path, save_filter
    from rotoscope.network import FilterNet

    import torch

    torch.manual_seed(0)
    net = FilterNet(NetConfig(channels=(8, 16, 16), res_blocks=1))
    card = {"name": "tiny", "architecture": {"type": "FilterNet", "channels": [8, 16, 16], "res_blocks": 1,
                                             "kernel_outer": 9},
            "artwork": {"title": "Tiny test artwork"}, "backbone": {"name": "random"}}
    return save_filter(net, card, registry_path("tiny"))
