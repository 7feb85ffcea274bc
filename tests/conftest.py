"""Shared fixtures: tiny images, an isolated ROTOSCOPE_HOME, the shared data folder when present."""

import os
import struct
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Tests use tiny tensors: one thread is as fast as two there, and far faster when the cores are busy
# (measured: a tiny FilterNet forward took 5 ms on one thread, 170 ms on two, on a loaded 2-core machine).
torch.set_num_threads(1)
# ...and so do the CLI run in-process (its callback would set one thread per core for the rest of this worker's
# tests) and every rotoscope the tests start: two workers, each on two threads, on two cores ran 3x slower.
os.environ["ROTOSCOPE_THREADS"] = "1"

# ../shared/data beside the repository (worktrees sit one level deeper, so look further up too)
SHARED = next((p / "shared" / "data" for p in Path(__file__).resolve().parents[1:4] if (p / "shared" / "data").is_dir()),
              Path(__file__).resolve().parents[1].parent / "shared" / "data")


def in_ci() -> bool:
    """CI sets CI=true: there a test's missing need (Chromium, the shared clips, a package) is a failure."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(available, reason: str) -> None:
    """Skip a test whose need is missing, saying why; under CI fail instead, so nothing the suite needs goes
    missing silently."""
    if available:
        return
    if in_ci():
        pytest.fail(f"CI=true and this test's need is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def require_module(name: str, hint: str = ""):
    """importorskip that fails under CI."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        require(False, f"{name} is not installed" + (f" ({hint})" if hint else ""))


@pytest.fixture(autouse=True)
def rotoscope_home(tmp_path, monkeypatch):
    """Every test gets its own empty registry, runs and cache."""
    home = tmp_path / "rotoscope-home"
    monkeypatch.setenv("ROTOSCOPE_HOME", str(home))
    return home


