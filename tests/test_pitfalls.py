"""Pitfall detectors fire on the failure they name, stay quiet on healthy training, and stop training cleanly."""

import importlib
import json
import math

import pytest
import torch
from safetensors import safe_open

from conftest import make_scene
from rotoscope.config import TrainConfig
from rotoscope.demo import draw_artwork
from rotoscope.errors import RotoscopeError
from rotoscope.filter import read_card, registry_path
from rotoscope.paths import runs_dir
from rotoscope.truthful import pitfalls

WEIGHTS = {"content": 1.0, "style": 5.0, "color": 2.0, "tv": 0.5}


def history(train_totals, held=None, terms=None):
    """A run's history from per-step totals (split into terms by `terms` shares) and {step: held-out total}."""
    terms = terms or {"content": 0.3, "style": 0.5, "color": 0.15, "tv": 0.05}
    out = []
    for i, t in enumerate(train_totals, start=1):
        parts = terms(i) if callable(terms) else terms
        rec = {"step": i, "train": {k: v * t for k, v in parts.items()} | {"total": t}, "lr": 1e-3, "grad_norm": 1.0}
        if held and i in held:
            rec["holdout"] = {"total": held[i]}
        out.append(rec)
    return out


def noisy(values, seed=0, amount=0.1):
    g = torch.Generator().manual_seed(seed)
    return [v * (1 + amount * float(torch.randn(1, generator=g))) for v in values]


# ---------------------------------------------------------------- overfitting


def test_overfitting_fires_when_heldout_rises_while_training_falls():
    train = noisy([3.0 - 2.0 * i / 60 for i in range(60)])
    held = {10: 2.0, 20: 1.8, 30: 1.7, 40: 1.9, 50: 2.1, 60: 2.3}
    p = pitfalls.overfitting(history(train, held), 10)
    assert p is not None and p.kind == "overfitting" and not p.stop
    assert "rose from 1.700 (step 30) to 2.300" in p.message
    assert "more" in p.message and "fewer steps (about 30)" in p.message


def test_overfitting_quiet_when_both_fall():
    train = noisy([3.0 - 2.0 * i / 60 for i in range(60)])
    held = {10: 2.4, 20: 2.1, 30: 1.9, 40: 1.85, 50: 1.8, 60: 1.78}
    assert pitfalls.overfitting(history(train, held), 10) is None


def test_overfitting_quiet_when_training_rises_too():
    # held-out and training loss rising together is instability, not memorisation
    train = noisy([1.0 + 2.0 * i / 60 for i in range(60)])
    held = {10: 1.2, 20: 1.1, 30: 1.3, 40: 1.6, 50: 2.0, 60: 2.4}
    assert pitfalls.overfitting(history(train, held), 10) is None


def test_overfitting_quiet_on_one_bad_exam():
    train = noisy([3.0 - 2.0 * i / 60 for i in range(60)])
    held = {10: 2.0, 20: 1.8, 30: 1.7, 40: 1.65, 50: 2.2, 60: 1.6}
    assert pitfalls.overfitting(history(train, held), 10) is None


# ---------------------------------------------------------------- divergence


def test_diverging_fires_when_loss_explodes_and_asks_for_lower_lr():
    train = [6.0, 4.0, 3.0] + [2.5] * 17 + [2.5 * 1.3 ** i for i in range(1, 21)]
    p = pitfalls.diverging(history(train), 10, lr=1e-3)
    assert p is not None and p.stop and "--lr (now 0.001); try 0.0001" in p.message


def test_diverging_fires_when_worse_than_random_start():
    # the first steps blow the network up: the score is far worse than the random weights' score
    train = [6.0] + [31.0] * 9
    p = pitfalls.diverging(history(train), 5)
    assert p is not None and "its first step's" in p.message


def test_diverging_quiet_on_noisy_healthy_training_with_spikes():
    train = noisy([6.0 * math.exp(-i / 20) + 1.5 for i in range(200)], amount=0.3)
    for i in (40, 90, 150, 170):  # one odd crop can triple the loss for a step
        train[i] *= 4
    h = history(train)
    assert all(pitfalls.diverging(h[:n], 10) is None for n in range(10, 201, 10))


def test_not_finite_message():
    p = pitfalls.not_finite(7, float("nan"), 0.01)
    assert p.stop and "nan at step 7" in p.message and "try 0.001" in p.message


# ---------------------------------------------------------------- optimising the wrong thing


