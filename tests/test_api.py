"""The Python API (`import rotoscope`): what the README promises works, and keeps working when called again."""

import importlib
import json

import av
import numpy as np
from PIL import Image

import rotoscope
from conftest import make_scene
from rotoscope.config import VideoConfig


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


def test_train_takes_a_list_of_photo_files_and_refuses_what_it_cannot_use_in_one_line(tmp_path):
    """Raw TypeErrors before: a PIL image as the artwork, a list of photos, a name that is not text."""
    import pytest

    from conftest import make_image
    from rotoscope.demo import draw_artwork
    from rotoscope.errors import RotoscopeError

    art = tmp_path / "art.png"
    draw_artwork(64).save(art)
    photos = [make_image(tmp_path / f"p{i}.png", size=(48, 40), seed=i) for i in range(3)]
    tiny = dict(steps=2, size=32, batch=1, channels=(8, 16, 16), res_blocks=1, backbone="random", precision="fp32",
                log=lambda *a: None, progress=False, holdout=0.0)
    (tmp_path / "b").mkdir()
    same = make_image(tmp_path / "b" / "p0.png", size=(48, 40), seed=9)  # phones name photos alike in every folder
    f = rotoscope.train(art, "listed", photos=[str(p) for p in [*photos, same]], **tiny)
    assert f.card["photos"]["source"] == "4 files" and f.card["photos"]["train"] == 4
    from rotoscope.data import unique_names

    assert unique_names([photos[0], same, photos[0]]) == ["p0.png", "p0 (2).png", "p0 (3).png"]
    for args, says in (((Image.open(art), "x"), "artwork is the path of an image file"),
                       ((art, None), "a filter name is text, not NoneType"),
                       ((art, "y"), "photos is a folder or a list of picture files, not int")):
        with pytest.raises(RotoscopeError, match=says):
            rotoscope.train(*args, photos=5 if args[1] == "y" else None, **tiny)


def test_apply_video_is_the_library_call_for_a_clip_and_takes_a_filter_by_name(tiny_filter, tmp_path):
    from conftest import make_clip

    clip = make_clip(tmp_path / "clip.mp4", frames=4, audio=False)
    out = rotoscope.apply_video("tiny", clip, tmp_path / "out.mp4", warn=lambda s: None)
    assert out == tmp_path / "out.mp4" and out.stat().st_size > 0
    assert rotoscope.apply_video(tiny_filter, clip, warn=lambda s: None) == tmp_path / "clip-tiny.mp4"
    import pytest

    from rotoscope.errors import RotoscopeError

    with pytest.raises(RotoscopeError, match="filt must be a Filter"):
        rotoscope.apply_video(42, clip)
    # settings as keywords, as stylize takes them; unknown ones and another type are one line
    half = rotoscope.apply_video("tiny", clip, tmp_path / "half.mp4", strength=0.5, engine="torch", warn=print)
    assert half.stat().st_size > 0
    for kwargs, says in (({"stregth": 0.5}, r"unknown setting\(s\): stregth \(a picture's are .*strength.*; a video's "
                                             r"are .*stabilize"),
                         ({"settings": {"strength": 0.5}}, "ApplySettings"), ({"crf": 99}, "crf must be between"),
                         ({"video": "fast"}, "video must be a VideoConfig"),
                         ({"video": VideoConfig(), "crf": 30}, "not both")):
        with pytest.raises(RotoscopeError, match=says):
            rotoscope.apply_video("tiny", clip, tmp_path / "x.mp4", **kwargs)
    with pytest.raises(RotoscopeError, match=r"^unknown setting\(s\): strenght \(a picture's are "):
        rotoscope.stylize("tiny", Image.new("RGB", (8, 8)), strenght=0.5)  # not Python's words about __init__


def test_apply_video_takes_the_videos_settings_as_keywords_too(tiny_filter, tmp_path):
    """The README's "settings are keywords" holds for a clip's own settings (stabilize, crf, max_seconds), not only
    for a picture's: they were "unexpected keyword argument" before."""
    from conftest import make_clip

    clip = make_clip(tmp_path / "clip.mp4", frames=12, fps=12, audio=False)
    out = rotoscope.apply_video("tiny", clip, tmp_path / "cut.mp4", max_seconds=0.5, stabilize=False, crf=30,
                                warn=lambda s: None)
    with av.open(str(out)) as c:
        made = json.loads(c.metadata["comment"])["video"]  # what the render says it did (its provenance)
        assert c.streams.video[0].frames == 6  # half a second of a 12 fps clip
    assert (made["stabilize"], made["crf"], made["max_seconds"]) == (False, 30, 0.5)


def test_apply_video_paints_a_mix_by_the_method_asked(tiny_filter, tmp_path, monkeypatch):
    from conftest import make_clip
    from rotoscope import mix

    asked, real = [], mix.load_any
    monkeypatch.setattr(mix, "load_any", lambda spec, method="weights": asked.append(method) or real(spec, method))
    clip = make_clip(tmp_path / "clip.mp4", frames=2, audio=False)
    rotoscope.apply_video("tiny:0.5+tiny:0.5", clip, tmp_path / "m.mp4", mix="outputs", warn=lambda s: None)
    assert asked == ["outputs"]


def test_a_premultiplied_picture_is_painted(tiny_filter):
    """Mode La (premultiplied grey and alpha) was Pillow's "conversion from La to L not supported"."""
    img = Image.new("LA", (32, 24), (120, 200)).convert("La")
    assert rotoscope.stylize("tiny", img, engine="torch", precision="fp32").size == (32, 24)
