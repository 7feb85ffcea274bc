"""The Python API (`import rotoscope`): what the README promises works, and keeps working when called again."""

import importlib

import numpy as np
from PIL import Image

import rotoscope
from conftest import make_scene


def test_stylize_can_be_called_twice_and_after_its_module_is_imported(tiny_filter, tmp_path):
    photo = make_scene(tmp_path / "photo.png")
    first = rotoscope.stylize("tiny", photo, engine="torch", precision="fp32")
    second = rotoscope.stylize("tiny", Image.open(photo), engine="torch", precision="fp32")
    importlib.import_module("rotoscope.stylize")  # someone imports the module: the function stays a function
    third = rotoscope.stylize("tiny", str(photo), engine="torch", precision="fp32")
    assert callable(rotoscope.stylize) and callable(rotoscope.train)
    assert np.array_equal(np.asarray(first), np.asarray(second)) and np.array_equal(np.asarray(first),
                                                                                     np.asarray(third))


def test_train_can_be_called_twice(tmp_path):
    from rotoscope.demo import draw_artwork

    art = tmp_path / "art.png"
    draw_artwork(64).save(art)
    tiny = dict(steps=2, size=32, batch=1, channels=(8, 16, 16), res_blocks=1, backbone="random", precision="fp32",
                log=lambda *a: None, progress=False)
    a = rotoscope.train(art, "one", **tiny)
    b = rotoscope.train(art, "two", **tiny)
    assert (a.name, b.name) == ("one", "two") and callable(rotoscope.train)