def test_content_vanishing_names_the_weights_to_change():
    shares = {"content": 0.45, "style": 0.5, "color": 0.04, "tv": 0.01}
    h = history([2.6] * 60, terms=shares)  # content term 1.17 with weight 1: nothing of the photo left
    found = {p.kind: p for p in pitfalls.wrong_target(h, 10, WEIGHTS, total_steps=60)}
    assert "content-vanished" in found
    assert "Lower --style-weight (now 5)" in found["content-vanished"].message
    # the same numbers during the first quarter of training are an untrained network, not a wrong target
    assert pitfalls.wrong_target(h[:10], 10, WEIGHTS, total_steps=60) == []


def test_content_still_falling_is_not_vanishing():
    h = history([4.0 - 1.5 * i / 60 for i in range(60)], terms={"content": 0.6, "style": 0.3, "color": 0.08, "tv": 0.02})
    kinds = {p.kind for p in pitfalls.wrong_target(h, 10, WEIGHTS, total_steps=60)}
    assert "content-vanished" not in kinds


def test_style_never_appearing():
    h = history([1.0] * 60, terms={"content": 0.7, "style": 0.05, "color": 0.2, "tv": 0.05})
    found = {p.kind: p for p in pitfalls.wrong_target(h, 10, WEIGHTS, total_steps=60)}
    assert "style-absent" in found and "Raise --style-weight" in found["style-absent"].message
    assert "content-vanished" not in found


def test_one_term_dominating():
    h = history([1.0] * 60, terms={"content": 0.04, "style": 0.03, "color": 0.03, "tv": 0.9})
    found = {p.kind: p for p in pitfalls.wrong_target(h, 10, WEIGHTS, total_steps=60)}
    assert "dominant-term" in found and "Lower --tv-weight (now 0.5)" in found["dominant-term"].message


def test_balanced_terms_raise_nothing():
    train = noisy([5.0 * math.exp(-i / 15) + 1.0 for i in range(60)])
    h = history(train, terms=lambda i: {"content": 0.35, "style": 0.4 + 0.2 * math.exp(-i / 15), "color": 0.2,
                                        "tv": 0.05})
    assert pitfalls.wrong_target(h, 10, WEIGHTS, total_steps=60) == []


# ---------------------------------------------------------------- the photo set, and reporting once


def test_few_and_similar_photos():
    kinds = [p.kind for p in pitfalls.photo_set(2)]
    assert kinds == ["few-photos"]
    summary = {"count": 9, "near_duplicate_photos": 4, "diversity": {"mean_hash_distance": 30}}
    assert [p.kind for p in pitfalls.photo_set(9, summary)] == ["similar-photos"]
    assert pitfalls.photo_set(20, {"count": 20, "near_duplicate_photos": 1,
                                   "diversity": {"mean_hash_distance": 31}}) == []


# ---------------------------------------------------------------- droplets


def with_peaks(peaks: dict[int, float]):
    h = history([1.0] * 60, held={k: 1.0 for k in peaks})
    for rec in h:
        if rec["step"] in peaks:
            rec["peak"] = peaks[rec["step"]]
    return h


def test_droplets_fire_on_a_spike_before_the_sigmoid_and_ask_for_a_lower_rate():
    # The Great Wave at lr 1e-2 peaked at 380-460 and painted green blobs; trained filters stay under 10
    p = pitfalls.droplets(with_peaks({20: 6.0, 40: 410.0}), lr=0.01)
    assert p is not None and p.kind == "droplets" and p.step == 40 and not p.stop
    assert "peak at 410" in p.message and "--lr (now 0.01); try 0.00333333" in p.message


def test_droplets_judge_the_latest_exam_and_stay_quiet_on_healthy_peaks():
    assert pitfalls.droplets(with_peaks({20: 9.6, 40: 4.0})) is None  # the shipped filters' highest: 9.6
    assert pitfalls.droplets(with_peaks({20: 400.0, 40: 8.0})) is None  # gone again by the last exam
    assert pitfalls.droplets(history([1.0] * 10)) is None  # no held-out photos, no peaks
    # a healthy run may pass through a spike before a quarter of its steps (The Great Wave: 16.9 at step 100 of 500)
    assert pitfalls.droplets(with_peaks({10: 45.0}), total_steps=60) is None
    assert pitfalls.droplets(with_peaks({10: 45.0, 20: 45.0}), total_steps=60) is not None


