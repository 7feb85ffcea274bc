"""Engines for painting: PyTorch, onnxruntime and OpenVINO give the same picture (within one 8-bit level on
average), and `auto` takes the fastest one this machine measured, once, keeping only engines that agree."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_scene, rotoscope
from rotoscope import engines
from rotoscope.config import NetConfig
from rotoscope.devices import Choice
from rotoscope.filter import Filter
from rotoscope.network import FilterNet, build
from rotoscope.stylize import ApplySettings, resolve, stylize_image, stylize_tensor

CPU = torch.device("cpu")


@pytest.fixture(params=["full", "lite"])
def net(request):
    """Both architectures: the lite one's pixel (un)shuffle and grouped convolutions must export and agree too."""
    torch.manual_seed(0)
    return build(NetConfig(arch=request.param, channels=(8, 16, 16), res_blocks=1)).eval().requires_grad_(False)


@pytest.fixture(autouse=True)
def fresh_memo():
    engines._MEMO.clear()
    yield
    engines._MEMO.clear()


def photo(h=48, w=64):
    return engines._test_image(h, w)


@pytest.mark.parametrize("engine", ["onnx", "openvino"])
def test_every_engine_paints_what_pytorch_fp32_paints(net, engine):
    if not engines.installed(engine):
        pytest.fail(f"{engine} is a dependency of rotoscope and should be installed")
    x = photo()
    ref = engines.runner("torch", net, CPU, "fp32")(x)
    out = engines.runner(engine, net, CPU, "fp32")(x)
    assert out.shape == ref.shape
    assert float((out - ref).abs().mean()) * 255 < engines.MAX_LEVELS


@pytest.mark.parametrize("engine", ["onnx", "openvino"])
def test_every_engine_paints_tiles_with_frozen_statistics(net, engine):
    x = photo(96, 80)
    ref = stylize_tensor(engines.runner("torch", net, CPU, "fp32"), x, "fp32", max_tile_pixels=48 * 48, overlap=16)
    out = stylize_tensor(engines.runner(engine, net, CPU, "fp32"), x, "fp32", max_tile_pixels=48 * 48, overlap=16)
    assert float((out - ref).abs().mean()) * 255 < engines.MAX_LEVELS


def test_openvino_runs_a_batch_and_new_sizes(net):
    run = engines.runner("openvino", net, CPU, "fp32")
    ref = engines.runner("torch", net, CPU, "fp32")
    for x in (torch.rand(2, 3, 20, 24), torch.rand(1, 3, 7, 5)):
        assert float((run(x) - ref(x)).abs().mean()) * 255 < engines.MAX_LEVELS


def test_openvino_takes_the_threads_it_is_given_and_does_not_pin_them(net, monkeypatch):
    """Pinned threads put two single-threaded processes (two Ray tasks, two server workers) on the same core:
    each painted at half speed, and a second worker bought nothing (benchmarks/results/cluster.md)."""
    monkeypatch.setenv("ROTOSCOPE_THREADS", "1")
    run = engines.OpenVinoRunner(net, "fp32")
    run(photo())
    (request,) = run.compiled.values()
    compiled = request.get_compiled_model()
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert compiled.get_property("ENABLE_CPU_PINNING") is False


def test_engines_refuse_precisions_they_do_not_run(net):
    from rotoscope.errors import RotoscopeError

    with pytest.raises(RotoscopeError, match="onnx runs fp32"):
        engines.runner("onnx", net, CPU, "bf16")
    with pytest.raises(RotoscopeError, match="unknown engine"):
        engines.runner("tensorrt", net, CPU, "fp32")


def fake_calibration(monkeypatch, table):
    calls = []

    def calibrate(net, pairs, shape, busy=False):
        calls.append((tuple(pairs), shape, busy))
        return {f"{e}/{p}": table[f"{e}/{p}"] for e, p in pairs if f"{e}/{p}" in table}
    monkeypatch.setattr(engines, "calibrate", calibrate)
    return calls


