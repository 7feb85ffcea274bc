"""`rotoscope demo` fits its training to a time budget measured on this machine, in any precision."""

import pytest

from rotoscope import demo
from rotoscope.config import TrainConfig


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_training_step_is_timed_in_either_precision(precision):
    cfg = TrainConfig().replace(size=32, batch=1, channels=(8, 16, 16), res_blocks=1, backbone="random",
                                precision=precision)
    assert demo.seconds_per_step(cfg, log=lambda s: None) > 0


def test_steps_fit_the_budget_within_bounds():
    assert demo.budget_steps(0.42, 170) == 400  # a fast machine: capped
    assert demo.budget_steps(0.6, 170) == 280  # a 2-core AVX2 laptop-class CPU, batch 2 at 128 px
    assert demo.budget_steps(5.0, 170) == demo.MIN_STEPS  # very slow: still enough to show a style


def test_the_drawn_artwork_is_deterministic():
    import numpy as np

    assert np.array_equal(np.asarray(demo.draw_artwork(64, seed=1)), np.asarray(demo.draw_artwork(64, seed=1)))


def test_the_poster_is_flat_red_black_and_cream_and_deterministic():
    import numpy as np

    a = np.asarray(demo.draw_poster(150, 200, seed=2)).astype(int)
    assert a.shape == (200, 150, 3)
    assert np.array_equal(a, np.asarray(demo.draw_poster(150, 200, seed=2)))
    # nearly every pixel is within reach of one of the three inks (grain and half-tone aside)
    inks = np.array([demo.POSTER_RED, demo.POSTER_BLACK, demo.POSTER_CREAM])
    nearest = np.abs(a[:, :, None, :] - inks[None, None]).sum(-1).min(-1)
    assert (nearest < 60).mean() > 0.9
    share = np.bincount(np.abs(a[:, :, None, :] - inks[None, None]).sum(-1).argmin(-1).ravel(), minlength=3) / a[..., 0].size
    assert share.min() > 0.1  # all three inks carry a real share of the poster


def test_a_step_count_out_of_range_is_refused_before_anything_is_drawn(tmp_path):
    """`--steps 0` once meant 'the demo's budget': ten minutes of training nobody asked for."""
    from rotoscope.errors import RotoscopeError

    with pytest.raises(RotoscopeError, match=r"steps must be between 1 and"):
        demo.run_demo(tmp_path / "out", steps=0, log=lambda s: None, progress=False)
    assert not (tmp_path / "out").exists()


def test_resuming_a_demo_that_never_ran_is_one_line_before_any_work(tmp_path):
    from rotoscope.errors import RotoscopeError

    with pytest.raises(RotoscopeError, match="nothing to resume: no checkpoint for 'demo'"):
        demo.run_demo(tmp_path / "out", resume=True, log=lambda s: pytest.fail(f"said {s!r} first"), progress=False)
    assert not (tmp_path / "out").exists()


def test_an_interrupted_demo_resumes_with_its_own_step_count(tmp_path, monkeypatch):
    """Ctrl-C says 'run the same command with --resume'; the resumed demo keeps the interrupted run's step count
    (timing the machine again would choose another) and ends with its sheet."""
    from conftest import interrupt_training_at
    from rotoscope.data import PhotoSet
    from rotoscope.errors import Interrupted
    from rotoscope.filter import load_filter

    real_batch = interrupt_training_at(monkeypatch, 3)
    with pytest.raises(Interrupted, match=r"interrupted at step 3/5.*--resume"):
        demo.run_demo(tmp_path, steps=5, backbone="random", log=lambda s: None, progress=False)
    monkeypatch.setattr(PhotoSet, "batch", real_batch)
    lines = []
    sheet = demo.run_demo(tmp_path, backbone="random", log=lines.append, progress=False, resume=True)
    assert sheet.is_file() and any("resuming 'demo' at step 3" in line for line in lines)
    assert not any("s per step here" in line for line in lines)  # not timed again
    assert load_filter("demo").card["timings"]["steps"] == 5


def test_the_demo_replaces_its_own_filter_never_one_of_yours_of_its_name(tmp_path):
    """A user's own filter named 'demo' was silently replaced by the demo's poster filter."""
    from conftest import make_filter
    from rotoscope.errors import Conflict
    from rotoscope.filter import load_filter, load_filter_file, save_filter
    from rotoscope.paths import filters_dir

    earlier = make_filter(filters_dir() / "demo.safetensors")  # one made by an earlier demo...
    f = load_filter_file(earlier)
    save_filter(f.net, {**f.card, "artwork": {"title": demo.DEMO_TITLE}}, earlier)
    demo.run_demo(tmp_path / "a", steps=2, backbone="random", log=lambda s: None, progress=False, name="demo")
    assert load_filter("demo").card["timings"]["steps"] == 2  # ...is replaced
    make_filter(filters_dir() / "demo.safetensors")  # one of the user's, with its own artwork, is not
    with pytest.raises(Conflict, match=r"a filter named 'demo' exists and the demo did not make it.*--name"):
        demo.run_demo(tmp_path / "b", steps=2, backbone="random", log=lambda s: None, progress=False)
    assert not (tmp_path / "b").exists()  # refused before anything was drawn
    assert "timings" not in load_filter("demo").card


def test_the_demo_does_not_start_over_an_interrupted_training_of_another_artwork(tmp_path, monkeypatch):
    from conftest import interrupt_training_at, make_photos
    from rotoscope.errors import Conflict, Interrupted
    from rotoscope.train import train

    interrupt_training_at(monkeypatch, 2)
    art = demo.draw_artwork(64).save(tmp_path / "mine.png") or tmp_path / "mine.png"
    cfg = TrainConfig().replace(steps=4, size=32, batch=1, channels=(4, 8, 8), res_blocks=1, backbone="random")
    with pytest.raises(Interrupted):
        train(art, "demo", make_photos(tmp_path / "photos", 3), cfg, log=lambda s: None, progress=False)
    with pytest.raises(Conflict, match="an interrupted training of another artwork is kept as 'demo'"):
        demo.run_demo(tmp_path / "out", steps=2, backbone="random", log=lambda s: None, progress=False)
