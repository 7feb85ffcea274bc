"""Training: the held-out style loss falls, a resumed run equals an uninterrupted one, Ctrl-C and NaN stop cleanly."""

import importlib
import json
import re
import warnings

import pytest
import torch

from conftest import interrupt_training_at, make_photos
from rotoscope.config import TrainConfig
from rotoscope.data import PhotoSet
from rotoscope.demo import draw_artwork
from rotoscope.errors import RotoscopeError
from rotoscope.images import save_image

tr = importlib.import_module("rotoscope.train")  # the module (rotoscope.train is also the public function)

# the loss weights these tiny runs' thresholds were measured with (the defaults are tuned for real backbones)
TINY = TrainConfig().replace(channels=(8, 16, 16), res_blocks=1, size=32, batch=2, steps=12, backbone="random",
                             precision="fp32", eval_every=4, checkpoint_every=4, preview_every=1000,
                             content_weight=3.0, style_weight=5.0, style_size=128)  # 128: the artwork's own size


@pytest.fixture(scope="module")
def artwork(tmp_path_factory):
    return save_image(draw_artwork(128), tmp_path_factory.mktemp("art") / "swirls.png")


def quiet(*_):
    pass


def test_held_out_style_loss_falls_at_64px(artwork):
    cfg = TINY.replace(size=64, steps=40, eval_every=20, checkpoint_every=1000, lr=5e-3, lr_final=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. converting a tensor that requires grad to a float
        filt = tr.train(artwork, "falls", None, cfg, log=quiet, progress=False)
    hist = filt.card["history"]
    start, last = hist["holdout_start"], hist["holdout_last"]
    assert last["style"] < 0.7 * start["style"], (start, last)
    assert [p["step"] for p in hist["holdout_curve"]] == [0, 20, 40]
    assert filt.card["photos"]["holdout"] >= 1 and filt.card["timings"]["steps"] == 40


def test_sliced_colour_and_style_matches_train_and_are_recorded(artwork):
    cfg = TINY.replace(size=64, steps=40, eval_every=20, checkpoint_every=1000, lr=5e-3, lr_final=1e-3,
                       color_match="sliced", style_match="sliced")
    filt = tr.train(artwork, "sliced", None, cfg, log=quiet, progress=False)
    hist = filt.card["history"]
    assert filt.card["training"]["color_match"] == "sliced" and filt.card["training"]["style_match"] == "sliced"
    assert hist["holdout_last"]["color"] < 0.7 * hist["holdout_start"]["color"], hist
    assert hist["holdout_last"]["style"] < 0.9 * hist["holdout_start"]["style"], hist


def test_settings_saved_before_colour_and_style_match_existed_read_as_moments_and_gram():
    old = TrainConfig().to_dict()
    del old["color_match"], old["style_match"], old["style_layer_decay"]
    assert TrainConfig.from_dict(old).color_match == "moments" and TrainConfig.from_dict(old).style_match == "gram"
    assert TrainConfig.from_dict(old).style_layer_decay == 1.0  # the style layers weighed equally before the tilt
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


def test_card_records_how_the_filter_was_made(artwork):
    filt = tr.train(artwork, "carded", None, TINY, title="Swirls", log=quiet, progress=False)
    c = filt.card
    assert c["name"] == "carded" and c["artwork"]["title"] == "Swirls" and len(c["artwork"]["sha256"]) == 64
    assert c["backbone"]["name"] == "random" and len(c["backbone"]["weights_sha256"]) == 64
    assert c["training"]["steps"] == 12 and c["training"]["net"]["channels"] == [8, 16, 16]
    assert c["architecture"]["res_blocks"] == 1 and c["format_version"] == 1
    assert set(c["history"]["train_last"]) == {"content", "style", "color", "tv", "total"}
    assert c["photos"]["train"] + c["photos"]["holdout"] >= 8 and c["photos"]["skipped"] == 0
    assert c["timings"]["seconds"] > 0 and c["created"] and c["rotoscope_version"]
    assert (tr.runs_dir() / "carded" / "tensorboard").is_dir()


def test_the_lite_network_trains_is_recorded_and_loads_back_as_itself(artwork):
    from rotoscope.filter import load_filter
    from rotoscope.network import LiteNet

    cfg = TINY.replace(arch="lite", size=64, steps=40, eval_every=20, checkpoint_every=1000, lr=5e-3,
                       lr_final=1e-3)
    filt = tr.train(artwork, "lite", None, cfg, log=quiet, progress=False)
    arch = filt.card["architecture"]
    assert arch["type"] == "LiteNet" and arch["arch"] == "lite" and filt.card["training"]["net"]["arch"] == "lite"
    hist = filt.card["history"]
    assert hist["holdout_last"]["style"] < 0.8 * hist["holdout_start"]["style"], hist
    again = load_filter("lite")  # the file says what it is: no --arch needed to apply it
    assert isinstance(again.net, LiteNet)
    x = torch.rand(1, 3, 37, 51)
    with torch.no_grad():
        assert torch.allclose(again.net(x), filt.net(x), atol=1e-6)


def test_a_lite_filter_learns_its_teachers_paintings_and_the_card_names_the_teacher_not_its_path(artwork, tmp_path):
    # the teacher: a full filter from random weights (no identity weights ship for this shape), so its paintings
    # are far from the photos and the two targets are told apart
    teacher = tr.train(artwork, "teacher", None, TINY.replace(steps=2), log=quiet, progress=False,
                       out=tmp_path / "teacher.safetensors")
    # the pixel term alone: what the student is pulled to is all the content target decides
    cfg = TINY.replace(arch="lite", size=32, steps=40, eval_every=20, checkpoint_every=1000, lr=5e-3, lr_final=1e-3,
                       teacher=str(teacher.path), pixel_weight=1.0, content_weight=0.0, style_weight=0.0,
                       color_weight=0.0, tv_weight=0.0)
    student = tr.train(artwork, "student", None, cfg, log=quiet, progress=False)
    hist = student.card["history"]
    assert hist["holdout_last"]["pixel"] < 0.6 * hist["holdout_start"]["pixel"], hist
    photos = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        painted = student.net(photos)
        assert (painted - teacher.net(photos)).abs().mean() < 0.6 * (painted - photos).abs().mean()
    card = student.card
    assert card["training"]["teacher"] == "teacher" and str(tmp_path) not in json.dumps(card)
    assert card["teacher"] == {"name": "teacher", "card_hash": teacher.card_hash, "arch": "full"}
    with pytest.raises(RotoscopeError, match="learned from another teacher"):  # a resumed run keeps its teacher
        tr.train(artwork, "student", None, cfg.replace(teacher=""), log=quiet, progress=False, resume=True)
    with pytest.raises(RotoscopeError, match="unknown filter 'no-such-teacher'"):  # before any work
        tr.train(tmp_path / "missing.png", "x", None, cfg.replace(teacher="no-such-teacher"), log=quiet,
                 progress=False)


def test_resume_equals_uninterrupted_training(artwork, monkeypatch, tmp_path):
    whole = tr.train(artwork, "whole", None, TINY, log=quiet, progress=False)

    real_batch = interrupt_training_at(monkeypatch, 7)
    with pytest.raises(RotoscopeError, match=r"interrupted at step 7/12.*--resume"):
        tr.train(artwork, "parts", None, TINY, log=quiet, progress=False)
    ckpt = tr.runs_dir() / "parts" / tr.CHECKPOINT
    assert ckpt.exists() and not (tr.registry_path("parts")).exists()
    monkeypatch.setattr(PhotoSet, "batch", real_batch)
    lines = []
    resumed = tr.train(artwork, "parts", None, TINY, resume=True, log=lines.append, progress=False)
    assert any("resuming 'parts' at step 7" in line for line in lines)
    a, b = whole.net.state_dict(), resumed.net.state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert resumed.card["timings"]["steps"] == 12
    assert len(resumed.card["history"]["curve"]) == len(whole.card["history"]["curve"])


def test_a_monitors_stop_request_ends_the_run_like_ctrl_c_and_resumes_exactly(artwork):
    """A StopRequest (how the server cancels a job) ends the run after that step with a resumable checkpoint."""
    seen = []

    class StopAt5(tr.Monitor):
        def step(self, record, net):
            seen.append(record["step"])
            return tr.StopRequest("cancelled") if record["step"] == 5 else None

    with pytest.raises(RotoscopeError, match=r"interrupted at step 5/12.*--resume"):
        tr.train(artwork, "asked", None, TINY, log=quiet, progress=False, monitors=[StopAt5()])
    assert seen == [1, 2, 3, 4, 5] and tr.checkpoint_state(tr.runs_dir() / "asked" / tr.CHECKPOINT)["run"]["step"] == 5
    resumed = tr.train(artwork, "asked", None, TINY, resume=True, log=quiet, progress=False)
    whole = tr.train(artwork, "asked-whole", None, TINY, log=quiet, progress=False)
    a, b = whole.net.state_dict(), resumed.net.state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_resume_needs_a_checkpoint_and_the_same_artwork(artwork, tmp_path):
    with pytest.raises(RotoscopeError, match="nothing to resume"):
        tr.train(artwork, "never", None, TINY, resume=True, log=quiet, progress=False)
    tr.train(artwork, "once", None, TINY.replace(steps=4), log=quiet, progress=False)
    other = save_image(draw_artwork(128, seed=3), tmp_path / "other.png")
    with pytest.raises(RotoscopeError, match="different artwork"):
        tr.train(other, "once", None, TINY.replace(steps=8), resume=True, log=quiet, progress=False)


def test_a_run_resumes_only_with_its_own_photos_and_recipe(artwork, tmp_path, monkeypatch):
    """Another --photos folder, or another learning rate or content weight, was taken on resume with at most a note:
    the card then named the new recipe for the whole run, and the exam compared scores of two recipes (or held out
    a photo the run had trained on). Refused; more steps continue, saying how the learning rate's schedule moves."""
    photos = make_photos(tmp_path / "photos", 4)
    real_batch = interrupt_training_at(monkeypatch, 4)
    with pytest.raises(RotoscopeError, match="interrupted at step 4/8"):
        tr.train(artwork, "half", photos, TINY.replace(steps=8), log=quiet, progress=False)
    monkeypatch.setattr(PhotoSet, "batch", real_batch)
    others = make_photos(tmp_path / "others", 4, brightness=0.3)
    with pytest.raises(RotoscopeError, match="the checkpoint of 'half' was trained on other photos"):
        tr.train(artwork, "half", others, TINY.replace(steps=8), resume=True, log=quiet, progress=False)
    for change, says in ((dict(lr=1e-3), "lr 0.003 -> 0.001"), (dict(content_weight=0.0), "content_weight 3.0 -> 0.0")):
        with pytest.raises(RotoscopeError, match=re.escape(f"trained with other settings ({says})")):
            tr.train(artwork, "half", photos, TINY.replace(steps=8, **change), resume=True, log=quiet,
                     progress=False)
    said = []
    filt = tr.train(artwork, "half", photos, TINY.replace(steps=12), resume=True, log=said.append, progress=False)
    assert filt.card["timings"]["steps"] == 12 and "resuming 'half' at step 4" in said
    assert any(s.startswith("note: the learning rate's schedule now spans 12 steps (it spanned 8)") for s in said)


def test_an_artwork_too_thin_for_the_loss_network_is_refused_saying_its_size(tmp_path):
    """A 600x12 strip is 128x3 at style size 128: the backbone's pooling raised a traceback. One line, before any
    checkpoint of the run is written; 600x40 (17 px high at style size 256) trains."""
    from PIL import Image

    strip = tmp_path / "strip.png"
    Image.new("RGB", (600, 12), (180, 30, 30)).save(strip)
    with pytest.raises(RotoscopeError, match=r"the artwork is 600x12: at its style size \(128 px on the longer "
                                             r"side\) 128x3, too thin"):
        tr.train(strip, "thin", None, TINY, log=quiet, progress=False)
    assert not (tr.runs_dir() / "thin" / tr.CHECKPOINT).exists()
    wider = save_image(draw_artwork(128).resize((600, 40)), tmp_path / "wider.png")
    tr.train(wider, "wider", None, TINY.replace(steps=2, style_size=256), log=quiet, progress=False)


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_checkpoint_that_cannot_be_read_is_one_line_on_resume(artwork, damage):
    tr.train(artwork, "hurt", None, TINY.replace(steps=4), log=quiet, progress=False)
    ckpt = tr.runs_dir() / "hurt" / tr.CHECKPOINT
    if damage == "truncated":  # a disk that filled, a copy cut short
        ckpt.write_bytes(ckpt.read_bytes()[:3000])
    else:  # a safetensors file, but not a checkpoint
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(ckpt))
    with pytest.raises(RotoscopeError) as err:
        tr.train(artwork, "hurt", None, TINY.replace(steps=8), resume=True, log=quiet, progress=False)
    assert "\n" not in str(err.value) and "cannot be read" in str(err.value) and "without --resume" in str(err.value)


