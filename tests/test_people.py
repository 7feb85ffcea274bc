"""Finding people offline (MediaPipe's selfie segmenter, shipped in the package) and keeping them unpainted:
photos, the CLI, a bad model file, and the steadied mask of a video."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED, assert_one_line_error, require, rotoscope
from rotoscope import people
from rotoscope.mask import PEOPLE_GROW, PEOPLE_SHRINK, MaskChain, flicker

PORTRAIT = SHARED / "content" / "portrait_smiling_woman.png"  # CC0 (Pexels): head and shoulders, 698 x 790
LANDSCAPE = SHARED / "content" / "kodim13.png"  # Kodak: a mountain stream, nobody in it
CLIP = SHARED / "video" / "baseball.mp4"  # CC BY 3.0: a batter, a catcher and an umpire, 640 x 360


def photo(path, side=None) -> np.ndarray:
    require(path.exists(), f"{path} (the shared data) is missing")
    img = Image.open(path).convert("RGB")
    if side:
        img = img.resize((side * img.width // max(img.size), side * img.height // max(img.size)), Image.LANCZOS)
    return np.asarray(img)


def test_the_shipped_model_is_the_published_file():
    assert people.MODEL.stat().st_size == 249_505
    assert hashlib.sha256(people.MODEL.read_bytes()).hexdigest() == people.KNOWN_SHA256
    note = people.MODEL.with_name("selfie_segmentation-LICENSE.txt").read_text()
    assert people.KNOWN_SHA256 in note and "The MediaPipe Authors" in note and "Apache License" in note


def test_a_portrait_is_kept_and_its_background_is_not():
    rgb = photo(PORTRAIT)
    kept = people.person_mask(rgb, 0.01)
    h, w = kept.shape
    assert kept.shape == rgb.shape[:2] and kept.dtype == np.float32
    assert kept[h // 3:2 * h // 3, w // 3:2 * w // 3].min() > 0.95  # her face and chest
    for corner in (kept[:h // 8, :w // 8], kept[:h // 8, -w // 8:]):  # the wall behind her head
        assert corner.max() < 0.02
    assert 0.7 < kept.mean() < 0.95


def test_a_landscape_without_anyone_keeps_almost_nothing():
    assert people.person_mask(photo(LANDSCAPE), 0.01).mean() < 0.01


def test_the_edge_is_feathered_outward():
    rgb = photo(PORTRAIT, side=400)
    hard, soft = people.person_mask(rgb, 0.0), people.person_mask(rgb, 0.02)
    def grey(m):
        return ((m > 0.02) & (m < 0.98)).mean()

    assert grey(soft) > 2 * grey(hard)
    assert (soft >= hard - 0.02).mean() > 0.99  # feathering adds a margin of photo, it does not eat the person


def test_apply_keep_people_from_the_cli(tiny_filter, tmp_path, capsys):
    rgb = photo(PORTRAIT, side=320)
    Image.fromarray(rgb).save(tmp_path / "portrait.png")
    code, _, err = rotoscope("apply", "tiny", tmp_path / "portrait.png", "-o", tmp_path / "out.png", "--keep",
                             "people", "--engine", "torch", capsys=capsys)
    assert code == 0, err
    out = np.asarray(Image.open(tmp_path / "out.png").convert("RGB")).astype(int)
    h, w = out.shape[:2]
    centre = (slice(h // 3, 2 * h // 3), slice(w // 3, 2 * w // 3))
    assert np.abs(out[centre] - rgb[centre]).mean() < 1  # the person: the photo
    corner = (slice(0, h // 8), slice(0, w // 8))
    assert np.abs(out[corner] - rgb[corner]).mean() > 10  # the wall: painted
    from rotoscope.images import read_provenance

    assert read_provenance(tmp_path / "out.png")["settings"]["keep"] == "people"


@pytest.mark.parametrize("content, says", [(b"not a model", "checksum mismatch"), (None, "reinstall rotoscope")])
def test_a_damaged_or_missing_model_is_one_line(tiny_filter, tmp_path, capsys, monkeypatch, content, says):
    fake = tmp_path / "weights" / "selfie_segmentation.tflite"
    if content is not None:
        fake.parent.mkdir()
        fake.write_bytes(content)
    monkeypatch.setattr(people, "MODEL", fake)
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(tmp_path / "p.png")
    code, out, err = rotoscope("apply", "tiny", tmp_path / "p.png", "-o", tmp_path / "o.png", "--keep", "people",
                               "--engine", "torch", capsys=capsys)
    assert_one_line_error(code, out, err, says, "person segmenter")
    assert not (tmp_path / "o.png").exists()


def test_kept_people_follow_the_flow_and_move_part_way_each_frame(monkeypatch):
    """The steadying rule on a made-up outline: it grows PEOPLE_GROW and shrinks PEOPLE_SHRINK of the way to the
    new outline, after being carried along the flow; with no flow (a cut, no flicker reduction) it starts afresh."""
    a, b = np.zeros((20, 30), np.float32), np.zeros((20, 30), np.float32)
    a[5:15, 5:12], b[5:15, 8:15] = 1, 1  # the person moves 3 px right
    seen = iter([a, b, b, a])
    monkeypatch.setattr(people, "person_mask", lambda rgb, share=0.0: next(seen))
    chain = MaskChain(None, "people", 0.0)
    rgb = np.zeros((20, 30, 3), np.uint8)
    shift = np.zeros((20, 30, 2), np.float32)
    shift[..., 0] = -3  # this frame's pixel p was at p - 3 px in the previous one
    kept = [1 - chain.next(rgb)]
    kept.append(1 - chain.next(rgb, shift))  # carried 3 px right: b exactly, nothing to move
    assert np.allclose(kept[1], b)
    kept.append(1 - chain.next(rgb, np.zeros_like(shift)))  # still b, but the flow says it did not move
    assert np.allclose(kept[2], b)
    kept.append(1 - chain.next(rgb))  # no flow: found afresh
    assert np.array_equal(kept[3], a)
    chain = MaskChain(None, "people", 0.0)
    seen = iter([a, b])
    chain.next(rgb)
    grown = 1 - chain.next(rgb, np.zeros_like(shift))  # not carried: left part shrinks, right part grows
    assert grown[10, 6] == pytest.approx(1 - PEOPLE_SHRINK) and grown[10, 13] == pytest.approx(PEOPLE_GROW)
    assert grown[10, 10] == 1


def test_the_kept_people_of_a_clip_flicker_less_with_the_chain():
    """Baseball, 12 frames at 320 x 180: the kept region's change from frame to frame, after following the motion,
    found afresh on every frame against steadied along the Stabilizer's flow."""
    require(CLIP.exists(), f"{CLIP} (the shared data) is missing")
    import av
    import cv2

    from rotoscope import flow as fl
    from rotoscope.video.source import Frame
    from rotoscope.video.steady import Stabilizer

    frames = []
    with av.open(str(CLIP)) as c:
        for f in c.decode(video=0):
            frames.append(cv2.resize(f.to_ndarray(format="rgb24"), (320, 180), interpolation=cv2.INTER_AREA))
            if len(frames) == 12:
                break
    stab, chain = Stabilizer(0.8, "fast"), MaskChain(None, "people", 0.01)
    raw, steady, flows = [], [], []
    for i, rgb in enumerate(frames):
        fr = Frame(i, i, 1, rgb)
        stab.prepare(fr)
        raw.append(people.person_mask(rgb, 0.01))
        steady.append(1 - chain.next(rgb, fr.warp))
        flows.append(fr.warp)
    assert sum(f is None for f in flows) == 1 and np.mean([m.mean() for m in raw]) > 0.03  # players found

    def moved(masks):  # what flickers: the change that the motion does not explain
        return np.mean([np.abs(masks[k] - fl.warp(masks[k - 1], flows[k])).mean() for k in range(1, len(masks))])

    assert moved(steady) < 0.75 * moved(raw)
    assert flicker(steady) < flicker(raw)


