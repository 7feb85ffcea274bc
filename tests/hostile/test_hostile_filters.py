"""Hostile filter files: broken, disguised, pickled (with a payload that must never run), special files in the
registry. Each is refused in one line where it is named, and never breaks the listing of the others."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from conftest import make_filter
from rotoscope.filter import CARD_KEY, FORMAT_VERSION, list_filters

from .conftest import pickle_bytes, torch_zip_bytes

# a hang (a FIFO read, a lock) fails within 120 s rather than at the suite's 600 s
pytestmark = pytest.mark.timeout(120)


def _safetensors(path, card, tensors=None):
    save_file(tensors or {"w": torch.zeros(2)}, str(path), metadata={CARD_KEY: card} if card is not None else None)


def _good_bytes(world) -> bytes:
    return (world.filters / "tiny.safetensors").read_bytes()


def _card_of(world) -> dict:
    from rotoscope.filter import read_card

    return read_card(world.filters / "tiny.safetensors")


def _mismatched(world, path):
    """Weights of one shape under a card that says another."""
    card = _card_of(world)
    card["architecture"]["channels"] = [16, 32, 32]
    from safetensors import safe_open

    with safe_open(str(world.filters / "tiny.safetensors"), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    _safetensors(path, json.dumps(card), tensors)


# name -> (make the file at `path`, words of the one line)
BAD_FILTERS = {
    "truncated": (lambda w, p: p.write_bytes(_good_bytes(w)[:200]), "corrupt"),
    "empty": (lambda w, p: p.write_bytes(b""), "corrupt"),
    "random-bytes": (lambda w, p: p.write_bytes(os.urandom(4096)), ""),
    "header-longer-than-file": (lambda w, p: p.write_bytes((10**6).to_bytes(8, "little") + b"{}"), "corrupt"),
    "header-length-huge": (lambda w, p: p.write_bytes(b"\xff" * 7 + b"\x7f{"), "corrupt"),
    "pickle": (lambda w, p: p.write_bytes(pickle_bytes(w.marker)), "never unpickles"),
    "pickle-protocol-0": (lambda w, p: p.write_bytes(pickle_bytes(w.marker, 0)), "corrupt"),
    "torch-zip": (lambda w, p: p.write_bytes(torch_zip_bytes(w.marker)), "never unpickles"),
    "foreign-safetensors": (lambda w, p: _safetensors(p, None), "not a rotoscope filter"),
    "card-not-json": (lambda w, p: _safetensors(p, "{not json"), "corrupt card"),
    "card-a-list": (lambda w, p: _safetensors(p, "[1, 2]"), "not an object"),
    "card-a-string": (lambda w, p: _safetensors(p, '"hello"'), "not an object"),
    "future-format": (lambda w, p: _safetensors(p, json.dumps({**_card_of(w), "format_version": FORMAT_VERSION + 1})),
                      "upgrade rotoscope"),
    "weights-not-the-card": (_mismatched, "do not match"),
    "card-without-architecture": (lambda w, p: _safetensors(p, json.dumps({"name": "x"})), "do not match"),
    "a-png": (lambda w, p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64), "corrupt"),
}


@pytest.mark.parametrize("kind", BAD_FILTERS)
def test_a_bad_filter_file_is_one_line_and_never_breaks_the_registry(world, kind):
    make, words = BAD_FILTERS[kind]
    path = world.filters / f"{kind}.safetensors"
    make(world, path)
    out = world.work / "out.png"
    # named by path or by registry name: refused in one line, nothing painted
    world.refused("apply", path, world.photo, "-o", out, words=[words], absent=[out])
    world.refused("apply", kind, world.photo, "-o", out, absent=[out])
    if kind not in ("card-without-architecture", "weights-not-the-card"):  # their cards are readable
        world.refused("show", kind, words=[words])
    # the listing goes on: the bad one marked, the good ones whole
    readable_card = kind in ("card-without-architecture", "weights-not-the-card")
    code, out_text, err = world.cli("filters")
    assert code == 0 and "Traceback" not in err and ("(unreadabl" in out_text) != readable_card  # rich may cut the word in a narrow table
    listed = {n: c for n, _, c in list_filters()}
    assert listed["tiny"] and listed["keep"] and (listed[kind] is None) != readable_card


SPECIAL = ["folder", "fifo", "link-to-passwd", "dangling-link", "link-loop"]


@pytest.mark.parametrize("kind", SPECIAL)
def test_special_files_in_the_registry_are_one_line_and_never_hang(world, kind):
    path = world.filters / f"{kind}.safetensors"
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "link-to-passwd":
        path.symlink_to("/etc/passwd")
    elif kind == "dangling-link":
        path.symlink_to(world.root / "gone.safetensors")
    else:
        path.symlink_to(path)
    world.refused("show", kind)
    world.refused("apply", kind, world.photo, "-o", world.work / "o.png", absent=[world.work / "o.png"])
    code, _, err = world.cli("filters")
    assert code == 0 and "Traceback" not in err
    if kind in ("folder", "fifo"):
        world.refused("rm", kind)  # only filter files are removed
        assert os.path.lexists(path)


@pytest.mark.parametrize("name", ["../../etc/passwd", "../keep", "keep/../../x", "", " ", "a" * 65, "con\x00trol",
                                  "with space", "-rf"])
def test_filter_names_never_escape_the_registry(world, name):
    """rm and train take registry names only: anything else is one line and the registry keeps every filter."""
    world.refused("rm", "--", name)
    world.refused("train", world.photo, "--name", name, "--steps", "1", absent=[world.filters / f"{name}.safetensors"]
                  if name.strip() and "\x00" not in name and "/" not in name else [])


def test_rm_of_a_shipped_filter_and_of_nothing(world):
    world.refused("rm", "starry-night", words=["ships with rotoscope"])
    world.refused("rm", "tinyy", words=["did you mean tiny"])


def test_export_and_explain_of_a_bad_filter_are_one_line(world):
    path = world.filters / "cut.safetensors"
    path.write_bytes(_good_bytes(world)[:300])
    world.refused("export", "cut", "-o", world.work / "cut.onnx", words=["corrupt"], absent=[world.work / "cut.onnx"])
    world.refused("explain", "cut", "-o", world.work / "cut.html", words=["corrupt"], absent=[world.work / "cut.html"])
    world.refused("score", "cut", world.photo, words=["corrupt"])


def test_a_filter_given_as_a_path_that_is_a_folder_or_missing(world):
    folder = world.work / "not-a-filter.safetensors"
    folder.mkdir()
    world.refused("show", folder, words=["not a filter file"])
    world.refused("show", world.work / "missing.safetensors", words=["no such filter file"])
    make_filter(world.work / "fine.safetensors")  # and a good file by path still works
    code, _, err = world.cli("show", world.work / "fine.safetensors")
    assert code == 0, err
