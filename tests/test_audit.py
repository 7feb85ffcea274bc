"""The audit says what is in a photo set, and warns in plain words when the set is narrow or repetitive."""

import io
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import assert_one_line_error, make_image, make_scene
from rotoscope.errors import RotoscopeError
from rotoscope.data import dhash, hamming
from rotoscope.truthful.audit import (audit_folder, audit_images, cct_kelvin, format_audit,
                                      histogram_png, measure, write_audit_page)

SRC = Path(__file__).resolve().parents[1] / "src"


def folder(tmp_path, name, brightnesses, seed=0, **kw):
    d = tmp_path / name
    d.mkdir()
    for i, b in enumerate(brightnesses):
        make_scene(d / f"p{i:02d}.png", seed=seed + i, brightness=b, **kw)
    return d


def test_all_bright_set_warns_about_night_scenes(tmp_path):
    a = audit_folder(folder(tmp_path, "bright", [0.6] * 10))
    assert a.count == 10
    assert a.light_split()["daylight-like"] == 10
    assert any("all 10 photos are bright daylight-like" in w and "night scenes" in w for w in a.warnings)
    assert not any("near-duplicates" in w for w in a.warnings)


def test_all_dark_set_warns_about_daylight(tmp_path):
    a = audit_folder(folder(tmp_path, "dark", [0.08] * 10))
    assert a.light_split()["night-like"] == 10
    assert any("all 10 photos are dark, night-like" in w for w in a.warnings)
    assert not any("daylight-like scenes: a filter" in w for w in a.warnings)


def test_repeated_photos_are_found_and_called_repetitive(tmp_path):
    d = folder(tmp_path, "dups", [0.3, 0.6, 0.1])
    base = Image.open(d / "p00.png")
    for i in range(3):  # resized and re-encoded copies: the same picture to a perceptual hash
        base.resize((80 + 10 * i, 54 + 6 * i)).save(d / f"copy{i}.jpg", quality=80)
    a = audit_folder(d)
    dup_names = {n for pair in a.duplicates for n in pair[:2]}
    assert {"p00.png", "copy0.jpg", "copy1.jpg", "copy2.jpg"} <= dup_names
    assert "p01.png" not in dup_names
    assert a.summary()["near_duplicate_photos"] == 3
    assert any("3 of 6 photos are near-duplicates" in w for w in a.warnings)


def test_mixed_set_raises_no_narrowness_warning(tmp_path):
    a = audit_folder(folder(tmp_path, "mixed", [0.08, 0.12, 0.3, 0.35, 0.5, 0.55, 0.6, 0.65, 0.7, 0.45, 0.2, 0.5]))
    split = a.light_split()
    assert split["night-like"] >= 2 and split["daylight-like"] >= 5 and split["dim"] >= 1
    assert a.warnings == [], a.warnings
    assert "warnings      none" in format_audit(a)


def test_few_and_grayscale_photos_are_named(tmp_path):
    a = audit_folder(folder(tmp_path, "gray", [0.3, 0.5, 0.6], gray=True))
    assert any("only 3 photos" in w for w in a.warnings)
    assert any("all 3 photos are grayscale" in w for w in a.warnings)
    assert sum(why == "grayscale" for _, why in a.odd) == 3


def test_odd_files_are_listed_not_fatal(tmp_path):
    d = folder(tmp_path, "odd", [0.5, 0.6])
    (d / "notes.txt").write_text("hello")
    (d / "broken.jpg").write_bytes(b"not a jpeg")
    make_image(d / "strip.png", size=(400, 60))
    Image.new("RGB", (80, 60), (200, 180, 160)).save(d / "flat.png")
    a = audit_folder(d)
    odd = dict(a.odd)
    assert "not an image" in odd["notes.txt"]
    assert "unreadable" in odd["broken.jpg"]
    assert "aspect ratio" in odd["strip.png"]
    assert odd["flat.png"] == "one flat colour (skipped by training)"  # as training skips it
    assert a.count == 3


def test_empty_or_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(RotoscopeError, match="not found"):
        audit_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RotoscopeError, match="no usable image"):
        audit_folder(tmp_path / "empty")


