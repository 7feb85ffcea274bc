"""`rotoscope apply` as a library: results are data (a Painted per input), which the CLI says and --json
serialises; nothing is parsed back from printed lines, and each input is measured once."""

import json

from conftest import make_clip, make_scene, rotoscope
from rotoscope.apply import Note, Painted, Skipped, apply_path
from rotoscope.config import ApplySettings

FAST = ApplySettings(engine="torch", precision="fp32")
NAMES = ("bay", "cat", "dune")


def test_a_folder_yields_one_painted_record_per_image(tiny_filter, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(NAMES):
        make_scene(folder / f"{name}.png", seed=i)
    (folder / "broken.png").write_bytes(b"not a png")
    results = list(apply_path("tiny", folder, tmp_path / "out", FAST, progress=False))
    painted = [r for r in results if isinstance(r, Painted)]
    assert [p.output for p in painted] == [str(tmp_path / "out" / f"{n}.png") for n in NAMES]
    assert all(p.size == (96, 64) and p.seconds >= 0 and not p.reused for p in painted)
    assert [r.source for r in results if isinstance(r, Skipped)] == [str(folder / "broken.png")]
    assert [r.text.split(":")[0] for r in results if isinstance(r, Note)][:2] == ["precision", "engine"]
    # run again: the finished images are not painted twice
    again = [r for r in apply_path("tiny", folder, tmp_path / "out", FAST, progress=False) if isinstance(r, Painted)]
    assert all(p.reused for p in again) and len(again) == 3


def test_json_for_a_folder_lists_every_output_and_measures_each_input_once(tiny_filter, tmp_path, capsys,
                                                                           monkeypatch):
    from rotoscope.truthful import confidence

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(NAMES):  # not numbered: a folder of numbered frames is a clip
        make_scene(folder / f"{name}.png", seed=i)
    measured = []
    real = confidence.assess_image
    monkeypatch.setattr(confidence, "assess_image", lambda *a, **k: measured.append(a[-1]) or real(*a, **k))
    code, out, err = rotoscope("apply", "tiny", folder, "-o", tmp_path / "out", "--json", "--engine", "torch",
                               capsys=capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["outputs"] == [str(tmp_path / "out" / f"{n}.png") for n in NAMES]
    assert [i["input"] for i in res["inputs"]] == [str(folder / f"{n}.png") for n in NAMES]
    assert all(i["distance"] is not None or "no training statistics" in i["note"] for i in res["inputs"])
    assert res["engine"].startswith("torch") and res["precision"]
    assert sorted(measured) == [f"{n}.png" for n in NAMES]  # once each
    assert err.strip().splitlines()[-1] == f"wrote 3 image(s) to {tmp_path / 'out'}"


def test_json_for_a_clip_names_the_clip_written(tiny_filter, tmp_path, capsys):
    clip = make_clip(tmp_path / "clip.mp4", frames=6, audio=False)
    code, out, err = rotoscope("apply", "tiny", clip, "-o", tmp_path / "out.mp4", "--json", "--engine", "torch",
                               "--no-progress", capsys=capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["outputs"] == [str(tmp_path / "out.mp4")]
    assert res["painted"][0]["frames"] == 6 and res["painted"][0]["size"] == [64, 48]
    assert res["inputs"][0]["distance"] is None and "video" in res["inputs"][0]["note"]
    assert f"wrote {tmp_path / 'out.mp4'} (64x48" in err


def test_extreme_shapes_are_painted(tiny_filter, tmp_path):
    from PIL import Image

    for size in [(1, 1), (7000, 10)]:
        src = tmp_path / f"{size[0]}x{size[1]}.png"
        Image.new("RGB", size, (120, 80, 40)).save(src)
        painted = [r for r in apply_path("tiny", src, tmp_path / f"out-{src.name}", FAST, progress=False)
                   if isinstance(r, Painted)]
        assert painted[0].size == size and Image.open(painted[0].output).size == size


def test_the_input_is_never_overwritten_and_a_pipe_is_refused(tiny_filter, tmp_path, capsys):
    import os

    src = make_scene(tmp_path / "photo.png")
    before = src.read_bytes()
    code, _, err = rotoscope("apply", "tiny", src, "-o", src, capsys=capsys)
    assert code == 1 and err.strip() == "error: the output would overwrite the input: choose another -o"
    assert src.read_bytes() == before
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    code, _, err = rotoscope("apply", "tiny", fifo, "-o", tmp_path / "o.png", capsys=capsys)  # would hang before
    assert code == 1 and "not a regular file" in err and len(err.strip().splitlines()) == 1
