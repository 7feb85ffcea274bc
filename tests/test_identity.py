"""Identity initialisation and progressive resizing: the fast recipe's two changes to training."""


import numpy as np
import pytest
import torch
from PIL import Image

from rotoscope import identity
from rotoscope.config import NetConfig, TrainConfig
from rotoscope.network import FilterNet, build
from rotoscope.train import init_network, size_at, train

TINY = NetConfig(channels=(8, 16, 16), res_blocks=1, kernel_outer=3)
SHIPPED = sorted(identity.WEIGHTS_DIR.glob("identity-*.safetensors")) if identity.WEIGHTS_DIR.is_dir() else []


def photos_folder(tmp_path, n=3, size=48):
    folder = tmp_path / "photos"
    folder.mkdir()
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        arr = np.stack([np.sin(6 * xx + i) * 0.5 + 0.5, yy, np.cos(4 * yy * xx + i) * 0.5 + 0.5], 2)
        Image.fromarray((arr * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_shape_key_names_every_field_and_differs_between_shapes():
    key = identity.shape_key(NetConfig())
    assert key.startswith("c" + ".".join(map(str, NetConfig().channels))) and "res_blocks5" in key
    assert identity.shape_key(TINY) != key
    assert identity.identity_path(TINY).name == f"identity-{identity.shape_key(TINY)}.safetensors"
    # the full network's files keep their names from before the lite one; lite has no outer kernel to name
    assert identity.shape_key(NetConfig()) == "c16.32.64-kernel_outer9-res_blocks5"
    lite = identity.shape_key(NetConfig(arch="lite"))
    assert lite == "lite-c16.32.64-res_blocks5" == identity.shape_key(NetConfig(arch="lite", kernel_outer=3))


def test_both_architectures_ship_identity_weights_for_their_default_shape():
    names = {p.name for p in SHIPPED}
    for arch in ("full", "lite"):
        assert identity.identity_path(NetConfig(arch=arch)).name in names


def test_pretraining_learns_to_give_the_input_back(tmp_path):
    folder = photos_folder(tmp_path)
    torch.manual_seed(0)
    untrained = FilterNet(TINY).eval()
    net, meta = identity.pretrain_identity(TINY, folder, steps=80, size=32, batch=4, lr=5e-3, log=lambda s: None)
    x = torch.from_numpy(np.asarray(Image.open(folder / "p1.png"), np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        before, after = float((untrained(x) - x).abs().mean()), float((net(x) - x).abs().mean())
    assert after < 0.5 * before
    assert meta["check_l1"] < 0.5 * before
    path = identity.save_identity(net, meta, tmp_path / "id.safetensors")
    fresh = FilterNet(TINY)
    from safetensors.torch import load_file

    state = load_file(str(path))
    assert all(v.dtype == torch.float16 for v in state.values())  # shipped small
    fresh.load_state_dict(state)
    assert fresh.encoder[0][0][1].weight.dtype == torch.float32


def test_init_falls_back_to_random_when_no_weights_ship_for_the_shape():
    cfg = TrainConfig().replace(channels=(8, 16, 16), res_blocks=1, kernel_outer=3)
    info = init_network(FilterNet(cfg.net), cfg, log=lambda s: None)
    assert info["kind"] == "random" and "note" in info
    assert init_network(FilterNet(cfg.net), cfg.replace(init="random"))["kind"] == "random"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_identity_network_reproduces_a_photo(path):
    from safetensors import safe_open
    import json

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()[identity.META_KEY])
    net_cfg = NetConfig(**{k: tuple(v) if k == "channels" else v for k, v in meta["net"].items()})
    net = build(net_cfg).eval()
    assert identity.load_identity(net, net_cfg)["kind"] == "identity"
    yy, xx = np.mgrid[0:61, 0:77] / 77
    x = torch.from_numpy(np.stack([xx, yy, (xx + yy) / 2])).float()[None]
    torch.manual_seed(0)
    random_net = build(net_cfg).eval()

    def lum(t):
        return (0.299 * t[:, 0] + 0.587 * t[:, 1] + 0.114 * t[:, 2]).flatten().numpy()

    with torch.no_grad():
        y, r = net(x), random_net(x)
    # the shapes come back (luminance follows the input closely: measured 0.97; random weights: 0.17) ...
    assert np.corrcoef(lum(y), lum(x))[0, 1] > 0.9 > 0.5 > abs(np.corrcoef(lum(r), lum(x))[0, 1])
    # ... and the pixels are far closer than random weights give (measured L1 0.13 vs 0.26). Not exact: instance
    # normalisation discards each picture's overall colour, so no network of this shape is a perfect copier.
    assert float((y - x).abs().mean()) < 0.6 * float((r - x).abs().mean())


def test_progressive_resizing_grows_crops_then_holds_the_size():
    cfg = TrainConfig().replace(size=128, size_start=64, size_ramp=0.5, steps=100)
    sizes = [size_at(cfg, s) for s in range(100)]
    assert sizes[0] == 64 and sizes[-1] == 128 and sizes[50] == 128
    assert sizes == sorted(sizes) and all(s % 8 == 0 for s in sizes)
    assert size_at(cfg.replace(size_start=0), 0) == 128


def test_training_records_its_init_in_the_card(tmp_path):
    folder = photos_folder(tmp_path)
    art = tmp_path / "art.png"
    Image.fromarray(np.full((40, 40, 3), (200, 60, 30), np.uint8)).save(art)
    cfg = TrainConfig().replace(channels=(8, 16, 16), res_blocks=1, size=32, size_start=16, steps=4,
                                backbone="random", holdout=0)
    f = train(art, "tiny", folder, cfg, out=tmp_path / "t.safetensors", log=lambda s: None, progress=False)
    assert f.card["init"]["kind"] == "random"
    assert f.card["training"]["size_start"] == 16