def make_image(path, size=(48, 40), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return Path(path)


@pytest.fixture
def tiny_image(tmp_path):
    return make_image(tmp_path / "tiny.png")


def make_scene(path, seed=0, brightness=0.6, size=(96, 64), gray=False):
    """A distinct synthetic 'photo': a smooth colour gradient with a few shapes, scaled to a mean brightness."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    # a low-frequency random colour field (what a perceptual hash sees) plus a few sharp shapes
    field = (rng.uniform(0, 255, (4, 6, 3))).astype(np.uint8)
    img = Image.fromarray(field, "RGB").resize((w, h), Image.BICUBIC)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = rng.integers(0, w - 8), rng.integers(0, h - 8)
        box = [int(x0), int(y0), int(x0 + rng.integers(6, w // 2)), int(y0 + rng.integers(6, h // 2))]
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=fill)
    a = np.asarray(img, dtype=np.float64) / 255
    if gray:
        a = a.mean(-1, keepdims=True).repeat(3, -1)
    luma = (a * [0.299, 0.587, 0.114]).sum(-1).mean()
    a = np.clip(a * (brightness / max(luma, 1e-3)), 0, 1)
    Image.fromarray((a * 255 + 0.5).astype(np.uint8), "RGB").save(path)
    return Path(path)


def make_photos(folder, n, **scene):
    """A folder of n scenes p0.png ... (seeds 0..n-1), a training set."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        make_scene(folder / f"p{i}.png", seed=i, **scene)
    return folder


@pytest.fixture
def tiny_filter(rotoscope_home):
    """A registry filter named 'tiny' with an untrained 8-16-16 network: instant to load and apply."""
    from rotoscope.config import NetConfig
    from rotoscope.filter import registry_path, save_filter
    from rotoscope.network import FilterNet

    import torch

    torch.manual_seed(0)
    net = FilterNet(NetConfig(channels=(8, 16, 16), res_blocks=1))
    card = {"name": "tiny", "architecture": {"type": "FilterNet", "channels": [8, 16, 16], "res_blocks": 1,
                                             "kernel_outer": 9},
            "artwork": {"title": "Tiny test artwork"}, "backbone": {"name": "random"}}
    return save_filter(net, card, registry_path("tiny"))


def clip_provenance(path) -> dict:
    """The provenance a rendered clip carries in its container's comment tag."""
    import json

    import av

    with av.open(str(path)) as f:
        return json.loads(f.metadata["comment"])


def rgb_frames(path) -> list[np.ndarray]:
    """A clip's frames as H x W x 3 RGB int arrays (differences do not wrap around)."""
    import av

    with av.open(str(path)) as f:
        return [fr.to_ndarray(format="rgb24").astype(int) for fr in f.decode(video=0)]


def render_differences(a, b) -> str:
    """Why two renders of a clip differ, for an assertion's message: the engine and precision each one's provenance
    names, and the mean difference of each frame pair in 8-bit levels."""
    engines = [" ".join(str(clip_provenance(p)["settings"].get(k)) for k in ("engine", "precision")) for p in (a, b)]
    fa, fb = rgb_frames(a), rgb_frames(b)
    diffs = [round(float(np.abs(x - y).mean()), 2) for x, y in zip(fa, fb)]
    return f"engines {engines[0]} / {engines[1]}, {len(fa)} / {len(fb)} frames, mean difference per frame {diffs}"


def encode_clip(path, frames, codec="libx264", pix_fmt="yuv420p", container=None, options=None, stream=None):
    """A clip of the given RGB or RGBA arrays at 25 fps, one a frame; `stream(s)` sets what a test needs on the
    stream before encoding (a display matrix, a pixel shape)."""
    import av

    with av.open(str(path), "w", format=container) as c:
        s = c.add_stream(codec, rate=25, options=options or {})
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = pix_fmt
        if stream is not None:
            stream(s)
        for k, a in enumerate(frames):
            f = av.VideoFrame.from_ndarray(a, format="rgba" if a.shape[2] == 4 else "rgb24").reformat(format=pix_fmt)
            f.pts = k
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    return Path(path)


def make_clip(path, frames=24, size=(64, 48), fps=24, audio=True, pts=None, rotation=0, pix_fmt="yuv420p",
              codec="libx264", seed=0, audio_codec="aac", audio_layout="mono"):
    """A small clip with known motion: a textured background panning right 2 px per frame and a bright square
    moving diagonally, plus (audio=True) a 440 Hz tone (`audio_codec`: AAC, or e.g. pcm_s16le or libopus, on
    every channel of `audio_layout`: mono, stereo, "2 channels" (no order), ...). `pts` (in 1/fps units... of
    1/1000 s when given) makes it variable frame rate. Returns the path."""
    import av

    rng = np.random.default_rng(seed)
    w, h = size
    tex = rng.random((h + 8, w + 4 * frames + 8, 3))
    import cv2

    tex = cv2.GaussianBlur(tex, (0, 0), 2.0)
    tex = ((tex - tex.min()) / (tex.max() - tex.min()) * 200 + 20).astype(np.uint8)
    with av.open(str(path), "w") as c:
        tb = Fraction(1, 1000) if pts is not None else Fraction(1, fps)
        vs = c.add_stream(codec, rate=fps, options={"bf": "0"} if codec == "libx264" else {})
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        vs.codec_context.time_base = tb
        if rotation:
            vs.set_display_rotation(rotation)
        a = None
        if audio:
            rate = 48000 if audio_codec == "libopus" else 44100
            a = c.add_stream(audio_codec, rate=rate)
            a.layout = audio_layout
        for i in range(frames):
            x0 = 2 * i
            img = tex[4:4 + h, x0:x0 + w].copy()
            s = max(4, min(w, h) // 4)
            y, x = (i * 1) % (h - s), (i * 2) % (w - s)
            img[y:y + s, x:x + s] = (250, 60, 40)
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts = pts[i] if pts is not None else i
            f.time_base = tb
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if a is not None:
            n = int(rate * frames / fps)
            t = np.arange(n) / rate
            channels = av.AudioLayout(audio_layout).nb_channels
            tone = np.repeat((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], channels, 0)
            for k in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, k:k + 1024]), format="fltp",
                                                layout=audio_layout)
                af.sample_rate, af.pts = rate, k
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return Path(path)


LUMA = {"709": (0.2126, 0.0722), "601": (0.299, 0.114), "2020": (0.2627, 0.0593)}  # Kr, Kb of each YUV matrix


def ycbcr(rgb, matrix):
    """Gamma-encoded RGB in [0, 1] -> Y' in [0, 1] and Cb, Cr in [-0.5, 0.5], by the matrix's equations."""
    kr, kb = LUMA[matrix]
    r, g, b = np.asarray(rgb, dtype=np.float64).T
    y = kr * r + (1 - kr - kb) * g + kb * b
    return np.stack([y, (b - y) / (2 * (1 - kb)), (r - y) / (2 * (1 - kr))], -1)


