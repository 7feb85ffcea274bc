"""The filter network: a feed-forward image transformer (Johnson et al. 2016) with the field's later fixes.

Fixes over the 2016 layout: reflection padding (no dark borders), instance norm (Ulyanov et al. 2016, the
single biggest quality fix), nearest-neighbour upsampling followed by a convolution instead of a transposed
convolution (no checkerboard, Odena et al. 2016). Inputs of any width and height are padded to a multiple of 4
and the output is cropped back, so a 333x101 photo comes back 333x101.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import NetConfig


class InstanceNorm(nn.InstanceNorm2d):
    """Instance norm, computed as a group norm with one channel per group: the same numbers, but PyTorch's CPU
    kernel for group norm works on channels_last and bf16 tensors directly, where instance_norm copies them to
    NCHW and back (a quarter of a 720p frame's time, benchmarks/bench_apply.py). Inference only: in training
    under bf16 autocast its backward pass was 1.8x slower than instance norm's (our trial). With frozen
    statistics (stylize.py's tiles) it is eval-mode batch norm: the same formula, 4x faster on channels_last bf16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or torch.onnx.is_in_onnx_export():  # ONNX has its own InstanceNormalization
            return super().forward(x)
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


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a convolution: the checkerboard-free replacement for a transposed conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv_norm_relu(cin, cout, 3)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # a multiple of 4 (two stride-2 steps), and at least least_side
        least = self.least_side
        ph, pw = max(least, h + (-h) % 4) - h, max(least, w + (-w) % 4) - w
        if ph or pw:
            # reflect needs pad < size; replicate covers tiny images too
            mode = "reflect" if h > ph and w > pw else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        y = self.decoder(self.residuals(self.encoder(x)))
        # A sigmoid keeps outputs in range for the loss network without clamping away gradients.
        return torch.sigmoid(y[..., :h, :w])


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
