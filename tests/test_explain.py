"""`rotoscope explain` writes one self-contained page with every stage of the training story."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_one_line_error, make_photos
from rotoscope.config import TrainConfig
from rotoscope.demo import draw_artwork
from rotoscope.errors import RotoscopeError
from rotoscope.truthful.explain import SECTIONS, explain
from rotoscope.truthful.story import palette, palette_distance, preview_steps

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = dict(channels=(4, 8, 8), res_blocks=1, size=32, batch=1, backbone="random", style_size=64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny real training run on six bright photos (one held out), shared by the tests of this file."""
    from rotoscope.train import train

    root = tmp_path_factory.mktemp("explain")
    photos = make_photos(root / "photos", 6, brightness=0.55)
    draw_artwork(96).save(root / "art.png")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROTOSCOPE_HOME", str(root / "home"))
        filt = train(root / "art.png", "story", photos, TrainConfig().replace(steps=6, eval_every=2, **TINY),
                     progress=False, log=lambda s: None)
    return filt, root


def test_training_records_what_the_story_needs(trained):
    filt, root = trained
    card = filt.card
    st = card["story"]
    assert [p["step"] for p in st["previews"]] == preview_steps(6) == [0, 1, 2, 6]
    assert st["preview_is_heldout"] and st["preview_photo"] in card["photos"]["holdout_names"]
    for p in st["previews"]:
        assert (root / "home" / st["run_dir"] / p["file"]).is_file()  # run_dir: relative to ROTOSCOPE_HOME
    assert len(st["curve"]) == 6 and {"content", "style", "color", "tv", "lr", "grad_norm"} <= set(st["curve"][0])
    assert card["audit"]["count"] == 6 and card["audit"]["light_split"]["daylight-like"] == 6
    assert any("daylight-like" in w for w in card["warnings"])  # the narrow set is named in the card
    assert card["confidence"]["photos"] == 5
    # a healthy run: none of the detectors that signal a broken run fired
    assert not any(k in w for w in card["warnings"] for k in ("overfitting", "diverging", "nan"))
    assert filt.path.stat().st_size < 200_000  # previews live in the run folder, not the filter


def test_story_is_self_contained_and_has_every_section(trained, tmp_path, monkeypatch):
    filt, root = trained
    monkeypatch.setenv("ROTOSCOPE_HOME", str(root / "home"))  # where it was trained: its run folder is there
    out, gaps = explain(filt.path, tmp_path / "story.html")
    page = out.read_text()
    assert gaps == []
    for sec in SECTIONS:
        assert f'<section id="{sec}">' in page
    # nothing is fetched: no URL anywhere in a src/href, every image inline
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", page)
    assert "http://" not in page and "https://" not in page
    imgs = re.findall(r"<img [^>]*src=\"([^\"]+)\"", page)
    assert len(imgs) >= 8 and all(s.startswith("data:image/") for s in imgs)
    assert "step 0 (random weights)" in page and "The gap:" in page
    assert "random weights: it was never trained" in page  # the backbone's caveat
    assert "Before you trust it" in page
    # six photos, one of them held out: section 2 no longer says the filter learned from all six
    assert "training set is 6 photos (" in page and "it learned from 5 of them and kept 1 out for its exam" in page
    assert "It learned from 5 of its 6 photos (1 held out)" in page  # the checklist too (it said 6)


def test_story_from_the_filter_file_alone_says_what_is_missing(trained, tmp_path, monkeypatch):
    filt, root = trained
    monkeypatch.setenv("ROTOSCOPE_HOME", str(root / "home"))
    alone = tmp_path / "alone.safetensors"
    shutil.copyfile(filt.path, alone)
    run_dir = root / "home" / filt.card["story"]["run_dir"]
    moved = tmp_path / "moved-run"
    shutil.move(str(run_dir), moved)
    try:
        out, gaps = explain(alone, tmp_path / "alone.html")
    finally:
        shutil.move(str(moved), run_dir)
    page = out.read_text()
    assert any("previews" in g for g in gaps)
    assert "Missing:" in page and "incomplete" in page
    for sec in SECTIONS:
        assert f'<section id="{sec}">' in page
    assert "https://" not in page


