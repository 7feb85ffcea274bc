"""The filter networks (full and lite): any input size comes back at exactly that size; upsampling never uses
transposed convs; lite does a fraction of full's work."""

import io
import threading

import pytest
import torch
from torch import nn

from rotoscope.config import NetConfig
from rotoscope import network
from rotoscope.network import (ARCHS, FilterNet, InstanceNorm, LiteNet, build, config_from_card, count_parameters,
                               padded_logits, space_to_depth_conv, upsampled_conv)

TINY = NetConfig(channels=(4, 8, 8), res_blocks=1, kernel_outer=3)
TINY_LITE = NetConfig(arch="lite", channels=(4, 8, 8), res_blocks=1)
SIZES = [(w, h) for w in range(1, 8) for h in range(1, 6)] + [(333, 101), (64, 64), (65, 63), (17, 200)]


@pytest.mark.parametrize("arch", ["full", "lite"])
@pytest.mark.parametrize("w,h", SIZES)
def test_output_has_exactly_the_input_size(w, h, arch):
    net = build(TINY if arch == "full" else TINY_LITE).eval()
    with torch.no_grad():
        y = net(torch.rand(1, 3, h, w))
    assert y.shape == (1, 3, h, w)


def test_the_config_names_the_architecture_and_old_cards_mean_full():
    assert type(build(TINY)) is FilterNet and type(build(TINY_LITE)) is LiteNet and set(ARCHS) == {"full", "lite"}
    old_card = {"type": "FilterNet", "channels": [4, 8, 8], "res_blocks": 1, "kernel_outer": 3}
    assert config_from_card(old_card) == TINY
    assert config_from_card({"arch": "lite", "channels": [4, 8, 8], "res_blocks": 1}).arch == "lite"


def conv_flops(net: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of the convolutions one forward pass runs (counted on the operations: upsamplings call
    F.conv2d with weights derived from their module's)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() // 2


def test_lite_does_a_small_fraction_of_the_full_networks_work_with_the_same_widths():
    x = torch.rand(1, 3, 144, 256)
    full, lite = build(NetConfig()), build(NetConfig(arch="lite"))
    assert conv_flops(lite, x) * 10 < conv_flops(full, x)  # measured 19x at 720p
    # its residual blocks run at 1/8 resolution (full's at 1/4)
    seen = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:]))) for b in lite.residuals]
    with torch.no_grad():
        lite(x)
    assert hooks and set(seen) == {(144 // 8, 256 // 8)}


def test_lite_normalizes_only_in_its_encoder():
    """Instance norm after the residual blocks let the first lite filters paint droplets (see LiteNet)."""
    lite = LiteNet(TINY_LITE)
    assert any(isinstance(m, InstanceNorm) for m in lite.encoder.modules())
    assert not any(isinstance(m, nn.InstanceNorm2d) for part in (lite.residuals, lite.decoder) for m in part.modules())


@pytest.mark.parametrize("cfg", [TINY, TINY_LITE], ids=["full", "lite"])
def test_output_is_a_valid_image_and_depends_on_the_input(cfg):
    net = build(cfg).eval()
    x = torch.rand(2, 3, 20, 28)
    with torch.no_grad():
        y = net(x)
    assert not torch.allclose(y[0], y[1])
    # the last convolution's outputs driven far outside [0, 1] (weights x1000): still an image, and one that reaches
    # both black and white (a network without its final squashing, or squashed twice, fails one of the two)
    last = [m for m in net.decoder.modules() if isinstance(m, nn.Conv2d)][-1]
    assert last.out_channels == 3
    with torch.no_grad():
        last.weight.mul_(1000)
        y = net(x)
    assert torch.isfinite(y).all() and 0 <= y.min() and y.max() <= 1
    assert y.min() < 0.01 and y.max() > 0.99


@pytest.mark.parametrize("arch", ["full", "lite"])
def test_no_transposed_convolution_and_instance_norm_throughout(arch):
    net = build(NetConfig(arch=arch))
    kinds = {type(m) for m in net.modules()}
    assert not any(issubclass(k, (nn.ConvTranspose2d, nn.ConvTranspose1d)) for k in kinds)
    assert any(issubclass(k, nn.InstanceNorm2d) for k in kinds) and nn.ReflectionPad2d in kinds
    assert not any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds)


def test_width_and_depth_are_configurable():
    small = FilterNet(NetConfig(channels=(8, 16, 32), res_blocks=2))
    big = FilterNet(NetConfig(channels=(16, 32, 64), res_blocks=5))
    assert len(small.residuals) == 2 and len(big.residuals) == 5
    assert count_parameters(big) > 3 * count_parameters(small)


@pytest.mark.parametrize("cfg", [TINY, TINY_LITE], ids=["full", "lite"])
def test_gradients_reach_every_parameter(cfg):
    net = build(cfg)
    net(torch.rand(1, 3, 17, 23)).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_fast_instance_norm_computes_what_instance_norm_computes(channels_last):
    torch.manual_seed(0)
    ours, ref = InstanceNorm(6, affine=True).eval(), nn.InstanceNorm2d(6, affine=True).eval()
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2), ours.bias.uniform_(-1, 1)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 13, 9) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)
    # with frozen statistics (tiling) it computes what the library's instance norm does with running statistics
    for m in (ours, ref):
        m.track_running_stats, m.running_mean, m.running_var = True, torch.zeros(6) + 0.5, torch.ones(6) * 2
    assert torch.allclose(ours(x), ref(x), atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_in_training_the_instance_norm_and_its_gradients_are_instance_norms(channels_last):
    """Training on a CPU takes a hand-written instance norm (no NCHW copies of channels_last tensors): its values and
    the gradients for input, weight and bias agree with the library's instance norm computed in float64."""
    torch.manual_seed(0)
    ours = InstanceNorm(6, affine=True).train()
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2), ours.bias.uniform_(-1, 1)
    ref = nn.InstanceNorm2d(6, affine=True).train().double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 13, 9) * 3 + 20  # a large mean: one-pass statistics would lose digits here
    aim = torch.randn(2, 6, 13, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grads = []
    for m, inp in ((ours, x), (ref, x.double())):
        inp = inp.clone().requires_grad_(True)
        out = m(inp)
        ((out - aim.to(out.dtype)) ** 2).sum().backward()
        grads.append((out.detach(), inp.grad, m.weight.grad, m.bias.grad))
    for got, want in zip(*grads):
        assert got.dtype == torch.float32
        assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-4)


