"""Optical flow, warping, the occlusion mask and the warping-error metric, on frames with known motion."""

import cv2
import numpy as np
import pytest

from rotoscope import flow as fl


def texture(h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 2.0)
    return ((t - t.min()) / (t.max() - t.min()) * 220 + 15).astype(np.uint8)


def shifted_pair(dx=3, h=64, w=96):
    """b is a moved dx pixels to the right: a(p) = b(p + (dx, 0))."""
    big = texture(h, w + dx)
    a = big[:, dx:dx + w]
    b = big[:, :w]
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


@pytest.mark.parametrize("preset", sorted(fl.PRESETS))
def test_flow_recovers_a_known_translation(preset):
    a, b = shifted_pair(3)
    f = fl.flow(a, b, preset=preset)
    assert f.shape == (64, 96, 2) and f.dtype == np.float32
    inner = f[8:-8, 8:-8]
    assert abs(float(np.median(inner[..., 0])) - 3) < 0.3
    assert abs(float(np.median(inner[..., 1]))) < 0.3


def test_the_fine_preset_follows_a_small_object_on_a_small_frame_that_ultrafast_blurs_away():
    # the real-time flow's case: a 160 px flow frame, a player 24 px wide moving 3 px while the rest stands still
    a = texture(90, 160, seed=3)
    b, obj = a.copy(), texture(90, 160, seed=4)[30:54, 60:84]
    a[30:54, 60:84], b[30:54, 63:87] = obj, obj
    f = {p: fl.flow(a, b, preset=p) for p in ("fine", "ultrafast")}
    error = {p: float(np.abs(f[p][34:50, 64:80, 0] - 3).mean()) for p in f}
    assert error["fine"] < 0.3 < 1.0 < error["ultrafast"]  # ultrafast stops its search at a quarter of the frame
    assert np.abs(f["fine"][5:20, 5:50]).max() < 0.1  # and the still background stays still


@pytest.mark.parametrize("preset", sorted(fl.PRESETS))
def test_a_flow_on_a_tiny_frame_leaves_the_presets_later_flows_unchanged(preset):
    # OpenCV's DIS adapts its own settings to a frame too small for its pyramid and keeps them; flows are cached per
    # thread, so a thumbnail's flow must not change the next video's
    a, b = shifted_pair(3, h=90, w=160)
    before = fl.flow(a, b, preset=preset)
    tiny_a, tiny_b = shifted_pair(2, h=20, w=24)
    fl.flow(tiny_a, tiny_b, preset=preset)
    np.testing.assert_array_equal(fl.flow(a, b, preset=preset), before)


def test_every_flow_preset_a_render_accepts_is_one_the_flow_knows():
    from dataclasses import fields

    from rotoscope.config import VideoConfig

    choices = next(f.metadata["choices"] for f in fields(VideoConfig) if f.name == "flow_preset")
    assert set(choices) == set(fl.PRESETS)


def test_flow_is_scaled_back_when_computed_on_a_smaller_copy():
    a, b = shifted_pair(4, h=120, w=200)
    f = fl.flow(a, b, max_side=100)  # computed at half size, returned at full size in full-size pixels
    assert f.shape == (120, 200, 2)
    assert abs(float(np.median(f[10:-10, 10:-10, 0])) - 4) < 0.5


def test_warp_pulls_the_second_frame_back_onto_the_first():
    a, b = shifted_pair(3)
    back = fl.warp(b, fl.flow(a, b))
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(back[inner].astype(int) - a[inner].astype(int)).mean() < 2.0
    assert np.abs(b[inner].astype(int) - a[inner].astype(int)).mean() > 10  # the warp did real work


def test_reliable_mask_rejects_pixels_that_leave_the_frame():
    a, b = shifted_pair(4)
    m = fl.reliable(fl.flow(a, b), fl.flow(b, a))
    assert m.shape == (64, 96)
    assert m[8:-8, 8:-12].mean() > 0.95  # the interior is seen in both frames
    assert m[:, -2:].mean() < 0.2  # content at the right edge has moved out of b


def test_reliable_mask_rejects_an_occluding_object():
    a, b = texture(seed=1), texture(seed=1)
    b = b.copy()
    b[20:40, 30:60] = (250, 30, 30)  # a patch appears in b: those pixels of a are occluded
    m = fl.reliable(fl.flow(a, b), fl.flow(b, a))
    assert m[24:36, 34:56].mean() < m[:, :20].mean()


def steady_and_flickering(n=6, seed=0):
    """Input frames panning 2 px per frame; a steady output (a pixelwise function of the input) and one with
    independent per-frame noise (flicker)."""
    big = texture(64, 96 + 2 * n, seed)
    frames_in = [np.ascontiguousarray(big[:, 2 * (n - i):2 * (n - i) + 96]) for i in range(n)]
    steady = [255 - f for f in frames_in]
    rng = np.random.default_rng(seed)
    flicker = [np.clip(s.astype(int) + rng.integers(-30, 31, s.shape), 0, 255).astype(np.uint8) for s in steady]
    return frames_in, steady, flicker


def test_warping_error_is_low_for_steady_output_and_high_for_flicker():
    frames_in, steady, flicker = steady_and_flickering()
    e_steady = fl.warping_error(steady, frames_in)
    e_flicker = fl.warping_error(flicker, frames_in)
    assert e_steady < 0.003
    assert e_flicker > 10 * e_steady


def test_warping_error_reads_uint8_and_float_frames_alike_and_accepts_generators():
    frames_in, _, flicker = steady_and_flickering()
    e8 = fl.warping_error(flicker, frames_in)
    ef = fl.warping_error((f.astype(np.float32) / 255 for f in flicker), iter(frames_in))
    assert e8 == pytest.approx(ef, rel=1e-4)


def test_warping_error_is_the_mean_over_consecutive_pairs():
    frames_in, _, flicker = steady_and_flickering()
    pairs = [fl.pair_warping_error(flicker[t], flicker[t + 1], frames_in[t], frames_in[t + 1])
             for t in range(len(frames_in) - 1)]
    assert fl.warping_error(flicker, frames_in) == pytest.approx(np.mean(pairs))


def test_warping_error_refuses_mismatched_input():
    frames_in, steady, _ = steady_and_flickering()
    with pytest.raises(ValueError):
        fl.warping_error(steady[:3], frames_in)
    with pytest.raises(ValueError):
        fl.warping_error(steady[:1], frames_in[:1])
    with pytest.raises(ValueError):
        fl.warping_error([s[:32] for s in steady], frames_in)
