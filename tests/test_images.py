"""Reading and writing pictures: every mode comes in as RGB (+alpha), upright; bad files give one clear line."""

import numpy as np
import pytest
from PIL import Image

from rotoscope.errors import RotoscopeError
from rotoscope.images import (list_images, load_rgb, open_image, read_provenance, resize_longer, save_image,
                              split_alpha, to_image, to_tensor)


def gradient(w=40, h=30):
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], -1).astype(np.uint8), "RGB")


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK", "P", "LA", "RGBA", "I;16", "I", "F", "1"])
def test_every_mode_loads_as_rgb(tmp_path, mode):
    img = gradient()
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257)
    else:
        img = img.convert(mode)
    path = tmp_path / ("img.tif" if mode in ("CMYK", "F", "I") else "img.png")
    img.save(path)
    rgb = load_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (40, 30)
    arr = np.asarray(rgb, np.float32)
    assert arr.max() - arr.min() > 100  # the picture survived (no all-black 16-bit clipping)


def test_sixteen_bit_keeps_its_range(tmp_path):
    ramp = (np.linspace(0, 65535, 64)[None, :].repeat(8, 0)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    arr = np.asarray(load_rgb(tmp_path / "deep.png"))[..., 0]
    assert arr[0, 0] == 0 and arr[0, -1] == 255 and np.all(np.diff(arr[0].astype(int)) >= 0)


def test_rgba_keeps_alpha_and_palette_transparency(tmp_path):
    rgba = gradient().convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgb, alpha = split_alpha(rgba)
    assert rgb.mode == "RGB" and alpha is not None and np.array_equal(np.asarray(alpha), np.asarray(rgba)[..., 3])
    p = gradient().convert("P")
    p.info["transparency"] = 0
    assert split_alpha(p)[1] is not None
    assert split_alpha(gradient())[1] is None


def test_exif_orientation_is_honoured(tmp_path):
    img = gradient(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    img.save(tmp_path / "sideways.jpg", exif=exif.tobytes())
    upright = open_image(tmp_path / "sideways.jpg")
    assert upright.size == (30, 40)


def test_missing_file_folder_and_non_image(tmp_path):
    with pytest.raises(RotoscopeError, match="no such file"):
        open_image(tmp_path / "nope.png")
    with pytest.raises(RotoscopeError, match="folder"):
        open_image(tmp_path)
    (tmp_path / "notes.png").write_text("these are words, not pixels")
    with pytest.raises(RotoscopeError, match="not an image"):
        open_image(tmp_path / "notes.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image_is_refused(tmp_path, suffix):
    path = tmp_path / f"whole{suffix}"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    data = path.read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(RotoscopeError, match="cannot decode|truncated"):
        open_image(tmp_path / f"cut{suffix}")


def test_decompression_bomb_limit(tmp_path, monkeypatch):
    gradient(40, 30).save(tmp_path / "big.png")
    monkeypatch.setenv("ROTOSCOPE_MAX_PIXELS", "1000")
    with pytest.raises(RotoscopeError, match="1,000-pixel safety limit.*ROTOSCOPE_MAX_PIXELS"):
        open_image(tmp_path / "big.png")
    monkeypatch.setenv("ROTOSCOPE_MAX_PIXELS", "1200")
    assert open_image(tmp_path / "big.png").size == (40, 30)
    monkeypatch.setenv("ROTOSCOPE_MAX_PIXELS", "lots")
    with pytest.raises(RotoscopeError, match="ROTOSCOPE_MAX_PIXELS"):
        open_image(tmp_path / "big.png")


def test_tensor_round_trip_is_exact():
    img = gradient()
    assert np.array_equal(np.asarray(to_image(to_tensor(img))), np.asarray(img))
    assert to_tensor(img).shape == (1, 3, 30, 40)


def test_resize_longer_side():
    assert resize_longer(gradient(40, 30), 20).size == (20, 15)
    assert resize_longer(gradient(40, 30), 80).size == (80, 60)
    assert resize_longer(gradient(40, 30), None).size == (40, 30)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_provenance_is_written_and_read_back(tmp_path, suffix):
    prov = {"filter": "f", "card_hash": "abc123", "settings": {"strength": 0.5}}
    path = save_image(gradient(), tmp_path / f"out{suffix}", prov)
    assert read_provenance(path) == prov
    assert [p.name for p in tmp_path.iterdir()] == [f"out{suffix}"]  # no temporary file left behind


def test_png_provenance_is_a_text_chunk_and_jpeg_is_exif(tmp_path):
    save_image(gradient(), tmp_path / "a.png", {"filter": "f"})
    with Image.open(tmp_path / "a.png") as im:
        assert '"filter": "f"' in im.text["rotoscope"]
    save_image(gradient(), tmp_path / "a.jpg", {"filter": "f"})
    with Image.open(tmp_path / "a.jpg") as im:
        assert im.getexif()[0x0131] == "rotoscope" and '"filter"' in im.getexif()[0x010E]


def test_jpeg_drops_alpha_png_keeps_it(tmp_path):
    rgba = gradient().convert("RGBA")
    save_image(rgba, tmp_path / "a.jpg")
    save_image(rgba, tmp_path / "a.png")
    assert Image.open(tmp_path / "a.jpg").mode == "RGB" and Image.open(tmp_path / "a.png").mode == "RGBA"


def test_unknown_output_format_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(RotoscopeError, match="cannot write"):
        save_image(gradient(), tmp_path / "out.xyz")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(RotoscopeError, match="cannot write .*out.png: disk full"):
        save_image(gradient(), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_list_images_skips_hidden_and_other_files(tmp_path):
    for n in ["b.png", "a.JPG", ".hidden.png", "notes.txt"]:
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png"]


def test_read_provenance_of_a_plain_image_is_none(tmp_path):
    gradient().save(tmp_path / "plain.png")
    assert read_provenance(tmp_path / "plain.png") is None


def test_dark_sixteen_bit_stays_dark(tmp_path):
    Image.fromarray(np.full((8, 8), 200, np.uint16)).save(tmp_path / "dark.png")  # 200/65535: nearly black
    assert np.asarray(load_rgb(tmp_path / "dark.png")).max() <= 1