def test_statistics_mean_what_they_say(tmp_path):
    white, black = Image.new("RGB", (32, 32), "white"), Image.new("RGB", (32, 32), "black")
    assert measure("w", white).brightness == pytest.approx(1.0)
    assert measure("b", black).brightness == pytest.approx(0.0)
    assert measure("w", white).grayscale and measure("w", white).colourfulness == pytest.approx(0.0)
    assert measure("b", black).grayscale
    # a dark colour photo has small channel differences, but not for its light: it is not grayscale
    scene = Image.open(make_scene(tmp_path / "scene.png", seed=3, brightness=0.5))
    dark = Image.eval(Image.blend(scene.convert("L").convert("RGB"), scene, 0.2), lambda v: v // 7)  # muted, dim
    assert not measure("s", scene).grayscale and not measure("d", dark).grayscale, measure("d", dark)
    assert measure("g", dark.convert("L").convert("RGB")).grayscale
    red = measure("r", Image.new("RGB", (32, 32), (220, 60, 40)))
    blue = measure("b", Image.new("RGB", (32, 32), (40, 80, 220)))
    assert red.warmth > 0.5 > -0.5 > blue.warmth
    assert cct_kelvin([1, 1, 1]) == pytest.approx(6500, abs=150)  # sRGB white is D65
    assert cct_kelvin([1.0, 0.6, 0.3]) < 3500 < 9000 < cct_kelvin([0.6, 0.75, 1.0])


def test_dhash_is_stable_under_resizing_and_differs_between_scenes(tmp_path):
    a = Image.open(make_scene(tmp_path / "a.png", seed=1))
    b = Image.open(make_scene(tmp_path / "b.png", seed=2))
    assert hamming(dhash(a), dhash(a.resize((200, 133)))) <= 4
    assert hamming(dhash(a), dhash(b)) > 12


def test_page_and_png_are_written_self_contained(tmp_path):
    a = audit_images([(f"p{i}", Image.open(make_scene(tmp_path / f"{i}.png", seed=i, brightness=0.2 + 0.1 * i)))
                      for i in range(5)], "made up")
    page = write_audit_page(a, tmp_path / "audit.html").read_text()
    assert "data:image/png;base64," in page and "http" not in page
    png = write_audit_page(a, tmp_path / "audit.png")
    assert Image.open(png).format == "PNG"
    with pytest.raises(RotoscopeError, match="ends in .html \\(or .png\\)"):  # HTML inside a .jpg: a broken picture
        write_audit_page(a, tmp_path / "audit.jpg")
    assert not (tmp_path / "audit.jpg").exists()


def test_the_histograms_draw_photos_whose_statistics_are_all_alike():
    """A 1x1 and a 1x50 picture of one red differ by a few ulps in some statistics: NumPy's bins refused that
    range ("Too many bins for data range") and the audit ended on NumPy's words."""
    a = audit_images([("a", Image.new("RGB", (1, 1), (255, 0, 0))), ("b", Image.new("RGB", (1, 50), (255, 0, 0)))],
                     "made up")
    assert Image.open(io.BytesIO(histogram_png(a))).format == "PNG"


def test_cli_audit_prints_summary_and_writes_page(tmp_path):
    d = folder(tmp_path, "bright", [0.6] * 4)
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "ROTOSCOPE_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-m", "rotoscope", "audit", str(d), "-o", str(tmp_path / "a.html")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "daylight-like" in r.stdout and "warning" in r.stdout
    assert (tmp_path / "a.html").is_file()
    r = subprocess.run([sys.executable, "-m", "rotoscope", "audit", str(tmp_path / "missing")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert_one_line_error(r.returncode, r.stdout, r.stderr, "missing")


def test_cli_audit_never_writes_its_histograms_over_one_of_the_photos(tmp_path, capsys):
    from conftest import rotoscope

    d = folder(tmp_path, "set", [0.5] * 3)
    before = (d / "p00.png").read_bytes()
    code, out, err = rotoscope("audit", d, "-o", d / "p00.png", capsys=capsys)
    assert_one_line_error(code, out, err, "would overwrite one of the photos")
    assert (d / "p00.png").read_bytes() == before
    elsewhere = make_image(tmp_path / "elsewhere.png")  # a photo linked into the set is audited, so kept too
    (d / "linked.png").symlink_to(elsewhere)
    code, out, err = rotoscope("audit", d, "-o", d / "linked.png", capsys=capsys)
    assert_one_line_error(code, out, err, "would overwrite one of the photos")
    assert (d / "linked.png").is_symlink()
    code, out, err = rotoscope("audit", d, "-o", d / "audit.html", capsys=capsys)  # a page beside them: fine
    assert code == 0 and (d / "audit.html").is_file(), err


def test_cli_audit_json_writes_no_page_unless_told_and_a_file_is_not_a_folder(tmp_path, capsys, monkeypatch):
    import json

    from conftest import rotoscope

    d = folder(tmp_path, "set", [0.5] * 3)
    monkeypatch.chdir(tmp_path)
    code, out, err = rotoscope("audit", d, "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["count"] == 3 and not (tmp_path / "audit.html").exists(), err
    code, out, err = rotoscope("audit", d, "--json", "-o", tmp_path / "page.html", capsys=capsys)
    assert code == 0 and (tmp_path / "page.html").is_file()
    assert_one_line_error(*rotoscope("audit", d / "p00.png", capsys=capsys), "p00.png is one file",
                          "a folder of photos")


def test_a_mirrored_copy_is_a_near_duplicate_and_stays_on_its_originals_side(tmp_path):
    """A flipped copy is the same scene: the audit counts it, and the held-out split keeps it beside its original
    (mirrored copies were 32 bits apart, 'unrelated', and could be held out against their own originals)."""
    from PIL import ImageOps

    from rotoscope.data import load_photos

    d = tmp_path / "set"
    d.mkdir()
    for i in range(4):
        img = Image.open(make_scene(d / f"s{i}.png", seed=10 + i))
        ImageOps.mirror(img).save(d / f"s{i}-flipped.png")
    a = audit_folder(d)
    assert sorted((x, y) for x, y, _ in a.duplicates) == [(f"s{i}-flipped.png", f"s{i}.png") for i in range(4)]
    data = load_photos(d, 32, 0.5)
    assert data.holdout_names and all((f"s{i}.png" in data.holdout_names) == (f"s{i}-flipped.png" in
                                                                              data.holdout_names) for i in range(4))
