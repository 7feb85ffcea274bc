"""Mixing filters: specs, weight interpolation and output blending, the `mix` command and its card."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_scene, rotoscope
from rotoscope.config import ApplySettings, NetConfig
from rotoscope.errors import RotoscopeError
from rotoscope.filter import load_filter, read_card, registry_path, save_filter
from rotoscope.mix import Blend, interpolate, is_mix, load_mix, parse
from rotoscope.network import FilterNet
from rotoscope.stylize import stylize_image

FAST = ApplySettings(engine="torch", precision="fp32")


def make(name, seed, channels=(8, 16, 16)):
    torch.manual_seed(seed)
    net = FilterNet(NetConfig(channels=channels, res_blocks=1))
    card = {"name": name, "architecture": {"type": "FilterNet", "channels": list(channels), "res_blocks": 1,
                                           "kernel_outer": 9},
            "artwork": {"title": f"Art {name}"}, "backbone": {"name": "random"}, "init": {"file": "same"}}
    return save_filter(net, card, registry_path(name))


@pytest.fixture
def pair(rotoscope_home):
    make("aa", 1)
    make("bb", 2)
    return "aa", "bb"


@pytest.fixture
def photo(tmp_path):
    return Image.open(make_scene(tmp_path / "photo.png", size=(64, 48)))


def arr(img):
    return np.asarray(img, np.float32)


def test_specs_are_read_and_checked(pair):
    assert parse("aa:0.6+bb:0.4") == [("aa", 0.6), ("bb", 0.4)]
    assert parse("aa+bb") == [("aa", 0.5), ("bb", 0.5)]
    assert is_mix("aa:0.6+bb:0.4") and not is_mix("aa")
    for bad, says in [("aa:0.6+bb:0.6", "add up to 1"), ("aa:-0.5+bb:1.5", "from 0 to 1"),
                      ("aa:x+bb:0.5", "not a number"), ("aa:0.5+", "cannot read"), ("aa:1+bb", "every filter")]:
        with pytest.raises(RotoscopeError, match=says):
            parse(bad)


@pytest.mark.parametrize("method", ["weights", "outputs"])
def test_a_0_1_mix_is_the_single_filter(pair, photo, method):
    alone = stylize_image(load_filter("bb"), photo, FAST)
    mixed = stylize_image(load_mix("aa:0+bb:1", method), photo, FAST)
    assert np.array_equal(np.asarray(mixed), np.asarray(alone))


def test_interpolating_weights_1_0_gives_back_the_first_network_exactly(pair):
    a, b = load_filter("aa"), load_filter("bb")
    net = interpolate([a, b], [1.0, 0.0])
    for k, v in a.net.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


def test_a_filter_mixed_with_itself_paints_as_it_does(pair, photo):
    alone = arr(stylize_image(load_filter("aa"), photo, FAST))
    assert np.abs(arr(stylize_image(load_mix("aa:0.5+aa:0.5"), photo, FAST)) - alone).max() <= 1


def test_weights_are_interpolated_linearly(pair):
    a, b = load_filter("aa"), load_filter("bb")
    net = interpolate([a, b], [0.25, 0.75])
    k = next(iter(a.net.state_dict()))
    assert torch.allclose(net.state_dict()[k], 0.25 * a.net.state_dict()[k] + 0.75 * b.net.state_dict()[k])


def test_outputs_are_blended_by_weight(pair, photo):
    a = arr(stylize_image(load_filter("aa"), photo, FAST))
    b = arr(stylize_image(load_filter("bb"), photo, FAST))
    mix = load_mix("aa:0.3+bb:0.7", "outputs")
    assert isinstance(mix, Blend)
    assert np.abs(arr(stylize_image(mix, photo, FAST)) - (0.3 * a + 0.7 * b)).max() <= 1.01


def test_networks_of_different_shapes_blend_outputs_but_refuse_weights(pair, photo):
    make("wide", 3, channels=(8, 16, 32))
    with pytest.raises(RotoscopeError, match="different shapes.*--mix outputs"):
        load_mix("aa:0.5+wide:0.5", "weights")
    assert stylize_image(load_mix("aa:0.5+wide:0.5", "outputs"), photo, FAST).size == photo.size


def test_apply_a_mix_from_the_cli(pair, tmp_path, capsys):
    src = make_scene(tmp_path / "p.png", size=(64, 48))
    code, out, err = rotoscope("apply", "aa:0.6+bb:0.4", src, "-o", tmp_path / "mix.png", "--engine", "torch",
                               "--precision", "fp32", "--json", capsys=capsys)
    assert code == 0, err
    assert json.loads(out)["filter"] == "aa_0.6+bb_0.4"
    from rotoscope.images import read_provenance

    assert read_provenance(tmp_path / "mix.png")["filter"] == "aa_0.6+bb_0.4"
    expect = arr(stylize_image(load_mix("aa:0.6+bb:0.4"), Image.open(src), FAST))
    assert np.array_equal(arr(Image.open(tmp_path / "mix.png")), expect)


@pytest.mark.parametrize("spec, says", [("aa:0.6+bb:0.6", "add up to 1"), ("aa:0.5+cc:0.5", "unknown filter 'cc'"),
                                        ("aa:0.5+bb:half", "not a number")])
def test_a_bad_mix_is_one_line_and_exit_1(pair, tmp_path, capsys, spec, says):
    code, _, err = rotoscope("apply", spec, make_scene(tmp_path / "p.png"), "-o", tmp_path / "o.png", capsys=capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and says in err


def test_mix_command_saves_a_filter_whose_card_names_its_parents(pair, tmp_path, capsys):
    code, _, err = rotoscope("mix", "aa", "bb", "--weights", "0.6,0.4", "--name", "ab", capsys=capsys)
    assert code == 0, err
    card = read_card(registry_path("ab"))
    assert [(p["name"], p["weight"]) for p in card["mix"]["parents"]] == [("aa", 0.6), ("bb", 0.4)]
    assert card["mix"]["method"] == "weights" and card["mix"]["same_start"] is True
    assert card["artwork"]["title"] == "Art aa 0.6 + Art bb 0.4"
    photo = Image.open(make_scene(tmp_path / "p.png", size=(64, 48)))
    saved = arr(stylize_image(load_filter("ab"), photo, FAST))
    assert np.abs(saved - arr(stylize_image(load_mix("aa:0.6+bb:0.4"), photo, FAST))).max() <= 1
    code, out, _ = rotoscope("show", "ab", capsys=capsys)
    assert code == 0
    # never replaced without --overwrite
    code, _, err = rotoscope("mix", "aa", "bb", "--name", "ab", capsys=capsys)
    assert code == 1 and "exists" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, says", [(["aa", "bb", "--weights", "0.6,0.6"], "add up to 1"),
                                        (["aa", "bb", "--weights", "0.6"], "one weight per filter"),
                                        (["aa", "bb", "--weights", "a,b"], "numbers"),
                                        (["aa", "zz"], "unknown filter 'zz'"),
                                        (["aa"], "two filters or more")])
def test_mix_command_bad_input_is_one_line_and_exit_1(pair, capsys, args, says):
    code, _, err = rotoscope("mix", *args, "--name", "ab", capsys=capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and says in err, err
    assert not registry_path("ab").exists()


def test_mix_command_refuses_different_shapes(pair, capsys):
    make("wide", 3, channels=(8, 16, 32))
    code, _, err = rotoscope("mix", "aa", "wide", "--name", "ab", capsys=capsys)
    assert code == 1 and "different shapes" in err and len(err.strip().splitlines()) == 1


def test_shipped_filters_mix(photo):
    """The shipped filters share one shape and one starting network: their weights mix."""
    mix = load_mix("great-wave:0.6+starry-night:0.4")
    assert mix.card["mix"]["same_start"] is True
    assert stylize_image(mix, photo, FAST).size == photo.size
    lite = load_mix("great-wave-lite:0.6+starry-night-lite:0.4")  # the lite ones too, among themselves
    assert lite.card["mix"]["same_start"] is True and stylize_image(lite, photo, FAST).size == photo.size
    with pytest.raises(RotoscopeError, match="different shapes"):  # a full and a lite network do not mix weights
        load_mix("great-wave:0.5+starry-night-lite:0.5")


def test_show_tells_a_mix_by_its_parents_not_by_empty_training_fields(pair, capsys):
    code, _, err = rotoscope("mix", "aa", "bb", "--weights", "0.7,0.3", "--name", "ab", capsys=capsys)
    assert code == 0, err
    for spec in ("ab", "aa:0.7+bb:0.3"):  # saved, or a spec painted on the fly
        code, out, err = rotoscope("show", spec, capsys=capsys)
        assert code == 0, err
        assert "aa x 0.7" in out and "bb x 0.3" in out and "weights interpolated" in out
        assert "None" not in out  # no training record to print: a mix was never trained


def test_explain_says_in_one_line_that_a_mix_has_no_training_story(pair, capsys):
    from conftest import assert_one_line_error

    rotoscope("mix", "aa", "bb", "--name", "ab", capsys=capsys)
    assert_one_line_error(*rotoscope("explain", "ab", capsys=capsys), "is a mix of aa 0.5 + bb 0.5")
    assert_one_line_error(*rotoscope("explain", "aa:0.5+bb:0.5", capsys=capsys), "is a mix")


def test_a_mix_spec_is_scored_like_a_filter(pair, tmp_path):
    from rotoscope.metrics import score_filter

    photo = make_scene(tmp_path / "p.png", size=(64, 48))
    rep = score_filter("aa:0.5+bb:0.5", [photo], size=64, backbones=("random",))
    alone = score_filter("aa", [photo], size=64, backbones=("random",))
    assert rep.mean()["ssim"] != alone.mean()["ssim"]  # it painted the mix, not its first parent
