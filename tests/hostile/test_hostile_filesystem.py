"""File systems that refuse: read-only folders, a full disk (a small tmpfs where this machine can mount one, and the
same refusal injected in-process everywhere), special files where outputs go, links pointing outside, a jobs
database that is not one. Each is one line; nothing half-written appears; earlier work is untouched; a render
stopped by a full disk resumes once there is room."""

from __future__ import annotations

import errno
import os
import socket
import subprocess

import av
import pytest
from PIL import Image

from conftest import assert_one_line_error, make_clip, make_image

# a hang (a FIFO read, a lock) fails within 120 s rather than at the suite's 600 s
pytestmark = pytest.mark.timeout(120)

FAST = ["--engine", "torch", "--precision", "fp32", "--no-progress"]
TINY_TRAIN = ["--size", "32", "--batch", "1", "--backbone", "random", "--channels", "8,16,16", "--res-blocks", "1",
              "--precision", "fp32", "--no-progress", "--set", "size_start=0", "--set", "holdout=0"]


def photos(world, n=2):
    folder = world.work / "photos"
    folder.mkdir(exist_ok=True)
    for i in range(n):  # named, not numbered: a folder of numbered pictures is a video's frames
        make_image(folder / f"photo-{'abcdefgh'[i]}.png", size=(40, 36), seed=i)
    return folder


