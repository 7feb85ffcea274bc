"""Guided upsampling: a painting made at low resolution comes back at full size with the photo's edges."""

import numpy as np
import torch
import torch.nn.functional as F

from rotoscope import metrics
from rotoscope.guided import box, guided_upsample, guided_upsample_frame, luminance, reduced_size


def edge_photo(h=96, w=128):
    """A photo with sharp edges: a bright square and a diagonal on a gradient."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([0.2 + 0.3 * x, 0.3 + 0.2 * y, 0.4 * torch.ones_like(x)])
    img[:, 20:60, 30:70] = torch.tensor([0.9, 0.85, 0.8]).view(3, 1, 1)
    img[:, (y > x).logical_and(y < x + 0.05)] = 0.05
    return img[None]


def test_box_is_a_windowed_mean():
    x = torch.arange(25.0).view(1, 1, 5, 5)
    assert torch.allclose(box(x, 1)[0, 0, 2, 2], x[0, 0, 1:4, 1:4].mean())
    assert box(x, 0) is x and box(x, 3).shape == x.shape  # windows larger than the image still work


def test_a_painting_that_is_a_function_of_luminance_is_restored_sharply():
    """If the painting is a linear map of the photo's luminance, the guided upsample recovers it at full size,
    edges included, far better than a plain bilinear upscale of the low-resolution painting."""
    photo = edge_photo()
    truth = (0.1 + 0.8 * luminance(photo)).expand(-1, 3, -1, -1) * torch.tensor([1.0, 0.6, 0.3]).view(1, 3, 1, 1)
    lo = F.interpolate(truth, scale_factor=0.5, mode="area")
    guided = guided_upsample(lo, photo, radius=2, eps=1e-4, detail=0)  # the fit alone (the floor: the next test)
    plain = F.interpolate(lo, size=truth.shape[-2:], mode="bilinear", align_corners=False)
    assert guided.shape == truth.shape
    err_guided, err_plain = (guided - truth).abs().mean(), (plain - truth).abs().mean()
    assert err_guided < 0.5 * err_plain
    as_img = lambda t: t[0].permute(1, 2, 0).numpy()
    assert metrics.edge_correlation(as_img(guided), as_img(truth)) > metrics.edge_correlation(as_img(plain), as_img(truth))


def test_photo_detail_finer_than_the_painted_pixels_passes_with_at_least_the_floors_gain():
    """A flat painting of a photo whose only detail is a one-pixel checkerboard (gone at half size): the fit alone
    finds no edge to restore and stays flat; with the floor, the checkerboard comes through at DETAIL of its
    contrast, on every channel, without moving the painting's colour."""
    from rotoscope.guided import DETAIL

    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    check = (((yy + xx) % 2).float() * 0.2 + 0.4).expand(1, 3, 32, 32)  # 0.4 / 0.6 pixel by pixel, mean 0.5
    lo_photo = F.interpolate(check, scale_factor=0.5, mode="area")
    assert float(lo_photo.std()) < 1e-3  # the half-size photo has no edges left
    painted = torch.tensor([0.7, 0.2, 0.1]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    flat = guided_upsample(painted, check, photo_lo=lo_photo, detail=0)
    lifted = guided_upsample(painted, check, photo_lo=lo_photo)
    assert float(flat.std((2, 3)).max()) < 1e-3
    contrast = (lifted[..., 8:24, 8:24] - painted[..., :1, :1]) / (check[..., 8:24, 8:24] - 0.5)
    assert torch.allclose(contrast, torch.full_like(contrast, DETAIL), atol=0.02)
    assert torch.allclose(lifted.mean((2, 3)), painted.mean((2, 3)), atol=0.01)
    frame = guided_upsample_frame(painted[0].permute(1, 2, 0).contiguous().numpy(),
                                  (check[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                                  (lo_photo[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    ref = lifted[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(frame.astype(np.float32) - ref).max() <= 1.0  # the frame version lifts the same detail


def test_colours_of_the_painting_survive():
    photo = edge_photo()
    painted = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0)) * 0.2 + torch.tensor(
        [0.7, 0.1, 0.1]).view(1, 3, 1, 1)
    out = guided_upsample(painted, photo)
    assert torch.allclose(out.mean((2, 3)), painted.mean((2, 3)), atol=0.03)
    assert out.min() >= 0 and out.max() <= 1


def test_the_opencv_frame_version_paints_what_the_tensor_version_paints():
    """Video frames on the CPU take guided_upsample_frame (uint8 in and out, OpenCV): the same filter, within the
    8-bit guide's rounding; and it restores a luminance-made painting as sharply."""
    import cv2

    photo = edge_photo()
    painted = (torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.2)
    painted = F.interpolate(F.interpolate(painted, scale_factor=0.25, mode="area"), size=(48, 64), mode="bilinear")
    hi_u8 = (photo[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    lo_u8 = cv2.resize(hi_u8, (64, 48), interpolation=cv2.INTER_AREA)
    lo_t = torch.from_numpy(lo_u8).permute(2, 0, 1)[None].float() / 255
    ref = guided_upsample(painted, photo, photo_lo=lo_t)[0].permute(1, 2, 0).numpy() * 255
    out = guided_upsample_frame(painted[0].permute(1, 2, 0).contiguous().numpy(), hi_u8, lo_u8)
    assert out.dtype == np.uint8 and out.shape == hi_u8.shape
    diff = np.abs(out.astype(np.float32) - ref)
    assert diff.max() <= 1.0, diff.max()  # measured: 0.25 levels on average, 0.52 at most (rounding to 8 bits)
    # a painting that is a function of luminance comes back sharp, as with the tensor version
    truth = (0.1 + 0.8 * luminance(photo)).expand(-1, 3, -1, -1) * torch.tensor([1.0, 0.6, 0.3]).view(1, 3, 1, 1)
    lo = F.interpolate(truth, scale_factor=0.5, mode="area")
    sharp = guided_upsample_frame(lo[0].permute(1, 2, 0).contiguous().numpy(), hi_u8, lo_u8, radius=2, eps=1e-4)
    plain = cv2.resize((lo[0].permute(1, 2, 0).numpy() * 255).astype(np.float32), (128, 96))
    t = truth[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(sharp - t).mean() < 0.5 * np.abs(plain - t).mean()


def test_a_uint8_painting_is_read_as_levels_over_255():
    """A video's steadied chain is uint8: guided up, it paints what its float reading paints."""
    import cv2

    rng = np.random.default_rng(0)
    hi = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    lo = cv2.resize(hi, (32, 24), interpolation=cv2.INTER_AREA)
    painted = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    as_float = guided_upsample_frame(painted.astype(np.float32) / 255, hi, lo)
    assert np.abs(guided_upsample_frame(painted, hi, lo).astype(int) - as_float).max() <= 1


def test_reduced_size_keeps_a_floor_and_never_grows():
    assert reduced_size(720, 1280, 0.5) == (360, 640)
    assert reduced_size(720, 1280, 1.0) == (720, 1280)
    assert reduced_size(20, 30, 0.25) == (16, 16)
    assert reduced_size(10, 10, 0.25) == (10, 10)


def test_a_filter_paints_at_a_reduced_scale_through_the_library_and_the_cli(tiny_filter, tmp_path):
    """paint_scale < 1: the picture comes back at full size, close to the full-resolution painting, and the
    setting is recorded in the provenance; out of range it is one line naming the setting."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pytest
    from PIL import Image

    from rotoscope.config import ApplySettings
    from rotoscope.errors import RotoscopeError
    from rotoscope.filter import load_filter
    from rotoscope.stylize import stylize_image

    filt = load_filter("tiny")
    photo = Image.fromarray((edge_photo(120, 160)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    full = stylize_image(filt, photo, ApplySettings(precision="fp32", engine="torch"))
    half = stylize_image(filt, photo, ApplySettings(precision="fp32", engine="torch", paint_scale=0.5))
    assert half.size == full.size == photo.size
    a, b = np.asarray(full, np.float64) / 255, np.asarray(half, np.float64) / 255
    assert np.abs(a - b).mean() < 0.1
    assert ApplySettings(paint_scale=0.5).to_dict()["paint_scale"] == 0.5
    assert "paint_scale" not in ApplySettings().to_dict()
    with pytest.raises(RotoscopeError, match="paint_scale"):
        ApplySettings(paint_scale=0.0).validate()
    src = tmp_path / "photo.png"
    photo.save(src)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = [sys.executable, "-m", "rotoscope", "apply", "tiny", str(src), "-o", str(tmp_path / "out.png"),
           "--engine", "torch", "--precision", "fp32", "--no-progress"]
    r = subprocess.run(cmd + ["--paint-scale", "0.5"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "out.png").size == photo.size
    r = subprocess.run(cmd + ["--paint-scale", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and "paint_scale" in r.stderr and len(r.stderr.strip().splitlines()) == 1
