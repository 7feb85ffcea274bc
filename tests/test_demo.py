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
