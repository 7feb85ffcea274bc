"""`rotoscope apply` as a library: results are data (a Painted per input), which the CLI says and --json
serialises; nothing is parsed back from printed lines, and each input is measured once."""

import dataclasses
import json
from pathlib import Path

from conftest import make_clip, make_image, make_scene, rotoscope
from rotoscope.apply import Note, Painted, Skipped, apply_path
from rotoscope.config import ApplySettings, VideoConfig

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


def test_a_picture_too_large_at_the_size_asked_is_skipped_by_name_and_the_folder_goes_on(tiny_filter, tmp_path,
                                                                                       monkeypatch):
    """--size scales up too; the pixel limit refuses what it would make. The first picture decides the engine's
    shape: refused there, it stopped the whole folder, where a later one was only skipped (file order mattered)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    make_image(folder / "a-square.png", size=(10, 10))  # 160x160 at --size 160: over the limit below
    make_image(folder / "b-wide.png", size=(16, 9))
    monkeypatch.setenv("ROTOSCOPE_MAX_PIXELS", "20000")
    results = list(apply_path("tiny", folder, tmp_path / "out", dataclasses.replace(FAST, size=160), progress=False))
    assert [r.source for r in results if isinstance(r, Painted)] == [str(folder / "b-wide.png")]
    [skip] = [r for r in results if isinstance(r, Skipped)]
    assert skip.reason.startswith("a-square.png: a 10x10 picture at longer side 160 would be 160x160")


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
    assert f"wrote {tmp_path / 'out.mp4'} (64x48, 6 frames, painted in " in err  # the time is not the clip's length


def test_the_engine_for_a_clip_is_chosen_as_a_render_runs(tiny_filter, tmp_path, monkeypatch):
    """`auto` times the engines beside a busy thread for a clip (a render decodes and encodes while it paints),
    alone for pictures and for a preview sheet."""
    import importlib

    stylize = importlib.import_module("rotoscope.stylize")  # the module: the package exports a function so named
    asked, real = [], stylize.pick_engine

    def pick_engine(net, device, precision, explicit, shape, video=False):
        asked.append(video)
        return real(net, device, precision, explicit, shape, video)
    monkeypatch.setattr(stylize, "pick_engine", pick_engine)
    clip = make_clip(tmp_path / "clip.mp4", frames=4, audio=False)
    still = make_scene(tmp_path / "still.png")
    auto = ApplySettings(precision="fp32")
    for src, dest, preview in [(clip, "out.mp4", None), (still, "out.png", None), (clip, "sheet.png", 2)]:
        list(apply_path("tiny", src, tmp_path / dest, auto, progress=False, preview=preview))
    assert asked == [True, False, False]
    # a folder of clips: as a render; a folder of pictures and clips: the pictures' choice, then the clips', said
    (tmp_path / "clips").mkdir()
    make_clip(tmp_path / "clips" / "a.mp4", frames=3, audio=False)
    asked.clear()
    list(apply_path("tiny", tmp_path / "clips", tmp_path / "out-clips", auto, progress=False))
    assert asked == [True]
    make_scene(tmp_path / "clips" / "b.png")
    asked.clear()
    notes = [r.text for r in apply_path("tiny", tmp_path / "clips", tmp_path / "out-both", auto, progress=False)
             if isinstance(r, Note)]
    assert asked == [False, True]
    assert any(n.startswith("engine: ") for n in notes) and any(n.startswith("clips: engine: ") for n in notes)


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


def test_a_picture_painted_into_an_existing_folder_takes_its_usual_name_there(tiny_filter, tmp_path, capsys):
    """`-o painted/` (a folder that exists) was refused as "cannot write 'painted'"; a clip accepted a folder."""
    src = make_scene(tmp_path / "photo.png")
    (tmp_path / "painted").mkdir()
    code, out, err = rotoscope("apply", "tiny", src, "-o", tmp_path / "painted", capsys=capsys)
    assert code == 0, err
    assert [p.name for p in (tmp_path / "painted").iterdir()] == ["photo-tiny.png"]


def test_a_folder_of_images_and_clips_paints_both_and_keeps_finished_clips(tiny_filter, tmp_path, capsys):
    import av

    folder = tmp_path / "mixed"
    folder.mkdir()
    make_scene(folder / "bay.png")
    make_clip(folder / "walk.mp4", frames=6)
    make_clip(folder / "run.mkv", frames=5, audio=False)
    (folder / "broken.mov").write_bytes(b"not a clip")
    results = list(apply_path("tiny", folder, tmp_path / "out", FAST, progress=False))
    painted = {r.source: r for r in results if isinstance(r, Painted)}
    assert set(painted) == {str(folder / n) for n in ("bay.png", "walk.mp4", "run.mkv")}
    assert painted[str(folder / "walk.mp4")].frames == 6 and painted[str(folder / "run.mkv")].frames == 5
    assert [r.source for r in results if isinstance(r, Skipped)] == [str(folder / "broken.mov")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bay.png", "run.mkv", "walk.mp4"]
    with av.open(str(tmp_path / "out" / "walk.mp4")) as c:
        assert len(list(c.decode(video=0))) == 6 and len(c.streams.audio) == 1  # the sound goes along
    # run again: nothing painted twice; another strength paints the clips again
    again = [r for r in apply_path("tiny", folder, tmp_path / "out", FAST, progress=False) if isinstance(r, Painted)]
    assert len(again) == 3 and all(r.reused for r in again)
    # a clip replaced by another of the same name is painted again; so is every clip under other video settings
    make_clip(folder / "run.mkv", frames=7, audio=False, seed=3)
    redone = {Path(r.source).name: r.reused for r in apply_path("tiny", folder, tmp_path / "out", FAST,
                                                                 progress=False) if isinstance(r, Painted)}
    assert redone == {"bay.png": True, "walk.mp4": True, "run.mkv": False}
    steadier = [r for r in apply_path("tiny", folder, tmp_path / "out", FAST, progress=False,
                                      video=VideoConfig(blend=0.5)) if isinstance(r, Painted) and r.frames]
    assert len(steadier) == 2 and not any(r.reused for r in steadier)
    half = dataclasses.replace(FAST, strength=0.5)
    weaker = [r for r in apply_path("tiny", folder, tmp_path / "out", half, progress=False)
              if isinstance(r, Painted) and r.frames]
    assert len(weaker) == 2 and not any(r.reused for r in weaker)
    # the CLI says each clip, and that a finished one was kept
    code, out, err = rotoscope("apply", "tiny", folder, "-o", tmp_path / "out", "--strength", "0.5", "--engine",
                               "torch", "--precision", "fp32", "--no-progress", capsys=capsys)
    said = out + err
    # (the photo was painted at strength 0.5 just above: kept too, and said so, not "wrote")
    assert code == 0 and said.count("kept ") == 3 and f"kept 1 image(s) in {tmp_path / 'out'}" in said, said


def test_a_folders_animated_gifs_and_webps_are_kept_when_finished_like_its_videos(tiny_filter, tmp_path):
    """An animated GIF or WebP in a folder is painted as a clip and comes back as one: a second run keeps it, as
    it keeps a finished .mp4 (it was painted again on every run: the animation carried no provenance)."""
    from PIL import Image

    folder = tmp_path / "loops"
    folder.mkdir()
    frames = [Image.new("RGB", (32, 24), (40 * k, 90, 200 - 30 * k)) for k in range(4)]
    for suffix in (".gif", ".webp"):
        frames[0].save(folder / f"loop{suffix}", save_all=True, append_images=frames[1:], duration=80, loop=0)
    first = [r for r in apply_path("tiny", folder, tmp_path / "out", FAST, progress=False) if isinstance(r, Painted)]
    assert sorted(Path(r.output).name for r in first) == ["loop.gif", "loop.webp"] and not any(r.reused for r in first)
    again = [r for r in apply_path("tiny", folder, tmp_path / "out", FAST, progress=False) if isinstance(r, Painted)]
    assert len(again) == 2 and all(r.reused and r.frames == 4 and r.size == (32, 24) for r in again)
    weaker = [r for r in apply_path("tiny", folder, tmp_path / "out", dataclasses.replace(FAST, strength=0.5),
                                    progress=False) if isinstance(r, Painted)]
    assert len(weaker) == 2 and not any(r.reused for r in weaker)  # other settings: painted again


def test_a_folder_of_clips_alone_is_painted_and_one_without_either_is_refused(tiny_filter, tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    make_clip(folder / "a.mp4", frames=4, audio=False)
    make_clip(folder / "a.ts", frames=4, audio=False)
    make_clip(folder / "B.mp4", frames=4, audio=False)
    make_clip(folder / "b.mp4", frames=4, audio=False)
    results = list(apply_path("tiny", folder, tmp_path / "out", FAST, progress=False))
    # a.ts would go out as a.mp4 (H.264 in an .mp4), the name a.mp4 keeps: a.ts is skipped, saying why; B.mp4 and
    # b.mp4 are one file on a case-insensitive file system: the first keeps it
    assert [(p.source, p.output) for p in results if isinstance(p, Painted)] == [
        (str(folder / n), str(tmp_path / "out" / n)) for n in ("B.mp4", "a.mp4")]
    skipped = {Path(r.source).name: r.reason for r in results if isinstance(r, Skipped)}
    assert set(skipped) == {"a.ts", "b.mp4"} and "a.mp4's" in skipped["a.ts"] and "B.mp4's" in skipped["b.mp4"]
    (tmp_path / "empty").mkdir()
    code, out, err = rotoscope("apply", "tiny", tmp_path / "empty", "--no-progress", capsys=capsys)
    assert code == 1 and err.strip() == f"error: no images or clips in {tmp_path / 'empty'}"


def animated_gif(path, frames=4, size=(48, 40)):
    """An animated GIF of `frames` different scenes, 80 ms each."""
    from PIL import Image

    pics = []
    for i in range(frames):
        make_scene(path.with_name(f".frame{i}.png"), seed=i, size=size)
        pics.append(Image.open(path.with_name(f".frame{i}.png")).convert("RGB"))
    pics[0].save(path, save_all=True, append_images=pics[1:], duration=80, loop=0)
    return path


def test_an_animated_gif_is_a_clip_alone_or_in_a_folder_and_a_still_gif_a_picture(tiny_filter, tmp_path, capsys):
    from PIL import Image

    anim = animated_gif(tmp_path / "wave.gif")
    code, out, err = rotoscope("apply", "tiny", anim, "--engine", "torch", "--precision", "fp32", "--no-progress",
                               capsys=capsys)
    assert code == 0, out + err
    with Image.open(tmp_path / "wave-tiny.gif") as im:  # a GIF comes back as a GIF, every frame painted
        assert im.n_frames == 4 and im.info["duration"] == 80
    folder = tmp_path / "mixed"
    folder.mkdir()
    animated_gif(folder / "wave.gif")
    make_scene(folder / "bay.png")
    make_scene(folder / "still.png")
    Image.open(folder / "still.png").save(folder / "still.gif")  # one frame: a picture, written as .png
    results = list(apply_path("tiny", folder, tmp_path / "out", FAST, progress=False))
    painted = {Path(r.source).name: r for r in results if isinstance(r, Painted)}
    assert set(painted) == {"wave.gif", "bay.png", "still.png"}, results
    assert painted["wave.gif"].frames == 4 and painted["wave.gif"].output == str(tmp_path / "out" / "wave.gif")
    assert not painted["still.png"].frames
    # still.gif would be written as still.png, which still.png keeps: skipped, saying why
    assert [(Path(r.source).name, r.reason) for r in results if isinstance(r, Skipped)] == [
        ("still.gif", "still.gif: its painting would be still.png, the name of still.png's: rename one of them")]
    with Image.open(tmp_path / "out" / "wave.gif") as im:
        assert im.n_frames == 4
    code, out, err = rotoscope("apply", "tiny", anim, "-o", tmp_path / "wave.mp4", "--engine", "torch",
                               "--precision", "fp32", "--no-progress", capsys=capsys)
    assert code == 0 and (tmp_path / "wave.mp4").is_file(), out + err  # or as H.264


def test_two_pictures_whose_names_differ_only_in_case_are_not_painted_over_each_other(tiny_filter, tmp_path):
    """a.webp and a.WEBP are two files here, one on macOS or Windows, where the second painting would replace the
    first: one is painted, the other skipped, saying why in a line that names it."""
    folder = tmp_path / "in"
    folder.mkdir()
    make_scene(folder / "a.webp")
    make_scene(folder / "a.WEBP")
    results = list(apply_path("tiny", folder, tmp_path / "out", FAST, progress=False))
    assert [Path(r.source).name for r in results if isinstance(r, Painted)] == ["a.WEBP"]
    assert [r.reason for r in results if isinstance(r, Skipped)] == [
        "a.webp: its painting would be a.webp, the name of a.WEBP's (the same name where case is ignored, as on macOS "
        "and Windows): rename one of them"]


def test_a_log_file_gets_no_blank_line_from_a_progress_bar(tiny_filter, tmp_path, capsys):
    """Progress bars are for a terminal: written to a file (or captured, as here) a transient one left a blank line
    before 'wrote ...'."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        make_scene(folder / f"p{i}.png", seed=i)
    clip = make_clip(tmp_path / "c.mp4", frames=3, audio=False)
    for src in (folder, clip):
        code, _, err = rotoscope("apply", "tiny", src, "--engine", "torch", capsys=capsys)  # progress on (default)
        assert code == 0 and "" not in err.rstrip("\n").split("\n"), err
