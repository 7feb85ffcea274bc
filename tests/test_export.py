"""ONNX export and the onnxruntime engine: same pictures as PyTorch, any size, the card inside, one-line errors."""

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_one_line_error, make_scene, rotoscope

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from rotoscope.export import OnnxRunner, export_onnx, read_onnx_card  # noqa: E402
from rotoscope.filter import CARD_KEY, load_filter  # noqa: E402
from rotoscope.stylize import TorchRunner, stylize_tensor  # noqa: E402


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_onnx_matches_pytorch_fp32_on_odd_sizes(tiny_filter, tmp_path):
    filt = load_filter("tiny")
    path = export_onnx(filt, tmp_path / "tiny.onnx")
    sess = session(path)
    torch.manual_seed(1)
    # one graph for every size: odd, not a multiple of 4, tiny (replicate padding), and a batch of two
    for shape in [(1, 3, 37, 29), (2, 3, 29, 37), (1, 3, 3, 5), (1, 3, 64, 48)]:
        x = torch.rand(shape)
        with torch.no_grad():
            ref = filt.net(x)
        got = sess.run(["stylized"], {"image": x.numpy()})[0]
        assert got.shape == shape
        assert np.abs(got - ref.numpy()).max() < 1e-3, shape


def test_the_card_travels_in_the_metadata(tiny_filter, tmp_path):
    filt = load_filter("tiny")
    path = export_onnx(filt, tmp_path / "sub" / "tiny.onnx")
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props[CARD_KEY]) == filt.card == read_onnx_card(path)
    assert props["rotoscope.card_hash"] == filt.card_hash
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["tiny.onnx"]  # nothing half-written left behind


def test_cli_export_end_to_end(tiny_filter, tmp_path, capsys, monkeypatch):
    out = tmp_path / "models" / "t.onnx"
    code, _, err = rotoscope("export", "tiny", "--format", "onnx", "-o", out, capsys=capsys)
    assert code == 0, err
    assert f"wrote {out}" in err
    x = np.random.default_rng(0).random((1, 3, 37, 29), dtype=np.float32)
    y = session(out).run(None, {"image": x})[0]
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    monkeypatch.chdir(tmp_path)  # default output: NAME.onnx in the working folder
    code, _, err = rotoscope("export", "tiny", capsys=capsys)
    assert code == 0 and (tmp_path / "tiny.onnx").is_file(), err


def test_cli_export_bad_input_is_one_line(tiny_filter, tmp_path, capsys, monkeypatch):
    assert_one_line_error(*rotoscope("export", "tinyy", "-o", tmp_path / "x.onnx", capsys=capsys),
                          "unknown filter 'tinyy'", "did you mean tiny")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_one_line_error(*rotoscope("export", "tiny", "-o", blocker / "x.onnx", capsys=capsys), "cannot write")
    assert_one_line_error(*rotoscope("export", "tiny", "-o", tmp_path, capsys=capsys), "is a folder")
    assert_one_line_error(*rotoscope("export", "tiny", "--format", "tflite", capsys=capsys), "unknown export format")
    assert_one_line_error(*rotoscope("export", "tiny", "-o", tmp_path / "x.txt", capsys=capsys), "ends in .onnx")
    for opset in ("12", "99"):  # torch's own error here was thousands of lines of graph and a traceback
        assert_one_line_error(*rotoscope("export", "tiny", "--opset", opset, "-o", tmp_path / "x.onnx",
                                         capsys=capsys), f"opset {opset}: this torch exports opsets 13 to")
    assert not list(tmp_path.glob("x.*"))
    assert not [p for p in tmp_path.rglob("*") if "partial" in p.name]
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the optional package were not installed
    assert_one_line_error(*rotoscope("export", "tiny", "-o", tmp_path / "x.onnx", capsys=capsys),
                          'pip install -e ".[onnx]"')
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    src = make_scene(tmp_path / "photo.png")
    assert_one_line_error(*rotoscope("apply", "tiny", src, "--engine", "onnx", "--no-progress", capsys=capsys),
                          'pip install -e ".[onnx]"')


def test_apply_engine_onnx_matches_torch(tiny_filter, tmp_path, capsys):
    src = make_scene(tmp_path / "photo.png", size=(61, 45))
    outs = {}
    for engine in ("torch", "onnx"):
        outs[engine] = tmp_path / f"{engine}.png"
        code, _, err = rotoscope("apply", "tiny", src, "-o", outs[engine], "--engine", engine, "--precision", "fp32",
                                 "--strength", "0.8", "--preserve-colors", "--no-progress", capsys=capsys)
        assert code == 0, err
    a, b = (np.asarray(Image.open(outs[e]), np.float32) for e in ("torch", "onnx"))
    assert a.shape == b.shape == (45, 61, 3)
    assert np.abs(a - b).max() <= 1
    assert_one_line_error(*rotoscope("apply", "tiny", src, "--engine", "tensorrt", capsys=capsys), "unknown engine")
    (tmp_path / "clip.mp4").write_bytes(b"")
    assert_one_line_error(*rotoscope("apply", "tiny", tmp_path / "clip.mp4", "--engine", "onnx", capsys=capsys),
                          "not a video")


def test_the_onnx_engine_paints_video_too(tiny_filter, tmp_path, capsys):
    from conftest import make_clip

    clip = make_clip(tmp_path / "clip.mp4", frames=6, audio=False)
    code, _, err = rotoscope("apply", "tiny", clip, "-o", tmp_path / "out.mp4", "--engine", "onnx", "--no-progress",
                             capsys=capsys)
    assert code == 0, err
    assert "engine: onnx fp32 (as asked)" in err and (tmp_path / "out.mp4").stat().st_size > 0


def test_onnx_engine_tiles_with_frozen_statistics_like_torch(tiny_filter):
    """Over the memory budget both engines measure the whole image's statistics and hold them for every tile."""
    filt = load_filter("tiny")
    torch.manual_seed(2)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 16), size=(90, 130), mode="bilinear")
    torch_run, onnx_run = TorchRunner(filt.net, "fp32"), OnnxRunner(filt.net, threads=1)
    stats_t, stats_o = torch_run.measure(x), onnx_run.measure(x)
    assert len(stats_t) == len(stats_o) == 7  # (mean, var) of 3 encoder, 2 residual and 2 upsampling norms
    for (mt, vt), (mo, vo) in zip(stats_t, stats_o):
        assert torch.allclose(mt, mo, atol=1e-4) and torch.allclose(vt, vo, atol=1e-4, rtol=1e-3)
    ref = stylize_tensor(torch_run, x, max_tile_pixels=64 * 64, overlap=16)
    got = stylize_tensor(onnx_run, x, max_tile_pixels=64 * 64, overlap=16)
    assert ref.shape == got.shape == x.shape
    assert (ref - got).abs().max() < 1e-3
