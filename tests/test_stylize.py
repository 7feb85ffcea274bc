"""Applying a filter: strength, colour preservation, alpha, and tiles that leave no seam."""

import copy
import numpy as np
import pytest
import torch
from PIL import Image

from rotoscope.config import NetConfig
from rotoscope.filter import Filter
from rotoscope.images import to_tensor, to_uint8_tensor
from rotoscope.network import FilterNet
from rotoscope.stylize import (ApplySettings, finish, frozen_norm_stats, measure_norm_stats, rgb_to_ycbcr,
                               stylize_image, stylize_tensor, tile_starts, ycbcr_to_rgb)


@pytest.fixture(scope="module")
def filt():
    torch.manual_seed(0)
    net = FilterNet(NetConfig(channels=(8, 16, 16), res_blocks=1, kernel_outer=5))
    net.eval().requires_grad_(False)
    return Filter("test", {"name": "test"}, net)


def smooth(w=96, h=72):
    x = np.linspace(0, 1, w)[None, :]
    y = np.linspace(0, 1, h)[:, None]
    rgb = np.stack([0.5 + 0.4 * np.sin(3 * x + y) + 0 * y, 0.3 + 0.5 * x * y, 0.8 - 0.6 * y + 0 * x], -1)
    return Image.fromarray((rgb * 255).astype(np.uint8), "RGB")


def test_strength_zero_returns_the_photo(filt):
    img = smooth()
    out = stylize_image(filt, img, ApplySettings(strength=0.0, precision="fp32"))
    assert np.array_equal(np.asarray(out), np.asarray(img))


def test_strength_blends_linearly(filt):
    img = smooth()
    full = np.asarray(stylize_image(filt, img, ApplySettings(precision="fp32")), np.float32)
    half = np.asarray(stylize_image(filt, img, ApplySettings(strength=0.5, precision="fp32")), np.float32)
    photo = np.asarray(img, np.float32)
    assert np.abs(full - photo).mean() > 10  # the filter does something
    assert np.abs(half - (full + photo) / 2).max() <= 1.0


def test_strength_out_of_range_is_refused(filt):
    with pytest.raises(ValueError, match="strength"):
        stylize_image(filt, smooth(), ApplySettings(strength=1.5))


def test_preserve_colors_keeps_the_photos_chroma(filt):
    img = smooth()
    out = stylize_image(filt, img, ApplySettings(preserve_colors=True, precision="fp32"))
    ycc_out = rgb_to_ycbcr(torch.from_numpy(np.asarray(out, np.float32) / 255).permute(2, 0, 1)[None])
    ycc_in = rgb_to_ycbcr(torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1)[None])
    styled = stylize_image(filt, img, ApplySettings(precision="fp32"))
    ycc_styled = rgb_to_ycbcr(torch.from_numpy(np.asarray(styled, np.float32) / 255).permute(2, 0, 1)[None])
    chroma_err = (ycc_out[:, 1:] - ycc_in[:, 1:]).abs().mean()
    assert chroma_err < 0.02 < (ycc_styled[:, 1:] - ycc_in[:, 1:]).abs().mean()
    assert (ycc_out[:, :1] - ycc_styled[:, :1]).abs().mean() < 0.02  # luminance from the filter


def test_ycbcr_round_trip():
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=2e-3)


def test_alpha_is_kept_and_output_size_matches(filt):
    img = smooth(33, 21).convert("RGBA")
    alpha = Image.linear_gradient("L").resize(img.size)
    img.putalpha(alpha)
    out = stylize_image(filt, img, ApplySettings(precision="fp32"))
    assert out.mode == "RGBA" and out.size == (33, 21)
    assert np.array_equal(np.asarray(out)[..., 3], np.asarray(alpha))
    resized = stylize_image(filt, img, ApplySettings(size=66, precision="fp32"))
    assert resized.size == (66, 42) and resized.mode == "RGBA"


@pytest.mark.parametrize("mode", ["L", "P", "CMYK"])
def test_any_mode_comes_out_rgb(filt, mode):
    assert stylize_image(filt, smooth(20, 16).convert(mode), ApplySettings(precision="fp32")).mode == "RGB"


def test_tile_starts_cover_everything():
    for n, tile, overlap in [(100, 32, 8), (32, 32, 8), (10, 32, 8), (97, 40, 16)]:
        starts = tile_starts(n, tile, overlap)
        covered = np.zeros(n, bool)
        for s in starts:
            covered[s:s + tile] = True
        assert covered.all() and starts[-1] + min(tile, n) == n


