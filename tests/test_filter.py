"""The filter file: safetensors + JSON card, a registry by name, nothing ever unpickled."""

import json
import re

import numpy as np

import pytest
import torch
from safetensors.torch import save_file

from rotoscope import filter as flt
from rotoscope.config import NetConfig
from rotoscope.errors import RotoscopeError
from rotoscope.network import FilterNet, padded_logits

TINY = NetConfig(channels=(4, 8, 8), res_blocks=1, kernel_outer=3)


def card(name="tiny"):
    return {"name": name, "architecture": {"type": "FilterNet", "channels": [4, 8, 8], "res_blocks": 1,
                                          "kernel_outer": 3},
            "backbone": {"name": "random", "weights_sha256": "0" * 64}, "training": {"steps": 3},
            "artwork": {"title": "t", "sha256": "1" * 64}, "history": {"holdout_last": {"style": 0.5}}}


def saved(name="tiny", seed=0):
    torch.manual_seed(seed)
    net = FilterNet(TINY)
    return net, flt.save_filter(net, card(name), flt.registry_path(name))


def test_round_trip_keeps_weights_and_card():
    net, path = saved()
    assert path.suffix == ".safetensors" and path.parent == flt.filters_dir()
    loaded = flt.load_filter("tiny")
    assert loaded.name == "tiny" and loaded.path == path
    assert loaded.card["format_version"] == flt.FORMAT_VERSION
    assert loaded.card["backbone"]["name"] == "random" and loaded.card["training"] == {"steps": 3}
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(loaded.net(x), net.eval()(x))
    assert not loaded.net.training and not any(p.requires_grad for p in loaded.net.parameters())


def test_a_filter_is_addressed_by_name_or_path(tmp_path):
    _, path = saved()
    assert flt.load_filter(path).card == flt.load_filter("tiny").card
    elsewhere = flt.save_filter(FilterNet(TINY), card("moved"), tmp_path / "moved.safetensors")
    assert flt.load_filter(str(elsewhere)).name == "moved"


def test_card_hash_names_the_exact_filter(tmp_path):
    """The hash changes with the card and with any weight; the same file, or a copy of it, hashes the same."""
    saved("a")
    saved("b")
    assert flt.load_filter("a").card_hash != flt.load_filter("b").card_hash  # the cards differ (their names)
    # the same card, other weights: another filter, another hash
    other = tmp_path / "other" / "a.safetensors"
    _, _ = saved("a", seed=0)
    torch.manual_seed(1)
    flt.save_filter(FilterNet(TINY), card("a"), other)
    one, two = flt.load_filter("a"), flt.load_filter(other)
    assert one.card == two.card and one.card_hash != two.card_hash
    # one weight nudged by the smallest step a float allows
    nudged = flt.load_filter("a")
    w = next(iter(nudged.net.parameters()))
    w.view(-1)[0] = torch.nextafter(w.view(-1)[0], torch.tensor(10.0))
    assert flt.Filter("a", one.card, nudged.net).card_hash != one.card_hash
    # a copy of the file, loaded on its own, names the same filter (the hash is of the contents, not the path)
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(one.path.read_bytes())
    assert flt.load_filter(copy).card_hash == one.card_hash and len(one.card_hash) == 16


def test_unknown_name_suggests_the_nearest():
    saved("propaganda")
    saved("pointillism")
    with pytest.raises(RotoscopeError, match="unknown filter 'propoganda'; did you mean propaganda"):
        flt.load_filter("propoganda")
    with pytest.raises(RotoscopeError, match="see `rotoscope filters`"):
        flt.load_filter("zzzzzz")


def test_no_filters_yet_says_how_to_make_one(monkeypatch, tmp_path):
    monkeypatch.setattr(flt, "SHIPPED_DIR", tmp_path / "none")
    with pytest.raises(RotoscopeError, match="rotoscope train"):
        flt.load_filter("anything")


