"""Training speed: seconds per step of the 2016 baseline recipe and of rotoscope's training step.

Rows (median of --steps timed steps after one warm-up step; the same fixed batch of random "photos" every step,
so data loading is not timed):
  BASELINE         pytorch/examples fast_neural_style: TransformerNet (benchmarks/bench_apply.py) in fp32 eager,
                   contiguous layout, loss = content (relu2_2 MSE) + style (Gram MSE at relu1_2..relu4_3, Gram
                   divided by C*H*W) with weights 1e5 / 1e10, Adam lr 1e-3; the photos' features are computed
                   without no_grad, as there
  rotoscope fp32   rotoscope.train.train_step itself, set up as train() sets it up (train.new_network):
  rotoscope bf16   FilterNet(NetConfig()) in channels_last (random weights), losses.perceptual_loss with the
                   default TrainConfig loss weights and colour term, under devices.autocast at that precision,
                   backward through the GradScaler (a no-op but in fp16), clip_grad_norm_(1e3), Adam; the crops
                   come from train.FixedBatch. bf16 only where this CPU computes it natively, unless
                   --all-precisions; the precision `auto` picks here is marked "<- auto".
  ... torch norm   the same step with PyTorch's own instance_norm in training, as rotoscope trained until
                   2026-12-06 (it copies channels_last tensors to NCHW and back; network._TrainingInstanceNorm
                   does not)
  ... upsampled    the same step with the upsamplings convolving the nearest x2 tensor, as rotoscope trained until
                   2026-12-06 (network.upsampled_conv computes them at the small resolution)
  ... last layer plain   the same step with the network's last layer in its plain form (network.outer_conv
                   computes it at half resolution in training since 2026-12-06)
  ... one-thread sorts   the same step with the sliced terms' sorts on one thread (losses.sort_rows shares them
                   among torch's threads since 2026-12-06)
  ... torch.sort for bf16   the bf16 step with the sliced terms' bf16 projections sorted by torch.sort
                   (losses.sort_last sorts them with NumPy, as float32, since 2026-12-06)
Both use rotoscope's VGG16 layout from backbones.py (average pooling; the examples use max pooling, which costs
the same) with the --backbone weights: `random` needs no download, and the weights do not change the timing.
The rows marked "default loss" run rotoscope's step on the backbone `--backbone auto` gives training here
(EfficientNet-Lite0 without ImageNet VGG16 weights): the step a user's `rotoscope train` takes.

  python benchmarks/bench_train.py                       # 256 px, batch 4, 5 timed steps
  python benchmarks/bench_train.py --steps 1 --size 64   # a quick check
  ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_train.py --all-precisions  # AVX2 class
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import rotoscope  # noqa: E402,F401  (first: NumPy's kernels as `rotoscope train` has them, numpy_kernels.py)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench_apply import TransformerNet, device_types_in, in_form, in_upsampled_tensor, machine  # noqa: E402
from rotoscope.devices import median_seconds as median_s  # noqa: E402  (bench_gpu.py and sort.py import it from here)


def baseline_step_fn(vgg, art: torch.Tensor, photos: torch.Tensor, device=torch.device("cpu")):
    """One training step of pytorch/examples fast_neural_style (neural_style.py, train()), on `device`."""
    style_layers = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    content_weight, style_weight = 1e5, 1e10

    def gram_matrix(y):
        b, ch, h, w = y.size()
        features = y.view(b, ch, w * h)
        return features.bmm(features.transpose(1, 2)) / (ch * h * w)

    vgg, art, photos = vgg.to(device), art.to(device), photos.to(device)
    transformer = TransformerNet().to(device).train()
    optimizer = torch.optim.Adam(transformer.parameters(), 1e-3)
    with torch.no_grad():
        style = vgg(art.repeat(photos.shape[0], 1, 1, 1), style_layers)
    gram_style = [gram_matrix(style[k]) for k in style_layers]

    def step():
        optimizer.zero_grad()
        y = transformer(photos)
        features_y = vgg(y, style_layers)
        features_x = vgg(photos, style_layers)
        content_loss = content_weight * F.mse_loss(features_y["relu2_2"], features_x["relu2_2"])
        style_loss = 0.0
        for k, gm_s in zip(style_layers, gram_style):
            style_loss += F.mse_loss(gram_matrix(features_y[k]), gm_s[: photos.shape[0]])
        total = content_loss + style_weight * style_loss
        total.backward()
        optimizer.step()
        return float(total.detach())
    return step


def rotoscope_step_fn(backbone, art: torch.Tensor, photos: torch.Tensor, precision: str,
                      device=torch.device("cpu")):
    """rotoscope.train.train_step, the step train() runs (see the module docstring), on `device`."""
    import dataclasses
    import itertools

    from rotoscope.config import TrainConfig
    from rotoscope.losses import LossWeights, style_target
    from rotoscope.train import FixedBatch, new_network, train_step

    cfg = TrainConfig().replace(precision=precision, init="random", batch=photos.shape[0])
    backbone = dataclasses.replace(backbone, net=backbone.net.to(device))
    target = style_target(backbone, art.to(device), cfg.color_match)
    if precision == "bf16":  # as train.py does: the frozen backbone held in bf16 once
        import copy

        backbone = dataclasses.replace(backbone, net=copy.deepcopy(backbone.net).to(torch.bfloat16))
    weights = LossWeights.of(cfg)
    net, opt, scaler, _init = new_network(cfg, device, log=lambda line: None)
    net.train()
    data = FixedBatch(photos.to(device).contiguous(memory_format=torch.channels_last))  # laid out once, on the device
    steps = itertools.count()

    def step():
        record = train_step(next(steps), cfg, net, opt, scaler, data, backbone, target, weights, device)
        return record["train"]["total"]
    return step


def with_library_instance_norm(step):
    """The step with training's instance norms computed by PyTorch's instance_norm (rotoscope before 2026-12-06)."""
    from torch import nn

    from rotoscope import network

    ours = network.InstanceNorm.forward

    def library(self, x):
        return nn.InstanceNorm2d.forward(self, x) if self.training else ours(self, x)

    def patched():
        network.InstanceNorm.forward = library
        try:
            return step()
        finally:
            network.InstanceNorm.forward = ours
    return patched


def last_layer_plain():
    """Within: training computes FilterNet's last layer in its plain form (rotoscope before 2026-12-06)."""
    from rotoscope import network

    return device_types_in(network.HALF_RESOLUTION_LAST_LAYER, set())


