"""kill -9 at a drawn moment of a training run, then the same command again (with --resume once a checkpoint
exists): the run completes, no checkpoint is ever half-written, nothing is left behind, and the filter is exactly
the one an uninterrupted run makes. Hypothesis draws the kill points; a few examples keep it under a minute."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import make_image, require_module

require_module("hypothesis", 'pip install -e ".[test]"')
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

# a hang (a FIFO read, a lock) fails within 300 s rather than at the suite's 600 s
pytestmark = pytest.mark.timeout(300)

SRC = str(Path(__file__).resolve().parents[2] / "src")
STEPS = 24
TRAIN = ["--steps", str(STEPS), "--size", "32", "--batch", "1", "--backbone", "random", "--channels", "8,16,16",
         "--res-blocks", "1", "--precision", "fp32", "--no-progress", "--checkpoint-every", "3", "--seed", "3",
         "--set", "size_start=0", "--set", "holdout=0", "--set", "eval_every=1000", "--set", "preview_every=1000"]
STARTED = "training filter"  # the line said just before the first step
SAVED = "saved filter"  # the line said once the filter is written


def _env(home: Path) -> dict:
    return {**os.environ, "ROTOSCOPE_HOME": str(home), "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1",
            "ROTOSCOPE_THREADS": "1"}


def _command(root: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "rotoscope", "train", str(root / "art.png"), "--name", "k", "--photos",
            str(root / "photos"), *TRAIN, *extra]


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run (in this process): its filter's weights, and how long it took from its start line to its
    saved line (the window the kill points are drawn in)."""
    root = tmp_path_factory.mktemp("kills")
    make_image(root / "art.png", size=(48, 40), seed=7)
    (root / "photos").mkdir()
    for i, name in enumerate(("alpha", "beta", "gamma")):
        make_image(root / "photos" / f"{name}.png", size=(40, 36), seed=i)
    home = root / "reference-home"
    code, err, said = _in_process(_command(root)[3:], home)
    assert code == 0, err
    return {"root": root, "weights": _weights(home / "filters" / "k.safetensors"),
            "train_s": said[SAVED] - said[STARTED]}


def _kill_during(cmd, env, kill_after: float) -> None:
    """Run cmd and kill -9 it (its whole process group) `kill_after` seconds after it says it started training."""
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    started = threading.Event()
    lines: list[str] = []

    def read():
        for line in p.stderr:
            lines.append(line)
            if STARTED in line:
                started.set()
        started.set()  # ended without training (an error): stop waiting

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        assert started.wait(120), "the run did not start training within 120 s"
        try:
            p.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
        assert p.wait(timeout=60) in (0, -signal.SIGKILL), "".join(lines)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=60)
        t.join(10)


class _Timed(io.StringIO):
    """stderr that notes when the start and saved lines were said."""

    def __init__(self):
        super().__init__()
        self.said: dict[str, float] = {}

    def write(self, text):
        for key in (STARTED, SAVED):
            if key in text:
                self.said.setdefault(key, time.monotonic())
        return super().write(text)


def _in_process(args: list[str], home: Path) -> tuple[int, str, dict]:
    """`rotoscope ARGS` run by cli.main in this process (a fresh interpreter's start costs seconds an example)."""
    import contextlib

    from rotoscope import cli

    saved = {k: os.environ.get(k) for k in ("ROTOSCOPE_HOME", "ROTOSCOPE_THREADS")}
    os.environ.update(ROTOSCOPE_HOME=str(home), ROTOSCOPE_THREADS="1")
    argv, sys.argv = sys.argv, ["rotoscope", *args]
    err = _Timed()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return code, err.getvalue(), err.said


@settings(max_examples=3, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(percent=st.integers(min_value=1, max_value=99))
def test_training_killed_at_any_point_resumes_to_the_same_filter(reference, tmp_path_factory, percent):
    """The kill comes `percent` % of the way from the run's start line to its saved line (as the reference run
    timed them): before the first checkpoint, between checkpoints, while one is written, while the filter is."""
    root = reference["root"]
    home = tmp_path_factory.mktemp("killed-home")
    env = _env(home)
    _kill_during(_command(root), env, kill_after=percent / 100 * reference["train_s"])
    run_dir = home / "runs" / "k"
    checkpoint = run_dir / "checkpoint.safetensors"
    if checkpoint.exists():  # a checkpoint is whole or absent, never half-written
        from rotoscope.train import checkpoint_state

        assert 0 < checkpoint_state(checkpoint)["run"]["step"] <= STEPS
        _weights(checkpoint)
    finished = (home / "filters" / "k.safetensors").exists()
    if not finished:  # the same command again, in this process (the kill above was a real one)
        extra = ["--resume"] if checkpoint.exists() else []
        code, err, _ = _in_process(_command(root, *extra)[3:], home)
        assert code == 0, err
        assert ("resuming 'k' at step" in err) == bool(extra)
    got = _weights(home / "filters" / "k.safetensors")
    import torch

    assert got.keys() == reference["weights"].keys()
    assert all(torch.equal(got[k], reference["weights"][k]) for k in got), "not the uninterrupted run's filter"
    leftovers = [p for p in home.rglob("*") if ".partial" in p.name]
    assert not leftovers, leftovers