class Payload:
    """Unpickling this runs code: it writes the marker file. No loader may ever let it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('unpickled')",))


def pickled_files(folder, marker) -> dict:
    """The same payload as a raw pickle (protocol 2 and the ASCII protocol 0) and inside a torch zip checkpoint,
    under names a filter might have."""
    import pickle

    files = {"raw.safetensors": pickle.dumps(Payload(marker), protocol=2),
             "ascii.safetensors": pickle.dumps(Payload(marker), protocol=0),
             "legacy.pt": pickle.dumps(Payload(marker), protocol=4)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    torch.save({"w": Payload(marker)}, folder / "zipped.safetensors")
    return {**{n: folder / n for n in files}, "zipped.safetensors": folder / "zipped.safetensors"}


def test_pickle_files_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "MARKER"
    files = pickled_files(tmp_path, marker)
    for name, path in files.items():
        for load in (flt.load_filter, flt.read_card, flt.load_filter_file):
            with pytest.raises(RotoscopeError, match="never unpickles|corrupt|not a safetensors"):
                load(path)
        assert not marker.exists(), f"{name} was unpickled"
    # the same files in the registry: listed as unreadable, never unpickled
    flt.filters_dir().mkdir(parents=True)
    for name, path in files.items():
        (flt.filters_dir() / (path.stem + ".safetensors")).write_bytes(path.read_bytes())
    listed = {n: c for n, _, c in flt.list_filters()}
    assert all(listed[p.stem] is None for p in files.values())
    assert not marker.exists()
    # the payloads are live: unpickling any of them does write the marker (so the checks above could fail)
    import pickle

    pickle.loads(files["raw.safetensors"].read_bytes())
    assert marker.read_text() == "unpickled"
    marker.unlink()
    with open(files["zipped.safetensors"], "rb") as f:  # a file object: torch reads a .safetensors name otherwise
        torch.load(f, weights_only=False)
    assert marker.exists()


def test_foreign_safetensors_is_refused(tmp_path):
    foreign = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(RotoscopeError, match="not a rotoscope filter"):
        flt.load_filter(foreign)


def test_corrupt_files_are_refused(tmp_path):
    _, path = saved()
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(RotoscopeError, match="corrupt|not a safetensors"):
        flt.load_filter(cut)
    noise = tmp_path / "noise.safetensors"
    noise.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(RotoscopeError, match="corrupt|not a safetensors"):
        flt.load_filter(noise)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(RotoscopeError):
        flt.load_filter(empty)


def test_weights_that_do_not_match_the_card_are_refused(tmp_path):
    path = tmp_path / "liar.safetensors"
    c = card("liar")
    c["architecture"]["channels"] = [8, 8, 8]
    flt.save_filter(FilterNet(TINY), c, path)
    with pytest.raises(RotoscopeError, match="do not match"):
        flt.load_filter(path)


def test_newer_format_asks_for_an_upgrade(tmp_path):
    path = tmp_path / "future.safetensors"
    save_file({k: v.contiguous() for k, v in FilterNet(TINY).state_dict().items()}, str(path),
              metadata={flt.CARD_KEY: json.dumps({**card(), "format_version": flt.FORMAT_VERSION + 1})})
    with pytest.raises(RotoscopeError, match="upgrade rotoscope"):
        flt.load_filter(path)


def test_missing_file_and_bad_names():
    with pytest.raises(RotoscopeError, match="no such filter file"):
        flt.load_filter("gone.safetensors")
    with pytest.raises(RotoscopeError, match="invalid filter name"):
        flt.registry_path("../escape")


def test_list_and_remove():
    saved("one")
    saved("two")
    names = [n for n, _, c in flt.list_filters() if c is not None]
    assert {"one", "two"} <= set(names)
    flt.remove_filter("one")
    assert "one" not in [n for n, _, _ in flt.list_filters()]
    with pytest.raises(RotoscopeError, match="unknown filter 'one'"):
        flt.remove_filter("one")


def test_an_unreadable_registry_entry_is_listed_not_fatal():
    flt.filters_dir().mkdir(parents=True)
    (flt.filters_dir() / "broken.safetensors").write_bytes(b"junk")
    saved("fine")
    listed = {n: c for n, _, c in flt.list_filters()}
    assert listed["broken"] is None and listed["fine"] is not None


def test_saving_is_atomic(monkeypatch):
    saved("keep")
    before = flt.registry_path("keep").read_bytes()

    def boom(*a, **k):
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(flt, "save_file", boom)
    with pytest.raises(RotoscopeError, match="cannot write .*keep.safetensors: No space left on device"):
        flt.save_filter(FilterNet(TINY), card("keep"), flt.registry_path("keep"))
    assert flt.registry_path("keep").read_bytes() == before
    assert sorted(p.name for p in flt.filters_dir().iterdir()) == ["keep.safetensors"]


# ---------------------------------------------------------------- the filters that ship with the package

SHIPPED = sorted(flt.SHIPPED_DIR.glob("*.safetensors")) if flt.SHIPPED_DIR.is_dir() else []


def test_the_package_ships_at_least_six_filters():
    assert len(SHIPPED) >= 6, [p.name for p in SHIPPED]


def test_every_shipped_filter_has_a_lite_version_of_the_same_artwork():
    """For video and live painting (`rotoscope live NAME` takes NAME-lite): same artwork, the lite network."""
    full = [p for p in SHIPPED if not p.stem.endswith("-lite")]
    assert full
    for p in full:
        lite = flt.SHIPPED_DIR / f"{p.stem}-lite.safetensors"
        assert lite.exists(), f"{p.stem} has no lite version"
        a, b = flt.read_card(p), flt.read_card(lite)
        assert a["architecture"].get("arch", "full") == "full" and b["architecture"]["arch"] == "lite"
        assert a["artwork"]["sha256"] == b["artwork"]["sha256"] and flt.lite_version(p.stem) == lite.stem


LITE = [p for p in SHIPPED if p.stem.endswith("-lite")]


@pytest.mark.parametrize("path", LITE, ids=lambda p: p.stem)
def test_every_shipped_lite_filter_learned_from_the_full_filter_shipped_beside_it(path):
    """A lite filter trained on the photos alone paints its artwork's colours 40-70% less faithfully than the full
    filter (benchmarks/results/quality.md): the shipped ones aimed at their full filter's paintings. The card's
    hash of the teacher must be today's full filter's, or the lite learned a look the package no longer ships."""
    card = flt.read_card(path)
    full = flt.load_filter(path.stem.removesuffix("-lite"))
    assert card["training"]["teacher"] == full.name and card["teacher"]["arch"] == "full"
    assert card["teacher"]["card_hash"] == full.card_hash, f"{path.stem} learned from an older {full.name}"


@pytest.mark.parametrize("path", LITE, ids=lambda p: p.stem)
def test_shipped_lite_filters_paint_no_dark_droplets(path):
    """The first lite filters painted dark drops on faces and skies: a learned spike of 40-75 before the final
    sigmoid (full filters stay under 6), pinning a blob of pixels to black. Today's lite network cannot be gamed
    that way (network.LiteNet); on a held-out photo no pixel's pre-sigmoid value may come near such a spike."""
    from conftest import SHARED, require

    from rotoscope.images import load_rgb, resize_longer

    photo = SHARED / "content" / "portrait_smiling_woman.png"  # held out of every shipped filter's training
    require(photo.exists(), f"{photo} (the shared data) is missing")
    net = flt.load_filter(path.stem).net.float()
    x = torch.from_numpy(np.array(resize_longer(load_rgb(photo), 256))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        logits = padded_logits(net, x)  # what forward() squashes into the painting
    assert float(logits.abs().max()) < 15


def test_an_early_lite_filter_is_refused_in_one_line_saying_to_retrain_it(rotoscope_home):
    from rotoscope.network import LiteNet

    lite = NetConfig(arch="lite", channels=(4, 8, 8), res_blocks=1)
    net = LiteNet(lite)
    c = card("early")
    c["architecture"] = {"type": "LiteNet", "arch": "lite", "channels": [4, 8, 8], "res_blocks": 1}
    path = flt.save_filter(net, c, flt.registry_path("early"))
    # the first lite design had an instance norm at the end of each residual block: weights today's lacks
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    state["residuals.0.body.3.weight"], state["residuals.0.body.3.bias"] = torch.ones(8), torch.zeros(8)
    save_file(state, str(path), metadata={flt.CARD_KEY: json.dumps(c)})
    with pytest.raises(RotoscopeError, match="early lite filter .*retrain it") as e:
        flt.load_filter("early")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_filter_loads_paints_an_odd_sized_image_and_has_a_complete_card(path):
    from PIL import Image

    from rotoscope.stylize import ApplySettings, stylize_image

    filt = flt.load_filter(path.stem)  # by name: shipped filters are in the registry with no set-up
    assert filt.path == path
    c = filt.card
    art = c["artwork"]
    # a public-domain work, or the poster the project draws itself (rotoscope.demo.draw_poster)
    lic = art["license"].lower()
    assert art["title"] and art["creator"] and art["year"] and ("public domain" in lic or "own code" in lic)
    assert len(art["sha256"]) == 64 and "path" not in art  # the work is named; no local path, no image shipped
    assert c["backbone"]["name"] and len(c["backbone"]["weights_sha256"]) == 64
    assert c["training"]["steps"] > 0 and c["weights_dtype"] == "float16"
    assert c["history"]["holdout_last"]["style"] < c["history"]["holdout_start"]["style"]  # it learned the style
    assert path.stat().st_size < 2_000_000  # small enough to ship

    photo = Image.linear_gradient("L").resize((61, 37)).convert("RGB")
    out = stylize_image(filt, photo, ApplySettings(device="cpu"))
    assert out.size == (61, 37)
    diff = np.asarray(out, np.float32) - np.asarray(photo, np.float32)
    assert float(np.abs(diff).mean()) > 5  # it paints, not passes the photo through


def test_a_filter_whose_header_length_starts_with_the_pickle_byte_still_loads(tmp_path):
    """The first byte of a safetensors file is its header length's low byte: 0x80 there is not a pickle."""
    net = FilterNet(TINY)
    for pad in range(256):  # grow the card until the header length's low byte is 0x80
        path = flt.save_filter(net, {**card("padded"), "note": "x" * pad}, tmp_path / "padded.safetensors")
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert flt.load_filter_file(path).card["name"] == "padded"


def card_strings(card, path=""):
    """Every string in a card, with where it is."""
    if isinstance(card, dict):
        for k, v in card.items():
            yield from card_strings(v, f"{path}.{k}")
    elif isinstance(card, list):
        for i, v in enumerate(card):
            yield from card_strings(v, f"{path}[{i}]")
    elif isinstance(card, str):
        yield path, card


def test_no_shipped_card_carries_a_path_of_the_machine_that_trained_it():
    shipped = sorted(flt.SHIPPED_DIR.glob("*.safetensors"))
    assert len(shipped) >= 6
    for p in shipped:
        card = flt.read_card(p)
        leaks = [(where, s) for where, s in card_strings(card)
                 if s.startswith(("/", "~")) or "/tmp" in s or "temp folder" in s or ":\\\\" in s]
        assert leaks == [], (p.name, leaks)


def test_a_card_that_is_not_an_object_is_one_broken_filter_not_a_broken_registry(rotoscope_home, capsys):
    from conftest import rotoscope as cli

    net = FilterNet(NetConfig(channels=(4, 8, 8), res_blocks=1))
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    path = flt.filters_dir() / "listy.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={flt.CARD_KEY: json.dumps([1, 2])})
    with pytest.raises(RotoscopeError, match="corrupt card"):
        flt.read_card(path)
    assert ("listy", path, None) in flt.list_filters()
    code, out, err = cli("filters", capsys=capsys)
    assert code == 0 and "listy" in out + err and "Traceback" not in out + err
    code, _, err = cli("show", "listy", capsys=capsys)
    assert code == 1 and err.strip().startswith("error:") and "corrupt card" in err and len(err.splitlines()) == 1
    from fastapi.testclient import TestClient

    from rotoscope.config import ServerConfig
    from rotoscope.server import create_app

    with TestClient(create_app(ServerConfig(), run_jobs=False)) as c:
        assert c.get("/api/health").status_code == 200
        r = c.get("/api/filters")
        assert r.status_code == 200 and "listy" in r.text


# ---------------------------------------------------------------- found by tools/mutation.py (surviving mutants)


def test_a_filter_is_named_by_its_card_and_by_its_file_only_without_one(tmp_path):
    torch.manual_seed(0)
    net = FilterNet(NetConfig(channels=(8, 16, 16), res_blocks=1))
    arch = {"channels": [8, 16, 16], "res_blocks": 1, "kernel_outer": 9}
    renamed = flt.save_filter(net, {"name": "hokusai", "architecture": arch}, tmp_path / "copy-of-it.safetensors")
    assert flt.load_filter_file(renamed).name == "hokusai"
    nameless = flt.save_filter(net, {"architecture": arch}, tmp_path / "nameless.safetensors")
    assert flt.load_filter_file(nameless).name == "nameless"


def test_a_path_with_a_folder_is_a_file_never_a_registry_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RotoscopeError, match="no such filter file: nowhere/tiny"):
        flt.find_filter("nowhere/tiny")


