"""Hostile clips and video settings: broken or disguised containers, streams with nothing to paint, outputs that
cannot be, frames too small for optical flow. Refusals are one line, and no output or work folder is left."""

from __future__ import annotations

import av
import pytest

from conftest import make_clip

# a hang (a FIFO read, a lock) fails within 120 s rather than at the suite's 600 s
pytestmark = pytest.mark.timeout(120)

FAST = ["--engine", "torch", "--precision", "fp32", "--no-progress"]


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "c.mp4", frames=6, size=(32, 24)).read_bytes()


def _audio_only(path):
    with av.open(str(path), "w") as c:
        a = c.add_stream("aac", rate=44100)
        a.layout = "mono"
        import numpy as np

        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 44100, 0
        for p in a.encode(f):
            c.mux(p)
        for p in a.encode():
            c.mux(p)


def _no_frames(path):
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=24)
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        c.start_encoding()


BAD_CLIPS = {
    "text.mp4": lambda p, b: p.write_text("not a video"),
    "empty.mp4": lambda p, b: p.write_bytes(b""),
    "truncated.mp4": lambda p, b: p.write_bytes(b[: len(b) // 4]),
    "header-only.mp4": lambda p, b: p.write_bytes(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"),
    "audio-only.mp4": lambda p, b: _audio_only(p),
    "no-frames.mkv": lambda p, b: _no_frames(p),
    "zip.mov": lambda p, b: p.write_bytes(b"PK\x03\x04" + b"\x00" * 100),
}


@pytest.mark.parametrize("name", BAD_CLIPS)
def test_a_clip_that_cannot_be_painted_is_one_line_and_leaves_nothing(world, clip_bytes, name):
    src = world.work / name
    BAD_CLIPS[name](src, clip_bytes)
    out = world.work / "out.mp4"
    world.refused("apply", "tiny", src, "-o", out, *FAST, absent=[out])
    assert not list(world.work.glob(".out.mp4.rotoscope-*")), "a work folder was left behind"


BAD_VIDEO_OPTIONS = [
    (["-o", "out.avi"], "cannot write video as '.avi'"),
    (["-o", "in.mp4"], "overwrite the input"),
    (["--crf", "99"], "crf must be between 0 and 51 (got 99)"),
    (["--preview", "0"], "preview must be at least 1 frame (got 0)"),
    (["--preview", "2"], "--preview writes a picture"),
    (["--set", "segment_frames=0"], "segment_frames must be between"),
    (["--set", "blend=2"], "blend must be between"),
    (["--set", "flow_preset=slowest"], "flow_preset"),
    (["-o", "out.gif", "--set", "gif_max_frames=2"], "too long for .gif"),
]


@pytest.mark.parametrize("args,words", BAD_VIDEO_OPTIONS, ids=[" ".join(a) for a, _ in BAD_VIDEO_OPTIONS])
def test_bad_video_settings_are_one_line(world, clip_bytes, args, words):
    src = world.work / "in.mp4"
    src.write_bytes(clip_bytes)
    world.protect(src)
    if "-o" not in args:
        args = [*args, "-o", "out.mp4"]
    world.refused("apply", "tiny", src, *args, *FAST, words=[words],
                  absent=[world.work / n for n in ("out.mp4", "out.avi", "out.gif")])


@pytest.mark.parametrize("size", ["1", "2", "11"])
def test_frames_smaller_than_optical_flow_takes_are_painted_steadied(world, clip_bytes, size):
    """DIS optical flow refuses frames under 12 px a side: the flow runs on an enlarged copy instead."""
    src = world.work / "in.mp4"
    src.write_bytes(clip_bytes)
    out = world.work / "small.mp4"
    code, _, err = world.cli("apply", "tiny", src, "-o", out, "--size", size, *FAST)
    assert code == 0 and "Traceback" not in err, err
    with av.open(str(out)) as c:
        assert len(list(c.decode(video=0))) == 6


def test_awkward_names_of_clips_and_outputs(world, clip_bytes):
    src = world.work / "clip [1] *'ü\".mp4"
    src.write_bytes(clip_bytes)
    out = world.work / "out [1] *'ü\".mp4"
    code, _, err = world.cli("apply", "tiny", src, "-o", out, *FAST)
    assert code == 0 and "Traceback" not in err, err
    assert out.is_file() and not list(world.work.glob(".out*rotoscope-*"))