def test_auto_takes_the_fastest_engine_that_agrees_with_pytorch(net, monkeypatch):
    calls = fake_calibration(monkeypatch, {"torch/fp32": {"ms": 30, "levels": 0.0},
                                           "onnx/fp32": {"ms": 5, "levels": 3.0},  # fast but wrong: refused
                                           "openvino/fp32": {"ms": 20, "levels": 0.01}})
    picked = engines.pick_engine(net, CPU, Choice("fp32", "test"), False, (360, 640))
    assert (picked.engine, picked.precision) == ("openvino", "fp32")
    assert "openvino/fp32 20 ms" in picked.line() and "onnx/fp32 5 ms left out, 3.0 levels" in picked.line()
    assert calls[0][1] == (352, 640)  # timed at the picture's aspect, at most 640x360, in steps of 32


def test_a_filter_is_checked_against_pytorch_with_its_own_weights_not_the_first_filter_of_its_shape(
        net, monkeypatch, rotoscope_home):
    """Engines are timed once per network shape, but how far a bf16 engine paints from fp32 depends on the weights:
    which engine a filter got depended on which filter of its shape was used first."""
    monkeypatch.setattr(engines, "candidates", lambda precision, explicit: [("torch", "fp32"), ("openvino", "fp32")])
    measured = []

    def levels_off(n, engine, precision, shape):
        measured.append((engine, precision))
        return 2.5  # this filter's painting is far from fp32's on the fastest engine
    monkeypatch.setattr(engines, "levels_off", levels_off)
    fake_calibration(monkeypatch, {"torch/fp32": {"ms": 30, "levels": 0.0, "weights": "another filter"},
                                   "openvino/fp32": {"ms": 20, "levels": 0.0, "weights": "another filter"}})
    picked = engines.pick_engine(net, CPU, Choice("fp32", "test"), False, (360, 640))
    assert measured == [("openvino", "fp32")]  # PyTorch fp32 is the reference: nothing to check
    assert picked.engine == "torch" and "openvino/fp32 20 ms left out, 2.5 levels" in picked.reason
    measured.clear()
    fake_calibration(monkeypatch, {"torch/fp32": {"ms": 30, "levels": 0.0, "weights": engines.weights_key(net)},
                                   "openvino/fp32": {"ms": 20, "levels": 0.2, "weights": engines.weights_key(net)}})
    engines._MEMO.clear()
    (rotoscope_home / "machine.json").unlink()  # measured afresh
    assert engines.pick_engine(net, CPU, Choice("fp32", "test"), False, (360, 640)).engine == "openvino"
    assert measured == []  # measured with these very weights: nothing to check again


def test_the_distance_from_fp32_is_measured_per_filter_and_cached(net, rotoscope_home):
    assert engines.levels_off(net, "torch", "bf16", (64, 64)) >= 0
    other = copy.deepcopy(net)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert engines.weights_key(other) != engines.weights_key(net)
    engines.levels_off(other, "torch", "bf16", (64, 64))
    section = next(iter(json.loads((rotoscope_home / "machine.json").read_text()).values()))
    assert {f"levels|{engines.weights_key(n)}|torch/bf16|64x64" for n in (net, other)} <= set(section)
    engines._MEMO.clear()  # a new process reads the file: a value put there is what it gets
    section[f"levels|{engines.weights_key(net)}|torch/bf16|64x64"] = 123.0
    (rotoscope_home / "machine.json").write_text(json.dumps({next(iter(json.loads(
        (rotoscope_home / "machine.json").read_text()))): section}))
    assert engines.levels_off(net, "torch", "bf16", (64, 64)) == 123.0


def test_an_engine_that_fails_its_calibration_is_not_chosen(net, monkeypatch):
    fake_calibration(monkeypatch, {"torch/bf16": {"ms": 30, "levels": 0.3},
                                   "onnx/fp32": {"ms": 50, "levels": 0.0},
                                   "openvino/bf16": {"error": "object is not initialized"}})
    picked = engines.pick_engine(net, CPU, Choice("bf16", "native"), False, (100, 100))
    assert (picked.engine, picked.precision) == ("torch", "bf16")