def mid_run_error(code, out, err, *words):
    """A fault after work began (the run's own lines came first): exit 1, one error line and it is the last."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, err
    assert "Traceback" not in err + out
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [lines[-1]], err
    for w in words:
        assert w in lines[-1], (w, lines[-1])
    return lines[-1]


# ---------------------------------------------------------------- read-only folders


def test_apply_into_a_read_only_folder(world, readonly_dir):
    world.refused("apply", "tiny", world.photo, "-o", readonly_dir / "out.png", *FAST,
                  words=["cannot write", "out.png"])


def test_apply_a_folder_into_a_read_only_folder(world, readonly_dir):
    world.refused("apply", "tiny", photos(world), "-o", readonly_dir / "painted", *FAST, words=["cannot write"])


def test_train_into_a_read_only_folder_is_refused_before_training(world, readonly_dir):
    world.refused("train", world.photo, "--name", "x", *TINY_TRAIN, "--steps", "2",
                  "-o", readonly_dir / "x.safetensors", words=["cannot write"],
                  absent=[world.home / "runs" / "x" / "checkpoint.safetensors"])


def test_export_explain_audit_into_a_read_only_folder(world, readonly_dir):
    world.refused("export", "tiny", "-o", readonly_dir / "tiny.onnx", words=["cannot write"])
    world.refused("explain", "tiny", "-o", readonly_dir / "story.html", words=["cannot write"])
    world.refused("audit", photos(world), "-o", readonly_dir / "audit.html", words=["cannot write"])


def test_a_video_into_a_read_only_folder(world, readonly_dir):
    clip = make_clip(world.work / "c.mp4", frames=4, size=(32, 24), audio=False)
    world.refused("apply", "tiny", clip, "-o", readonly_dir / "out.mp4", *FAST, words=["cannot write"])


def test_a_read_only_registry_refuses_removal_and_training(world, readonly, monkeypatch):
    filters = readonly({"ro.safetensors": (world.filters / "tiny.safetensors").read_bytes()})
    home = world.root / "ro-home"
    home.mkdir()
    (home / "filters").symlink_to(filters, target_is_directory=True)
    monkeypatch.setenv("ROTOSCOPE_HOME", str(home))
    world.refused("rm", "ro", words=["cannot write"])
    assert (filters / "ro.safetensors").is_file()
    world.refused("train", world.photo, "--name", "new", *TINY_TRAIN, "--steps", "2", words=["cannot write"])
    code, out, err = world.cli("apply", "ro", world.photo, "-o", world.work / "from-ro.png", *FAST)
    assert code == 0, err  # reading from it is fine


# ---------------------------------------------------------------- a full disk, for real (tmpfs)


def test_a_full_disk_under_an_image(world, tiny_disk):
    big = make_image(world.work / "big.png", size=(160, 120))
    world.refused("apply", "tiny", big, "-o", tiny_disk / "big-out.png", *FAST, words=["No space left on device"],
                  absent=[tiny_disk / "big-out.png"])
    assert os.listdir(tiny_disk) == []


def test_a_full_disk_under_a_folder_run(world, tiny_disk):
    folder = photos(world, 3)
    for p in folder.iterdir():
        make_image(p, size=(120, 100), seed=hash(p.name) % 100)
    code, out, err = world.cli("apply", "tiny", folder, "-o", tiny_disk / "painted", *FAST)
    mid_run_error(code, out, err, "No space left on device")
    for p in (tiny_disk / "painted").iterdir():  # whatever was written is complete
        Image.open(p).load()


def test_a_full_disk_under_a_trained_filter(world, tiny_disk):
    code, out, err = world.cli("train", world.photo, "--name", "x", "--photos", photos(world), *TINY_TRAIN,
                               "--steps", "2", "-o", tiny_disk / "x.safetensors")
    mid_run_error(code, out, err, "cannot write", "No space left on device")
    assert not (tiny_disk / "x.safetensors").exists() and os.listdir(tiny_disk) == []
    # the run's checkpoint lies elsewhere: the same run resumes into a folder with room
    code, out, err = world.cli("train", world.photo, "--name", "x", "--photos", photos(world), *TINY_TRAIN,
                               "--steps", "2", "--resume", "-o", world.work / "x.safetensors")
    assert code == 0 and (world.work / "x.safetensors").is_file(), err


def test_a_render_stopped_by_a_full_disk_says_where_its_work_is_and_resumes(world, tiny_disk):
    clip = make_clip(world.work / "c.mp4", frames=24, size=(96, 64), audio=False)
    out = tiny_disk / "out.mp4"
    args = ("apply", "tiny", clip, "-o", out, *FAST, "--no-stabilize", "--set", "segment_frames=4")
    code, text, err = world.cli(*args)
    line = mid_run_error(code, text, err, "No space left on device")
    assert not out.exists()
    work = [p for p in tiny_disk.iterdir() if p.name.startswith(".out.mp4.rotoscope-")]
    # the finished segments wait in a folder the line names, for the same command
    assert "kept in" in line and len(work) == 1 and str(work[0]) in line, line
    subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_disk)], check=True, capture_output=True, timeout=20)
    code, text, err = world.cli(*args)
    assert code == 0, err
    with av.open(str(out)) as c:
        assert len(list(c.decode(video=0))) == 24
    assert not [p for p in tiny_disk.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- a full disk, injected (any machine)


def _no_space(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_injected_full_disk_under_an_image(world, monkeypatch):
    monkeypatch.setattr(Image.Image, "save", _no_space)
    world.refused("apply", "tiny", world.photo, "-o", world.work / "out.png", *FAST,
                  words=["cannot write", "No space left on device"], absent=[world.work / "out.png"])


def test_injected_full_disk_under_a_checkpoint_mid_run(world, monkeypatch):
    """The first checkpoint meets a full disk: the run ends with one error line and leaves no filter."""
    import importlib

    monkeypatch.setattr(importlib.import_module("rotoscope.train"), "save_file", _no_space)
    code, out, err = world.cli("train", world.photo, "--name", "y", "--photos", photos(world), *TINY_TRAIN,
                               "--steps", "2", "--checkpoint-every", "1")
    mid_run_error(code, out, err, "cannot write", "checkpoint")
    assert not (world.filters / "y.safetensors").exists()


def test_injected_full_disk_under_a_filter(world, monkeypatch):
    """The filter file itself meets a full disk (the library's save, as train's last act does): one line."""
    import importlib

    monkeypatch.setattr(importlib.import_module("rotoscope.filter"), "save_file", _no_space)
    from rotoscope.errors import CannotWrite
    from rotoscope.filter import load_filter, save_filter

    f = load_filter("tiny")
    with pytest.raises(CannotWrite, match="cannot write .*keep.safetensors: No space left on device"):
        save_filter(f.net, f.card, world.filters / "keep.safetensors")


# ---------------------------------------------------------------- special files and links where outputs go


def test_an_output_that_is_a_fifo_is_replaced_without_hanging(world):
    out = world.work / "pipe.png"
    os.mkfifo(out)
    code, _, err = world.cli("apply", "tiny", world.photo, "-o", out, *FAST)
    assert code == 0, err
    assert out.is_file() and Image.open(out).size == (40, 32)


def test_an_output_link_pointing_outside_replaces_the_link_not_its_target(world):
    outside = world.root / "outside"
    outside.mkdir()
    target = make_image(outside / "precious.png", seed=9)
    world.protect(target)
    out = world.work / "link.png"
    out.symlink_to(target)
    code, _, err = world.cli("apply", "tiny", world.photo, "-o", out, *FAST)
    assert code == 0, err
    assert not out.is_symlink() and Image.open(out).size == (40, 32)


def test_a_folder_with_links_outside_fifos_and_loops_is_painted_without_hanging(world):
    folder = photos(world)
    os.mkfifo(folder / "pipe.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "outside.png").symlink_to(world.photo)
    (folder / "dangling.png").symlink_to(world.root / "gone.png")
    code, _, err = world.cli("apply", "tiny", folder, "-o", world.work / "painted", *FAST)
    assert code == 0 and "Traceback" not in err, err
    assert sorted(p.name for p in (world.work / "painted").iterdir()) == ["outside.png", "photo-a.png", "photo-b.png"]


def test_a_home_that_is_a_file(world, monkeypatch):
    home = world.work / "home-file"
    home.write_text("not a folder")
    monkeypatch.setenv("ROTOSCOPE_HOME", str(home))
    code, out, err = world.cli("filters", "--json")
    assert code == 0 and "Traceback" not in err  # the shipped filters are still listed
    world.refused("train", world.photo, "--name", "x", *TINY_TRAIN, "--steps", "2", words=["cannot write"])
    assert home.read_text() == "not a folder"


def test_an_unreadable_input_is_one_line(world):
    if os.geteuid() == 0:
        pytest.skip("root reads any file: permissions cannot refuse a read here")
    src = make_image(world.work / "secret.png")
    src.chmod(0)
    try:
        world.refused("apply", "tiny", src, "-o", world.work / "o.png", absent=[world.work / "o.png"])
    finally:
        src.chmod(0o644)


def test_a_bad_pixel_limit_setting_is_one_line(world, monkeypatch):
    monkeypatch.setenv("ROTOSCOPE_MAX_PIXELS", "lots")
    world.refused("apply", "tiny", world.photo, "-o", world.work / "o.png", words=["ROTOSCOPE_MAX_PIXELS"])


# ---------------------------------------------------------------- the server's database and port


@pytest.mark.parametrize("kind", ["not sqlite", "a folder", "read-only", "under a file"])
def test_a_jobs_database_that_cannot_be_used_is_one_line(world, kind, readonly):
    db = world.work / "jobs.sqlite"
    if kind == "not sqlite":
        db.write_text("these are my notes, not a database")
        world.protect(db)
    elif kind == "a folder":
        db.mkdir()
    elif kind == "read-only":
        db = readonly() / "jobs.sqlite"
    else:
        db = world.photo / "jobs.sqlite"
    world.refused("serve", "--database", db, "--port", str(_free_port()), words=["jobs database"])


def test_a_port_in_use_is_one_line(world):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        world.refused("serve", "--port", port, "--database", world.work / "jobs.sqlite", words=["cannot listen"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_line_even_for_a_message_of_many_lines(world, monkeypatch):
    """Whatever a library says (torch's errors run to ten lines), the CLI says it on one."""
    from rotoscope import filter as flt
    from rotoscope.errors import Invalid

    def chatty(*a, **k):
        raise Invalid("first line\nsecond line\n\nthird line")

    monkeypatch.setattr(flt, "find_filter", chatty)
    line = world.refused("show", "tiny")
    assert line == "error: first line second line third line"
    code, out, err = world.cli("apply", "tiny", world.photo)
    assert_one_line_error(code, out, err)
