"""The filter network: a feed-forward image transformer (Johnson et al. 2016) with the field's later fixes.

Fixes over the 2016 layout: reflection padding (no dark borders), instance norm (Ulyanov et al. 2016, the
single biggest quality fix), nearest-neighbour upsampling followed by a convolution instead of a transposed
convolution (no checkerboard, Odena et al. 2016). Inputs of any width and height are padded to a multiple of 4
and the output is cropped back, so a 333x101 photo comes back 333x101.

Two architectures share the filter file format (the card's `architecture.arch` says which; ARCHS maps it):
  full  Johnson's layout at full, 1/2 and 1/4 resolution (FilterNet).
  lite  the same widths one resolution level lower (LiteNet): a strided 3x3 stem, depthwise-separable
        residual blocks at 1/8 resolution and upsamplings without normalization, one skip at 1/4, a 3x3 head;
        19x fewer FLOPs than full at 720p, for video and live painting on a CPU (benchmarks/bench_lite.py).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .config import NetConfig

# Raised when the same weights are computed another way: the numbers agree, the speed does not, so engines.py's
# cached timings of PyTorch against the other engines are taken again. 2: upsamplings at the small resolution
REVISION = 2


class _TrainingInstanceNorm(torch.autograd.Function):
    """Affine instance norm on float32 with a hand-written backward: a few passes over the tensor in whatever
    memory layout it comes, where PyTorch's instance_norm copies channels_last tensors to NCHW and back, forwards
    and backwards (a fifth of the filter's training pass; benchmarks/results/speed.md, "Training's instance norm")."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        centred = x - x.mean((2, 3), keepdim=True)  # two passes: one-pass moments lose digits (group_norm's did)
        rstd = torch.rsqrt(centred.square().mean((2, 3), keepdim=True) + eps)
        ctx.save_for_backward(centred, rstd, weight)
        return torch.addcmul(bias.view(1, -1, 1, 1), centred, weight.view(1, -1, 1, 1) * rstd)

    @staticmethod
    def backward(ctx, grad):
        centred, rstd, weight = ctx.saved_tensors
        n = centred.shape[2] * centred.shape[3]
        grad_sum = grad.sum((2, 3), keepdim=True)
        grad_dot = (grad * centred).sum((2, 3), keepdim=True)
        scale = weight.view(1, -1, 1, 1) * rstd
        # d/dx of w * xhat + b, xhat = (x - mean) * rstd: scale * (grad - mean(grad) - xhat * mean(grad * xhat))
        grad_x = torch.addcmul(-scale * grad_sum / n, grad, scale)
        grad_x = torch.addcmul(grad_x, centred, -scale * rstd.square() * grad_dot / n)
        return grad_x, (grad_dot * rstd).sum((0, 2, 3)), grad_sum.sum((0, 2, 3)), None


def recording_graph() -> bool:
    """Whether this thread's forward pass is being recorded into a graph (an ONNX export's trace, torch.compile,
    torch.export) rather than run: graphs keep the library's plain layers, which their engines know.

    Not torch.onnx.is_in_onnx_export(): that flag is process-wide, so a thread painting while another exported
    (the server's threads; an engine calibration exports) took the export's layers, other rounding in bf16 (a
    video painted beside a held export: 2.4-4.5 levels from one painted alone). The TorchScript tracer our export
    uses keeps its state per thread; Dynamo specialises is_compiling() in the frames it compiles."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


class InstanceNorm(nn.InstanceNorm2d):
    """Instance norm, computed as a group norm with one channel per group: the same numbers, but PyTorch's CPU
    kernel for group norm works on channels_last and bf16 tensors directly, where instance_norm copies them to
    NCHW and back (a quarter of a 720p frame's time, benchmarks/bench_apply.py). Inference only: in training
    under bf16 autocast its backward pass was 1.8x slower than instance norm's (our trial), and on channels_last
    float32 its one-pass statistics put 1e-4 of error into the painting; training on a CPU takes
    _TrainingInstanceNorm instead (the default training step 1.16x faster at fp32 on AVX2, 1.09x at bf16 on AMX;
    benchmarks/bench_train.py), in float32 whatever the autocast type. With frozen statistics (stylize.py's tiles)
    it is eval-mode batch norm: the same formula, 4x faster on channels_last bf16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if recording_graph():  # ONNX has its own InstanceNormalization
            return super().forward(x)
        if self.training:
            # CUDA keeps its own kernel; running statistics and a norm without weights are the library's cases
            if x.device.type != "cpu" or not self.affine or self.track_running_stats:
                return super().forward(x)
            return _TrainingInstanceNorm.apply(x.float(), self.weight.float(), self.bias.float(), self.eps).to(x.dtype)
        if self.track_running_stats:  # statistics are float32; bf16 weights follow them (a mix batch norm takes)
            w, b = (None if t is None else t.float() for t in (self.weight, self.bias))
            return F.batch_norm(x, self.running_mean, self.running_var, w, b, False, 0.0, self.eps)
        return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)


def conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(k // 2), nn.Conv2d(cin, cout, k, stride))


def conv_norm_relu(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(conv(cin, cout, k, stride), InstanceNorm(cout, affine=True), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(conv_norm_relu(c, c, 3), conv(c, c, 3), InstanceNorm(c, affine=True))

    def forward(self, x):
        return x + self.body(x)


# Device types on which upsampled_conv computes at the small resolution: measured faster on CPUs only so far
# (benchmarks/bench_gpu.py times it on CUDA by adding "cuda" here for its rows)
SMALL_RESOLUTION_UPSAMPLING = {"cpu"}

# The taps of a 3x3 convolution over a nearest x2 upsampling, folded onto the small input: _PHASES[phase,
# small-input offset -1/0/+1, tap -1/0/+1]. An even output row's three taps read rows i-1, i, i; an odd one's i, i, i+1
_PHASES = torch.tensor([[[1.0, 0, 0], [0, 1, 1], [0, 0, 0]], [[0.0, 0, 0], [1, 1, 0], [0, 0, 1]]])


def _rewritten_form(x: torch.Tensor, device_types: set[str]) -> bool:
    """Whether a layer computes its rewritten form (same numbers, another order of work) for x: on the device
    types it was measured faster on, and never while a graph is recorded (recording_graph)."""
    return x.device.type in device_types and not recording_graph()


def upsampled_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv` (3x3, stride 1, any groups) over the reflection-padded nearest x2 upsampling of x, computed at x's
    resolution: the same numbers up to rounding, without building the 4x-sized upsampled tensor.

    The sub-pixel form: each of the four output phases is a 3x3 convolution of x whose taps are sums of conv's,
    over x replicate-padded (what the reflection pad of an upsampled picture reads); pixel_shuffle interleaves
    them. Painting 720p in PyTorch took 1.2-1.8x less time on three x86 CPU classes (speed.md, "Upsampling at the
    small resolution"). The ONNX export keeps the upsampled form, which onnxruntime and OpenVINO ran as fast or
    faster; so do GPUs and Apple's mps until the new form is measured there (SMALL_RESOLUTION_UPSAMPLING), and
    torch.compile, whose Inductor (torch 2.13) fails on the new form ("vr must not be None": a replicate pad after
    a pixel_shuffle)."""
    if not _rewritten_form(x, SMALL_RESOLUTION_UPSAMPLING):
        return conv(F.pad(F.interpolate(x, scale_factor=2, mode="nearest"), (1, 1, 1, 1), mode="reflect"))
    w = conv.weight
    phases = _PHASES.to(w)
    w4 = torch.einsum("ayk,oikl,bxl->oabiyx", phases, w, phases).reshape(4 * w.shape[0], *w.shape[1:])
    b = None if conv.bias is None else conv.bias.repeat_interleave(4)
    y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w4, b, groups=conv.groups)
    return F.pixel_shuffle(y, 2)


@lru_cache(maxsize=8)
def _half_resolution_taps(k: int) -> torch.Tensor:
    """For a kxk convolution computed at half resolution: [output phase p, input parity r, half-resolution tap u]
    -> the original tap 2u + r - p, or k (a zero) where that falls outside the kernel."""
    m = (k + 1) // 2
    return torch.tensor([[[2 * u + r - p if 0 <= 2 * u + r - p < k else k for u in range(m)] for r in range(2)]
                         for p in range(2)])


def space_to_depth_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv` (odd kxk, stride 1, no groups) over x, already padded to even sides, computed at half resolution:
    pixel_unshuffle folds each 2x2 block into channels, a (k+1)/2-tap convolution gives the four output phases,
    pixel_shuffle interleaves them. The same numbers up to rounding.

    Used in training on a CPU for the last layer (16 channels in, 3 out: too few outputs to fill the channel
    blocks oneDNN's kernels work in; 12 at half resolution): that layer's forward and backward took 1.2-2.1x less
    time in three CPU settings (speed.md, "The last layer at half resolution in training"). Painting keeps the
    plain form, which was faster there."""
    k = conv.kernel_size[0]
    taps = _half_resolution_taps(k)
    m = taps.shape[-1]
    rows = taps.view(2, 1, 2, 1, m, 1).expand(2, 2, 2, 2, m, m)  # [p, q, r, s, u, v]
    cols = taps.view(1, 2, 1, 2, 1, m).expand(2, 2, 2, 2, m, m)
    w = F.pad(conv.weight, (0, 1, 0, 1))[:, :, rows, cols]  # [o, c, p, q, r, s, u, v]; index k reads the zero pad
    o, c = conv.weight.shape[:2]
    w = w.permute(0, 2, 3, 1, 4, 5, 6, 7).reshape(4 * o, 4 * c, m, m)
    b = None if conv.bias is None else conv.bias.repeat_interleave(4)
    return F.pixel_shuffle(F.conv2d(F.pixel_unshuffle(x, 2), w, b), 2)


# Device types on which training computes FilterNet's last layer at half resolution: measured on CPUs only
HALF_RESOLUTION_LAST_LAYER = {"cpu"}


def outer_conv(x: torch.Tensor, layer: nn.Sequential) -> torch.Tensor:
    """FilterNet's last layer (reflection pad, then the kxk convolution): at half resolution where its weights'
    gradients are being taken on a CPU (space_to_depth_conv), in the plain form everywhere else."""
    pad, conv = layer
    x = pad(x)
    if (_rewritten_form(x, HALF_RESOLUTION_LAST_LAYER) and torch.is_grad_enabled() and conv.weight.requires_grad
            and conv.kernel_size[0] % 2 == 1 and conv.stride == (1, 1) and conv.groups == 1
            and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0):
        return space_to_depth_conv(x, conv)
    return conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a convolution: the checkerboard-free replacement for a transposed conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv_norm_relu(cin, cout, 3)  # its reflection pad goes unused: upsampled_conv pads its own way

    def forward(self, x):
        (_, conv), norm, relu = self.conv
        return relu(norm(upsampled_conv(x, conv)))


class FilterNet(nn.Module):
    """RGB in [0, 1] -> RGB in [0, 1], same size. Two stride-2 downsamplings, residual blocks, two upsamplings."""

    def __init__(self, cfg: NetConfig | None = None):
        super().__init__()
        cfg = cfg or NetConfig()
        c1, c2, c3 = cfg.channels
        k = self.kernel_outer = cfg.kernel_outer
        self.encoder = nn.Sequential(conv_norm_relu(3, c1, k), conv_norm_relu(c1, c2, 3, 2), conv_norm_relu(c2, c3, 3, 2))
        self.residuals = nn.Sequential(*[ResidualBlock(c3) for _ in range(cfg.res_blocks)])
        self.decoder = nn.Sequential(Upsample(c3, c2), Upsample(c2, c1), conv(c1, 3, k))

    @property
    def least_side(self) -> int:
        """Inputs are padded to at least this many pixels a side (export.py mirrors the padding rule)."""
        # big enough that every reflection pad and instance norm has room: 2x2 at quarter resolution, more than
        # the outer kernel's reach at full resolution
        return max(8, -(-(self.kernel_outer // 2 + 1) // 4) * 4)

    multiple = 4  # two stride-2 steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _padded(self, x)

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """The network on a padded input (export.py pads its own way, then calls this)."""
        up = self.decoder[1](self.decoder[0](self.residuals(self.encoder(x))))
        return outer_conv(up, self.decoder[2])


def _padded(net, x: torch.Tensor) -> torch.Tensor:
    """Pad to a multiple of net.multiple and at least net.least_side, run the layers, crop back, squash to [0, 1]."""
    # A sigmoid keeps outputs in range for the loss network without clamping away gradients.
    return torch.sigmoid(padded_logits(net, x))


def padded_logits(net, x: torch.Tensor) -> torch.Tensor:
    """The painting before the final sigmoid (forward() squashes this): training's held-out check reads its peak,
    which reveals droplets (pitfalls.droplets)."""
    h, w = x.shape[-2:]
    least, multiple = net.least_side, net.multiple
    ph, pw = max(least, h + (-h) % multiple) - h, max(least, w + (-w) % multiple) - w
    if ph or pw:
        # reflect needs pad < size; replicate covers tiny images too
        mode = "reflect" if h > ph and w > pw else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return net.layers(x)[..., :h, :w]


def depthwise(c: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(k // 2), nn.Conv2d(c, c, k, groups=c))


def separable_relu(cin: int, cout: int) -> nn.Sequential:
    """A depthwise 3x3 then a pointwise 1x1 (MobileNet's factorisation): 9 + cout instead of 9 x cout
    multiply-adds per input channel and pixel."""
    return nn.Sequential(depthwise(cin), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))


class SeparableResidualBlock(nn.Module):
    """A residual block of two separable convolutions, without normalization (see LiteNet)."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(separable_relu(c, c), depthwise(c), nn.Conv2d(c, c, 1))

    def forward(self, x):
        return x + self.body(x)


class SeparableUpsample(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = separable_relu(cin, cout)  # its depthwise reflection pad goes unused, as in Upsample

    def forward(self, x):
        (_, depthwise), pointwise, relu = self.conv
        return relu(pointwise(upsampled_conv(x, depthwise)))


class LiteNet(nn.Module):
    """RGB in [0, 1] -> RGB in [0, 1], same size, with FilterNet's widths at 1/2, 1/4 and 1/8 resolution.

    Chosen by training candidates on The Great Wave (500 steps, benchmarks/results/quality.md, "lite"): a
    pixel-unshuffle stem and head painted 4x4 blocks and stripes; without a skip the photo's shapes dissolved
    (SSIM 0.41 against full's 0.53); with skips at 1/2 and 1/4 they survived too well (SSIM 0.72, a tint); one
    skip at 1/4 kept the shapes and the strokes (SSIM 0.56).

    Only the encoder normalizes. With instance norm in the residual blocks and upsamplings as well (the first
    lite design), every trained filter painted dark "droplets": the network learned a spike of 40-75 (in
    pre-sigmoid units; full filters stay under 6) that dominates the next norm's statistics, the artefact
    StyleGAN2 traced to normalization (Karras et al. 2020). Without those norms the spikes and drops are gone
    ("lite droplets" in quality.md)."""

    def __init__(self, cfg: NetConfig | None = None):
        super().__init__()
        cfg = cfg or NetConfig(arch="lite")
        c1, c2, c3 = cfg.channels
        self.encoder = nn.Sequential(conv_norm_relu(3, c1, 3, 2), conv_norm_relu(c1, c2, 3, 2),
                                     conv_norm_relu(c2, c3, 3, 2))
        self.residuals = nn.Sequential(*[SeparableResidualBlock(c3) for _ in range(cfg.res_blocks)])
        self.decoder = nn.Sequential(SeparableUpsample(c3, c2), SeparableUpsample(c2, c1), Upsample2x(),
                                     conv(c1, 3, 3))

    multiple = 8  # three stride-2 steps
    least_side = 16  # 2x2 at 1/8 for the reflection pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _padded(self, x)

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """The network on a padded input: the encoder's 1/4-resolution features skip the residual blocks and
        are added back on the way up, so the photo's shapes need not squeeze through 1/8 resolution."""
        quarter = self.encoder[1](self.encoder[0](x))
        y = self.decoder[0](self.residuals(self.encoder[2](quarter))) + quarter
        return upsampled_conv(self.decoder[1](y), self.decoder[3][1])  # decoder[2:]: upsample, head


class Upsample2x(nn.Module):
    """Nearest x2. LiteNet.layers folds it into the head's convolution (upsampled_conv); it stays in the decoder
    so that the head's weights keep their names in filter files."""

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest")


ARCHS = {"full": FilterNet, "lite": LiteNet}


def build(cfg: NetConfig) -> nn.Module:
    """The network the config names (full or lite), with fresh random weights."""
    return ARCHS[cfg.arch](cfg)


def config_from_card(arch: dict) -> NetConfig:
    """The NetConfig a card's `architecture` records (cards before the lite architecture say nothing: full)."""
    if not isinstance(arch, dict):
        raise TypeError(f"architecture is a JSON {type(arch).__name__}, not an object")
    return NetConfig(arch=arch.get("arch", "full"), channels=tuple(arch["channels"]),
                     res_blocks=arch["res_blocks"], kernel_outer=arch.get("kernel_outer", NetConfig.kernel_outer))


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
