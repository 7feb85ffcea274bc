"""Finding faces offline (the LBP cascade scikit-image ships) and keeping them unpainted."""

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED, make_scene, rotoscope
from rotoscope import faces
from rotoscope.config import ApplySettings
from rotoscope.errors import RotoscopeError
from rotoscope.filter import load_filter
from rotoscope.stylize import stylize_image

FAST = ApplySettings(engine="torch", precision="fp32")


def portrait() -> np.ndarray:
    """The portrait scikit-image ships (astronaut Eileen Collins, NASA, public domain), 512 x 512."""
    import skimage.data

    return skimage.data.astronaut()


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return ix * iy / (aw * ah + bw * bh - ix * iy)


FACE = (175, 65, 100, 100)  # where her face is, drawn by hand from the picture


def test_finds_the_face_in_the_sample_portrait_and_nothing_else():
    found = faces.detect_faces(portrait())
    assert len(found) == 1
    f = found[0]
    assert iou((f.x, f.y, f.w, f.h), FACE) > 0.6 and f.votes >= 8


def test_finds_it_at_another_size_too():
    small = np.asarray(Image.fromarray(portrait()).resize((300, 300)))
    found = faces.detect_faces(small)
    assert len(found) == 1 and iou((found[0].x, found[0].y, found[0].w, found[0].h),
                                   tuple(v * 300 / 512 for v in FACE)) > 0.5


def test_no_face_in_a_picture_without_one(tmp_path):
    assert faces.detect_faces(np.asarray(Image.open(make_scene(tmp_path / "s.png", size=(160, 120))))) == []


@pytest.mark.skipif(not (SHARED / "content" / "apollo11_crew.jpg").exists(), reason="needs ../shared/data")
def test_finds_the_three_faces_of_the_apollo_11_crew():
    rgb = np.asarray(Image.open(SHARED / "content" / "apollo11_crew.jpg").convert("RGB"))
    assert len(faces.detect_faces(rgb)) == 3


def test_keep_faces_leaves_the_face_as_it_was_and_paints_the_rest(tiny_filter):
    img = Image.fromarray(portrait())
    filt = load_filter("tiny")
    painted = np.asarray(stylize_image(filt, img, FAST))
    kept = np.asarray(stylize_image(filt, img, ApplySettings(engine="torch", precision="fp32", keep="faces")))
    ph = np.asarray(img)
    x, y, w, h = FACE
    core = (slice(y + 25, y + h - 25), slice(x + 25, x + w - 25))  # the face's middle: forehead to mouth
    assert np.array_equal(kept[core], ph[core])
    far = (slice(400, 512), slice(0, 100))  # the suit, far from the face
    assert np.array_equal(kept[far], painted[far])


def test_keep_faces_from_the_cli(tiny_filter, tmp_path, capsys):
    Image.fromarray(portrait()).save(tmp_path / "portrait.png")
    code, _, err = rotoscope("apply", "tiny", tmp_path / "portrait.png", "-o", tmp_path / "out.png", "--keep",
                             "faces", "--engine", "torch", capsys=capsys)
    assert code == 0, err
    out = np.asarray(Image.open(tmp_path / "out.png"))
    x, y, w, h = FACE
    assert np.array_equal(out[y + 25:y + h - 25, x + 25:x + w - 25], portrait()[y + 25:y + h - 25, x + 25:x + w - 25])
    from rotoscope.images import read_provenance

    assert read_provenance(tmp_path / "out.png")["settings"]["keep"] == "faces"


def test_a_cascade_that_is_not_the_known_one_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(faces, "KNOWN_SHA256", "0" * 64)
    faces._cascade.cache_clear()
    try:
        with pytest.raises(RotoscopeError, match="not the face cascade rotoscope knows"):
            faces.detect_faces(portrait())
    finally:
        faces._cascade.cache_clear()


def test_a_missing_cascade_is_one_line(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(RotoscopeError, match="reinstall scikit-image"):
        faces.cascade_path()
