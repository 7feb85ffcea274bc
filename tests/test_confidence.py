"""Confidence on apply: an input unlike the training photos gets a distance above the threshold and a warning."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_scene
from rotoscope.config import NetConfig
from rotoscope.filter import save_filter
from rotoscope.network import FilterNet
from rotoscope.truthful.audit import audit_images
from rotoscope.truthful.confidence import (MARGIN, RANGE_MARGIN, RANGE_MIN_PHOTOS, assess_image, assess_path,
                                           reference)

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def bright_set(tmp_path):
    """Ten bright, colourful training photos and two held out, as the training loop would audit them."""
    imgs = [(f"p{i}.png", Image.open(make_scene(tmp_path / f"p{i}.png", seed=i, brightness=0.55 + 0.02 * (i % 5))))
            for i in range(12)]
    audit = audit_images(imgs, "made up")
    names = [n for n, _ in imgs]
    return audit, names[:10], names[10:]


@pytest.fixture
def card(bright_set):
    audit, train, held = bright_set
    return {"name": "bright", "confidence": reference(audit, train, held)}


def test_threshold_is_calibrated_on_leave_one_out_distances(card):
    ref = card["confidence"]
    cal = ref["calibration"]
    assert len(cal["leave_one_out"]) == 10
    assert ref["threshold"] == pytest.approx(max(2.0, MARGIN * max(cal["leave_one_out"])), abs=1e-3)
    assert "image statistics only" in ref["measure"]
    assert cal["holdout_flagged"] == 0


def test_heldout_and_new_photos_from_the_same_kind_pass(card, bright_set, tmp_path):
    audit, _, held = bright_set
    for name in held:  # held-out photos are not used to set the threshold
        a = assess_path(card, tmp_path / name)
        assert a.in_distribution, a.message
    fresh = assess_path(card, make_scene(tmp_path / "fresh.png", seed=99, brightness=0.6))
    assert fresh.in_distribution and fresh.distance < fresh.threshold


def test_night_photo_is_flagged_with_the_reason(card, tmp_path):
    a = assess_path(card, make_scene(tmp_path / "night.png", seed=50, brightness=0.06))
    assert not a.in_distribution and a.distance > a.threshold
    assert a.furthest[0]["stat"] in ("brightness", "dark_share") and a.furthest[0]["z"] != 0
    assert "unlike the filter's training photos" in a.message


def test_grayscale_document_is_flagged(card):
    page = Image.new("RGB", (96, 64), (245, 245, 245))
    for y in range(8, 60, 6):
        page.paste((20, 20, 20), (8, y, 88, y + 2))
    assert not assess_image(card, page, "page").in_distribution


def test_old_card_without_statistics_gives_no_verdict():
    assert assess_image({"name": "old"}, Image.new("RGB", (8, 8))) is None


def test_apply_warns_and_json_reports_distance(card, tmp_path):
    net = FilterNet(NetConfig(channels=(4, 8, 8), res_blocks=1))
    path = save_filter(net, {**card, "architecture": {"channels": [4, 8, 8], "res_blocks": 1, "kernel_outer": 9}},
                       tmp_path / "bright.safetensors")
    night = make_scene(tmp_path / "night.png", seed=50, brightness=0.06)
    day = make_scene(tmp_path / "day.png", seed=98, brightness=0.6)
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "ROTOSCOPE_HOME": str(tmp_path / "home")}

    def apply(src):
        r = subprocess.run([sys.executable, "-m", "rotoscope", "apply", str(path), str(src), "-o",
                            str(tmp_path / f"out-{src.stem}.png"), "--json", "--precision", "fp32"],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout), r.stderr

    res, err = apply(night)
    (inp,) = res["inputs"]
    assert inp["distance"] > inp["threshold"] and inp["in_distribution"] is False
    assert "unlike the filter's training photos" in err and res["warnings"]
    assert res["outputs"] == [str(tmp_path / "out-night.png")]
    res, err = apply(day)
    assert res["inputs"][0]["in_distribution"] is True and res["warnings"] == [] and "warning" not in err


def test_one_statistic_beyond_every_training_photo_is_flagged_though_the_distance_is_under_the_threshold(tmp_path):
    """The root-mean-square of eight z-scores diluted one extreme one: a page whose only oddity is being brighter
    than any training photo passed. With 30 photos or more (a narrower set's range says little); cards from before
    the range was kept take it from their audit."""
    imgs = [(f"p{i}.png", Image.open(make_scene(tmp_path / f"p{i}.png", seed=i, brightness=0.4 + 0.02 * (i % 10))))
            for i in range(RANGE_MIN_PHOTOS)]
    audit = audit_images(imgs, "made up")
    ref = reference(audit, [n for n, _ in imgs], [])
    assert ref["max"][ref["stats"].index("brightness")] == pytest.approx(audit.column("brightness").max(), abs=1e-4)
    loose = {"confidence": {**ref, "threshold": 1e9}}  # a threshold no distance reaches
    page = Image.new("RGB", (96, 64), (250, 250, 250))
    a = assess_image(loose, page, "page")
    assert not a.in_distribution and a.distance < a.threshold and a.outside["spreads_beyond"] > RANGE_MARGIN
    assert f"its {a.outside['stat']} (" in a.message and "lies outside the range of the training photos" in a.message
    assert assess_image(loose, imgs[3][1], "p3").in_distribution  # one of them is inside, of course
    older = {"confidence": {k: v for k, v in loose["confidence"].items() if k not in ("min", "max")},
             "audit": audit.summary()}
    a = assess_image(older, page, "page")
    assert not a.in_distribution and "outside the range of the training set's photos" in a.message
    assert assess_image({"confidence": older["confidence"]}, page, "page").in_distribution  # no range known
    few = {"confidence": {**loose["confidence"], "photos": RANGE_MIN_PHOTOS - 1}}
    assert assess_image(few, page, "page").in_distribution  # too few photos for their range to mean much
