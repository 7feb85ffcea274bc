"""Hostile training: settings out of range or of the wrong kind, names taken, artworks and photo folders that are
not what they say. Every refusal comes before any work, in one line, and replaces no filter."""

from __future__ import annotations

import os

import pytest

from conftest import make_image

from .conftest import pickle_bytes

# a hang (a FIFO read, a lock) fails within 120 s rather than at the suite's 600 s
pytestmark = pytest.mark.timeout(120)

TINY = ["--size", "32", "--batch", "1", "--backbone", "random", "--channels", "8,16,16", "--res-blocks", "1",
        "--precision", "fp32", "--no-progress", "--set", "size_start=0"]

BAD_SETTINGS = [
    (["--steps", "-5"], "steps must be between 1 and"),
    (["--steps", "0"], "steps must be between 1 and"),
    (["--steps", "99999999999999999999"], "steps must be between 1 and"),
    (["--steps", "abc"], "--steps"),
    (["--steps", "2.5"], "--steps"),
    (["--batch", "0"], "batch must be between 1 and"),
    (["--size", "3"], "size must be between 16 and"),
    (["--lr", "nan"], "lr must be a number"),
    (["--lr", "inf"], "lr must be between"),
    (["--lr", "-1"], "lr must be between"),
    (["--channels", "8,16"], "three widths"),
    (["--channels", "0,16,16"], "channels must be 3 numbers between"),
    (["--channels", "a,b,c"], "channels"),
    (["--res-blocks", "99"], "res_blocks must be between"),
    (["--backbone", "resnet"], "backbone"),
    (["--color-match", "histogram"], "color_match"),
    (["--precision", "fp8"], "precision"),
    (["--device", "tpu"], "device"),
    (["--seed", "-1"], "seed must be between"),
    (["--checkpoint-every", "0"], "checkpoint_every must be between"),
    (["--style-weight", "-1"], "style_weight must be between"),
    (["--set", "holdout=2"], "holdout must be between"),
    (["--set", "checkpoint_seconds=0"], "checkpoint_seconds must be between"),
    (["--set", "init=zero"], "init"),
    (["--set", "kernel_outer=2"], "kernel_outer"),
    (["--set", "nonsense=1"], "unknown setting 'nonsense'"),
    (["--set", "steps"], "key=value"),
    (["--set", "size_ramp=yes"], "size_ramp"),
]


@pytest.mark.parametrize("args,words", BAD_SETTINGS, ids=[" ".join(a) for a, _ in BAD_SETTINGS])
def test_a_bad_setting_is_one_line_naming_it_and_no_filter_is_written(world, args, words):
    world.refused("train", world.photo, "--name", "new", *TINY, *args, words=[words],
                  absent=[world.filters / "new.safetensors", world.home / "runs" / "new"])


@pytest.mark.parametrize("args", [[], ["--steps", "0"], ["--steps", "-5"], ["--size", "3"]],
                         ids=["valid", "steps 0", "steps -5", "size 3"])
def test_an_existing_filter_is_never_replaced_without_overwrite(world, args):
    """A typo must not destroy a trained filter: the name is refused, whatever the other settings say."""
    world.refused("train", world.photo, "--name", "keep", *TINY, "--steps", "2", *args)


def test_resume_without_a_checkpoint_or_with_another_artwork(world):
    world.refused("train", world.photo, "--name", "fresh", *TINY, "--steps", "2", "--resume",
                  words=["nothing to resume"], absent=[world.filters / "fresh.safetensors"])


@pytest.mark.parametrize("out", ["filter.png", "filter", "folder/", "photo.png"])
def test_an_output_that_is_not_a_filter_file_is_refused_before_training(world, out):
    """-o names a .safetensors file: never the artwork itself (a typo that used to overwrite it), never a folder."""
    (world.work / "folder").mkdir()
    world.refused("train", world.photo, "--name", "x", *TINY, "--steps", "2", "-o", world.work / out,
                  words=["a filter is a file ending in .safetensors"])


ARTWORKS = {
    "missing.png": None,
    "words.png": b"hello",
    "truncated.png": "truncated",
    "pickle.png": "pickle",
    "fifo.png": "fifo",
    "folder.png": "folder",
}


@pytest.mark.parametrize("name", ARTWORKS)
def test_an_artwork_that_is_not_a_picture_is_one_line(world, name):
    art = world.work / name
    kind = ARTWORKS[name]
    if isinstance(kind, bytes):
        art.write_bytes(kind)
    elif kind == "truncated":
        art.write_bytes(world.photo.read_bytes()[:200])
    elif kind == "pickle":
        art.write_bytes(pickle_bytes(world.marker))
    elif kind == "fifo":
        os.mkfifo(art)
    elif kind == "folder":
        art.mkdir()
    world.refused("train", art, "--name", "x", *TINY, "--steps", "2", absent=[world.filters / "x.safetensors"])


@pytest.mark.parametrize("kind", ["missing", "a file", "empty", "all unreadable", "only a fifo", "dev-null"])
def test_a_photos_folder_with_nothing_usable_is_one_line(world, kind):
    photos = world.work / "photos"
    if kind == "a file":
        photos = world.photo
    elif kind == "dev-null":
        photos = "/dev/null"
    elif kind != "missing":
        photos.mkdir()
        if kind == "all unreadable":
            (photos / "a.jpg").write_text("nope")
            (photos / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        elif kind == "only a fifo":
            os.mkfifo(photos / "c.png")
    world.refused("train", world.photo, "--name", "x", *TINY, "--steps", "2", "--photos", photos,
                  absent=[world.filters / "x.safetensors"])


@pytest.mark.parametrize("kind", ["pickle", "garbage", "a picture", "missing"])
def test_backbone_weights_that_are_not_weights_are_one_line_and_never_unpickled(world, kind):
    weights = world.work / "vgg16.pth"
    if kind == "pickle":
        weights.write_bytes(pickle_bytes(world.marker))
    elif kind == "garbage":
        weights.write_bytes(os.urandom(1000))
    elif kind == "a picture":
        weights.write_bytes(make_image(world.work / "picture.png").read_bytes())
    world.refused("train", world.photo, "--name", "x", *TINY, "--steps", "2", "--backbone", "vgg16",
                  "--backbone-weights", weights, absent=[world.filters / "x.safetensors"])