def seam_jumps(tiled, whole):
    """How abruptly the tiled picture departs from the untiled one, column by column and row by row.

    A seam is a step in (tiled - whole) where one tile hands over to the next; smooth drift is not a seam.
    """
    d = tiled - whole
    return ((d[0, :, :, 1:] - d[0, :, :, :-1]).abs().mean((0, 1)), (d[0, :, 1:, :] - d[0, :, :-1, :]).abs().mean((0, 2)))


def test_tiled_equals_untiled_closely_and_has_no_seam(filt):
    # 152 x 112 (multiples of 4, like the tiles) so that the untiled run needs no padding of its own
    x = torch.from_numpy(np.asarray(smooth(152, 112), np.float32) / 255).permute(2, 0, 1)[None]
    whole = stylize_tensor(filt.net, x, "fp32", max_tile_pixels=10**9)
    tiled = stylize_tensor(filt.net, x, "fp32", max_tile_pixels=64 * 64, overlap=32)  # 4 x 3 tiles
    assert tiled.shape == whole.shape == x.shape
    assert (tiled - whole).abs().mean() < 0.03
    jx, jy = seam_jumps(tiled, whole)
    # measured: 0.019 with frozen statistics and feathering, 0.037 with per-tile statistics
    assert jx.max() < 0.03 and jy.max() < 0.03


def test_odd_sizes_tile_to_the_exact_size(filt):
    x = torch.rand(1, 3, 101, 133)
    assert stylize_tensor(filt.net, x, "fp32", max_tile_pixels=48 * 48, overlap=16).shape == x.shape


class Identity:
    """A runner that returns its input: the blended tiles must give back the picture exactly."""

    def __call__(self, x, stats=None):
        return x.clone()

    def measure(self, x):
        return []


@pytest.mark.parametrize("size, budget, overlap", [((101, 133), 48 * 48, 16), ((72, 96), 40 * 40, 8),
                                                    ((64, 200), 64 * 64, 32)])
def test_the_tile_weights_sum_to_one_everywhere(size, budget, overlap):
    # the blend divides by a weight sum built from two 1-D sums (no full-size weight image): an identity
    # network over irregular last tiles shows whether that sum is right at every pixel
    x = torch.rand(1, 3, *size)
    tiled = stylize_tensor(Identity(), x, "fp32", max_tile_pixels=budget, overlap=overlap)
    assert torch.allclose(tiled, x, atol=1e-6)


def test_a_uint8_picture_is_painted_like_its_float_copy(filt):
    x8 = to_uint8_tensor(smooth(152, 112))
    xf = x8.float() / 255
    for budget in (10**9, 64 * 64):  # whole, and tile by tile
        a = stylize_tensor(filt.net, x8, "fp32", max_tile_pixels=budget, overlap=32)
        b = stylize_tensor(filt.net, xf, "fp32", max_tile_pixels=budget, overlap=32)
        assert torch.allclose(a, b, atol=1e-5)


def test_tiles_in_bf16_match_tiles_in_fp32(filt):
    # bf16 weights with float32 frozen statistics: the mix the tiled path runs by default
    from rotoscope.stylize import prepare_net

    x = to_tensor(smooth(152, 112))
    net16 = prepare_net(copy.deepcopy(filt.net), torch.device("cpu"), "bf16")
    a = stylize_tensor(net16, x, "bf16", max_tile_pixels=64 * 64, overlap=32)
    b = stylize_tensor(filt.net, x, "fp32", max_tile_pixels=64 * 64, overlap=32)
    assert (a - b).abs().mean() * 255 < 1.5


def test_without_frozen_statistics_tiles_would_show(filt):
    """The reason for freezing: per-tile instance-norm statistics make a patchwork (this guards the test above)."""
    x = torch.from_numpy(np.asarray(smooth(152, 112), np.float32) / 255).permute(2, 0, 1)[None]
    whole = stylize_tensor(filt.net, x, "fp32", max_tile_pixels=10**9)
    with torch.no_grad():
        left, right = filt.net(x[..., :, :76]), filt.net(x[..., :, 76:])
    naive = torch.cat([left, right], -1)
    frozen = stylize_tensor(filt.net, x, "fp32", max_tile_pixels=64 * 64, overlap=32)
    assert (naive - whole).abs().mean() > (frozen - whole).abs().mean()