def test_cli_explain(trained, tmp_path):
    filt, _ = trained
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "ROTOSCOPE_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-m", "rotoscope", "explain", str(filt.path), "-o", str(tmp_path / "s.html")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s.html").stat().st_size > 10_000
    r = subprocess.run([sys.executable, "-m", "rotoscope", "explain", "no-such-filter"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert_one_line_error(r.returncode, r.stdout, r.stderr, "no-such-filter")
    with pytest.raises(RotoscopeError, match="the page is HTML, so its file name ends in .html"):
        explain(filt.path, tmp_path / "story.png")
    assert not (tmp_path / "story.png").exists()


def test_palettes_and_their_distance():
    from PIL import Image

    red_blue = Image.new("RGB", (20, 10), (255, 0, 0))
    red_blue.paste((0, 0, 255), (10, 0, 20, 10))
    pal = palette(red_blue, k=2)
    assert sorted(tuple(c["rgb"]) for c in pal) == [(0, 0, 255), (255, 0, 0)]
    assert palette_distance(pal, pal) == 0
    assert palette_distance(pal, palette(Image.new("RGB", (8, 8), (255, 0, 0)), k=1)) == pytest.approx(255 * 2 ** 0.5 / 2, rel=1e-3)


def test_the_identity_start_keeps_the_photos_shapes_where_random_weights_do_not():
    """The shipped great-wave's run folder is not shipped, so its previews are re-created: step 0 must be the
    identity network it started from (the photo's shapes kept), not a draw of random weights under that name."""
    from rotoscope.metrics import edge_correlation
    from rotoscope.truthful.explain import _paint, _random_network, gather

    s = gather("great-wave")
    assert s.regenerated and s.identity_start
    identity = edge_correlation(s.untrained, s.photo)
    random = edge_correlation(_paint(_random_network(s.card), s.photo), s.photo)
    assert identity > 0.6 and identity > random + 0.3, (identity, random)


def test_the_page_explains_settings_with_the_tables_words(trained, tmp_path):
    from rotoscope.config import TrainConfig, help_for

    filt, _ = trained
    page = explain(filt.path, tmp_path / "story.html")[0].read_text()
    for name in ("steps", "color_match", "precision"):
        assert help_for(TrainConfig, name).split(":")[0] in page, name
    assert "<td>pixel_weight</td>" not in page  # no teacher: a weight of a term that was never there


def test_the_score_section_names_the_style_and_colour_terms_the_filter_was_trained_with(trained):
    import copy

    from rotoscope.filter import load_filter_file
    from rotoscope.truthful.explain import Story, section_score

    filt, _ = trained
    card = load_filter_file(filt.path).card
    assert card["training"]["style_match"] == "sliced" and card["training"]["color_match"] == "sliced"  # defaults
    page = section_score(Story(card, "story", "", None, None, "", None, [], False))
    assert "sliced Wasserstein" in page and "whole distribution of its colours" in page and "Gram" not in page
    other = copy.deepcopy(card)
    other["training"].update(style_match="gram", color_match="moments")
    page = section_score(Story(other, "story", "", None, None, "", None, [], False))
    assert "Gram matrices" in page and "sliced" not in page and "mean and spread" in page
    del other["training"]["style_match"], other["training"]["color_match"]  # a card from before both existed
    page = section_score(Story(other, "story", "", None, None, "", None, [], False))
    assert "Gram matrices" in page and "mean and spread" in page


def test_the_score_section_of_a_distilled_filter_names_its_teacher_and_counts_the_pixel_term(trained):
    import copy

    from rotoscope.filter import load_filter_file
    from rotoscope.truthful.explain import Story, section_score

    card = load_filter_file(trained[0].path).card
    page = section_score(Story(card, "story", "", None, None, "", None, [], False))
    assert "sum of four parts" in page and "photo's shapes" in page and "teacher" not in page
    student = copy.deepcopy(card)
    student["teacher"] = {"name": "great-<wave>", "card_hash": "0123456789abcdef", "arch": "full"}
    student["training"].update(teacher="great-<wave>", pixel_weight=10.0)
    for p in student["story"]["curve"]:  # a pixel term as large as the other four together: half the score
        p["pixel"] = sum(p[k] for k in ("content", "style", "color", "tv"))
    page = section_score(Story(student, "story", "", None, None, "", None, [], False))
    assert "sum of five parts" in page and "great-&lt;wave&gt;</b> (its teacher)" in page  # escaped card text
    assert "<tr><td>pixel</td><td>10.0</td>" in page and "<td>50%</td></tr>" in page


def test_a_stand_in_photo_is_never_called_held_out_and_a_named_one_is_found_where_training_found_it(
        trained, tmp_path, monkeypatch):
    """A shipped filter's page painted the sample photo 'chelsea' (a training photo of the shipped filters) and said
    the filter had never trained on it. A stand-in's side is not known and is said so; the photo the card names is
    found in the folder its source names ("DIR minus ..."), and its side is the card's."""
    import copy

    from rotoscope.truthful.explain import Story, _photo_from_source, section_previews

    card = copy.deepcopy(trained[0].card)
    name = card["story"]["preview_photo"]
    card["photos"]["source"] = "nowhere/photos minus the 2 photos held out by a benchmark"
    img, note, held = _photo_from_source(card)
    assert img is not None and held is None and "stand-in" in note and name in note
    page = section_previews(Story(card, "story", "", None, img, note, held, [(0, img)], True))
    assert "held out" not in page and "whether the filter trained on it is not known" in page
    # the folder the source names, relative to where the command runs
    monkeypatch.chdir(trained[1])
    card["photos"]["source"] = "photos minus the 2 photos held out by a benchmark"
    img, note, held = _photo_from_source(card)
    assert held is True and note.startswith(f"held-out photo '{name}'")
    card["photos"]["holdout_names"] = []
    assert _photo_from_source(card)[2] is False
    page = section_previews(Story(card, "story", "", None, img, note, False, [(0, img)], True))
    assert "one of the photos the filter trained on" in page


def test_a_run_without_an_exam_says_why_and_that_overfitting_went_unchecked(trained):
    """No held-out score: the page said "with fewer than two photos nothing can be held out" for 12 photos and a
    held-out share of 0, and that no detector had found overfitting, which nothing could have found."""
    import copy

    from rotoscope.truthful.explain import Story, no_exam_reason, section_exam, section_warnings

    card = copy.deepcopy(trained[0].card)
    card["history"]["holdout_curve"], card["warnings"] = [], []
    card["photos"].update(train=12, holdout=0)
    card["training"]["holdout"] = 0
    assert no_exam_reason(card) == "the held-out share was set to 0"
    card["training"]["holdout"] = 0.15
    assert "too few, or too alike" in no_exam_reason(card) and "0.15" in no_exam_reason(card)
    card["photos"].update(train=1)
    assert no_exam_reason(card) == "with fewer than two photos nothing can be held out"
    card["photos"].update(train=10, holdout=2)
    assert "ended before its first exam" in no_exam_reason(card)
    story = Story(card, "story", "", None, None, "", None, [], False)
    assert "ended before its first exam" in section_exam(story)
    page = section_warnings(story)
    assert "Overfitting could not be checked" in page and "(overfitting," not in page
    card["history"]["holdout_curve"] = trained[0].card["history"]["holdout_curve"][:3]
    assert len(card["history"]["holdout_curve"]) == 3 and "could not be checked" not in section_warnings(story)


def test_the_lite_network_is_described_as_it_is_built():
    from rotoscope.truthful.explain import network_sentence

    said = network_sentence({"arch": "lite", "res_blocks": 3, "channels": [16, 32, 64]})
    assert "1/8 resolution" in said and "1/16" not in said and "4x4" not in said and "1/19" in said