def test_apply_keep_people_to_a_clip_from_the_cli(tiny_filter, tmp_path, capsys):
    """The issue's own command on a real .mp4: the person stays the photo on every frame, the wall is painted."""
    import av

    rgb = photo(PORTRAIT, side=240)  # 212 x 240; the camera pans 2 px a frame over a 192 x 224 window
    frames = [np.ascontiguousarray(rgb[8:232, 2 * i:2 * i + 192]) for i in range(8)]
    clip = tmp_path / "portrait.mp4"
    with av.open(str(clip), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt, s.options = 192, 224, "yuv420p", {"crf": "12"}
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    code, _, err = rotoscope("apply", "tiny", clip, "-o", tmp_path / "out.mp4", "--keep", "people", "--engine",
                             "torch", capsys=capsys)
    assert code == 0, err
    with av.open(str(clip)) as a, av.open(str(tmp_path / "out.mp4")) as b:
        pairs = list(zip(a.decode(video=0), b.decode(video=0), strict=True))
    assert len(pairs) == 8
    for fin, fout in pairs:
        x, y = fin.to_ndarray(format="rgb24").astype(int), fout.to_ndarray(format="rgb24").astype(int)
        centre = (slice(75, 150), slice(64, 128))  # her face and chest
        # the person: the photo, through the output's encode (measured 3.2-3.5 levels; the painted wall 96-99)
        assert np.abs(y[centre] - x[centre]).mean() < 5
        assert np.abs(y[:24, :24] - x[:24, :24]).mean() > 30  # the wall behind her: painted
