"""`rotoscope live`: a video file stands in for the camera, the output is headless (a file, or nothing)."""

import time

import av
import pytest

import numpy as np

from conftest import assert_one_line_error, encode_clip, make_clip, rotoscope
from rotoscope.config import ApplySettings
from rotoscope.errors import RotoscopeError
from rotoscope.filter import load_filter
from rotoscope.live import has_gui, run_live

FAST = ApplySettings(engine="torch", precision="fp32")


def frames_in(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_a_recording_plays_in_browsers_and_a_clip_keeps_its_frame_rate(tiny_filter, tmp_path):
    """H.264 in yuv420p (OpenCV's MPEG-4 Part 2 played in no browser); a clip standing in for a camera drops no
    frame, so its frames are one slot of its rate apart."""
    clip = make_clip(tmp_path / "cam.mp4", frames=6, fps=24, audio=False)
    run_live(load_filter("tiny"), str(clip), FAST, window=False, out=tmp_path / "live.mp4", log=lambda s: None,
             paint_scale=1.0)
    with av.open(str(tmp_path / "live.mp4")) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
        times = [float(f.time) for f in c.decode(video=0)]
    assert times == pytest.approx([i / 24 for i in range(6)], abs=1e-3)


def test_a_camera_recording_plays_at_the_speed_it_was_painted(tiny_filter, tmp_path, monkeypatch):
    """A 30 fps camera painted at ~8 fps drops frames between paintings: the recording's frames keep the camera
    slots they were painted in (at the camera's rate they played 3-4x too fast), and odd sides are padded."""
    from rotoscope import live

    given = []

    def camera():  # 33x25 frames, a new one every 0.12 s or more
        for i in range(6):
            time.sleep(0.12)
            given.append(time.perf_counter())
            yield np.full((25, 33, 3), 40 * i, np.uint8)

    monkeypatch.setattr(live, "open_feed", lambda cam, warn: live.Feed(camera(), 30.0, is_file=False))
    run_live(load_filter("tiny"), "0", FAST, window=False, out=tmp_path / "cam.mp4", log=lambda s: None,
             paint_scale=1.0)
    with av.open(str(tmp_path / "cam.mp4")) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (34, 26)
        times = [float(f.time) for f in c.decode(video=0)]
    assert len(times) == 6 and all(b - a > 2.5 / 30 for a, b in zip(times, times[1:])), times  # not 1/30 s apart
    # each frame in the camera slot of when it came, give or take painting the one before (the first one came
    # before live's start-up: the recording starts with the frame painted first)
    assert all(abs((t - times[1]) - (g - given[1])) < 0.1 for t, g in zip(times[1:], given[1:])), (times, given)


def test_live_paints_n_frames_from_a_file_and_exits_cleanly(tiny_filter, tmp_path, capsys):
    clip = make_clip(tmp_path / "cam.mp4", frames=24, audio=False)
    code, _, err = rotoscope("live", "tiny", "--camera", clip, "--frames", "10", "--no-window", "-o",
                             tmp_path / "live.mp4", "--engine", "torch", capsys=capsys)
    assert code == 0, err
    lines = err.strip().splitlines()
    assert lines[-2].startswith("painted 10 frame(s) at 64x48 in ") and " fps (paint " in lines[-2]
    assert lines[-1] == f"wrote {tmp_path / 'live.mp4'}"
    assert frames_in(tmp_path / "live.mp4") == 10


def test_the_recording_has_its_name_only_once_it_is_whole(tiny_filter, tmp_path, monkeypatch):
    """While live records, the file is under a hidden temporary name (a kill -9 or a power cut left a torn .mp4
    under the final one); a run that fails midway leaves nothing, and a later run clears a killed one's leftovers."""
    from rotoscope.video import render

    clip = make_clip(tmp_path / "cam.mp4", frames=12, audio=False)
    dest = tmp_path / "rec" / "live.mp4"
    dest.parent.mkdir()
    (dest.parent / ".live.0123abcd.partial.mp4").write_bytes(b"a killed run's")
    seen, real = [], render.stylize_frames

    def paint(run, rgbs, st):
        seen.append(sorted(p.name for p in dest.parent.iterdir()))
        if len(seen) == 4:
            raise RuntimeError("the camera was unplugged")
        return real(run, rgbs, st)

    monkeypatch.setattr(render, "stylize_frames", paint)
    with pytest.raises(RuntimeError, match="unplugged"):
        run_live(load_filter("tiny"), str(clip), FAST, window=False, out=dest, log=lambda s: None, paint_scale=1.0)
    assert len(seen[-1]) == 1 and seen[-1][0].startswith(".live.") and seen[-1][0].endswith(".partial.mp4")
    assert seen[-1][0] != ".live.0123abcd.partial.mp4"  # the killed run's leftover was cleared first
    assert list(dest.parent.iterdir()) == []
    monkeypatch.setattr(render, "stylize_frames", real)
    run_live(load_filter("tiny"), str(clip), FAST, window=False, out=dest, log=lambda s: None, paint_scale=1.0)
    assert [p.name for p in dest.parent.iterdir()] == ["live.mp4"] and frames_in(dest) == 12


def test_live_stops_at_the_end_of_the_file(tiny_filter, tmp_path):
    clip = make_clip(tmp_path / "cam.mp4", frames=6, audio=False)
    said = []
    stats = run_live(load_filter("tiny"), str(clip), FAST, frames=100, window=False, log=said.append)
    assert stats.frames == 6 and stats.fps > 0 and stats.size == (64, 48)
    assert stats.ms["paint"] > 0 and stats.ms["steady"] > 0
    assert said[0].startswith("note: no window, no --out") and said[1:3] == ["precision: fp32 (as asked)",
                                                                             "engine: torch fp32 (as asked)"]


def spy_on_flows(monkeypatch) -> list:
    """The (longest side, DIS preset) of every optical flow computed from now on."""
    from rotoscope import flow

    calls, real = [], flow.flow

    def spy(a, b, max_side=flow.FLOW_MAX_SIDE, preset="medium"):
        calls.append((max_side, preset))
        return real(a, b, max_side, preset)

    monkeypatch.setattr(flow, "flow", spy)
    return calls


def test_live_steadies_with_the_real_time_flow(tiny_filter, tmp_path, monkeypatch, capsys):
    """By default the flow `apply --real-time` uses (DIS fine at 160 px; config.LIVE_FLOW), which left less flicker
    than live's old ultrafast at 640 px in less time (video.md); --flow-preset and --flow-side choose another."""
    clip = make_clip(tmp_path / "cam.mp4", frames=4, audio=False)
    calls = spy_on_flows(monkeypatch)
    run_live(load_filter("tiny"), str(clip), FAST, window=False, log=lambda s: None)
    assert len(calls) == 6 and set(calls) == {(160, "fine")}  # two flows (forward, backward) a frame after the first
    calls.clear()
    code, _, err = rotoscope("live", "tiny", "--camera", clip, "--no-window", "--engine", "torch", "--flow-preset",
                             "medium", "--flow-side", "320", capsys=capsys)
    assert code == 0, err
    assert len(calls) == 6 and set(calls) == {(320, "medium")}
    code, out, err = rotoscope("live", "tiny", "--camera", clip, "--no-window", "--flow-preset", "slow", capsys=capsys)
    assert_one_line_error(code, out, err, "unknown flow_preset 'slow': use one of ultrafast, fast, medium, fine")
    # out-of-range numbers in the settings' own words (as apply says them), not the argument parser's
    for args, words in ((["--flow-side", "5"], "flow_side must be between 16 and 8192 (got 5)"),
                        (["--frames", "0"], "frames must be at least 1 (got 0)")):
        code, out, err = rotoscope("live", "tiny", "--camera", clip, "--no-window", *args, capsys=capsys)
        assert_one_line_error(code, out, err, words)


def test_live_with_kept_faces_and_no_stabilizing(tiny_filter, tmp_path):
    clip = make_clip(tmp_path / "cam.mp4", frames=4, audio=False)
    st = ApplySettings(engine="torch", precision="fp32", keep="faces", size=32)
    stats = run_live(load_filter("tiny"), str(clip), st, window=False, stabilize=False, log=lambda s: None)
    assert stats.frames == 4 and stats.size == (32, 24) and stats.ms["steady"] < 0.1 and stats.ms["mask"] > 0


@pytest.mark.skipif(has_gui(), reason="this OpenCV can open windows")
def test_a_window_without_a_gui_is_refused_in_one_line(tiny_filter, tmp_path, capsys):
    clip = make_clip(tmp_path / "cam.mp4", frames=3, audio=False)
    code, _, err = rotoscope("live", "tiny", "--camera", clip, "--frames", "2", capsys=capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--no-window" in err


@pytest.mark.parametrize("camera, says", [("missing.mp4", "no such video file"), ("7", "cannot open camera 7")])
def test_a_camera_that_is_not_there_is_one_line(tiny_filter, tmp_path, capsys, camera, says):
    code, _, err = rotoscope("live", "tiny", "--camera", camera, "--frames", "1", "--no-window", capsys=capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and says in err, err


def test_a_broken_file_is_one_line_even_when_a_lite_version_would_be_announced(tiny_filter, tmp_path, capsys):
    """'painting with NAME-lite' is said once a frame is in: before it, it came ahead of the error line."""
    save_tiny("tiny-lite", "lite")
    (tmp_path / "notes.mp4").write_text("not a video")
    code, _, err = rotoscope("live", "tiny", "--camera", tmp_path / "notes.mp4", "--frames", "1", "--no-window",
                             capsys=capsys)
    assert code == 1 and err.strip().splitlines() == [
        f"error: {tmp_path / 'notes.mp4'}: not a video, or a damaged or empty one (Invalid data found when processing "
        "input)"]


def first_frame_of(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)


def test_a_clip_standing_in_for_a_camera_is_read_as_apply_reads_it(tiny_filter, tmp_path):
    """OpenCV's capture read a file its own way: a mirrored selfie clip lost its mirror, an HDR or untagged HD
    clip its colours, an alpha channel its white. Now a clip is what `apply` would paint: turned and mirrored as
    its display matrix says, and what reading it changed is said."""
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:24, :32], rgb[:24, 32:], rgb[24:] = (220, 40, 40), (40, 220, 40), (40, 40, 220)  # red | green over blue
    clip = encode_clip(tmp_path / "selfie.mp4", [rgb] * 4, pix_fmt="yuv444p", options={"qp": "0"},
                       stream=lambda s: s.set_display_rotation(90, hflip=True))
    still = ApplySettings(engine="torch", precision="fp32", strength=0.0)
    run_live(load_filter("tiny"), str(clip), still, window=False, out=tmp_path / "live.mp4", log=lambda s: None,
             paint_scale=1.0, stabilize=False)
    shown = first_frame_of(tmp_path / "live.mp4")
    expected = np.rot90(rgb, 1)[:, ::-1].astype(int)  # turned, then mirrored: as a player shows it
    assert shown.shape == expected.shape and np.abs(shown - expected).mean() < 12
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[..., :3], rgba[:, 32:, 3] = 30, 255  # left half transparent
    cut = encode_clip(tmp_path / "cut.mov", [rgba] * 3, codec="png", pix_fmt="rgba")
    said = []
    run_live(load_filter("tiny"), str(cut), still, window=False, out=tmp_path / "cut.mp4", log=said.append,
             paint_scale=1.0, stabilize=False)
    assert "note: cut.mov has an alpha channel: its transparent pixels are painted over white (the painting is " \
        "opaque)" in said
    painted = first_frame_of(tmp_path / "cut.mp4")
    assert painted[:, :28].mean() > 220 and painted[:, 36:].mean() < 60


def test_a_virtual_camera_without_pyvirtualcam_is_one_line(tiny_filter, tmp_path, capsys):
    try:
        import pyvirtualcam  # noqa: F401

        pytest.skip("pyvirtualcam is installed")
    except ImportError:
        pass
    clip = make_clip(tmp_path / "cam.mp4", frames=3, audio=False)
    code, _, err = rotoscope("live", "tiny", "--camera", clip, "--no-window", "--virtual-camera", capsys=capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "rotoscope[live]" in err


def test_the_help_names_the_extra_to_install_for_a_virtual_camera(capsys, monkeypatch):
    """Typer renders help as rich markup, where an unescaped [live] is a style tag and vanishes."""
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = rotoscope("live", "--help", capsys=capsys)
    assert code == 0 and "pip install 'rotoscope[live]'" in out, out


def test_an_output_that_is_not_a_video_is_refused(tiny_filter, tmp_path):
    clip = make_clip(tmp_path / "cam.mp4", frames=3, audio=False)
    with pytest.raises(RotoscopeError, match="writes a video"):
        run_live(load_filter("tiny"), str(clip), FAST, window=False, out=tmp_path / "x.png")


def save_tiny(name, arch):
    import torch

    from rotoscope.config import NetConfig
    from rotoscope.filter import registry_path, save_filter
    from rotoscope.network import build

    torch.manual_seed(0)
    net = build(NetConfig(arch=arch, channels=(8, 16, 16), res_blocks=1))
    card = {"name": name, "architecture": {"type": type(net).__name__, "arch": arch, "channels": [8, 16, 16],
                                           "res_blocks": 1, "kernel_outer": 9}}
    return save_filter(net, card, registry_path(name))


def test_live_paints_with_the_lite_version_when_asked(tiny_filter, tmp_path, capsys):
    """--arch auto (the default): NAME-lite when it exists (said in a line); full keeps the named filter; --arch
    lite insists."""
    clip = make_clip(tmp_path / "cam.mp4", frames=4, audio=False)
    args = ("--camera", clip, "--frames", "2", "--no-window", "--engine", "torch")
    code, _, err = rotoscope("live", "tiny", "--arch", "auto", *args, capsys=capsys)
    assert code == 0 and "note: 'tiny' has no lite version: painting with the full network" in err  # as named
    code, _, err = rotoscope("live", "tiny", "--arch", "lite", *args, capsys=capsys)
    assert code != 0 and err.strip().splitlines() == [
        "error: no lite version of 'tiny' (train one: rotoscope train ART --name tiny-lite --arch lite --teacher tiny)"]
    save_tiny("tiny-lite", "lite")
    code, _, err = rotoscope("live", "tiny", "--arch", "auto", *args, capsys=capsys)
    assert code == 0 and "painting with tiny-lite, the lite version of tiny (--arch full: the full one)" in err, err
    code, _, err = rotoscope("live", "tiny", *args, capsys=capsys)  # auto is the default
    assert code == 0 and "painting with tiny-lite" in err, err
    code, _, err = rotoscope("live", "tiny", "--arch", "full", *args, capsys=capsys)
    assert code == 0 and "lite version" not in err


class FakeCamera:
    """Stands in for pyvirtualcam.Camera: records what it was opened with and every frame sent."""

    opened: list = []

    def __init__(self, width, height, fps):
        self.size, self.fps, self.frames, self.closed = (width, height), fps, [], False
        FakeCamera.opened.append(self)

    def send(self, rgb):
        self.frames.append(rgb.copy())

    def close(self):
        self.closed = True


def fake_pyvirtualcam(monkeypatch, camera):
    import sys
    import types

    mod = types.ModuleType("pyvirtualcam")
    mod.Camera = camera
    monkeypatch.setitem(sys.modules, "pyvirtualcam", mod)


def test_the_virtual_camera_gets_every_painted_frame_at_the_painted_size(tiny_filter, tmp_path, monkeypatch):
    fake_pyvirtualcam(monkeypatch, FakeCamera)
    FakeCamera.opened = []
    clip = make_clip(tmp_path / "cam.mp4", frames=8, audio=False)
    stats = run_live(load_filter("tiny"), str(clip), FAST, frames=5, window=False, virtual=True,
                     out=tmp_path / "live.mp4", log=lambda s: None)
    (cam,) = FakeCamera.opened
    assert cam.size == (64, 48) and cam.fps > 0 and cam.closed
    assert len(cam.frames) == stats.frames == 5 == frames_in(tmp_path / "live.mp4")
    assert all(f.shape == (48, 64, 3) and f.dtype == "uint8" for f in cam.frames)
    # the painting, not the camera's frames: the tiny filter changes them
    with av.open(str(clip)) as c:
        first_in = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert abs(cam.frames[0].astype(int) - first_in.astype(int)).mean() > 2


def test_no_virtual_camera_device_is_one_line(tiny_filter, tmp_path, monkeypatch, capsys):
    def no_device(**kw):
        raise RuntimeError("'/dev/video0' is not a video loopback device\nmore detail")

    fake_pyvirtualcam(monkeypatch, no_device)
    clip = make_clip(tmp_path / "cam.mp4", frames=3, audio=False)
    code, out, err = rotoscope("live", "tiny", "--camera", clip, "--no-window", "--virtual-camera", "--engine",
                               "torch", capsys=capsys)
    line = assert_one_line_error(code, out, err, "no virtual camera to send to")
    assert line.endswith("is not a video loopback device\")")  # its first line, in one line of ours


def test_the_window_shows_fps_and_q_stops(tiny_filter, tmp_path, monkeypatch):
    import cv2

    from rotoscope import live

    shown, keys = [], iter([-1, -1, ord("q")])
    monkeypatch.setattr(live, "has_gui", lambda: True)
    monkeypatch.setattr(cv2, "imshow", lambda title, img: shown.append((title, img.copy())))
    monkeypatch.setattr(cv2, "waitKey", lambda ms: next(keys))
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    clip = make_clip(tmp_path / "cam.mp4", frames=10, audio=False)
    stats = run_live(load_filter("tiny"), str(clip), FAST, window=True, log=lambda s: None)
    assert stats.frames == 3 and len(shown) == 3  # q on the third frame: nothing more painted
    assert all(title == "rotoscope live: tiny" for title, _ in shown)
    # the fps figure is drawn in white at the top left, on the painting (BGR, as OpenCV shows it)
    img = shown[-1][1]
    assert img.shape == (48, 64, 3) and (img[8:24, 8:40] == 255).all(axis=-1).any()


@pytest.mark.parametrize("what, says", [("missing.png", "no such file"), ("folder", "live takes one mask image"),
                                        ("broken.png", "broken.png")])
def test_a_mask_that_is_not_one_image_is_one_line(tiny_filter, tmp_path, capsys, what, says):
    (tmp_path / "folder").mkdir()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    clip = make_clip(tmp_path / "cam.mp4", frames=3, audio=False)
    code, out, err = rotoscope("live", "tiny", "--camera", clip, "--no-window", "--mask", tmp_path / what,
                               capsys=capsys)
    assert_one_line_error(code, out, err, says)


def test_live_keeps_the_camera_where_the_mask_is_black(tiny_filter, tmp_path):
    import numpy as np
    from PIL import Image

    clip = make_clip(tmp_path / "cam.mp4", frames=4, audio=False)
    m = np.full((48, 64), 255, np.uint8)
    m[:, :32] = 0  # keep the left half
    Image.fromarray(m).save(tmp_path / "mask.png")
    run_live(load_filter("tiny"), str(clip), FAST, window=False, stabilize=False, mask=tmp_path / "mask.png",
             out=tmp_path / "live.mp4", log=lambda s: None)
    with av.open(str(clip)) as a, av.open(str(tmp_path / "live.mp4")) as b:
        x, y = (next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int) for c in (a, b))
    # measured: 3.4 levels on the kept half (the file's mp4v encode), 27 on the painted half
    assert np.abs(y[:, :24] - x[:, :24]).mean() < 8
    assert np.abs(y[:, 40:] - x[:, 40:]).mean() > 15


def test_the_paint_scale_is_the_largest_that_fits_the_budget():
    from rotoscope.live import LIVE_SCALES, fit_paint_scale

    cost = {1.0: 80.0, 0.75: 48.0, 0.5: 24.0, 0.4: 18.0}
    asked = []

    def paint_ms(scale):
        asked.append(scale)
        return cost[scale]
    fitted = fit_paint_scale(paint_ms, 25.0)
    assert fitted.scale == 0.5 and asked == [1.0, 0.75, 0.5]  # from the largest down, stopping at the first fit
    assert "paint scale 0.5 (the largest that fits 25 ms" in fitted.line() and "1: 80 ms" in fitted.line()
    assert fit_paint_scale(paint_ms, 100.0).scale == 1.0
    slow = fit_paint_scale(lambda s: 500.0, 25.0)  # nothing fits: the smallest, and said so
    assert slow.scale == LIVE_SCALES[-1] and "none fits" in slow.line()


def test_live_fits_the_paint_scale_to_the_camera_unless_given(tiny_filter, tmp_path, monkeypatch, capsys):
    """A camera at 24 fps leaves 25 ms a frame (60%) for painting: a filter that paints whole frames in 80 ms
    paints at the largest scale that fits, and the frames still come out at the camera's size."""
    from rotoscope import live

    clip = make_clip(tmp_path / "cam.mp4", frames=4, fps=24, audio=False)
    cost = {1.0: 80.0, 0.75: 48.0, 0.5: 24.0, 0.4: 18.0}
    monkeypatch.setattr(live, "_paint_ms", lambda run, rgb, st, scale: cost[scale])
    said = []
    stats = run_live(load_filter("tiny"), str(clip), FAST, window=False, log=said.append, out=tmp_path / "o.mp4")
    assert stats.paint_scale == 0.5 and stats.size == (64, 48) and "paint scale 0.5" in stats.line()
    assert any(s.startswith("paint scale 0.5 (the largest that fits 25 ms") for s in said)
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (64, 48)
    # a scale given is used as it is, nothing measured
    monkeypatch.setattr(live, "_paint_ms", lambda *a: pytest.fail("measured a scale that was given"))
    said.clear()
    stats = run_live(load_filter("tiny"), str(clip), FAST, window=False, log=said.append, paint_scale=1.0)
    assert stats.paint_scale == 1.0 and not any(s.startswith("paint scale") for s in said)
    code, _, err = rotoscope("live", "tiny", "--camera", clip, "--no-window", "--engine", "torch", "--paint-scale",
                             "0.75", capsys=capsys)
    assert code == 0 and "paint scale 0.75)" in err.strip().splitlines()[-1], err
    assert_one_line_error(*rotoscope("live", "tiny", "--camera", clip, "--no-window", "--paint-scale", "3",
                                     capsys=capsys), "paint_scale")


def test_the_real_measurement_of_a_paint_scale(tiny_filter):
    import numpy as np

    from rotoscope.live import _paint_ms
    from rotoscope.stylize import make_runner, resolve

    filt = load_filter("tiny")
    st, _ = resolve(filt, FAST, (48, 64))
    rgb = np.full((48, 64, 3), 128, np.uint8)
    assert all(_paint_ms(make_runner(filt, st), rgb, st, s) > 0 for s in (1.0, 0.5))


@pytest.mark.parametrize("reported, used", [(25.0, 25.0), (0.0, 30.0), (float("nan"), 30.0), (-1.0, 30.0),
                                            (1000.0, 30.0)])
def test_a_camera_rate_no_camera_gives_is_taken_as_30(reported, used):
    from rotoscope.live import camera_fps

    class Capture:
        def get(self, prop):
            return reported
    assert camera_fps(Capture()) == used


def test_the_engine_is_timed_again_for_the_fitted_size(tiny_filter, tmp_path, monkeypatch):
    """With the engine left to `auto`, the engine is chosen for the size painted, not the camera's; with the
    engine named, nothing is resolved twice; a paint scale in the settings counts as given."""
    import importlib

    from rotoscope import live

    stylize = importlib.import_module("rotoscope.stylize")
    clip = make_clip(tmp_path / "cam.mp4", frames=3, fps=24, audio=False)
    monkeypatch.setattr(live, "_paint_ms", lambda run, rgb, st, scale: {1.0: 80.0, 0.75: 48.0}.get(scale, 10.0))
    scales, real = [], stylize.resolve

    def resolve(filt, settings, shape, video=False):
        scales.append(settings.paint_scale)
        return real(filt, settings, shape, video)
    monkeypatch.setattr(stylize, "resolve", resolve)
    said = []
    stats = run_live(load_filter("tiny"), str(clip), ApplySettings(precision="fp32"), window=False,
                     log=said.append)
    assert scales == [1.0, 0.5] and stats.paint_scale == 0.5
    engine_lines = [i for i, s in enumerate(said) if s.startswith("engine: ")]
    fit_line = next(i for i, s in enumerate(said) if s.startswith("paint scale 0.5"))
    assert len(engine_lines) == 1 and engine_lines[0] < fit_line  # the engine said once: the one that paints
    scales.clear()
    run_live(load_filter("tiny"), str(clip), FAST, window=False, log=lambda s: None)
    assert scales == [1.0]
    scales.clear()
    stats = run_live(load_filter("tiny"), str(clip), ApplySettings(precision="fp32", paint_scale=0.75),
                     window=False, log=lambda s: None)
    assert scales == [0.75] and stats.paint_scale == 0.75


def test_kill_ends_a_live_recording_as_ctrl_c_does_and_keeps_it(tiny_filter, tmp_path):
    """SIGTERM (`kill`, a service manager stopping it) killed the process with a torn file under the output's name;
    now it stops the run like Ctrl-C: the frames painted so far are a whole, playable file, exit code 0."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    clip = make_clip(tmp_path / "cam.mp4", frames=2000, size=(32, 24), audio=False)
    dest = tmp_path / "live.mp4"
    src = str(Path(__file__).resolve().parents[1] / "src")
    p = subprocess.Popen([sys.executable, "-m", "rotoscope", "live", "tiny", "--camera", str(clip), "--no-window",
                          "-o", str(dest), "--engine", "torch", "--precision", "fp32", "--paint-scale", "1"],
                         env={**os.environ, "PYTHONPATH": src}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".live.*.partial.mp4")) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # some frames in
        assert p.poll() is None, p.stderr.read()
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=60)[1]
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "interrupted: stopping" in err and f"wrote {dest}" in err
    assert 0 < frames_in(dest) < 2000
    assert [q.name for q in tmp_path.iterdir() if q.name.startswith(".")] == []


def test_painting_shown_nowhere_is_said_and_a_recording_takes_what_apply_writes(tiny_filter, tmp_path):
    clip = make_clip(tmp_path / "cam.mp4", frames=2, audio=False)
    said = []
    run_live(load_filter("tiny"), str(clip), FAST, window=False, log=said.append, paint_scale=1.0)
    assert any("shown nowhere" in s for s in said)
    with pytest.raises(RotoscopeError, match=r"\.m4v, \.mkv, \.mov, \.mp4 \(got '\.avi'\)"):
        run_live(load_filter("tiny"), str(clip), FAST, window=False, out=tmp_path / "x.avi", log=said.append)
    run_live(load_filter("tiny"), str(clip), FAST, window=False, out=tmp_path / "x.m4v", log=said.append,
             paint_scale=1.0)
    assert frames_in(tmp_path / "x.m4v") == 2


def test_a_recording_stopped_before_its_first_painting_says_so_and_leaves_no_file(tiny_filter, tmp_path, monkeypatch):
    from rotoscope.video import render

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(render, "stylize_frames", interrupted)
    clip = make_clip(tmp_path / "cam.mp4", frames=2, audio=False)
    with pytest.raises(RotoscopeError, match="no frame was painted, so nothing was recorded to"):
        run_live(load_filter("tiny"), str(clip), FAST, window=False, out=tmp_path / "rec.mp4", log=lambda s: None,
                 paint_scale=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.mp4", "rotoscope-home"]  # no rec.mp4, no partial