def test_an_asked_precision_limits_the_engines(net, monkeypatch):
    calls = fake_calibration(monkeypatch, {"torch/bf16": {"ms": 30, "levels": 0.3},
                                           "onnx/fp32": {"ms": 1, "levels": 0.0},
                                           "openvino/bf16": {"ms": 40, "levels": 0.3}})
    picked = engines.pick_engine(net, CPU, Choice("bf16", "as asked"), True, (100, 100))
    assert picked.engine == "torch" and ("onnx", "fp32") not in calls[0][0]
    # chosen automatically, bf16 may lose to a faster fp32 engine
    picked = engines.pick_engine(net, CPU, Choice("bf16", "native"), False, (100, 100))
    assert (picked.engine, picked.precision) == ("onnx", "fp32")


def test_video_is_calibrated_apart_beside_a_busy_thread(net, monkeypatch, rotoscope_home):
    """A render's painter shares the cores with decoding and encoding, and engines slow down unlike each other
    there: video frames get their own measurement, taken beside a busy thread, and may pick another engine."""
    tables = {False: {"torch/fp32": {"ms": 15, "levels": 0.0}, "openvino/fp32": {"ms": 18, "levels": 0.01}},
              True: {"torch/fp32": {"ms": 33, "levels": 0.0}, "openvino/fp32": {"ms": 20, "levels": 0.01}}}
    calls = []

    def calibrate(net, pairs, shape, busy=False):
        calls.append(busy)
        return {f"{e}/{p}": tables[busy][f"{e}/{p}"] for e, p in pairs if f"{e}/{p}" in tables[busy]}
    monkeypatch.setattr(engines, "calibrate", calibrate)
    monkeypatch.setattr(engines, "candidates", lambda precision, explicit: [("torch", "fp32"), ("openvino", "fp32")])
    still = engines.pick_engine(net, CPU, Choice("fp32", "test"), False, (360, 640))
    video = engines.pick_engine(net, CPU, Choice("fp32", "test"), False, (360, 640), video=True)
    assert (still.engine, video.engine) == ("torch", "openvino") and calls == [False, True]
    assert "beside a busy thread" in video.line() and "beside" not in still.line()
    engines._MEMO.clear()  # both are cached apart: a new process measures neither again
    engines.pick_engine(net, CPU, Choice("fp32", "test"), False, (360, 640), video=True)
    engines.pick_engine(net, CPU, Choice("fp32", "test"), False, (360, 640))
    assert calls == [False, True]


def test_the_busy_thread_runs_only_while_calibrating():
    import threading

    def neighbours():
        return [t for t in threading.enumerate() if t.name == "calibration neighbour"]
    with engines.busy_thread():
        (t,) = neighbours()
        assert t.is_alive()
    assert not t.is_alive() and neighbours() == []


def test_a_gpu_paints_with_pytorch_without_calibrating(net, monkeypatch):
    calls = fake_calibration(monkeypatch, {})
    picked = engines.pick_engine(net, torch.device("cuda"), Choice("bf16", "gpu"), False, (1080, 1920))
    assert picked.engine == "torch" and calls == []


def test_calibration_is_measured_once_and_cached_under_rotoscope_home(net, rotoscope_home, monkeypatch):
    """The real calibration: every installed engine timed and compared with PyTorch fp32, then stored."""
    import contextlib

    entered, real_busy = [], engines.busy_thread

    @contextlib.contextmanager
    def busy():
        entered.append(1)
        with real_busy():
            yield
    monkeypatch.setattr(engines, "busy_thread", busy)
    picked = engines.pick_engine(net, CPU, Choice("fp32", "test"), True, (40, 30))
    assert entered == []  # pictures are timed alone
    store = json.loads((rotoscope_home / "machine.json").read_text())
    (section,) = store.values()
    (key,) = [k for k in section if k.startswith("engines|")]
    table = section[key]
    assert set(table) == {f"{e}/fp32" for e in ("torch", "onnx", "openvino") if engines.installed(e)}
    assert all(v["levels"] < engines.MAX_LEVELS for v in table.values())
    assert picked.engine in {k.split("/")[0] for k in table}
    # a new process reads it back instead of measuring again
    engines._MEMO.clear()
    table[f"{picked.engine}/fp32"]["ms"] = 1e6  # proof that the file, not a new measurement, is read
    (rotoscope_home / "machine.json").write_text(json.dumps(store))
    again = engines.pick_engine(net, CPU, Choice("fp32", "test"), True, (40, 30))
    assert again.timings == table
    # a video's measurement, beside a busy thread, is another entry, made once
    engines.pick_engine(net, CPU, Choice("fp32", "test"), True, (40, 30), video=True)
    engines.pick_engine(net, CPU, Choice("fp32", "test"), True, (40, 30), video=True)
    assert len(entered) == len(table)  # once per engine timed
    keys = [k for k in json.loads((rotoscope_home / "machine.json").read_text())[next(iter(store))]
            if k.startswith("engines|")]
    assert len(keys) == 2 and sum(k.endswith("|video") for k in keys) == 1