def one_thread_sorts():
    """Within: the sliced terms sort on one thread (rotoscope before 2026-12-06)."""
    from rotoscope import losses

    return mock.patch.object(losses, "_PARALLEL_SORT_MIN", 1 << 62)


def torch_sorts_half():
    """Within: the bf16 and fp16 projections of the sliced terms are sorted by torch.sort (rotoscope before
    2026-12-06: losses.sort_last took NumPy's sort for float32 only)."""
    from rotoscope import losses

    return mock.patch.object(losses, "_NUMPY_SORTED", (torch.float32,))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per row (the median is reported)")
    ap.add_argument("--size", type=int, default=256, help="square crop size in pixels")
    ap.add_argument("--batch", type=int, default=4, help="crops per step")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--all-precisions", action="store_true", help="a bf16 row even where bf16 is emulated (slow)")
    ap.add_argument("--backbone", default="random", help="VGG16 weights for both losses: random (no download), "
                    "vgg16 or vgg16-hed if present; the timing does not depend on them")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from rotoscope.backbones import load_backbone
    from rotoscope.config import NetConfig

    print(machine(torch.get_num_threads()))
    print(f"{args.size} px crops, batch {args.batch}; median of {args.steps} step(s) after 1 warm-up; "
          f"VGG16 backbone: {args.backbone}; rotoscope net {NetConfig()}\n")
    torch.manual_seed(0)
    photos = torch.rand(args.batch, 3, args.size, args.size)
    art = torch.rand(1, 3, args.size, args.size)
    backbone = load_backbone(args.backbone)
    from rotoscope.devices import claims_native_bf16, resolve_precision

    auto = resolve_precision("auto", torch.device("cpu")).value
    default = load_backbone("auto")
    rows = [("BASELINE TransformerNet fp32 eager + VGG16 loss", lambda: baseline_step_fn(backbone.net, art, photos))]
    for precision in ("fp32", "bf16"):
        if precision == "bf16" and not (args.all_precisions or claims_native_bf16()):
            continue
        mark = "  <- auto" if precision == auto else ""
        rows.append((f"rotoscope train step {precision}, VGG16 loss{mark}",
                     lambda p=precision: rotoscope_step_fn(backbone, art, photos, p)))
        rows.append((f"rotoscope {precision}, default loss ({default.name}){mark}",
                     lambda p=precision: rotoscope_step_fn(default, art, photos, p)))
        rows.append((f"rotoscope {precision}, default loss, torch norm",
                     lambda p=precision: with_library_instance_norm(rotoscope_step_fn(default, art, photos, p))))
        rows.append((f"rotoscope {precision}, default loss, upsampled",
                     lambda p=precision: in_upsampled_tensor(rotoscope_step_fn(default, art, photos, p))))
        rows.append((f"rotoscope {precision}, default loss, last layer plain",
                     lambda p=precision: in_form(rotoscope_step_fn(default, art, photos, p), last_layer_plain)))
        rows.append((f"rotoscope {precision}, default loss, one-thread sorts",
                     lambda p=precision: in_form(rotoscope_step_fn(default, art, photos, p), one_thread_sorts)))
        if precision == "bf16":
            rows.append(("rotoscope bf16, default loss, torch.sort for bf16",
                         lambda: in_form(rotoscope_step_fn(default, art, photos, "bf16"), torch_sorts_half)))
    head = f"{'variant':<58} {'s/step':>8} {'it/s':>7} {'x base':>7}"
    print(head)
    print("-" * len(head))
    base = None
    for label, make in rows:
        torch.manual_seed(0)
        s = median_s(make(), args.steps)
        base = base or s
        print(f"{label:<58} {s:8.3f} {1 / s:7.2f} {base / s:7.2f}", flush=True)
    print("\nx base = baseline s/step / s/step (higher is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