@pytest.mark.parametrize("field, value, says", [
    ("format_version", "2", "format_version is a JSON string"),
    ("artwork", "x", "artwork is a JSON string"),
    ("history", [1, 2], "history is a JSON array"),
    ("audit", "oops", "audit is a JSON string"),
    ("name", 123, "name is a JSON number"),
    ("name", "../../evil", "name '../../evil' is not a filter name"),
    ("name", "evil\n", "name 'evil\\n' is not a filter name"),
    # read on every apply (the input's distance from the training photos): numpy's broadcasting error before
    ("confidence", {"stats": ["a", "b", "c"], "mean": [0.1] * 8, "std": [1.0] * 3, "threshold": 2.0},
     "confidence: mean and std are not one number per statistic"),
    ("confidence", {"stats": ["a"], "mean": [0.1], "std": [0.0], "threshold": 2.0},
     "confidence: mean and std are not one number per statistic"),
    ("confidence", {"stats": ["a"], "mean": [0.1], "std": [1.0], "threshold": "abc"},
     "confidence: the threshold is not a number"),
])
def test_a_card_field_of_another_type_is_a_corrupt_card(field, value, says):
    """The card is the file's word: a field of the wrong JSON type fails in one line where the card is read, not
    as a traceback wherever it is first used (show, apply, explain, mix, export and the registry listing)."""
    net, _ = saved()
    path = flt.save_filter(net, {**card(), field: value}, flt.registry_path("odd"))
    with pytest.raises(RotoscopeError, match=re.escape(f"corrupt card ({says})")):
        flt.load_filter_file(path)
    listed = {n: c for n, _, c in flt.list_filters()}
    assert listed["odd"] is None and listed["tiny"] is not None


def test_weights_that_are_not_numbers_are_refused():
    """A NaN painted every pixel black (PyTorch) or grey (OpenVINO), exit code 0."""
    net, _ = saved()
    with torch.no_grad():
        next(iter(net.parameters())).view(-1)[0] = float("nan")
    path = flt.save_filter(net, card("nan"), flt.registry_path("nan"))
    with pytest.raises(RotoscopeError, match="not numbers"):
        flt.load_filter_file(path)