def test_droplets_wait_while_a_spike_fades_but_judge_the_last_exam():
    # The Scream at the default rate peaked at 84, 54, 21, 4.8, 4.8 (steps 100-500) and ended a healthy filter
    scream = {10: 84.0, 20: 54.0, 30: 21.0, 40: 4.8, 50: 4.8}
    for end in scream:
        assert pitfalls.droplets(with_peaks({k: v for k, v in scream.items() if k <= end}), total_steps=50) is None
    # a peak that stays up is no spike on its way out (The Great Wave at 1e-2 stayed at hundreds)
    assert pitfalls.droplets(with_peaks({10: 416.0, 20: 400.0}), total_steps=50) is not None
    # the last exam's peak is the filter's: judged even while falling
    last = pitfalls.droplets(with_peaks({10: 84.0, 20: 54.0}), total_steps=20)
    assert last is not None and last.step == 20


def test_watcher_reports_each_pitfall_once():
    w = pitfalls.Watcher(WEIGHTS, 10, total_steps=60)
    h = history([1.0] * 60, terms={"content": 0.04, "style": 0.03, "color": 0.03, "tv": 0.9})
    first = w.check(h[:30])
    assert {p.kind for p in first} == {"dominant-term", "style-absent"}  # tv swamps, so style never shows
    assert w.check(h[:40]) == []
    log, kept = [], []
    pitfalls.report(kept, log.append, first)
    assert kept == [p.line() for p in first] and log == [f"warning: {p.line()}" for p in first]


# ---------------------------------------------------------------- in a real (tiny) training run

TINY = dict(channels=(4, 8, 8), res_blocks=1, size=32, batch=1, backbone="random", style_size=64)


@pytest.fixture
def art(tmp_path):
    p = tmp_path / "art.png"
    draw_artwork(96).save(p)
    return p


@pytest.fixture
def two_photos(tmp_path):
    d = tmp_path / "two"
    d.mkdir()
    make_scene(d / "a.png", seed=1, brightness=0.5)
    make_scene(d / "b.png", seed=2, brightness=0.4)
    return d


def checkpoint_state(name):
    with safe_open(str(runs_dir() / name / "checkpoint.safetensors"), "pt") as f:
        return json.loads(f.metadata()["rotoscope.checkpoint"])


def test_nan_loss_stops_cleanly_and_keeps_last_good_weights(art, two_photos, monkeypatch):
    """A loss that becomes NaN at step 5 stops the run; filter and checkpoint hold the step-4 weights."""
    train_mod = importlib.import_module("rotoscope.train")

    real, calls = train_mod.perceptual_loss, {"n": 0}

    def flaky(*a, **k):
        total, terms = real(*a, **k)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 5:
                return total * float("nan"), terms
        return total, terms

    monkeypatch.setattr(train_mod, "perceptual_loss", flaky)
    # under torchrun the other ranks wait at the barrier for rank 0's file: a stop must still reach it
    met = []
    monkeypatch.setattr(train_mod.distributed, "barrier", lambda world: met.append(world))
    log = []
    cfg = TrainConfig().replace(steps=8, eval_every=2, **TINY)
    with pytest.raises(RotoscopeError, match="(?i)lower the learning rate") as e:
        train_mod.train(art, "nan", two_photos, cfg, progress=False, log=log.append)
    assert len(met) == 1
    assert "last good weights (step 4)" in str(e.value)
    assert any("very few photos" in line for line in log)  # 1 training photo, 1 held out
    assert checkpoint_state("nan")["run"]["step"] == 4
    card = read_card(registry_path("nan"))
    assert card["stopped"] == {"step": 4, "kept_step": 4, "reason": "not-finite"}
    assert any("nan at step 5" in w for w in card["warnings"])


def test_exploding_loss_is_caught_as_divergence(art, two_photos, monkeypatch):
    train_mod = importlib.import_module("rotoscope.train")

    real, calls = train_mod.perceptual_loss, {"n": 0}

    def exploding(*a, **k):
        total, terms = real(*a, **k)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] > 4:
                return total * 50, terms
        return total, terms

    monkeypatch.setattr(train_mod, "perceptual_loss", exploding)
    cfg = TrainConfig().replace(steps=20, eval_every=2, **TINY)
    with pytest.raises(RotoscopeError, match="diverging"):
        train_mod.train(art, "boom", two_photos, cfg, progress=False, log=lambda s: None)
    state = checkpoint_state("boom")
    assert state["run"]["step"] < 20  # stopped early, at the last healthy evaluation
    assert any("diverging" in w for w in state["run"]["warnings"])