def test_in_training_under_bf16_autocast_the_instance_norm_keeps_the_input_type():
    """Under bf16 autocast the norm computes in float32 and hands back bf16, as the library's does."""
    torch.manual_seed(0)
    ours = InstanceNorm(4, affine=True).train()
    x = (torch.randn(2, 4, 8, 8) * 2 + 1).bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ours(x)
    out.float().sum().backward()
    want = nn.functional.instance_norm(x.detach().float(), weight=ours.weight.detach(), bias=ours.bias.detach())
    assert out.dtype == torch.bfloat16 and x.grad.dtype == torch.bfloat16
    assert torch.allclose(out.float(), want, atol=0.05)


@pytest.mark.parametrize("cfg", [TINY, TINY_LITE], ids=["full", "lite"])
def test_the_painting_is_the_sigmoid_of_its_logits_at_any_size(cfg):
    """padded_logits is what forward() squashes: training reads its peak to spot droplets (pitfalls.droplets)."""
    net = build(cfg).eval()
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        logits = padded_logits(net, x)
        assert logits.shape == x.shape and torch.equal(torch.sigmoid(logits), net(x))


@pytest.mark.parametrize("groups", [1, 4], ids=["dense", "depthwise"])
@pytest.mark.parametrize("h,w", [(1, 1), (2, 3), (5, 4), (7, 9)])
def test_upsampling_at_the_small_resolution_is_the_convolution_of_the_upsampled_picture(groups, h, w):
    """upsampled_conv equals conv(reflection pad(nearest x2(x))), values and gradients, in float64."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, groups=groups).double()
    x = torch.randn(2, 4, h, w, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 8, 2 * h, 2 * w, dtype=torch.float64)
    ours = upsampled_conv(x, conv)
    got = torch.autograd.grad(ours, (x, conv.weight, conv.bias), grad)
    up = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    want = conv(nn.functional.pad(up, (1, 1, 1, 1), mode="reflect"))
    expected = torch.autograd.grad(want, (x, conv.weight, conv.bias), grad)
    assert ours.shape == want.shape and torch.allclose(ours, want, atol=1e-12)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("cfg", [TINY, TINY_LITE], ids=["full", "lite"])
def test_both_networks_paint_what_their_upsampled_form_paints(cfg, monkeypatch):
    """The ONNX export runs the upsampled form; PyTorch the small-resolution one: the same painting."""
    torch.manual_seed(0)
    net = build(cfg).double().train()  # training mode: the norms use each picture's statistics either way
    for p in net.parameters():
        p.data.normal_(0, 0.5)
    x = torch.rand(2, 3, 21, 30, dtype=torch.float64)
    with torch.no_grad():
        ours = net(x)
        monkeypatch.setattr(network, "recording_graph", lambda: True)
        monkeypatch.setattr(InstanceNorm, "forward", nn.InstanceNorm2d.forward)  # the export's norm is the library's
        upsampled = net(x)
    assert torch.allclose(ours, upsampled, atol=1e-10) and (ours - 0.5).abs().max() > 0.1


def test_a_thread_painting_while_another_exports_paints_what_it_paints_alone():
    """torch.onnx.export's in-export flag is process-wide: a painting beside an export keeps its own layers, bit
    for bit (the server paints and exports in threads; a resumed video must equal a whole render)."""
    torch.manual_seed(0)
    net = build(TINY).eval()
    x = torch.rand(1, 3, 24, 20)
    with torch.no_grad():
        alone = net(x)
    inside, release = threading.Event(), threading.Event()

    class Held(nn.Module):  # an export that waits, mid-trace, until the painting beside it is done
        def forward(self, t):
            inside.set()
            release.wait(30)
            return t + 1

    exporter = threading.Thread(target=lambda: torch.onnx.export(Held(), (torch.rand(1, 3),), io.BytesIO(),
                                                                 dynamo=False))
    exporter.start()
    try:
        assert inside.wait(30) and torch.onnx.is_in_onnx_export()  # the process-wide flag is up
        with torch.no_grad():
            beside = net(x)
    finally:
        release.set()
        exporter.join(30)
    assert torch.equal(beside, alone)


def test_the_export_layers_round_differently_so_the_test_above_can_fail(monkeypatch):
    torch.manual_seed(0)
    net = build(TINY).eval()
    x = torch.rand(1, 3, 24, 20)
    with torch.no_grad():
        alone = net(x)
        monkeypatch.setattr(network, "recording_graph", lambda: True)
        assert not torch.equal(net(x), alone)


@pytest.mark.parametrize("k", [1, 3, 5, 9])
@pytest.mark.parametrize("h,w", [(2, 2), (4, 6), (10, 8)])
@pytest.mark.parametrize("bias", [True, False])
def test_the_half_resolution_convolution_is_the_convolution(k, h, w, bias):
    """space_to_depth_conv equals the kxk convolution over an even-sided input: values and every gradient."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 3, k, bias=bias).double()
    x = torch.randn(2, 4, h + k - 1, w + k - 1, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 3, h, w, dtype=torch.float64)
    ours, want = space_to_depth_conv(x, conv), conv(x)
    params = (x, conv.weight) + ((conv.bias,) if bias else ())
    got, expected = torch.autograd.grad(ours, params, grad), torch.autograd.grad(want, params, grad)
    assert ours.shape == want.shape and torch.allclose(ours, want, atol=1e-12)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-12)