def test_frozen_statistics_are_released_afterwards(filt):
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        before = filt.net(x)
        stats = measure_norm_stats(filt.net, torch.rand(1, 3, 24, 24), "fp32")
        with frozen_norm_stats(filt.net, stats):
            during = filt.net(x)
        after = filt.net(x)
    assert torch.equal(before, after) and not torch.allclose(before, during)


def test_finish_clamps_into_range():
    photo, styled = torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4) * 3 - 1
    out = finish(photo, styled, 1.0, True)
    assert out.min() >= 0 and out.max() <= 1


def test_bf16_is_close_to_fp32(filt):
    img = smooth(40, 32)
    a = np.asarray(stylize_image(filt, img, ApplySettings(precision="fp32")), np.float32)
    b = np.asarray(stylize_image(filt, img, ApplySettings(precision="bf16")), np.float32)
    assert np.abs(a - b).mean() < 4


def test_bf16_paints_the_same_8bit_picture_as_fp32(tmp_path):
    """The bf16 apply path (what `auto` takes on a CPU with native bf16) against fp32, for a network of the default
    shape on a photo-like image: under one 8-bit level apart on average."""
    from conftest import make_scene

    torch.manual_seed(0)
    net = FilterNet(NetConfig()).eval().requires_grad_(False)
    filt = Filter("default-shape", {"name": "default-shape"}, net)
    img = Image.open(make_scene(tmp_path / "scene.png", size=(64, 48)))
    assert ApplySettings().precision == "auto"  # what users get unless they ask otherwise (test_devices.py)
    bf16 = np.asarray(stylize_image(filt, img, ApplySettings(device="cpu", precision="bf16", engine="torch")),
                      np.float32)
    fp32 = np.asarray(stylize_image(filt, img, ApplySettings(device="cpu", precision="fp32", engine="torch")),
                      np.float32)
    diff = np.abs(bf16 - fp32)
    assert bf16.shape == fp32.shape == (48, 64, 3)
    assert diff.max() > 0  # the bf16 path really ran
    assert diff.mean() < 1.0, (diff.mean(), diff.max())


def test_frames_go_to_and_from_the_networks_layout_without_pytorch_the_same_as_with_it():
    """The video path converts with numpy and OpenCV (PyTorch's threads would spin beside the encoder): the same
    numbers as the tensor arithmetic it replaced, rounding and saturation included."""
    from rotoscope.stylize import frames_nchw, painted_uint8

    rng = np.random.default_rng(0)
    frames = [(rng.random((5, 7, 3)) * 255).astype(np.uint8) for _ in range(2)]
    ref = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div(255)
    assert torch.allclose(frames_nchw(frames), ref, atol=1e-7)
    y = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0)) * 1.4 - 0.2  # outside [0, 1] too
    ref = y.permute(0, 2, 3, 1).mul(255).add(0.5).clamp(0, 255).to(torch.uint8).numpy()
    assert np.array_equal(painted_uint8(y), ref)


def test_frames_painted_where_the_network_is_match_the_host_route(filt):
    """A GPU render converts its frames on the GPU (paint_frames_on_device: 8-bit frames there and back). Run on the
    CPU here, that route paints what the host route paints, at any strength and with the photo's colours kept; a
    CPU runner keeps the host route."""
    from rotoscope.stylize import (TorchRunner, frames_nchw, on_gpu, paint, paint_frames_on_device, painted_uint8,
                                   paints_frames_on_device, prepare_net)

    run = TorchRunner(prepare_net(copy.deepcopy(filt.net), torch.device("cpu"), "fp32"), "fp32")
    frames = [np.asarray(smooth(56, 40)), np.asarray(smooth(56, 40).rotate(180))]
    for st in (ApplySettings(precision="fp32"), ApplySettings(precision="fp32", strength=0.6, preserve_colors=True)):
        x = frames_nchw(frames)
        host = painted_uint8(finish(x, paint(run, x, st), st.strength, st.preserve_colors))
        device = paint_frames_on_device(run, frames, st)
        assert device.shape == host.shape == (2, 40, 56, 3) and device.dtype == np.uint8
        assert np.abs(device.astype(int) - host.astype(int)).max() <= 1
        assert not np.array_equal(device[0], frames[0])  # it painted
    assert not on_gpu(run) and not paints_frames_on_device(run, 40, 56, ApplySettings())