def test_resuming_with_another_network_says_so_and_another_artwork_is_said_first(artwork, tmp_path):
    tr.train(artwork, "shape", None, TINY.replace(steps=4), log=quiet, progress=False)
    with pytest.raises(RotoscopeError, match=re.escape("trained with other settings (net.channels (8, 16, 16) -> "
                                                       "(8, 16, 32))")):
        tr.train(artwork, "shape", None, TINY.replace(steps=8, channels=(8, 16, 32)), resume=True, log=quiet,
                 progress=False)
    other = save_image(draw_artwork(128, seed=3), tmp_path / "other.png")
    with pytest.raises(RotoscopeError, match="different artwork"):  # not hidden behind the network's shape
        tr.train(other, "shape", None, TINY.replace(steps=8, channels=(8, 16, 32)), resume=True, log=quiet,
                 progress=False)


def test_nan_loss_at_once_stops_cleanly_with_one_line_and_leaves_nothing_in_the_way(artwork, monkeypatch):
    real = tr.perceptual_loss
    calls = {"n": 0}

    def nan_on_third(*a, **k):
        total, terms = real(*a, **k)
        calls["n"] += 1
        return (total * float("nan"), terms) if calls["n"] == 3 else (total, terms)

    monkeypatch.setattr(tr, "perceptual_loss", nan_on_third)
    cfg = TINY.replace(holdout=0.0)  # no held-out evaluations: every call is a training step
    with pytest.raises(RotoscopeError) as err:
        tr.train(artwork, "blowup", None, cfg, log=quiet, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "stopped after step 2" in msg and "No good weights to keep yet" in msg
    # nothing worth resuming (the weights it started from): no checkpoint, so training again is not refused as the
    # resumption of an interrupted run
    assert not (tr.runs_dir() / "blowup" / tr.CHECKPOINT).exists()
    monkeypatch.setattr(tr, "perceptual_loss", real)
    filt = tr.train(artwork, "blowup", None, cfg.replace(steps=3), log=quiet, progress=False)
    assert all(torch.isfinite(v).all() for v in filt.net.state_dict().values())


def test_a_photo_that_is_mostly_clear_sky_trains_without_overflowing(artwork, tmp_path):
    """Its flat windows are drawn again (data.crop_is_flat): with them, training stopped with a NaN at step 2."""
    from test_data import sky_photo

    photos = tmp_path / "photos"
    photos.mkdir()
    sky_photo(96, 80).save(photos / "sky.png")
    net = TrainConfig().net  # the default network: the tiny one happens to survive a flat crop
    cfg = TINY.replace(steps=8, holdout=0.0, channels=net.channels, res_blocks=net.res_blocks)
    filt = tr.train(artwork, "sky", photos, cfg, log=quiet, progress=False)
    assert filt.card["training"]["steps"] == 8
    assert all(torch.isfinite(v).all() for v in filt.net.state_dict().values())


def test_a_photos_folder_trains_and_counts_skipped_files(artwork, tmp_path):
    from conftest import make_image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        make_image(photos / f"p{i}.png", size=(48, 40), seed=i)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    seen = []
    filt = tr.train(artwork, "folder", photos, TINY.replace(steps=2), log=seen.append, progress=False)
    assert filt.card["photos"]["skipped"] == 1 and filt.card["photos"]["train"] + filt.card["photos"]["holdout"] == 3
    assert any("broken.jpg" in line for line in seen)


def test_out_writes_the_filter_elsewhere(artwork, tmp_path):
    filt = tr.train(artwork, "elsewhere", None, TINY.replace(steps=2), out=tmp_path / "f.safetensors", log=quiet,
                    progress=False)
    assert filt.path == tmp_path / "f.safetensors" and not tr.registry_path("elsewhere").exists()


def test_learning_rate_follows_a_cosine_from_lr_to_lr_final():
    cfg = TrainConfig().replace(steps=100, lr=1e-3, lr_final=1e-4)
    assert tr.lr_at(cfg, 0) == pytest.approx(1e-3) and tr.lr_at(cfg, 100) == pytest.approx(1e-4)
    assert tr.lr_at(cfg, 50) == pytest.approx(5.5e-4)


def test_bad_names_and_missing_artwork_fail_before_any_work(tmp_path):
    with pytest.raises(RotoscopeError, match="invalid filter name"):
        tr.train(tmp_path / "x.png", "no/slashes", None, TINY, log=quiet, progress=False)
    with pytest.raises(RotoscopeError, match="no such file"):
        tr.train(tmp_path / "missing.png", "ok", None, TINY, log=quiet, progress=False)


def test_auto_precision_is_resolved_said_and_recorded(artwork, monkeypatch):
    """On a CPU without native bf16, `auto` trains in fp32, says so, and the card records what was used."""
    from rotoscope import devices

    monkeypatch.setattr(devices, "claims_native_bf16", lambda: False)
    monkeypatch.setattr(devices, "cpu_class", lambda: "AVX2")
    lines = []
    filt = tr.train(artwork, "auto-prec", None, TINY.replace(steps=2, precision="auto"), log=lines.append,
                    progress=False)
    assert "precision: fp32 (this CPU has no native bf16: AVX2)" in lines
    assert filt.card["training"]["precision"] == "fp32"
    assert filt.card["precision"] == {"used": "fp32", "requested": "auto",
                                      "why": "this CPU has no native bf16: AVX2"}


def test_fp16_trains_with_a_loss_scaler(artwork, monkeypatch):
    """fp16 (what `auto` takes on a CUDA GPU without bf16) runs its backward through a GradScaler."""
    scaled = []
    real = torch.amp.GradScaler.scale

    def scale(self, loss):
        scaled.append(self.is_enabled())
        return real(self, loss)
    monkeypatch.setattr(torch.amp.GradScaler, "scale", scale)
    filt = tr.train(artwork, "half", None, TINY.replace(steps=2, precision="fp16"), log=quiet, progress=False)
    assert scaled == [True, True]
    assert filt.card["training"]["precision"] == "fp16" and filt.card["timings"]["steps"] == 2


def test_checkpoints_come_by_time_too(artwork, monkeypatch):
    """A kill before the first checkpoint by steps must not lose the run: with a slow clock, a checkpoint is on
    disk after the first steps although checkpoint_every is far away."""
    from rotoscope.paths import runs_dir

    clock = {"t": 0.0}

    def slow_clock():
        clock["t"] += 0.6  # every reading of the clock: 0.6 s later
        return clock["t"]
    monkeypatch.setattr(tr.time, "perf_counter", slow_clock)
    seen = []

    class Watch(tr.Monitor):
        def step(self, record, net):
            path = runs_dir() / "timed" / tr.CHECKPOINT
            seen.append(tr.checkpoint_state(path)["run"]["step"] if path.exists() else None)
    tr.train(artwork, "timed", None, TINY.replace(steps=6, checkpoint_every=1000, checkpoint_seconds=1.0),
             log=quiet, progress=False, monitors=[Watch()])
    assert seen[0] == 1 and seen == sorted(seen), seen  # on disk from the first step, checkpoint_every=1000