def test_in_training_the_last_layer_runs_at_half_resolution_with_the_same_numbers(monkeypatch):
    """Training's forward and backward take the half-resolution form of the last layer (the gradients run on
    it); painting, without gradients, takes the plain one; both give the same painting and gradients."""
    torch.manual_seed(0)
    net = FilterNet(NetConfig(channels=(4, 8, 8), res_blocks=1, kernel_outer=9)).double().train()
    x = torch.rand(2, 3, 21, 30, dtype=torch.float64)
    calls = []
    real = network.space_to_depth_conv
    monkeypatch.setattr(network, "space_to_depth_conv", lambda *a: calls.append(1) or real(*a))
    ours = net(x)
    grads = torch.autograd.grad(ours.square().sum(), list(net.parameters()))
    assert calls == [1]
    with torch.no_grad():
        painted = net(x)
    assert calls == [1]  # no gradients: the plain form
    monkeypatch.setattr(network, "space_to_depth_conv", lambda x, conv: conv(x))
    plain = net(x)
    expected = torch.autograd.grad(plain.square().sum(), list(net.parameters()))
    assert torch.allclose(ours, painted, atol=1e-12) and torch.allclose(ours, plain, atol=1e-12)
    for a, b in zip(grads, expected):
        assert torch.allclose(a, b, atol=1e-10)


def test_torch_compile_paints_what_eager_paints(tmp_path, monkeypatch):
    """Inductor (torch 2.13) fails on the small-resolution upsampling, so compiling traces the upsampled form: it
    must compile and paint what eager paints (bench_apply.py and bench_gpu.py time compiled networks)."""
    # its own kernel cache: kernels cached natively painted NaNs in a later run under ATEN_CPU_CAPABILITY=avx2,
    # and the other way round crashed (torch 2.13: the cache seems keyed without that setting)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    net = build(TINY).eval()
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        compiled = torch.compile(net, dynamic=False)(x)
        assert torch.allclose(compiled, net(x), atol=1e-5)
