"""Hostile pictures given to `rotoscope apply`: broken, disguised, special files, absurd shapes and settings.

Refused ones get exit code 1 and one line; edge shapes that are real pictures are painted, at their size."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_image

from .conftest import pickle_bytes, torch_zip_bytes

# a hang (a FIFO read, a lock) fails within 120 s rather than at the suite's 600 s
pytestmark = pytest.mark.timeout(120)

FAST = ["--engine", "torch", "--precision", "fp32", "--no-progress"]  # no per-machine measuring in a tiny case


def png_claiming(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels, with almost no data: what a pixel bomb or a lying header looks like."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("word/document.xml", "<w:document/>")
    return buf.getvalue()


def good_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 40, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def good_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 40, 3), np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


# name -> (how to make the file in `work`, words the one line must hold)
BAD_FILES = {
    "empty.png": (lambda w: b"", "not an image"),
    "words.jpg": (lambda w: b"this is a text file", "not an image"),
    "truncated.png": (lambda w: good_png()[:300], "cannot decode"),
    "truncated.jpg": (lambda w: good_jpeg()[:200], "cannot decode"),
    "signature-only.png": (lambda w: b"\x89PNG\r\n\x1a\n", "not an image"),
    "png-then-zip.png": (lambda w: b"\x89PNG\r\n\x1a\n" + zip_bytes(), "not an image"),
    "document.png": (lambda w: zip_bytes(), "not an image"),
    "pickle.png": (lambda w: pickle_bytes(w.marker), "not an image"),
    "torch.jpg": (lambda w: torch_zip_bytes(w.marker), "not an image"),
    "bomb.png": (lambda w: png_claiming(100_000, 100_000), "safety limit"),
    "zero-width.png": (lambda w: png_claiming(0, 5), "not an image"),
    "html.gif": (lambda w: b"GIF89a<script>alert(1)</script>", "not an image"),
    "name with spaces 'and' \"quotes\" ü.png": (lambda w: good_png()[:100], "cannot decode"),
    "new\nline.png": (lambda w: good_png()[:100], "cannot decode"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_broken_or_disguised_picture_is_one_line(world, name):
    make, words = BAD_FILES[name]
    src = world.work / name
    src.write_bytes(make(world))
    out = world.work / "out.png"
    world.refused("apply", "tiny", src, "-o", out, words=[words], absent=[out])


SPECIAL = ["missing", "fifo", "dev-zero", "dev-null", "dangling-link", "link-loop", "link-to-fifo", "folder-no-images"]


@pytest.mark.parametrize("kind", SPECIAL)
def test_special_files_are_refused_without_hanging(world, kind):
    w = world.work
    src = w / f"{kind}.png"
    if kind == "fifo":
        os.mkfifo(src)
    elif kind == "dev-zero":
        src = Path("/dev/zero")
    elif kind == "dev-null":
        src = Path("/dev/null")
    elif kind == "dangling-link":
        src.symlink_to(w / "nowhere.png")
    elif kind == "link-loop":
        src.symlink_to(src)
    elif kind == "link-to-fifo":
        os.mkfifo(w / "pipe")
        src.symlink_to(w / "pipe")
    elif kind == "folder-no-images":
        src = w / "empty-folder"
        src.mkdir()
        (src / "notes.txt").write_text("no pictures here")
    out = w / "out.png"
    world.refused("apply", "tiny", src, "-o", out, absent=[out])


BAD_OPTIONS = [
    (["--size", "-5"], "size must be between 1 and"),
    (["--size", "0"], "size must be between 1 and"),
    (["--size", "99999999"], "size must be between 1 and"),
    (["--size", "ten"], "--size"),
    (["--strength", "3"], "strength must be between 0 and 1 (got 3.0)"),
    (["--strength", "nan"], "strength"),
    (["--precision", "fp8"], "precision"),
    (["--engine", "tensorrt"], "engine"),
    (["--device", "tpu"], "device"),
    (["--set", "max_tile_pixels=1"], "max_tile_pixels must be between"),
    (["--set", "nonsense=1"], "unknown setting 'nonsense'"),
    (["--set", "strength"], "key=value"),
    (["--no-such-option"], "no-such-option"),
    (["--engine", "onnx", "--precision", "bf16"], "onnx runs fp32"),
]


@pytest.mark.parametrize("args,words", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_settings_are_one_line_naming_the_setting(world, args, words):
    out = world.work / "out.png"
    world.refused("apply", "tiny", world.photo, "-o", out, *args, words=[words], absent=[out])


def test_an_unavailable_gpu_is_one_line(world):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: --device cuda is not an error here")
    out = world.work / "out.png"
    world.refused("apply", "tiny", world.photo, "-o", out, "--device", "cuda", words=["no CUDA GPU"], absent=[out])


@pytest.mark.parametrize("how", ["same path", "through a symlink", "relative and absolute"])
def test_the_input_is_never_the_output(world, how):
    src = world.photo
    out = {"same path": src, "relative and absolute": Path("photo.png")}.get(how)
    if how == "through a symlink":
        out = world.work / "alias.png"
        out.symlink_to(src)
    world.refused("apply", "tiny", src, "-o", out, words=["overwrite the input"])


@pytest.mark.parametrize("out", ["out.xyz", "out", "earlier.png/inside.png"])
def test_outputs_that_cannot_be_written_are_one_line(world, out):
    """An unknown format, a name with no format, a file where a folder would be: refused, the earlier output kept."""
    world.refused("apply", "tiny", world.photo, "-o", world.work / out, *FAST, words=["cannot write"])


SHAPES = [(1, 1), (1, 3), (3, 1), (2, 2), (70_000, 2), (2, 9_000), (5, 4_000)]


@pytest.mark.parametrize("size", SHAPES, ids=[f"{w}x{h}" for w, h in SHAPES])
def test_tiny_and_extreme_shapes_are_painted_at_their_size(world, size):
    """Not errors: real pictures of absurd shapes are painted, complete, at exactly their size."""
    src = world.work / "odd.png"
    Image.new("RGB", size, (120, 80, 40)).save(src)
    out = world.work / "odd-out.png"
    code, _, err = world.cli("apply", "tiny", src, "-o", out, *FAST)
    assert code == 0 and "Traceback" not in err, err
    with Image.open(out) as im:
        assert im.size == size
        im.load()


MODES = {"16-bit grey": ("I;16", ".png"), "CMYK": ("CMYK", ".jpg"), "palette+transparency": ("P", ".png"),
         "grey+alpha": ("LA", ".png"), "1-bit": ("1", ".bmp"), "float": ("F", ".tif")}


@pytest.mark.parametrize("mode", MODES)
def test_unusual_modes_are_painted(world, mode):
    kind, suffix = MODES[mode]
    src = make_image(world.work / f"in{suffix}", size=(24, 20))
    img = Image.open(src)
    img = img.convert(kind) if kind != "P" else img.convert("P")
    if kind == "P":
        img.info["transparency"] = 0
    if kind == "I;16":
        img = Image.fromarray((np.asarray(Image.open(src).convert("L"), np.uint16) * 257))
    img.save(src)
    out = world.work / "in-out.png"
    code, _, err = world.cli("apply", "tiny", src, "-o", out, *FAST)
    assert code == 0 and "Traceback" not in err, err
    with Image.open(out) as im:
        assert im.size == (24, 20)


@pytest.mark.parametrize("name", ["name with spaces.png", "quote's \"here\".png", "ünïcødé 写真.png", "-dash.png",
                                  "[brackets]*?.png"])
def test_awkward_names_are_painted_and_written_where_asked(world, name):
    src = make_image(world.work / name, size=(24, 20))
    out = world.work / f"out {name}"
    code, _, err = world.cli("apply", "tiny", src, "-o", out, *FAST)
    assert code == 0 and "Traceback" not in err, err
    assert Image.open(out).size == (24, 20)