def test_a_run_that_diverges_at_once_leaves_nothing_that_blocks_the_retry_it_advises(art, two_photos, monkeypatch):
    """Diverging at the first exam (`--lr 1`), no weights were good: no filter, yet a checkpoint at step 0, so the
    retry with a lower learning rate was refused as an 'interrupted run', and --resume carried the warnings along."""
    train_mod = importlib.import_module("rotoscope.train")
    real = train_mod.perceptual_loss
    boom = {"on": True, "n": 0}

    def exploding(*a, **k):  # the training score explodes from the second step on
        total, terms = real(*a, **k)
        if boom["on"] and torch.is_grad_enabled():
            boom["n"] += 1
            if boom["n"] > 1:
                return total * 50, terms
        return total, terms

    monkeypatch.setattr(train_mod, "perceptual_loss", exploding)
    cfg = TrainConfig().replace(steps=8, eval_every=2, checkpoint_every=1, **TINY)  # a checkpoint each step
    with pytest.raises(RotoscopeError, match="No good weights to keep yet, so no filter was saved"):
        train_mod.train(art, "hot", two_photos, cfg.replace(lr=0.5), progress=False, log=lambda s: None)
    assert not (runs_dir() / "hot" / "checkpoint.safetensors").exists()
    boom["on"] = False
    filt = train_mod.train(art, "hot", two_photos, cfg.replace(lr=1e-3), progress=False, log=lambda s: None)
    assert not any("diverging" in w for w in filt.card["warnings"])


def test_a_training_run_measures_the_peak_at_every_exam_and_reports_droplets(art, two_photos, monkeypatch):
    """The loop hands each held-out exam's pre-sigmoid peak to the watcher (the threshold lowered to 0 here, so any
    painting counts as droplets): the warning reaches the log and the card, and training goes on."""
    train_mod = importlib.import_module("rotoscope.train")
    monkeypatch.setattr(pitfalls, "DROPLET_PEAK", 0.0)
    log = []
    cfg = TrainConfig().replace(steps=4, eval_every=2, **TINY)
    train_mod.train(art, "drops", two_photos, cfg, progress=False, log=log.append)
    card = read_card(registry_path("drops"))
    assert card["timings"]["steps"] == 4 and card.get("stopped") is None
    assert sum("droplets: the held-out paintings peak at" in w for w in card["warnings"]) == 1  # once, at step 2
    assert any(line.startswith("warning: step 2: droplets") for line in log)
    peaks = [h["peak"] for h in checkpoint_state("drops")["run"]["history"] if "peak" in h]
    assert len(peaks) == 2 and all(0 < v < 30 for v in peaks)


def test_a_droplets_warning_the_run_outgrew_is_said_to_be_gone():
    """Warned at step 80 (peak 44.5), the peak fell to 14 by the end: the card still said pixels were pinned."""
    warned = ["step 20: droplets: the held-out paintings peak at 45 before their final sigmoid ..."]
    gone = pitfalls.droplets_gone(with_peaks({20: 44.5, 40: 20.0, 60: 14.0}), warned)
    assert gone.startswith("droplets: gone by the last exam (step 60: the held-out paintings peak at 14, under 30)")
    assert pitfalls.droplets_gone(with_peaks({20: 44.5, 60: 40.0}), warned) is None  # still there
    assert pitfalls.droplets_gone(with_peaks({20: 4.0, 60: 3.0}), []) is None  # never warned


def test_a_resumed_run_says_each_pitfall_once(art, two_photos, monkeypatch):
    """After --resume the watcher started afresh and warned of the same droplets again, at a later step."""
    from conftest import interrupt_training_at

    from rotoscope.data import PhotoSet

    train_mod = importlib.import_module("rotoscope.train")
    monkeypatch.setattr(pitfalls, "DROPLET_PEAK", 0.0)
    cfg = TrainConfig().replace(steps=8, eval_every=2, **TINY)
    real_batch = interrupt_training_at(monkeypatch, 5)
    with pytest.raises(RotoscopeError, match="interrupted at step 5/8"):
        train_mod.train(art, "again", two_photos, cfg, progress=False, log=lambda s: None)
    monkeypatch.setattr(PhotoSet, "batch", real_batch)
    log = []
    train_mod.train(art, "again", two_photos, cfg, resume=True, progress=False, log=log.append)
    card = read_card(registry_path("again"))
    assert sum("droplets: the held-out" in w for w in card["warnings"]) == 1
    assert not any("droplets" in line for line in log)


def test_no_photo_held_out_although_a_share_was_asked_is_said_before_training():
    said = pitfalls.photo_set(10, None, n_holdout=0, holdout_share=0.15)
    assert [p.kind for p in said] == ["no-holdout"] and "overfits" in said[0].message and "0.15" in said[0].message
    assert pitfalls.photo_set(10, None, n_holdout=0, holdout_share=0) == []  # asked for none: nothing to say
    assert pitfalls.photo_set(10, None, n_holdout=2, holdout_share=0.15) == []
