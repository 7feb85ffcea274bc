"""Masks: white paints, black keeps the photo, grey blends; any size; feathered; one mask or one per frame for a
video, steadied across frames; bad masks are one line."""

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, make_clip, make_scene, rotoscope
from rotoscope.config import ApplySettings
from rotoscope.errors import RotoscopeError
from rotoscope.filter import load_filter
from rotoscope.mask import FACE_GROW, FACE_HOLD, MaskChain, feather, flicker, picture_mask, read_mask
from rotoscope.stylize import stylize_image

FAST = ApplySettings(engine="torch", precision="fp32")


def half_mask(path, size=(30, 20)):
    """Left half black (keep), right half white (paint), at a size unlike the photo's."""
    w, h = size
    m = np.zeros((h, w), np.uint8)
    m[:, w // 2:] = 255
    Image.fromarray(m).save(path)
    return path


def test_black_keeps_the_photo_and_white_takes_the_painting(tiny_filter, tmp_path):
    photo = Image.open(make_scene(tmp_path / "photo.png", size=(96, 64)))
    filt = load_filter("tiny")
    painted = np.asarray(stylize_image(filt, photo, FAST))
    masked = np.asarray(stylize_image(filt, photo, FAST, mask=half_mask(tmp_path / "mask.png")))
    ph = np.asarray(photo)
    # the edge is at x = 48; resizing 30 -> 96 px spreads it over ~3 px, feathering (sigma 1 px) over 3 more
    assert np.array_equal(masked[:, :40], ph[:, :40])
    assert np.array_equal(masked[:, 56:], painted[:, 56:])
    edge = masked[:, 44:52].astype(int)
    assert not np.array_equal(edge, ph[:, 44:52]) and not np.array_equal(edge, painted[:, 44:52])


def test_grey_blends_half_way(tiny_filter, tmp_path):
    photo = Image.open(make_scene(tmp_path / "photo.png", size=(64, 48)))
    filt = load_filter("tiny")
    painted = np.asarray(stylize_image(filt, photo, FAST), np.float32)
    grey = np.full((48, 64), 0.5, np.float32)
    out = np.asarray(stylize_image(filt, photo, FAST, mask=grey), np.float32)
    expect = np.asarray(photo, np.float32) * 0.5 + painted * 0.5
    assert np.abs(out - expect).max() <= 1.0


def test_transparent_pixels_of_a_mask_keep_the_photo(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:, 5:, 3] = 255  # white everywhere, opaque on the right only
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    m = read_mask(tmp_path / "m.png")
    assert m[:, :5].max() == 0 and m[:, 5:].min() == 1


def test_feathering_softens_the_edge_by_the_share_asked():
    m = np.zeros((100, 100), np.float32)
    m[:, 50:] = 1
    soft = feather(m, 0.05)  # sigma 5 px
    assert soft[0, 50] == pytest.approx(0.5, abs=0.1)
    assert soft[0, 30] < 0.01 and soft[0, 70] > 0.99 and 0.05 < soft[0, 45] < 0.45
    assert np.array_equal(feather(m, 0.0), m)


def test_cli_mask_on_an_image(tiny_filter, tmp_path, capsys):
    photo = make_scene(tmp_path / "photo.png", size=(96, 64))
    code, _, err = rotoscope("apply", "tiny", photo, "-o", tmp_path / "out.png", "--mask",
                             half_mask(tmp_path / "mask.png"), "--engine", "torch", capsys=capsys)
    assert code == 0, err
    out, ph = np.asarray(Image.open(tmp_path / "out.png")), np.asarray(Image.open(photo))
    assert np.array_equal(out[:, :40], ph[:, :40]) and not np.array_equal(out[:, 56:], ph[:, 56:])
    from rotoscope.images import read_provenance

    assert read_provenance(tmp_path / "out.png")["mask"]["mask"].startswith("mask.png sha256:")


@pytest.mark.parametrize("make, says", [
    (lambda p: p.joinpath("bad.png").write_bytes(b"not an image") and p / "bad.png", "not an image"),
    (lambda p: p / "missing.png", "no such mask"),
    (lambda p: (p / "masks").mkdir() or p / "masks", "folder of masks is for a video"),
])
def test_a_bad_mask_is_one_line_and_exit_1(tiny_filter, tmp_path, capsys, make, says):
    photo = make_scene(tmp_path / "photo.png")
    code, out, err = rotoscope("apply", "tiny", photo, "-o", tmp_path / "out.png", "--mask", make(tmp_path),
                               "--engine", "torch", capsys=capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and says in err and err.startswith("error: ")
    assert not (tmp_path / "out.png").exists()


def test_keep_other_than_faces_or_people_is_refused_in_one_line(tiny_filter, tmp_path, capsys):
    code, _, err = rotoscope("apply", "tiny", make_scene(tmp_path / "p.png"), "-o", tmp_path / "o.png", "--keep",
                             "cats", capsys=capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "faces" in err and "people" in err


def frames_folder(folder, n=6, size=(64, 48)):
    folder.mkdir()
    for i in range(n):
        make_scene(folder / f"frame_{i:04d}.png", seed=i, size=size)
    return folder


@pytest.mark.parametrize("scale", ["1", "0.5"])
def test_a_video_with_one_mask_keeps_the_masked_part_of_every_frame(tiny_filter, tmp_path, capsys, scale):
    src = frames_folder(tmp_path / "clip")
    code, _, err = rotoscope("apply", "tiny", src, "-o", tmp_path / "out", "--mask", half_mask(tmp_path / "m.png"),
                             "--engine", "torch", "--no-progress", "--paint-scale", scale, capsys=capsys)
    assert code == 0, err
    outs = sorted((tmp_path / "out").glob("*.png"))
    assert len(outs) == 6
    for i, o in enumerate(outs):
        a, b = np.asarray(Image.open(o).convert("RGB")), np.asarray(Image.open(src / f"frame_{i:04d}.png"))
        assert np.array_equal(a[:, :26], b[:, :26]), i  # kept exactly (edge at 32)
        assert np.abs(a[:, 40:].astype(int) - b[:, 40:]).mean() > 3, i  # painted


def test_a_folder_of_masks_gives_each_frame_its_own(tiny_filter, tmp_path, capsys):
    src = frames_folder(tmp_path / "clip")
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(6):  # even frames kept whole, odd frames painted whole
        Image.fromarray(np.full((10, 10), 0 if i % 2 == 0 else 255, np.uint8)).save(masks / f"m_{i:02d}.png")
    code, _, err = rotoscope("apply", "tiny", src, "-o", tmp_path / "out", "--mask", masks, "--engine", "torch",
                             "--no-stabilize", "--no-progress", capsys=capsys)
    assert code == 0, err
    for i, o in enumerate(sorted((tmp_path / "out").glob("*.png"))):
        a, b = np.asarray(Image.open(o).convert("RGB")), np.asarray(Image.open(src / f"frame_{i:04d}.png"))
        assert np.array_equal(a, b) == (i % 2 == 0), i


def test_too_few_masks_for_the_frames_is_one_line(tiny_filter, tmp_path, capsys):
    src = frames_folder(tmp_path / "clip")
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / f"m_{i}.png")
    code, _, err = rotoscope("apply", "tiny", src, "-o", tmp_path / "out", "--mask", masks, "--engine", "torch",
                             "--no-progress", capsys=capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "3 masks" in err and "6 frames" in err


def test_kept_faces_are_steady_when_the_detector_misses_a_frame(monkeypatch):
    """A face found on frames 0-2, missed on frame 3, found again on 4: its kept weight does not blink."""
    from rotoscope import faces

    face = faces.Face(20, 10, 24, 24, 9)
    seen = iter([[face], [face], [face], [], [face]])
    monkeypatch.setattr(faces, "detect_faces", lambda rgb: next(seen))
    chain = MaskChain(None, "faces", 0.0)
    rgb = np.zeros((64, 64, 3), np.uint8)
    masks = [chain.next(rgb) for _ in range(5)]
    centre = [1 - m[22, 32] for m in masks]  # kept weight at the face's centre
    assert centre[:3] == [1.0, 1.0, 1.0] and centre[3] == pytest.approx(FACE_HOLD)
    assert centre[4] == pytest.approx(FACE_HOLD + FACE_GROW * (1 - FACE_HOLD))  # back quickly
    raw = [faces.face_mask((64, 64), f) for f in ([face],) * 3 + ([],) + ([face],)]
    assert flicker(masks) < 0.25 * flicker(raw)


def test_picture_mask_is_none_when_everything_is_painted():
    assert picture_mask(np.zeros((8, 8, 3), np.uint8), None, None, 0.01) is None


def test_a_float_mask_outside_0_1_is_refused():
    with pytest.raises(RotoscopeError, match="from 0 to 1"):
        read_mask(np.full((4, 4), 2.0, np.float32))


def test_a_mask_array_is_read_by_its_own_type_whatever_its_channels():
    """uint8 is 0-255 with one channel or three or four (an RGB uint8 white was "a float mask array must hold values
    from 0 to 1", and an RGB array of ones painted fully where a grey one of ones painted 1/255); a nested list is an
    array; anything else is one line."""
    white = np.full((4, 6), 255, np.uint8)
    for a in (white, np.stack([white] * 3, -1), np.stack([white] * 4, -1)):
        assert np.array_equal(read_mask(a), np.ones((4, 6), np.float32))
    ones = np.ones((4, 6), np.uint8)
    assert np.allclose(read_mask(np.stack([ones] * 3, -1)), read_mask(ones)) and read_mask(ones).max() < 0.01
    assert np.array_equal(read_mask([[1, 0], [0, 1]]), np.eye(2, dtype=np.float32))
    assert np.array_equal(read_mask(np.stack([np.eye(2, dtype=bool)] * 3, -1)), np.eye(2, dtype=np.float32))
    for bad, says in ((5, "not int"), (np.array([["a", "b"]]), "must hold numbers"),
                      (np.array([[["a", "b", "c"]]]), "must hold numbers"), ([[0, 1], [1]], "rectangular"),
                      (np.zeros((2, 2, 0)), "must be H x W")):
        with pytest.raises(RotoscopeError, match=says):
            read_mask(bad)


def test_the_server_paints_through_an_uploaded_mask(tiny_filter, tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    import io

    from fastapi.testclient import TestClient

    import rotoscope.filter as filter_module
    from rotoscope.config import ServerConfig
    from rotoscope.server import create_app

    monkeypatch.setattr(filter_module, "SHIPPED_DIR", tmp_path / "none")
    photo = make_scene(tmp_path / "photo.png", size=(96, 64))
    mask = half_mask(tmp_path / "mask.png")
    with TestClient(create_app(ServerConfig(), run_jobs=False)) as c:
        r = c.post("/api/filters/tiny/apply", files={"image": ("p.png", photo.read_bytes(), "image/png"),
                                                      "mask": ("m.png", mask.read_bytes(), "image/png")})
        assert r.status_code == 200, r.text
        out, ph = np.asarray(Image.open(io.BytesIO(r.content))), np.asarray(Image.open(photo))
        assert np.array_equal(out[:, :40], ph[:, :40]) and not np.array_equal(out[:, 56:], ph[:, 56:])
        r = c.post("/api/filters/tiny/apply", files={"image": ("p.png", photo.read_bytes(), "image/png"),
                                                      "mask": ("m.png", b"not an image", "image/png")})
        assert r.status_code == 415 and "mask" in r.json()["detail"]
        r = c.post("/api/filters/tiny/apply", files={"image": ("p.png", photo.read_bytes(), "image/png")},
                   data={"keep": "faces"})
        assert r.status_code == 200
        r = c.post("/api/filters/tiny/apply", files={"image": ("p.png", photo.read_bytes(), "image/png")},
                   data={"keep": "cats"})
        assert r.status_code == 422


def test_the_python_api_takes_a_mask_and_keep(tiny_filter, tmp_path):
    import rotoscope

    photo = make_scene(tmp_path / "photo.png", size=(96, 64))
    out = np.asarray(rotoscope.stylize("tiny", photo, mask=half_mask(tmp_path / "m.png"), engine="torch"))
    assert np.array_equal(out[:, :40], np.asarray(Image.open(photo))[:, :40])
    with pytest.raises(RotoscopeError, match="keep"):
        rotoscope.stylize("tiny", photo, keep="cats")


@pytest.mark.parametrize("keep,scale", [(None, 1.0), ("faces", 1.0), (None, 0.5), ("faces", 0.5)])
def test_an_interrupted_masked_render_resumes_to_the_same_frames(tiny_filter, tmp_path, keep, scale):
    """Frames out to a folder (lossless); the second half of a resumed render equals an uninterrupted one. At a
    paint scale the flicker reduction chains on the small painting, and kept faces follow the flow scaled up."""
    from rotoscope import video
    from rotoscope.config import VideoConfig

    src = frames_folder(tmp_path / "clip", n=8)
    mask = half_mask(tmp_path / "m.png")
    st = ApplySettings(engine="torch", precision="fp32", keep=keep, paint_scale=scale)
    small = VideoConfig(batch=1, segment_frames=4)
    filt = load_filter("tiny")

    def interrupt(seg):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        video.apply_video(filt, src, tmp_path / "out", st, small, on_segment=interrupt, mask=mask)
    video.apply_video(filt, src, tmp_path / "out", st, small, warn=lambda s: None, mask=mask)
    video.apply_video(filt, src, tmp_path / "whole", st, small, mask=mask)
    a, b = sorted((tmp_path / "out").glob("*.png")), sorted((tmp_path / "whole").glob("*.png"))
    assert len(a) == len(b) == 8
    for x, y in zip(a, b):
        assert np.array_equal(np.asarray(Image.open(x)), np.asarray(Image.open(y))), x.name


def test_a_cut_clip_is_counted_by_its_timestamps_before_its_masks_are_checked(tiny_filter, tmp_path, capsys):
    """max_seconds estimated the cut's frames from the average rate: a clip that starts fast and slows down had more
    frames in its first seconds than that, so too few masks passed the check and failed midway through painting."""
    clip = make_clip(tmp_path / "vfr.mp4", frames=12, audio=False,
                     pts=[0, 33, 67, 100, 133, 167, 200, 233, 267, 300, 1000, 2000])  # 10 frames in its first 0.4 s
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(5):
        Image.fromarray(np.full((10, 10), 255, np.uint8)).save(masks / f"m_{i}.png")
    code, out, err = rotoscope("apply", "tiny", clip, "-o", tmp_path / "out.mp4", "--mask", masks, "--engine", "torch",
                               "--set", "max_seconds=0.4", "--no-progress", capsys=capsys)
    assert_one_line_error(code, out, err, "5 masks", "for 10 frames")
    assert not (tmp_path / "out.mp4").exists()
