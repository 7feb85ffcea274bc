"""The Python API (`import rotoscope`) given hostile arguments: every refusal is a RotoscopeError with a one-line
message (never an AttributeError from deep inside, never a crashed interpreter), and nothing earlier is changed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import rotoscope
from rotoscope.errors import RotoscopeError

from .conftest import pickle_bytes

# a hang (a FIFO read, a lock) fails within 120 s rather than at the suite's 600 s
pytestmark = pytest.mark.timeout(120)


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert text and "\n" not in text, repr(text)
    return text


STYLIZE_CASES = {
    "missing path": (lambda w: dict(image=w.work / "missing.png"), "no such file"),
    "numpy array": (lambda w: dict(image=np.zeros((8, 8, 3), np.uint8)), "file path or a PIL image"),
    "tensor": (lambda w: dict(image=torch.zeros(1, 3, 8, 8)), "file path or a PIL image"),
    "None image": (lambda w: dict(image=None), "file path or a PIL image"),
    "0x0 image": (lambda w: dict(image=Image.new("RGB", (0, 0))), "nothing to paint"),
    "0x5 image": (lambda w: dict(image=Image.new("RGB", (0, 5))), "nothing to paint"),
    "strength 2": (lambda w: dict(image=w.photo, strength=2), "strength must be between"),
    "strength text": (lambda w: dict(image=w.photo, strength="a"), "strength must be a number"),
    "size -1": (lambda w: dict(image=w.photo, size=-1), "size must be between"),
    "unknown setting": (lambda w: dict(image=w.photo, bogus=1), "unknown setting"),
    "filter None": (lambda w: dict(filt=None), "filt must be"),
    "filter a number": (lambda w: dict(filt=3), "filt must be"),
    "unknown filter": (lambda w: dict(filt="tinyy"), "did you mean tiny"),
    "pickled filter": (lambda w: dict(filt=_write(w.work / "evil.safetensors", pickle_bytes(w.marker))),
                       "never unpickles"),
    "folder as image": (lambda w: dict(image=w.work), "folder"),
}


def _write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", STYLIZE_CASES)
def test_stylize_refuses_with_a_rotoscope_error(world, case):
    make, words = STYLIZE_CASES[case]
    args = {"filt": "tiny", "image": world.photo, "engine": "torch", "precision": "fp32", **make(world)}
    with pytest.raises(RotoscopeError) as e:
        rotoscope.stylize(args.pop("filt"), args.pop("image"), **args)
    assert words in _one_line(e.value)


TRAIN_CASES = {
    "steps -5": (dict(steps=-5), "steps must be between"),
    "steps text": (dict(steps="5"), "steps must be a whole number"),
    "size float": (dict(size=32.5), "size must be a whole number"),
    "unknown setting": (dict(stepz=5), "unknown setting"),
    "channels 2": (dict(channels=(8, 16)), "channels takes 3 values"),
    "name ../x": (dict(name="../x"), "invalid filter name"),
    "existing name": (dict(name="keep"), "pass overwrite=True"),
    "out a picture": (dict(out="photo.png"), "a filter is a file ending in .safetensors"),
    "missing artwork": (dict(artwork="missing.png"), "no such file"),
}


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_refuses_before_any_work(world, case):
    over, words = TRAIN_CASES[case]
    args = dict(artwork=world.photo, name="new", steps=2, size=32, batch=1, channels=(8, 16, 16), res_blocks=1,
                backbone="random", precision="fp32", progress=False, log=lambda m: None)
    args.update(over)
    with pytest.raises(RotoscopeError) as e:
        rotoscope.train(args.pop("artwork"), args.pop("name"), **args)
    assert words in _one_line(e.value)
    world.check(world.filters / "new.safetensors")


def test_load_filter_refuses_a_pickle_and_lists_it_as_broken(world):
    evil = world.filters / "evil.safetensors"
    evil.write_bytes(pickle_bytes(world.marker))
    with pytest.raises(RotoscopeError, match="never unpickles"):
        rotoscope.load_filter("evil")
    listed = {n: c for n, _, c in rotoscope.list_filters()}
    assert listed["evil"] is None and listed["tiny"] is not None
