"""`rotoscope apply` on video: timing, size, rotation and sound kept; flicker reduced; resumable; bad input refused."""

import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from conftest import (SHARED, encode_clip, make_clip, make_filter, make_yuv_clip, render_differences, require,
                      rgb_frames, rotoscope, ycbcr)
from rotoscope import flow, video
from rotoscope.apply import Note
from rotoscope.config import VideoConfig
from rotoscope.errors import RotoscopeError
from rotoscope.filter import load_filter_file
from rotoscope.stylize import ApplySettings

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def filt(tmp_path_factory):
    return load_filter_file(make_filter(tmp_path_factory.mktemp("f") / "tiny.safetensors"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clips") / "shapes.mp4", frames=24)


def frames_of(path):
    """(pts list, rotation, [rgb frames], time_base, duration list) of a file's first video stream."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        fr = list(c.decode(vs))
        return ([f.pts for f in fr], fr[0].rotation, [f.to_ndarray(format="rgb24") for f in fr], vs.time_base,
                [f.duration for f in fr])


def pts_of(path):
    """(pts list, time_base) of the first video stream, without converting pictures."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        return [f.pts for f in c.decode(vs)], vs.time_base


def audio_packets(path):
    with av.open(str(path)) as c:
        return [[(bytes(p), p.pts, p.dts, p.duration) for p in c.demux(s) if p.size] for s in c.streams.audio]


def run_cli(*args, capsys):
    """The real entry point (cli.main) in-process: returns (exit code, stdout+stderr)."""
    code, out, err = rotoscope(*args, capsys=capsys)
    return code, out + err


SMALL = VideoConfig(batch=4, segment_frames=8)


def greys(n, step, shape=(48, 64)):
    return [np.full((*shape, 3), step * k, np.uint8) for k in range(n)]


def audio_of(path) -> tuple[str, np.ndarray, int]:
    """(codec, samples as float mono in [-1, 1], sample rate) of a file's first audio stream."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        x = np.concatenate([f.to_ndarray().reshape(-1, f.samples).mean(0) / (32768 if f.format.name[:3] == "s16" else 1)
                            for f in c.decode(s)])
        return s.codec_context.name, x.astype(np.float32), s.codec_context.sample_rate


@pytest.mark.parametrize("codec,layout,output", [("pcm_s16le", "2 channels", ".mp4"), ("libopus", "mono", ".mov")])
def test_sound_a_container_cannot_take_is_encoded_again_as_aac(filt, tmp_path, codec, layout, output):
    """Two channels of PCM without an order in .mp4, Opus in .mov: FFmpeg refuses them when the header is written,
    which was after every frame was painted. They are tried before painting, encoded again as AAC, and said so; the
    tone is the same length, as loud, the same pitch."""
    src = make_clip(tmp_path / "in.mkv", frames=12, audio_codec=codec, audio_layout=layout)
    said = []
    out = video.apply_video(filt, src, tmp_path / f"out{output}", ApplySettings(), SMALL, warn=said.append)
    assert any(f"audio cannot go into {output} as it is: encoded again as AAC" in line for line in said), said
    name, got, rate = audio_of(out)
    _, want, want_rate = audio_of(src)
    assert name == "aac" and rate == want_rate
    assert abs(len(got) - len(want)) <= 2048  # the encoder's priming and last frame at most
    assert np.sqrt(np.mean(got ** 2)) == pytest.approx(np.sqrt(np.mean(want ** 2)), rel=0.1)  # as loud
    assert np.argmax(np.abs(np.fft.rfft(got))) * rate / len(got) == pytest.approx(440, abs=5)  # the same tone
    assert len(frames_of(out)[2]) == 12
    kept = video.apply_video(filt, src, tmp_path / "out.mkv", ApplySettings(), SMALL, warn=said.append)
    assert audio_packets(kept) == audio_packets(src)  # Matroska takes it as it is


def test_an_audio_stream_without_sound_is_left_out_not_a_failure_after_painting(filt, tmp_path):
    """A PCM track with no packets: the trial muxed nothing, so the header that refuses it was never written, and it
    passed as "copy" to fail at the last step."""
    src = tmp_path / "silent.mkv"
    with av.open(str(src), "w") as c:
        v = c.add_stream("libx264", rate=24, options={"bf": "0"})
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("pcm_s16le", rate=44100)
        a.layout = "2 channels"
        for i in range(6):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
    said = []
    out = video.apply_video(filt, src, tmp_path / "out.mp4", ApplySettings(), SMALL, warn=said.append)
    assert any("pcm_s16le audio of silent.mkv can go into .mp4 neither" in line for line in said), said
    assert len(frames_of(out)[2]) == 6 and audio_packets(out) == []


def test_sound_that_can_be_stored_neither_way_is_left_out_with_a_warning(filt, clip, tmp_path, monkeypatch):
    """An audio codec FFmpeg can neither mux there nor decode: the clip is still painted, without that sound."""
    from rotoscope.video import output

    def refuse(out, a, how):
        raise ValueError(f"no {how} for this codec")

    monkeypatch.setattr(output, "_audio_stream", refuse)
    said = []
    out = video.apply_video(filt, clip, tmp_path / "out.mp4", ApplySettings(), SMALL, warn=said.append)
    assert any(line.startswith("warning: the aac audio of shapes.mp4 can go into .mp4 neither as it is nor as AAC, "
                               "or holds no sound: left out (.mkv may keep it)") for line in said), said
    assert audio_packets(out) == [] and len(frames_of(out)[2]) == 24


def test_a_clip_keeps_frame_count_timestamps_size_and_sound(filt, clip, tmp_path):
    out = video.apply_video(filt, clip, tmp_path / "out.mp4", ApplySettings(), SMALL)
    pts_in, _, rgb_in, tb_in, dur_in = frames_of(clip)
    pts_out, _, rgb_out, tb_out, dur_out = frames_of(out)
    assert len(rgb_out) == len(rgb_in) == 24
    assert [p * tb_out for p in pts_out] == [p * tb_in for p in pts_in]  # exact, as rationals
    assert rgb_out[0].shape == rgb_in[0].shape
    with av.open(str(out)) as c:
        vs = c.streams.video[0]
        assert vs.codec_context.name == "h264" and vs.codec_context.format.name == "yuv420p"
        assert c.duration == pytest.approx(av.open(str(clip)).duration, abs=50_000)  # microseconds
    audio = audio_packets(out)
    assert len(audio) == 1 and len(audio[0]) > 10
    assert audio == audio_packets(clip)  # every packet bit-identical, same timestamps
    assert np.abs(rgb_out[5].astype(int) - rgb_in[5].astype(int)).mean() > 10  # and it was painted
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # work folder cleaned up


@pytest.mark.parametrize("suffix", [".mkv", ".mov"])
def test_every_container_reads_back_at_the_clips_frame_rate(filt, tmp_path, suffix):
    """Matroska keeps a frame rate of its own (each frame's default duration): written from the 1/30000 s time
    base of a 29.97 fps clip, a reader saw 30,000 fps, and its frame count (used by the GIF limit, the mask
    folder check and the progress bar) was a thousand times too many."""
    from rotoscope.video.source import probe

    clip = make_clip(tmp_path / "ntsc.mp4", frames=12, fps=30, audio=False)
    out = video.apply_video(filt, clip, tmp_path / f"out{suffix}", ApplySettings(), SMALL)
    src, got = probe(clip), probe(out)
    assert len(pts_of(out)[0]) == 12
    assert abs(got.frames - 12) <= 1 and float(got.rate) == pytest.approx(float(src.rate), rel=0.1), (got, src)


@pytest.mark.parametrize("suffix,fmt,codec", [(".mxf", "mxf", "mpeg2video"), (".vob", "vob", "mpeg2video"),
                                              (".MOD", "mpeg", "mpeg2video"), (".h264", "h264", "libx264")])
def test_a_cameras_own_container_is_a_clip_not_an_image(filt, tmp_path, suffix, fmt, codec):
    """XDCAM's .mxf, a camcorder's .vob or .MOD, a raw H.264 stream: FFmpeg reads them, and they were refused as
    "not an image (or a format Pillow cannot read)" for their suffix."""
    path = encode_clip(tmp_path / f"cam{suffix}", greys(6, 40), codec=codec, container=fmt)
    assert video.is_video_path(path)
    out = video.apply_video(filt, path, tmp_path / "out.mp4", ApplySettings(), SMALL, warn=lambda s: None)
    assert len(pts_of(out)[0]) == 6


def test_a_render_says_where_its_time_went_stage_by_stage(filt, clip, tmp_path):
    job = video.make_job(filt, clip, tmp_path / "out.mp4", ApplySettings(), SMALL)
    video.run_job(job, warn=lambda s: None)
    st = job.stages
    assert st.frames == 24 and st.wall > 0
    for stage in ("decode", "flow", "paint", "steady", "encode"):
        assert st.seconds[stage] > 0, stage
    assert st.seconds["masks"] == 0  # no mask, no time
    # each thread times only its own stages, so none can have been busy for longer than the render lasted
    assert all(busy <= st.wall * 1.05 for busy in st.threads().values()), (st.threads(), st.wall)
    d = st.to_dict()
    assert d["bottleneck"] in ("reader", "painter", "writer")
    assert d["thread_ms_per_frame"][d["bottleneck"]] == max(d["thread_ms_per_frame"].values())


def test_the_busiest_thread_is_named_the_bottleneck():
    from rotoscope.video.stages import StageTimes

    st = StageTimes(frames=10, wall=1.0)
    st.seconds.update(decode=0.1, flow=0.5, paint=0.55, steady=0.1, encode=0.3)
    assert st.threads() == pytest.approx({"reader": 0.6, "painter": 0.65, "writer": 0.3})
    assert st.bottleneck() == "painter"
    line = st.summary()
    assert "paint 55.0" in line and "masks" not in line and "painter (65.0 ms a frame" in line


def test_variable_frame_rate_timestamps_are_carried_not_respaced(filt, tmp_path):
    pts = [0, 40, 95, 120, 200, 210, 260, 333, 340, 420]  # milliseconds, irregular
    src = make_clip(tmp_path / "vfr.mp4", frames=10, pts=pts, audio=False)
    out = video.apply_video(filt, src, tmp_path / "out.mp4", ApplySettings(), SMALL)
    p_out, _, _, tb, _ = frames_of(out)
    assert [round(float(p * tb) * 1000) for p in p_out] == pts


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_rotation_metadata_is_kept(filt, tmp_path, scale):
    src = make_clip(tmp_path / "rot.mp4", frames=6, rotation=90, audio=False)
    out = video.apply_video(filt, src, tmp_path / "out.mp4", ApplySettings(paint_scale=scale), SMALL)
    _, rot, rgb, _, _ = frames_of(out)
    assert rot == 90 and rgb[0].shape == (48, 64, 3)  # pixels as stored, display flag kept


def display_matrix(path):
    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
        try:
            m = np.frombuffer(bytes(f.side_data[av.sidedata.sidedata.Type.DISPLAYMATRIX]), np.int32)
        except KeyError:
            return None
    return (m[[0, 1, 3, 4]] / 65536).round(3).tolist()


@pytest.mark.parametrize("angle", [0, 90, 270])
def test_a_mirrored_clip_stays_mirrored_not_upside_down(filt, tmp_path, angle):
    """A display matrix that mirrors (a selfie camera's, ffmpeg -display_hflip) was read as PyAV's "-180": the
    output was tagged, or its GIF turned, upside down; turned a quarter as well, the mirror was lost."""
    from rotoscope.video.source import _orientation

    rng = np.random.default_rng(1)
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:24, :32], rgb[:24, 32:], rgb[24:] = (220, 40, 40), (40, 220, 40), (40, 40, 220)  # red | green over blue
    path = encode_clip(tmp_path / "selfie.mp4", [rgb] * 3, pix_fmt="yuv444p", options={"qp": "0"},
                       stream=lambda s: s.set_display_rotation(angle, hflip=True))
    src = video.probe(path)
    assert (src.rotation, src.flip) == (angle, True)
    out = video.apply_video(filt, path, tmp_path / "out.mp4", ApplySettings(strength=0.0), SMALL, warn=print)
    assert display_matrix(out) == display_matrix(path)  # the same matrix, flip and all
    gif = video.apply_video(filt, path, tmp_path / "out.gif", ApplySettings(strength=0.0), SMALL, warn=print)
    with Image.open(gif) as im:
        shown = np.asarray(im.convert("RGB")).astype(int)
    expected = np.rot90(rgb, angle // 90)[:, ::-1].astype(int)  # turned, then mirrored: as FFmpeg shows it
    assert shown.shape == expected.shape and np.abs(shown - expected).mean() < 12
    for turn in (0, 90, 180, 270):  # without a mirror, the rotation PyAV reads
        encode_clip(tmp_path / f"r{turn}.mp4", [rng.integers(0, 255, (16, 32, 3), np.uint8)],
                    stream=lambda s: turn and s.set_display_rotation(turn))
        with av.open(str(tmp_path / f"r{turn}.mp4")) as c:
            assert _orientation(next(c.decode(video=0))) == (turn, False)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_a_turned_clip_is_said_at_the_size_it_is_seen(filt, tmp_path, suffix):
    """A phone clip stored 64x48 and shown turned a quarter is 48x64 to its viewer: as written (.gif: the pixels
    turned upright) and as said ("wrote ... (64x48" before)."""
    src = make_clip(tmp_path / "rot.mp4", frames=3, rotation=90, audio=False)
    results = list(video.apply_video_cli(filt, src, tmp_path / f"out{suffix}", ApplySettings(), False, SMALL))
    assert results[-1].size == (48, 64)
    if suffix == ".gif":
        with Image.open(tmp_path / "out.gif") as im:
            assert im.size == (48, 64)


def test_a_clip_whose_picture_size_changes_midway_keeps_each_parts_shape(filt, tmp_path):
    """Two recordings joined end to end (MPEG-TS joins byte for byte), the second square: its frames were stretched
    to the first's 16:9. Now they are fitted inside with black bars, and the render says so."""
    wide = encode_clip(tmp_path / "a.ts", [np.full((36, 64, 3), (200, 40, 40), np.uint8)] * 4, container="mpegts")
    square = encode_clip(tmp_path / "b.ts", [np.full((48, 48, 3), (40, 200, 40), np.uint8)] * 4, container="mpegts")
    joined = tmp_path / "joined.ts"
    joined.write_bytes(wide.read_bytes() + square.read_bytes())
    said = []
    frames = [rgb for _, _, rgb in video.decode(video.probe(joined), 64, 36, said.append)]
    assert len(frames) == 8 and all(f.shape == (36, 64, 3) for f in frames)
    last = frames[-1].astype(int)
    assert last[:, :12].max() < 20 and last[:, -12:].max() < 20  # the bars: (64 - 36) / 2 a side
    assert np.abs(last[:, 16:48] - (40, 200, 40)).mean() < 8  # the square part, whole
    assert "changes its picture size midway (64x36 -> 48x48)" in " ".join(said)


def test_clips_joined_end_to_end_keep_their_pace_and_sound(filt, tmp_path):
    """The second part's clock starts again: its frames were given 1-tick durations (a flash), and its sound going
    back in time made the MP4 refuse it at the last step ("cannot write: Invalid argument"), after all the painting."""
    a = make_clip(tmp_path / "a.ts", frames=24, size=(64, 48))
    b = make_clip(tmp_path / "b.ts", frames=24, size=(64, 48), seed=1)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    said = []
    out = video.apply_video(filt, joined, tmp_path / "out.mp4", ApplySettings(), SMALL, warn=said.append)
    assert "its timestamps start again after frame 24" in " ".join(said)
    # a cluster task seeks by the packets' timestamps: not in a clip whose clock starts again (the second part's
    # frames sorted first, and a task starting at frame 24 painted none); it decodes from the start instead
    assert video.frame_table(video.probe(joined)) is None
    assert [rgb.shape for _, _, rgb in video.decode(video.probe(joined), 64, 48, print, start=24, table=None)] == \
        [(48, 64, 3)] * 24
    with av.open(str(out)) as c:
        v, snd = c.streams.video[0], c.streams.audio[0]
        pts = [f.pts for f in c.decode(v)]
        assert len(pts) == 48 and np.all(np.diff(pts) > 0)
        assert abs(float(v.duration * v.time_base) - 2.0) < 0.1  # 48 frames at 24 fps, not one second
        assert abs(float(snd.duration * snd.time_base) - 2.0) < 0.15


def test_a_clip_whose_clock_wrapped_keeps_its_frames_before_time_zero(filt, tmp_path):
    """An MPEG-TS whose 33-bit clock wraps a second in: FFmpeg reads its first second at negative times, and an MP4
    hid those frames behind an edit list (25 of 50 frames played). Every stream now starts that much later."""
    from fractions import Fraction

    base = 2**33 - 90000  # in a 90 kHz time base
    path = tmp_path / "wrap.ts"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"bf": "0"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1, 90000)
        for k in range(50):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 4 * k, np.uint8), format="rgb24")
            f.pts, f.time_base = base + k * 3600, Fraction(1, 90000)
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    assert video.probe(path).frames == 50
    out = video.apply_video(filt, path, tmp_path / "out.mp4", ApplySettings(strength=0.0), SMALL, warn=print)
    shown = rgb_frames(out)
    assert len(shown) == 50 and shown[0].mean() < 12 and shown[-1].mean() > 150  # the first frame black


COLOURS = np.array([[200, 40, 60], [30, 160, 220], [240, 220, 30], [20, 20, 20], [235, 235, 235], [120, 130, 90]])


def first_frame(path, size):
    src = video.probe(path)
    return src, next(video.decode(src, *size, print))[2].astype(int)


def band_colours(rgb, n):
    band = rgb.shape[1] // n
    return np.array([rgb[rgb.shape[0] // 2, i * band + band // 2] for i in range(n)])


@pytest.mark.parametrize("size,matrix,tags", [((1280, 720), "709", None), ((640, 360), "601", None),
                                              ((1280, 720), "601", (6, 6, 6)), ((640, 360), "709", (1, 1, 1))])
def test_a_clips_yuv_matrix_is_the_one_it_says_or_the_one_players_assume(tmp_path, size, matrix, tags):
    """A clip that does not say which matrix made its YUV is read as players read it: BT.709 from HD up (FFmpeg's
    BT.601 guess put an untagged HD clip's colours up to 20 levels off), BT.601 below; a tag wins."""
    bands = ycbcr(COLOURS / 255, matrix)
    src, rgb = first_frame(make_yuv_clip(tmp_path / "c.mp4", bands, size=size, tags=tags), size)
    assert np.abs(band_colours(rgb, len(COLOURS)) - COLOURS).max() <= 3
    assert src.colour == ""  # nothing to say: an everyday clip


def as_numbers(path):
    """The first frame as FFmpeg reads it with nothing asked: its numbers, whatever its colours were made for."""
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)


def saturation(rgb):
    return (rgb.max(-1) - rgb.min(-1)).mean()


@pytest.mark.parametrize("transfer,primaries,said", [
    (18, 9, "HDR (HLG, BT.2020)"), (16, 9, "HDR (PQ, BT.2020)"), (1, 9, "wide gamut (BT.2020)"),
    (1, 12, "wide gamut (Display P3)")])
def test_an_hdr_or_wide_gamut_clip_is_converted_to_the_colours_painting_and_output_assume(filt, tmp_path, transfer,
                                                                                           primaries, said):
    """Read as plain numbers, an HDR phone clip (10-bit HLG or PQ, BT.2020) was painted washed out: its reference
    white came out grey (189 for HLG) and its colours dull. Converted to BT.709 SDR, white is white, wide-gamut
    colours are more saturated in BT.709's numbers, and the render says what it did."""
    grey = {18: 0.75, 16: 0.58, 1: 1.0}[transfer]  # reference white: HLG 75%, PQ 203 nits, SDR 100%
    rgb = np.array([[grey] * 3, [0.0] * 3, [0.55, 0.3, 0.25], [0.3, 0.45, 0.6]])
    clip = make_yuv_clip(tmp_path / "hdr.mp4", ycbcr(rgb, "2020"), bits=10, tags=(9, primaries, transfer))
    src, got = first_frame(clip, (64, 48))
    raw = as_numbers(clip)
    assert said in src.colour and src.colour.startswith("note: hdr.mp4")
    got, raw = band_colours(got, 4), band_colours(raw, 4)
    assert got[0].min() >= 245 and got[1].max() <= 12  # white is white, black stays black
    if transfer != 1:
        assert raw[0].max() <= 200  # as numbers, reference white was a grey
    assert saturation(got[2:]) > saturation(raw[2:]) * 1.1
    notes = [r.text for r in video.apply_video_cli(filt, clip, tmp_path / "out.mp4", ApplySettings(), False, SMALL)
             if isinstance(r, Note)]
    assert [n for n in notes if said in n and "converted to standard colours (BT.709, SDR)" in n], notes
    _, _, frames, _, _ = frames_of(tmp_path / "out.mp4")
    with av.open(str(tmp_path / "out.mp4")) as c:  # the output says what it holds: 8-bit SDR in BT.709's colours
        cc = c.streams.video[0].codec_context  # (its YUV matrix BT.601's below 720 lines)
        assert (cc.format.name, cc.color_trc, cc.color_primaries, cc.colorspace) == ("yuv420p", 1, 1, 6)


def test_a_wide_gamut_clip_ffmpeg_cannot_convert_is_painted_from_its_numbers_with_a_warning(tmp_path):
    """swscale converts no logarithmic transfer: the clip is read as numbers, and the user is told their colours
    may look washed out rather than the render failing."""
    rgb = np.array([[0.5, 0.4, 0.3], [0.2, 0.3, 0.4]])
    clip = make_yuv_clip(tmp_path / "log.mp4", ycbcr(rgb, "2020"), bits=10, tags=(9, 9, 9))
    src, got = first_frame(clip, (64, 48))
    raw = as_numbers(clip)
    assert src.colour.startswith("warning: log.mp4 is wide gamut (BT.2020), which FFmpeg cannot convert here")
    assert np.array_equal(got, raw)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_a_clip_of_non_square_pixels_is_painted_at_the_shape_it_is_shown(filt, tmp_path, suffix, monkeypatch):
    """HDV, DV and DVD store a 16:9 picture in narrower pixels (sample aspect ratio): the output, written with
    square pixels, played at 4:3 before, its strokes stretched too."""
    def anamorphic(s):
        s.codec_context.sample_aspect_ratio = Fraction(4, 3)

    path = encode_clip(tmp_path / "hdv.mp4", greys(3, 60, (54, 96)), stream=anamorphic)
    out = video.apply_video(filt, path, tmp_path / f"out{suffix}", ApplySettings(), SMALL, warn=lambda s: None)
    with Image.open(out) if suffix == ".gif" else av.open(str(out)) as o:
        size = o.size if suffix == ".gif" else (o.streams.video[0].width, o.streams.video[0].height)
        sar = None if suffix == ".gif" else o.streams.video[0].sample_aspect_ratio
    assert size == (128, 54) and sar in (None, 1)  # 96 stored pixels of 4:3 are 128 square ones
    monkeypatch.setenv("ROTOSCOPE_MAX_PIXELS", str(100 * 54))  # the stored frame fits, the one painted does not
    with pytest.raises(RotoscopeError, match="128x54 frames are larger than"):
        video.probe(path)


def test_size_option_and_odd_sizes(filt, clip, tmp_path):
    out = video.apply_video(filt, clip, tmp_path / "small.mp4", ApplySettings(size=33), SMALL)
    assert frames_of(out)[2][0].shape == (24, 32, 3)  # 33x25 asked; yuv420p needs even: 32x24
    gif = video.apply_video(filt, clip, tmp_path / "small.gif", ApplySettings(size=33), SMALL)
    with Image.open(gif) as im:
        assert im.size == (33, 25) and im.n_frames == 24  # GIF keeps the odd size


def test_odd_sized_frame_folder_to_mp4_and_back_to_frames(filt, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(10):
        Image.fromarray(np.full((21, 35, 3), 20 * i, np.uint8)).save(frames / f"f_{i + 1:03d}.png")
    mp4 = video.apply_video(filt, frames, tmp_path / "out.mp4", ApplySettings(), SMALL)
    pts, _, rgb, tb, _ = frames_of(mp4)
    assert len(rgb) == 10 and rgb[0].shape == (20, 34, 3)
    assert [float(p * tb) for p in pts] == pytest.approx([i / 25 for i in range(10)])
    painted = video.apply_video(filt, frames, tmp_path / "painted", ApplySettings(), SMALL)
    names = sorted(p.name for p in painted.iterdir())
    assert names == [f"f_{i + 1:03d}.png" for i in range(10)]
    assert Image.open(painted / names[0]).size == (35, 21)


def test_gif_and_webp_keep_frame_durations(filt, tmp_path):
    pts = [0, 40, 120, 160, 300, 340]
    src = make_clip(tmp_path / "vfr.mp4", frames=6, pts=pts, audio=False)
    for suffix in (".gif", ".webp"):
        out = video.apply_video(filt, src, tmp_path / f"out{suffix}", ApplySettings(), SMALL)
        with Image.open(out) as im:
            assert im.n_frames == 6
            durations = []
            for k in range(im.n_frames):
                im.seek(k)
                im.load()  # WebP reports a frame's duration once it is decoded
                durations.append(im.info["duration"])
        assert durations[:5] == [40, 80, 40, 140, 40]


def animated(path, clip, durations, **save):
    """An animated GIF or WebP of a clip's first frames, each shown for its duration in ms."""
    pics = [Image.fromarray(f) for f in frames_of(clip)[2][:len(durations)]]
    pics[0].save(path, save_all=True, append_images=pics[1:], duration=list(durations), **save)
    return path


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_an_animated_gif_or_webp_is_painted_as_a_clip_and_comes_back_as_one(filt, clip, tmp_path, suffix):
    """Every frame painted, in order, with its own duration and the loop count kept (a still would be one frame)."""
    durations = [40, 80, 40, 120, 60, 100]
    src = animated(tmp_path / f"anim{suffix}", clip, durations, loop=3)
    assert video.is_animated(src) and video.probe(src).frames == 6
    out = video.apply_video(filt, src, None, ApplySettings(), SMALL)
    assert out == tmp_path / f"anim-{filt.name}{suffix}"
    with Image.open(out) as im:
        assert im.n_frames == 6 and im.info["loop"] == 3
        got, pictures = [], []
        for k in range(im.n_frames):
            im.seek(k)
            im.load()
            got.append(im.info["duration"])
            pictures.append(np.asarray(im.convert("RGB")).astype(int))
    assert got == durations
    moved = [float(np.abs(a - b).mean()) for a, b in zip(pictures, pictures[1:])]
    assert min(moved) > 1, moved  # the square moves: each frame was painted from its own picture


def test_an_animated_gif_without_a_loop_plays_once_and_browsers_timing_is_kept(filt, clip, tmp_path):
    """A GIF frame of 0-1 centiseconds is shown for 100 ms by browsers: the painted GIF says so rather than 10 ms."""
    src = animated(tmp_path / "once.gif", clip, [0, 10, 50])
    out = video.apply_video(filt, src, tmp_path / "painted.gif", ApplySettings(), SMALL)
    with Image.open(out) as im:
        assert "loop" not in im.info
        got = []
        for k in range(im.n_frames):
            im.seek(k)
            got.append(im.info["duration"])
    assert got == [100, 100, 50]
    mp4 = video.apply_video(filt, src, tmp_path / "painted.mp4", ApplySettings(), VideoConfig(batch=4,
                            segment_frames=8, crf=10))
    pts, tb = pts_of(mp4)
    assert [round(float(p * tb), 3) for p in pts] == [0.0, 0.1, 0.2]


def test_a_cut_animated_gif_paints_its_readable_frames_and_says_so(filt, clip, tmp_path, tiny_filter, capsys):
    data = animated(tmp_path / "anim.gif", clip, [50] * 6).read_bytes()
    cut = tmp_path / "cut.gif"
    cut.write_bytes(data[:len(data) // 2])
    said = []
    out = video.apply_video(filt, cut, tmp_path / "out.gif", ApplySettings(), SMALL, warn=said.append)
    with Image.open(out) as im:
        assert 2 <= im.n_frames < 6
        n = im.n_frames
    assert [w for w in said if f"ends early after {n} frames" in w and "cut.gif" in w], said
    cut.write_bytes(data[:900])  # not even one whole frame: one line, nothing written
    code, text = run_cli("apply", "tiny", cut, "--no-progress", capsys=capsys)
    lines = text.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"error: {cut}: cannot decode image"), text
    assert not list(tmp_path.glob("cut-*"))


def test_a_render_of_an_animated_image_from_its_middle_paints_the_frames_a_whole_render_paints(clip, tmp_path):
    """A cluster task starts a GIF at a frame of the table, as it seeks a video: the same pictures and times."""
    src = video.probe(animated(tmp_path / "a.gif", clip, [40, 80, 40, 120, 60, 100, 40, 40]))
    whole = list(video.decode(src, 32, 24, print))
    table = video.frame_table(src)
    assert table == [t for t, _, _ in whole] == [0, 40, 120, 160, 280, 340, 440, 480]
    part = list(video.decode(src, 32, 24, print, start=5, table=table))
    assert [(t, d) for t, d, _ in part] == [(t, d) for t, d, _ in whole[5:]]
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(part, whole[5:]))


def test_animated_timing_transparency_and_plays_as_viewers_see_them(filt, clip, tmp_path, tiny_filter, capsys):
    """Frames of 16 ms stay 16 ms (only 10 ms or less is shown at 100 ms); a GIF that plays once becomes a WebP
    that plays once; transparent pixels are painted as the white a page shows through them, and said so; an
    animated PNG's fallback picture, which its animation does not show, is not a frame."""
    webp = animated(tmp_path / "fast.webp", clip, [16, 16, 33], loop=0)
    assert video.probe(webp).frame_ms == [16, 16, 33]
    once = animated(tmp_path / "once.gif", clip, [50, 50])
    out = video.apply_video(filt, once, tmp_path / "once.webp", ApplySettings(), SMALL)
    with Image.open(out) as im:
        assert im.info["loop"] == 1
    rgba = [Image.new("RGBA", (32, 24), (200, 30, 30, 255)) for _ in range(3)]
    for k, im in enumerate(rgba):
        im.paste((0, 0, 0, 0), (0, 0, 16, 24))  # the left half transparent
        im.paste((30, 30, 200, 255), (16 + 4 * k, 8, 20 + 4 * k, 12))
    rgba[0].save(tmp_path / "sticker.gif", save_all=True, append_images=rgba[1:], duration=50, loop=0, disposal=2)
    pictures = [f[2] for f in video.decode(video.probe(tmp_path / "sticker.gif"), 32, 24, print)]
    assert len(pictures) == 3 and all((p[:, :16] == 255).all() and (p[:, 16:] != 255).all() for p in pictures)
    code, text = run_cli("apply", "tiny", tmp_path / "sticker.gif", "--no-progress", capsys=capsys)
    assert code == 0 and "note: sticker.gif has transparent pixels: painted over white" in text, text
    code, text = run_cli("apply", "tiny", once, "--no-progress", capsys=capsys)
    assert code == 0 and "transparent" not in text, text
    fallback = Image.new("RGB", (32, 24), (0, 255, 0))
    frames = [Image.new("RGB", (32, 24), (40 * k, 0, 0)) for k in range(1, 4)]
    fallback.save(tmp_path / "anim.png", save_all=True, append_images=frames, default_image=True, duration=60)
    src = video.probe(tmp_path / "anim.png")
    assert src.frames == 3 and [int(f[2][0, 0, 0]) for f in video.decode(src, 32, 24, print)] == [40, 80, 120]


@pytest.mark.parametrize("codec,pix_fmt,suffix", [("png", "rgba", ".mov"), ("ffv1", "yuva420p", ".mkv")])
def test_a_clip_with_an_alpha_channel_is_painted_over_white_as_an_animation_is(filt, tmp_path, codec, pix_fmt,
                                                                                suffix):
    """ProRes 4444 or PNG in .mov: the colour numbers under a transparent pixel (black, as premultiplied exports
    leave them) were painted, silently; the same frames as an animated WebP were painted over white, and said so."""
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (200, 60, 40), 255
    rgba[24:, :32] = 0  # a transparent quarter, black underneath
    path = encode_clip(tmp_path / f"cut{suffix}", [rgba] * 3, codec=codec, pix_fmt=pix_fmt)
    src = video.probe(path)
    rgb = next(video.decode(src, 64, 48, print))[2].astype(int)
    assert src.transparent and (rgb[30:, :28] >= 250).all() and abs(rgb[5, 50] - (200, 60, 40)).max() <= 3
    notes = [r.text for r in video.apply_video_cli(filt, path, tmp_path / "out.mp4", ApplySettings(), False, SMALL)
             if isinstance(r, Note)]
    assert f"note: cut{suffix} has an alpha channel: its transparent pixels are painted over white" in " ".join(notes)
    assert not video.probe(make_clip(tmp_path / "plain.mp4", frames=2, audio=False)).transparent


def test_a_folder_of_transparent_frames_and_its_preview_are_painted_over_white_and_say_so(filt, tmp_path):
    """Numbered PNG frames with transparency kept the colour under it (black) while a clip's alpha channel and an
    animation are painted over white; a --preview sheet said nothing of what reading the clip did."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(3):
        im = Image.new("RGBA", (32, 24), (200, 60, 40, 255))
        im.paste((0, 0, 0, 0), (0, 0, 16, 24))
        im.save(frames / f"f_{k:03d}.png")
    src = video.probe(frames)
    rgb = next(video.decode(src, 32, 24, print))[2]
    assert src.transparent and (rgb[:, :14] >= 250).all()
    results = list(video.apply_video_cli(filt, frames, tmp_path / "sheet.png", ApplySettings(), False, SMALL,
                                         preview=2))
    assert any(isinstance(r, Note) and "painted over white" in r.text for r in results), results


def test_crf_for_an_output_that_is_not_h264_is_said_to_do_nothing(tiny_filter, clip, tmp_path, capsys):
    code, text = run_cli("apply", "tiny", clip, "-o", tmp_path / "a.gif", "--crf", "30", "--size", "32",
                         "--no-progress", capsys=capsys)
    assert code == 0 and "note: --crf is H.264's quality; .gif is written without it" in text, text
    code, text = run_cli("apply", "tiny", clip, "-o", tmp_path / "b.gif", "--size", "32", "--no-progress",
                         capsys=capsys)
    assert code == 0 and "--crf" not in text, text


def test_stabilization_lowers_the_warping_error(filt, clip, tmp_path):
    _, _, rgb_in, _, _ = frames_of(clip)
    naive = video.apply_video(filt, clip, tmp_path / "naive.mp4", ApplySettings(),
                              VideoConfig(batch=4, segment_frames=8, stabilize=False, crf=10))
    steady = video.apply_video(filt, clip, tmp_path / "steady.mp4", ApplySettings(),
                               VideoConfig(batch=4, segment_frames=8, stabilize=True, crf=10))
    e_naive = flow.warping_error(frames_of(naive)[2], rgb_in)
    e_steady = flow.warping_error(frames_of(steady)[2], rgb_in)
    assert e_steady < 0.7 * e_naive
    # the faster flow preset steadies too (less well on real clips: benchmarks/results/video.md); batch 0 = auto
    quick = video.apply_video(filt, clip, tmp_path / "quick.mp4", ApplySettings(),
                              VideoConfig(segment_frames=8, stabilize=True, crf=10, flow_preset="fast"))
    assert flow.warping_error(frames_of(quick)[2], rgb_in) < 0.7 * e_naive
    with pytest.raises(ValueError, match="flow_preset"):
        video.make_job(filt, clip, tmp_path / "x.mp4", ApplySettings(), VideoConfig(flow_preset="slow"))
    # and it did not wash the picture out: the stabilized frames keep most of the per-frame contrast. This random-
    # weight filter paints noise that changes every frame, the worst case for blending (measured: 27 % less
    # contrast); trained filters on the shared clips keep their style scores (benchmarks/results/video.md)
    a, b = frames_of(naive)[2][-1].astype(float), frames_of(steady)[2][-1].astype(float)
    assert abs(a.std() - b.std()) < 0.35 * a.std()


def test_at_a_paint_scale_the_small_painting_is_steadied_then_guided_up_beside_the_encoder(filt, clip, tmp_path):
    half = ApplySettings(paint_scale=0.5)
    _, _, rgb_in, _, _ = frames_of(clip)
    naive = video.apply_video(filt, clip, tmp_path / "naive.mp4", half, VideoConfig(segment_frames=8, stabilize=False,
                                                                                      crf=10))
    job = video.make_job(filt, clip, tmp_path / "steady.mp4", half, VideoConfig(segment_frames=8, crf=10))
    video.run_job(job, warn=lambda s: None)
    out = frames_of(job.dest)[2]
    assert len(out) == 24 and out[0].shape == rgb_in[0].shape  # the frame's size, not the painting's
    assert flow.warping_error(out, rgb_in) < 0.7 * flow.warping_error(frames_of(naive)[2], rgb_in)
    # the upsampling is timed in the writer's thread, where it ran
    st = job.stages
    assert st.seconds["upsample"] > 0 and st.threads()["writer"] == pytest.approx(st.seconds["upsample"]
                                                                                    + st.seconds["encode"])


def test_the_flow_side_is_a_setting_and_part_of_a_renders_identity(filt, clip, tmp_path):
    _, _, rgb_in, _, _ = frames_of(clip)
    a = video.make_job(filt, clip, tmp_path / "a.mp4", ApplySettings(), SMALL)
    b = video.make_job(filt, clip, tmp_path / "a.mp4", ApplySettings(), VideoConfig(batch=4, segment_frames=8,
                                                                                    flow_side=32))
    assert a.key != b.key  # a resumed render never mixes frames steadied with two different flows
    video.run_job(b, warn=lambda s: None)
    assert len(frames_of(b.dest)[2]) == 24
    with pytest.raises(RotoscopeError, match="flow_side"):
        VideoConfig(flow_side=8).validate()


def test_real_time_takes_the_lite_version_and_the_real_time_settings_unless_told_otherwise(tiny_filter, clip, tmp_path,
                                                                                           capsys, monkeypatch):
    import shutil

    from rotoscope import apply as ap
    from rotoscope.config import REAL_TIME
    from rotoscope.filter import registry_path

    shutil.copy(tiny_filter, registry_path("tiny-lite"))  # a registry NAME-lite is what --real-time looks for
    seen = []
    real = ap.apply_path
    monkeypatch.setattr(ap, "apply_path", lambda f, i, o, st, **kw: seen.append((f, st, kw["video"]))
                        or real(f, i, o, st, **kw))
    code, text = run_cli("apply", "tiny", clip, "-o", tmp_path / "rt.mp4", "--real-time", "--no-progress",
                         capsys=capsys)
    assert code == 0, text
    # apply has no --arch: the line says how to keep the full filter here
    assert "painting with tiny-lite, the lite version of tiny (without --real-time: the full one)" in text
    name, st, vc = seen[-1]
    assert name == "tiny-lite" and st.paint_scale == REAL_TIME[0]["paint_scale"] == 0.4
    assert (vc.flow_preset, vc.flow_side, vc.preset, vc.blend) == ("fine", 160, "superfast", 0.85)
    assert len(frames_of(tmp_path / "rt.mp4")[2]) == 24
    # what the command line names still wins
    code, text = run_cli("apply", "tiny", clip, "-o", tmp_path / "rt2.mp4", "--real-time", "--paint-scale", "0.5",
                         "--set", "preset=veryfast", "--no-progress", capsys=capsys)
    assert code == 0, text
    _, st, vc = seen[-1]
    assert st.paint_scale == 0.5 and vc.preset == "veryfast" and vc.flow_side == 160 and vc.blend == 0.85
    code, text = run_cli("apply", "tiny", clip, "-o", tmp_path / "rt3.mp4", "--real-time", "--set", "blend=0.8",
                         "--no-progress", capsys=capsys)
    assert code == 0, text
    assert seen[-1][2].blend == 0.8
    # a full filter without a lite version is painted as it is, and the line says so (and how to make one)
    registry_path("tiny-lite").unlink()
    code, text = run_cli("apply", "tiny", clip, "-o", tmp_path / "rt4.mp4", "--real-time", "--no-progress",
                         capsys=capsys)
    assert code == 0, text
    assert "note: 'tiny' has no lite version: painting with the full network" in text and seen[-1][0] == "tiny"


def encoded_pictures(monkeypatch) -> dict[int, list[np.ndarray]]:
    """Every picture handed to the H.264 encoder from now on, by frame index (a list: one per render)."""
    from rotoscope.video.output import _SegmentWriter

    seen: dict[int, list[np.ndarray]] = {}
    real = _SegmentWriter.write

    def write(self, fr, rgb):
        seen.setdefault(fr.index, []).append(np.array(rgb))
        return real(self, fr, rgb)

    monkeypatch.setattr(_SegmentWriter, "write", write)
    return seen


def test_a_render_interrupted_by_ctrl_c_resumes_from_finished_segments(filt, clip, tmp_path, monkeypatch):
    dest = tmp_path / "out.mp4"

    def interrupt(seg):
        if seg == 1:
            raise KeyboardInterrupt

    pictures = encoded_pictures(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        video.apply_video(filt, clip, dest, ApplySettings(), SMALL, on_segment=interrupt)
    assert not dest.exists()  # never a half-written file under the final name
    work = [p for p in tmp_path.iterdir() if p.name.startswith(".out.mp4.rotoscope-")]
    assert len(work) == 1 and len(list(work[0].glob("seg-*.json"))) == 2

    painted = []
    real = video.stylize_frames
    monkeypatch.setattr(video.render, "stylize_frames", lambda net, rgbs, st: painted.extend(rgbs) or real(net, rgbs, st))
    lines = []
    video.apply_video(filt, clip, dest, ApplySettings(), SMALL, warn=lines.append)
    assert len(painted) == 24 - 16  # only the frames after the two finished segments
    assert any("resuming" in line for line in lines)
    clean = video.apply_video(filt, clip, tmp_path / "clean.mp4", ApplySettings(), SMALL)
    # the resumed render and the whole one handed the encoder the same pictures, bit for bit: the flicker reduction
    # went on from the last finished frame as if never stopped
    assert sorted(pictures) == list(range(24)) and all(len(p) == 2 for p in pictures.values())
    assert all(np.array_equal(*pictures[i]) for i in range(24))
    resumed, whole = frames_of(dest), frames_of(clean)
    assert resumed[0] == whole[0]
    # decoded, within a few levels: x264 on several threads does not encode the same pictures identically from run
    # to run (CI, stop 44: 0.6 to 3.1 levels over one segment whose pictures were the same)
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(resumed[2], whole[2])) < 6.0, \
        render_differences(dest, clean)
    assert audio_packets(dest) == audio_packets(clip)


@pytest.mark.parametrize("name", ["out.mp4", "out.gif"])
def test_a_copy_half_assembled_by_a_killed_render_is_cleared_by_the_next(filt, clip, tmp_path, name):
    """kill -9 while the final file was being assembled leaves its temporary copy (atomic_path's, no cleanup runs);
    the render that writes that file again removes it (the hostile corpus once found one left beside out.mp4)."""
    dest = tmp_path / name
    left = tmp_path / f".out.c6db43e4.partial{dest.suffix}"
    left.write_bytes(b"half a file")
    video.apply_video(filt, clip, dest, ApplySettings(), SMALL)
    assert dest.exists() and not left.exists() and not list(tmp_path.glob(".*.partial*"))


def test_a_render_killed_with_sigkill_resumes(filt, clip, tmp_path):
    dest = tmp_path / "out.mp4"
    script = (
        "import os, signal, sys\n"
        "from rotoscope import video\nfrom rotoscope.config import VideoConfig\n"
        "from rotoscope.filter import load_filter_file\nfrom rotoscope.stylize import ApplySettings\n"
        f"f = load_filter_file({str(filt.path)!r})\n"
        "def die(seg):\n    if seg == 1: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"video.apply_video(f, {str(clip)!r}, {str(dest)!r}, ApplySettings(engine='torch', precision='fp32'), "
        "VideoConfig(batch=4, segment_frames=8), on_segment=die)\n")
    # engine and precision named, not `auto`: both runs must agree on the render's identity, and two processes'
    # calibrations under load can pick differently (the resume would then rightly start over)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert r.returncode == -signal.SIGKILL
    assert not dest.exists()
    lines = []
    video.apply_video(filt, clip, dest, ApplySettings(engine="torch", precision="fp32"), SMALL, warn=lines.append)
    assert any("resuming: 16 frames" in line for line in lines)
    assert len(frames_of(dest)[2]) == 24


def test_changed_settings_start_over(filt, clip, tmp_path):
    dest = tmp_path / "out.mp4"

    def interrupt(seg):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        video.apply_video(filt, clip, dest, ApplySettings(), SMALL, on_segment=interrupt)
    lines = []
    video.apply_video(filt, clip, dest, ApplySettings(strength=0.5), SMALL, warn=lines.append)
    assert not any("resuming" in line for line in lines)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_preview_of_a_short_or_unseekable_clip_shows_the_frames_it_has(tmp_path):
    """--preview seeks to n times over the clip: on a 6-frame clip the last time fell after the last frame (3 of 4
    tiles), a 1-frame clip or one whose first packet is not a keyframe gave "no video frames"."""
    from rotoscope.video.source import _pick_frames

    six = make_clip(tmp_path / "six.mp4", frames=6, audio=False)
    picked = _pick_frames(video.probe(six), 4, 32, 24)
    assert len(picked) == 4 and len({p.tobytes() for p in picked}) == 4  # four different frames
    one = make_clip(tmp_path / "one.mp4", frames=1, audio=False)
    assert len(_pick_frames(video.probe(one), 4, 32, 24)) == 1
    gop = encode_clip(tmp_path / "gop.mp4", greys(12, 20),  # a keyframe every 4 frames
                      options={"g": "4", "bf": "0", "x264-params": "scenecut=0"})
    with av.open(str(gop)) as i, av.open(str(tmp_path / "nokey.mp4"), "w") as o:  # the first keyframe dropped
        s = o.add_stream_from_template(i.streams.video[0])
        for k, pk in enumerate(i.demux(i.streams.video[0])):
            if k and pk.size:
                pk.stream = s
                o.mux(pk)
    assert len(_pick_frames(video.probe(tmp_path / "nokey.mp4"), 4, 32, 24)) >= 1


def test_cli_renders_video_and_preview_sheet(filt, clip, tmp_path, capsys):
    code, text = run_cli("apply", filt.path, clip, "-o", tmp_path / "o.mp4", "--crf", "30", "--no-stabilize",
                         "--no-progress", capsys=capsys)
    assert code == 0 and "wrote" in text
    assert "ms a frame: decode" in text and "busiest thread" in text  # where the time went
    assert len(frames_of(tmp_path / "o.mp4")[2]) == 24
    code, text = run_cli("apply", filt.path, clip, "-o", tmp_path / "sheet.png", "--preview", "4", "--no-progress",
                         capsys=capsys)
    assert code == 0
    with Image.open(tmp_path / "sheet.png") as im:
        assert im.size == (2 * 64 + 3 * 4, 2 * 48 + 3 * 4)  # 2 x 2 grid of frames with 4 px gaps


def bad_inputs(tmp_path):
    (tmp_path / "text.mp4").write_text("not a video at all")
    good = make_clip(tmp_path / "good.mp4", frames=6)
    (tmp_path / "truncated.mp4").write_bytes(good.read_bytes()[:3000])
    with av.open(str(tmp_path / "audio.mp4"), "w") as c:
        a = c.add_stream("aac", rate=44100)
        a.layout = "mono"
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 44100, 0
        for p in [*a.encode(f), *a.encode()]:
            c.mux(p)
    with av.open(str(tmp_path / "empty.mkv"), "w") as c:  # a video stream with zero frames
        s = c.add_stream("ffv1", rate=24)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    return {"text.mp4": "not a video", "truncated.mp4": "not a video", "audio.mp4": "audio only",
            "empty.mkv": "empty", "missing.mp4": "no such file"}


def test_bad_input_gives_one_clear_line(filt, tmp_path, capsys):
    for name, expected in bad_inputs(tmp_path).items():
        code, text = run_cli("apply", filt.path, tmp_path / name, "-o", tmp_path / f"out-{name}.mp4",
                             "--no-progress", capsys=capsys)
        assert code == 1, name
        lines = text.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], (name, text)
        assert not (tmp_path / f"out-{name}.mp4").exists()


def test_huge_frames_are_refused_with_a_hint(filt, clip, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROTOSCOPE_MAX_PIXELS", "1000")
    code, text = run_cli("apply", filt.path, clip, "-o", tmp_path / "o.mp4", capsys=capsys)
    assert code == 1 and "ROTOSCOPE_MAX_PIXELS" in text and "Traceback" not in text


@pytest.mark.parametrize("pix_fmt,codec,suffix", [("yuv420p10le", "libx264", ".mp4"), ("gray", "ffv1", ".mkv"),
                                                   ("rgb24", "png", ".mov")])
def test_unusual_pixel_formats_are_painted(filt, tmp_path, pix_fmt, codec, suffix):
    src = make_clip(tmp_path / f"in{suffix}", frames=5, pix_fmt=pix_fmt, codec=codec, audio=False)
    out = video.apply_video(filt, src, tmp_path / "out.mp4", ApplySettings(), SMALL)
    assert len(frames_of(out)[2]) == 5


def test_a_stream_cut_short_is_painted_as_far_as_it_goes(filt, tmp_path):
    full = make_clip(tmp_path / "full.mp4", frames=40, audio=False)
    fast = tmp_path / "fast.mp4"  # moov first, so half the file still opens
    with av.open(str(full)) as i, av.open(str(fast), "w", options={"movflags": "+faststart"}) as o:
        s = o.add_stream_from_template(i.streams.video[0])
        for p in i.demux(i.streams.video[0]):
            if p.size:
                p.stream = s
                o.mux(p)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    lines = []
    out = video.apply_video(filt, cut, tmp_path / "out.mp4", ApplySettings(), SMALL, warn=lines.append)
    n = len(frames_of(out)[2])
    assert 5 < n < 40
    assert any("truncated" in line for line in lines)


def test_a_clip_whose_metadata_is_not_utf8_is_painted(filt, tmp_path):
    """Tags are decoded on opening; one byte that is not UTF-8 (found by tests/hostile's fuzz) raised a traceback."""
    good = make_clip(tmp_path / "good.mp4", frames=6, audio=False)
    data = good.read_bytes()
    assert data.count(b"Lavf") == 1  # the encoder tag that PyAV writes
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(data.replace(b"Lavf", b"\x80avf"))
    with pytest.raises(UnicodeDecodeError):  # what a plain open does with it
        av.open(str(bad)).close()
    out = video.apply_video(filt, bad, tmp_path / "out.mp4", ApplySettings(), SMALL, warn=lambda s: None)
    assert len(frames_of(out)[2]) == 6


def test_numbered_frame_folders_are_recognised(tmp_path):
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / f"frame{i:04d}.png")
    assert [p.name for p in video.frame_sequence(tmp_path)] == ["frame0000.png", "frame0001.png", "frame0002.png"]
    Image.new("RGB", (9, 8)).save(tmp_path / "frame0003.png")  # a different size: photos, not frames
    assert video.frame_sequence(tmp_path) is None
    assert video.output_kind(tmp_path / "x.mp4") == "h264"
    with pytest.raises(RotoscopeError):
        video.output_kind(tmp_path / "x.avi")


SHARED_CLIPS = sorted((SHARED / "video").glob("*.mp4")) if (SHARED / "video").is_dir() else []


def test_shared_clips_keep_timing_and_sound(filt, tmp_path):
    """The first second of each shared clip (real phone/camera timing and AAC sound), downscaled. Skipped without
    the clips, except under CI (CI=true), where their absence fails."""
    require(SHARED_CLIPS, f"the shared clips are not present ({SHARED / 'video'})")
    for src in SHARED_CLIPS:
        out = video.apply_video(filt, src, tmp_path / f"{src.stem}.mp4", ApplySettings(size=48),
                                VideoConfig(max_seconds=1.0))
        pts_in, tb_in = pts_of(src)
        pts_out, _, rgb_out, tb_out, _ = frames_of(out)
        t_in = [(p - pts_in[0]) * tb_in for p in pts_in]
        n = sum(t < 1 for t in t_in)
        assert len(pts_out) == n > 20
        assert [p * tb_out for p in pts_out] == [p * tb_in for p in pts_in[:n]]
        assert max(rgb_out[0].shape[:2]) == 48
        a_out, a_in = audio_packets(out), audio_packets(src)
        assert len(a_out) == len(a_in) == 1 and 30 < len(a_out[0]) < len(a_in[0])
        assert a_out[0] == a_in[0][:len(a_out[0])]  # the first second of sound, bit-identical


def test_a_stop_request_ends_a_render_that_the_same_call_resumes(tmp_path):
    """The server cancels and requeues renders by asking them to stop (no signal to itself)."""
    clip = make_clip(tmp_path / "clip.mp4", frames=24)
    filt = load_filter_file(make_filter(tmp_path / "f.safetensors"))
    dest = tmp_path / "out.mp4"
    job = video.make_job(filt, clip, dest, ApplySettings(), SMALL)
    with pytest.raises(video.RenderStopped):
        video.run_job(job, on_segment=lambda i: job.stop_request.set())
    kept = len(list(job.work.glob("seg-*.json")))  # the stop lands at the next batch: 1 or 2 of 3 segments
    assert not dest.exists() and 1 <= kept < 3
    lines = []
    again = video.make_job(filt, clip, dest, ApplySettings(), SMALL)
    out = video.run_job(again, warn=lines.append)
    assert out == dest and any(f"resuming: {8 * kept} frames" in line for line in lines)
    # the resumed render's stages count only what it painted, though it decoded the kept frames again to get there
    assert again.stages.frames == 24 - 8 * kept
    # and its wall clock starts at its own first frame, with every thread's counted work inside it
    assert all(busy <= again.stages.wall * 1.05 for busy in again.stages.threads().values())


def test_a_full_queue_does_not_outwait_a_dead_writer():
    """The writer thread dies (an error, or Ctrl-C in its callback) while the painter waits on a full queue: the
    wait ends with that error instead of lasting forever (it hung the suite once under load)."""
    import queue
    import threading

    from rotoscope.video import render

    q = queue.Queue(maxsize=1)
    q.put("full")
    with pytest.raises(KeyboardInterrupt):
        render._put(q, "more", threading.Event(), [KeyboardInterrupt()])


def test_an_error_without_a_message_is_named_by_its_type_in_the_one_line_said():
    """Pillow raises some errors with no message: the reason said is then the error's type, not an IndexError."""
    from rotoscope.video.source import _av_reason

    assert _av_reason(ValueError()) == "ValueError"
    assert _av_reason(OSError("first line\nsecond")) == "first line"