def test_apply_says_and_records_the_precision_and_engine_it_used(tiny_filter, tmp_path, capsys):
    from rotoscope.images import read_provenance

    src = make_scene(tmp_path / "in.png")
    code, out, err = rotoscope("apply", "tiny", src, "-o", tmp_path / "out.png", capsys=capsys)
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0].startswith("precision: ") and lines[1].startswith("engine: "), err
    used = read_provenance(tmp_path / "out.png")["settings"]
    assert used["precision"] in ("bf16", "fp32") and used["engine"] in ("torch", "onnx", "openvino")
    assert lines[1].startswith(f"engine: {used['engine']} {used['precision']}")


def test_an_asked_engine_and_precision_are_used(tiny_filter, tmp_path, capsys):
    from rotoscope.images import read_provenance

    src = make_scene(tmp_path / "in.png")
    code, _, err = rotoscope("apply", "tiny", src, "-o", tmp_path / "out.png", "--engine", "torch",
                             "--precision", "fp32", capsys=capsys)
    assert code == 0, err
    assert "precision: fp32 (as asked)" in err and "engine: torch fp32 (as asked)" in err
    assert read_provenance(tmp_path / "out.png")["settings"] | {} == {
        "size": None, "strength": 1.0, "preserve_colors": False, "precision": "fp32", "engine": "torch"}


def test_library_calls_resolve_auto_for_the_picture(net):
    filt = Filter("t", {"name": "t"}, net)
    img = Image.fromarray((photo(30, 40)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    settings, lines = resolve(filt, ApplySettings(), (30, 40))
    assert settings.resolved and lines[0].startswith("precision: ") and lines[1].startswith("engine: ")
    a = np.asarray(stylize_image(filt, img, ApplySettings()), np.float32)
    b = np.asarray(stylize_image(filt, img, ApplySettings(engine="torch", precision="fp32")), np.float32)
    # where auto takes bf16 (AMX: OpenVINO bf16), random weights on this 30x40 picture measured 1.05 levels (full)
    # and 2.16 (lite: its stem folds 16 pixels into each bf16 rounding); where it takes fp32, 0
    assert np.abs(a - b).mean() < 3


def test_threads_can_export_and_calibrate_at_once(net):
    """The server paints in threads: two first uses at once (each exporting ONNX) must both work."""
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(1)
    other = FilterNet(NetConfig(channels=(8, 16, 16), res_blocks=1)).eval().requires_grad_(False)
    x = photo(24, 32)

    def first_use(n):
        return engines.runner("openvino", n, CPU, "fp32")(x), engines.pick_engine(n, CPU, Choice("fp32", "t"),
                                                                                   True, (24, 32))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(first_use, [net, other, net, other]))
    assert all(out.shape == x.shape for out, _ in results)


def test_a_precision_chosen_automatically_lets_every_engine_run_fp32_too():
    """Only engines without bf16 were tried at fp32, so a filter whose bf16 paintings were too far from fp32's got
    onnxruntime (429 ms) where OpenVINO fp32 took 139."""
    pairs = engines.candidates(Choice("bf16", "native"), False)
    for e in ("torch", "onnx", "openvino"):
        if engines.installed(e):
            assert (e, "fp32") in pairs
            assert (e, "bf16") in pairs or "bf16" not in engines.PRECISIONS_OF[e]
    assert all(p == "bf16" for _, p in engines.candidates(Choice("bf16", "asked"), True))
    assert all(p == "fp32" for _, p in engines.candidates(Choice("fp32", "native"), False))
