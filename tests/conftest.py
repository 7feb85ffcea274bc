"""Shared fixtures: tiny images, an isolated ROTOSCOPE_HOME, the shared data folder when present."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