def make_yuv_clip(path, bands, size=(64, 48), frames=2, bits=8, tags=None):
    """A lossless H.264 clip of vertical bands of the given Y'CbCr signals (ycbcr's), stored in limited range at
    `bits` per sample, its colours tagged as tags = (matrix, primaries, transfer) in FFmpeg's numbers, or untagged:
    for tests of how a clip's colours are read."""
    import av

    w, h = size
    band = w // len(bands)
    fmt = "yuv420p" if bits == 8 else "yuv420p10le"
    top = (1 << (bits - 8))
    planes = [np.zeros((h, w)), np.zeros((h // 2, w // 2)), np.zeros((h // 2, w // 2))]
    for i, (y, cb, cr) in enumerate(bands):
        planes[0][:, i * band:(i + 1) * band] = (16 + 219 * y) * top
        for plane, c in zip(planes[1:], (cb, cr)):
            plane[:, i * band // 2:(i + 1) * band // 2] = (128 + 224 * c) * top
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"qp": "0", "bf": "0"})
        s.width, s.height, s.pix_fmt = w, h, fmt
        cc = s.codec_context
        cc.color_range = 1
        if tags:
            cc.colorspace, cc.color_primaries, cc.color_trc = tags
        for k in range(frames):
            f = av.VideoFrame(w, h, fmt)
            for plane, values in zip(f.planes, planes):
                dtype = np.uint8 if bits == 8 else np.uint16
                rows = np.frombuffer(plane, dtype).reshape(plane.height, -1)
                rows[:, :values.shape[1]] = np.clip(np.round(values), 0, 255 * top)
            f.pts, f.color_range = k, 1
            if tags:
                f.colorspace, f.color_primaries, f.color_trc = tags
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    return Path(path)


def icc_profile(colorants, gamma=2.2, description="test RGB"):
    """A minimal ICC v2 RGB display profile (matrix and gamma curves): colorants are the D50 XYZ of R, G and B."""
    def s15(v):
        return struct.pack(">i", round(v * 65536))

    def xyz(x, y, z):
        return b"XYZ " + b"\0" * 4 + s15(x) + s15(y) + s15(z)

    text = description.encode() + b"\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256)) + b"\0" * 2
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(*colorants[0])),
            (b"gXYZ", xyz(*colorants[1])), (b"bXYZ", xyz(*colorants[2])), (b"rTRC", curve), (b"gTRC", curve),
            (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + b"\0" * 12
              + b"acsp" + b"\0" * 28 + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


# sRGB's primaries adapted to D50, as an ICC profile's colorant tags hold them
SRGB_D50 = [(0.4360747, 0.2225045, 0.0139322), (0.3850649, 0.7168786, 0.0971045), (0.1430804, 0.0606169, 0.7141733)]


def interrupt_training_at(monkeypatch, step: int):
    """Training stops as Ctrl-C stops it when it asks for the photos of `step`; returns PhotoSet.batch as it was
    (set it back to let a resumed run go on)."""
    from rotoscope.data import PhotoSet

    real_batch = PhotoSet.batch

    def interrupt(self, s, *a, **k):
        if s == step:
            raise KeyboardInterrupt
        return real_batch(self, s, *a, **k)

    monkeypatch.setattr(PhotoSet, "batch", interrupt)
    return real_batch


def make_filter(path, seed=0):
    """A tiny random-weight filter file (no training): enough to exercise the video pipeline."""
    import torch

    from rotoscope.config import NetConfig
    from rotoscope.filter import save_filter
    from rotoscope.network import FilterNet

    torch.manual_seed(seed)
    cfg = NetConfig(channels=(8, 16, 16), res_blocks=1)
    net = FilterNet(cfg)
    card = {"name": Path(path).stem, "architecture": {"channels": list(cfg.channels), "res_blocks": cfg.res_blocks,
                                                      "kernel_outer": cfg.kernel_outer}}
    return save_filter(net, card, path)


def assert_one_line_error(code, out, err, *fragments):
    """The promise for every refused input: exit code 1, exactly one line on stderr ("error: ..."), no traceback,
    and each fragment in that line."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def rotoscope(*args, capsys):
    """Run the CLI in-process exactly as the console script does; returns (exit code, stdout, stderr)."""
    from rotoscope import cli

    argv = sys.argv
    sys.argv = ["rotoscope", *map(str, args)]
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err
