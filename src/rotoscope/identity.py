"""Identity initialisation: a FilterNet pre-trained to give back its input, shipped so training starts from it.

Why: from random weights the first few hundred steps of every training run only relearn how to pass the photo
through (grey mush first, shapes later). Starting from a network that already reproduces the photo, style
training only has to bend it towards the artwork, which on 2 CPU cores is the difference between minutes and
an hour. The weights depend only on the network shape, not on any artwork, so one file per shape ships in
rotoscope/weights/ (fp16: half the size, the network is run in fp32/bf16 after loading).

Make one:  python -m rotoscope.identity --photos FOLDER [--arch lite --channels 32,64,128 --res-blocks 5 --steps 600]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from .config import NetConfig
from .data import load_photos
from .network import FilterNet, build
from .paths import atomic_path

WEIGHTS_DIR = Path(__file__).parent / "weights"
META_KEY = "rotoscope.identity"


def shape_key(net_cfg: NetConfig) -> str:
    """A file-name-safe description of the network shape, e.g. c32.64.128-kernel_outer9-res_blocks5 (full, named
    as before the lite architecture existed) or lite-c16.32.64-res_blocks5 (lite has no outer kernel)."""
    d = dataclasses.asdict(net_cfg)
    arch = d.pop("arch")
    if arch != "full":
        d.pop("kernel_outer")
    parts = []
    for k, v in sorted(d.items()):
        parts.append("c" + ".".join(map(str, v)) if k == "channels" else f"{k}{v}")
    key = "-".join(sorted(parts, key=lambda p: (not p.startswith("c"), p)))
    return key if arch == "full" else f"{arch}-{key}"


def identity_path(net_cfg: NetConfig) -> Path:
    return WEIGHTS_DIR / f"identity-{shape_key(net_cfg)}.safetensors"


def load_identity(net: FilterNet, net_cfg: NetConfig) -> dict | None:
    """Load the shipped identity weights for this shape into `net`; what the card records, or None if none ship."""
    path = identity_path(net_cfg)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
        state = {k: f.get_tensor(k) for k in f.keys()}
    net.load_state_dict(state)  # copies fp16 into the fp32 parameters
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"kind": "identity", "file": path.name, "sha256": digest, "pretrain": meta}


def pretrain_identity(net_cfg: NetConfig, photos=None, steps: int = 600, size: int = 128, batch: int = 8,
                      lr: float = 2e-3, seed: int = 0, log=print) -> tuple[FilterNet, dict]:
    """Train a FilterNet to reproduce random photo crops (L1 in pixels, cosine learning rate)."""
    torch.manual_seed(seed)
    data = load_photos(photos, size, 0.0, warn=log)
    net = build(net_cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    started = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + torch.cos(torch.tensor(step / steps * torch.pi)).item())
        x = data.batch(step, batch, size, seed)
        # colour jitter (channel gains, channel swap) so every hue is passed through, not just the photos'
        x = (x * (0.6 + 0.8 * torch.rand(batch, 3, 1, 1, generator=g))).clamp(0, 1)
        if step % 2:
            x = x[:, torch.randperm(3, generator=g)]
        y = net(x.contiguous(memory_format=torch.channels_last))
        loss = F.l1_loss(y, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"identity step {step + 1}/{steps}  L1 {loss.item():.4f}  ({time.perf_counter() - started:.0f} s)")
    net.eval()
    with torch.no_grad():
        held = data.batch(10_000_019, 8, size, seed + 1)
        err = float(F.l1_loss(net(held), held))
    meta = {"steps": steps, "size": size, "batch": batch, "lr": lr, "seed": seed, "photos": data.source,
            "final_l1": round(float(loss.detach()), 5), "check_l1": round(err, 5),
            "seconds": round(time.perf_counter() - started, 1), "net": dataclasses.asdict(net_cfg)}
    return net, meta


def save_identity(net: FilterNet, meta: dict, path: Path) -> Path:
    state = {k: v.detach().half().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", default=None, help="folder of photos (default: scikit-image's sample photos)")
    p.add_argument("--arch", default=None, choices=("full", "lite"))
    p.add_argument("--channels", default=None, help="widths, e.g. 32,64,128 (default: NetConfig's)")
    p.add_argument("--res-blocks", type=int, default=None)
    p.add_argument("--kernel-outer", type=int, default=None)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--out", default=None, help="file to write (default: the shipped path for this shape)")
    a = p.parse_args(argv)
    over = {"arch": a.arch, "channels": tuple(int(c) for c in a.channels.split(",")) if a.channels else None,
            "res_blocks": a.res_blocks, "kernel_outer": a.kernel_outer}
    net_cfg = dataclasses.replace(NetConfig(), **{k: v for k, v in over.items() if v is not None})
    net, meta = pretrain_identity(net_cfg, a.photos, a.steps, a.size)
    path = save_identity(net, meta, Path(a.out) if a.out else identity_path(net_cfg))
    print(f"wrote {path}: held-out L1 {meta['check_l1']} after {meta['steps']} steps in {meta['seconds']} s")


if __name__ == "__main__":
    main()
