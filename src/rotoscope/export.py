"""A filter for other runtimes: ONNX export, and the onnxruntime engine behind `rotoscope apply --engine onnx`.

The exported graph takes `image` (N, 3, H, W) float32 RGB in [0, 1] of any batch, height and width, and returns
`stylized`, the same shape. FilterNet pads its input to a multiple of 4 (LiteNet 8; and a minimum side) with Python
arithmetic on the shape, which a traced graph would freeze to the example's size; here the same padding is
written as index gathers computed from the runtime shape, so one graph serves every size, tiny ones included.
The filter's card travels in the model's metadata_props (key `rotoscope.card`, JSON).

onnx and onnxruntime are optional: `pip install -e ".[onnx]"`.
"""

from __future__ import annotations

import copy
import io
import json
import os
import threading
import warnings
import weakref
from pathlib import Path

import torch
from torch import nn

from .errors import RotoscopeError
from .filter import CARD_KEY, Filter
from .network import FilterNet
from .paths import atomic_path

OPSET = 17
MIN_OPSET = 13  # the lowest `rotoscope export --opset` has accepted
_EXPORT_LOCK = threading.Lock()
INSTALL_HINT = 'pip install -e ".[onnx]"'


def require(module: str):
    """Import onnx or onnxruntime, or fail with one line saying how to install them."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise RotoscopeError(f"ONNX support needs the optional packages onnx and onnxruntime ({module} is missing): "
                             f"{INSTALL_HINT}") from None


# ---------------------------------------------------------------- the exportable network


class StatNorm(nn.Module):
    """InstanceNorm2d (eval, affine) whose statistics are measured ('measure': also reported) or given ('frozen').

    The tiled apply path (stylize.py) holds one image's statistics fixed across its tiles; these two modes let
    an ONNX graph do the same: one graph measures them, another takes them as inputs.
    """

    def __init__(self, norm: nn.InstanceNorm2d, mode: str, shared: dict):
        super().__init__()
        self.weight, self.bias, self.eps, self.mode, self.io = norm.weight, norm.bias, norm.eps, mode, shared

    def forward(self, x):
        if self.mode == "frozen":
            mean, var = self.io["stats"].pop(0), self.io["stats"].pop(0)
        else:
            mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
            self.io["stats"] += [mean, var]
        shape = (1, -1, 1, 1)
        return (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps) * self.weight.view(shape) \
            + self.bias.view(shape)


def _pad_index(n: torch.Tensor, target: torch.Tensor, reflect: torch.Tensor) -> torch.Tensor:
    """Source row for each of `target` rows: 0..n-1, then reflected (or, for tiny inputs, the last row repeated)."""
    i = torch.arange(target)
    return torch.where(reflect, torch.where(i < n, i, 2 * (n - 1) - i), torch.minimum(i, n - 1))


class ExportNet(nn.Module):
    """FilterNet's forward with shape-independent padding. mode: plain | measure (returns norm statistics too) |
    frozen (takes them as extra inputs, in norm order: mean, var, mean, var ...)."""

    def __init__(self, net: FilterNet, mode: str = "plain"):
        super().__init__()
        net = copy.deepcopy(net).float().eval().to(memory_format=torch.contiguous_format).requires_grad_(False)
        self.io: dict = {"stats": []}
        self.mode = mode
        if mode != "plain":
            for parent in list(net.modules()):
                for name, child in parent.named_children():
                    if isinstance(child, nn.InstanceNorm2d):
                        setattr(parent, name, StatNorm(child, mode, self.io))
        self.net, self.least, self.multiple = net, net.least_side, net.multiple

    def forward(self, x: torch.Tensor, *stats: torch.Tensor):
        shape = torch._shape_as_tensor(x)  # a tensor, so the graph computes sizes at run time
        h, w = shape[2], shape[3]
        m = self.multiple
        th = torch.clamp((h + m - 1) // m * m, min=self.least)
        tw = torch.clamp((w + m - 1) // m * m, min=self.least)
        reflect = (h > th - h) & (w > tw - w)  # as FilterNet: reflect needs pad < size, else replicate
        x = x.index_select(2, _pad_index(h, th, reflect)).index_select(3, _pad_index(w, tw, reflect))
        self.io["stats"] = list(stats)
        y = self.net.layers(x)
        y = torch.sigmoid(y.index_select(2, torch.arange(h)).index_select(3, torch.arange(w)))
        if self.mode == "measure":
            out = (y, *self.io["stats"])
            self.io["stats"] = []
            return out
        return y

    def norm_channels(self) -> list[int]:
        return [m.weight.numel() for m in self.net.modules() if isinstance(m, (nn.InstanceNorm2d, StatNorm))]


def onnx_bytes(net: FilterNet, mode: str = "plain", opset: int = OPSET) -> bytes:
    """The network as a serialized ONNX model with dynamic batch, height and width."""
    require("onnx")
    model = ExportNet(net, mode).eval()
    names = ["image"]
    outputs = ["stylized"]
    norms = model.norm_channels()
    stats = []
    if mode == "frozen":
        for i, c in enumerate(norms):
            stats += [torch.zeros(c), torch.ones(c)]
            names += [f"norm{i}_mean", f"norm{i}_var"]
    if mode == "measure":
        for i in range(len(norms)):
            outputs += [f"norm{i}_mean", f"norm{i}_var"]
    dynamic = {"image": {0: "batch", 2: "height", 3: "width"}, "stylized": {0: "batch", 2: "height", 3: "width"}}
    buf = io.BytesIO()
    # torch.onnx.export keeps global state and refuses to run twice at once (the server paints in threads)
    with _EXPORT_LOCK, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes: not for users
        # dynamo=False: the TorchScript exporter needs no onnxscript and handles the shape arithmetic above
        torch.onnx.export(model, (torch.rand(1, 3, 37, 29), *stats), buf, input_names=names, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True, dynamo=False)
    return buf.getvalue()


def export_onnx(filt: Filter, path: str | os.PathLike, opset: int = OPSET) -> Path:
    """Write the filter as an ONNX model (atomically), its card in the metadata. Returns the path."""
    onnx = require("onnx")
    path = Path(path)
    if path.is_dir():
        raise RotoscopeError(f"{path} is a folder: give a file name ending in .onnx")
    if path.suffix.lower() != ".onnx":
        raise RotoscopeError(f"{path}: an ONNX model's file name ends in .onnx")
    from torch.onnx import _constants

    top = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", OPSET)  # the exporter export_onnx uses
    if not MIN_OPSET <= opset <= top:
        raise RotoscopeError(f"opset {opset}: this torch exports opsets {MIN_OPSET} to {top}")
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise RotoscopeError(f"cannot write {path}: {above} is not a folder")
    model = onnx.load_from_string(onnx_bytes(filt.net, "plain", opset))
    meta = {CARD_KEY: json.dumps(filt.card, sort_keys=True), "rotoscope.filter": filt.name,
            "rotoscope.card_hash": filt.card_hash, "rotoscope.precision": "fp32", "rotoscope.io": "image (N,3,H,W) float32 RGB in [0,1] -> "
            "stylized, same shape"}
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name = "rotoscope"
    try:
        with atomic_path(path) as tmp:
            onnx.save(model, str(tmp))
    except OSError as e:
        raise RotoscopeError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def read_onnx_card(path: str | os.PathLike) -> dict:
    """The filter card stored in an exported model."""
    onnx = require("onnx")
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if CARD_KEY not in props:
        raise RotoscopeError(f"{path} is not a rotoscope ONNX export (no card)")
    return json.loads(props[CARD_KEY])


# ---------------------------------------------------------------- the onnxruntime engine


class OnnxRunner:
    """Runs a filter with onnxruntime (CPU, fp32); same interface as stylize.TorchRunner.

    runner(x) -> stylized; runner(x, stats) uses the given norm statistics (for tiles); runner.measure(x) -> the
    statistics of x. The plain graph is built on first use; the two tiling graphs only when an image needs tiles.
    """

    precision = "fp32"

    def __init__(self, net: FilterNet, threads: int | None = None, weak: bool = False):
        self.ort = require("onnxruntime")
        self._net = weakref.ref(net) if weak else (lambda: net)  # weak: the cache below must not keep nets alive
        self.threads = threads or torch.get_num_threads()
        self.sessions: dict = {}

    def session(self, mode: str):
        if mode not in self.sessions:
            opts = self.ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            # tiles of a big picture ("frozen") come in several shapes and the arena keeps a block for each: a
            # 5120x2380 photo peaked at 3.7 GB with it, 2.7 GB without it for the tiles (12% slower there; README,
            # "Speed"); frames of one size ("plain", video) keep it: without, the lite's 640x360 frame took 51 ms,
            # not 26
            opts.enable_cpu_mem_arena = mode != "frozen"
            self.sessions[mode] = self.ort.InferenceSession(onnx_bytes(self._net(), mode), opts,
                                                            providers=["CPUExecutionProvider"])
        return self.sessions[mode]

    def __call__(self, x: torch.Tensor, stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        feed = {"image": x.float().contiguous().cpu().numpy()}
        if stats is None:
            return torch.from_numpy(self.session("plain").run(["stylized"], feed)[0])
        return torch.from_numpy(self.session("frozen").run(["stylized"], {**feed, **stats_feed(stats)})[0])

    def measure(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = self.session("measure").run(None, {"image": x.float().contiguous().cpu().numpy()})[1:]
        return [(torch.from_numpy(out[i]), torch.from_numpy(out[i + 1])) for i in range(0, len(out), 2)]


def stats_feed(stats: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """Frozen norm statistics as the 'frozen' graph's inputs (onnxruntime and OpenVINO feed them alike)."""
    feed = {}
    for i, (mean, var) in enumerate(stats):
        feed[f"norm{i}_mean"], feed[f"norm{i}_var"] = mean.float().numpy(), var.float().numpy()
    return feed


_RUNNERS: "weakref.WeakKeyDictionary[FilterNet, OnnxRunner]" = weakref.WeakKeyDictionary()


def onnx_runner(net: FilterNet) -> OnnxRunner:
    """One runner per network (a folder of images exports once), dropped with the network."""
    runner = _RUNNERS.get(net)
    if runner is None or runner.threads != torch.get_num_threads():
        runner = _RUNNERS[net] = OnnxRunner(net, weak=True)
    return runner
