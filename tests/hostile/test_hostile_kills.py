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

from conftest import make_image, render_differences, require_module

require_module("hypothesis", 'pip install -e ".[test]"')
from hypothesis import HealthCheck, event, example, given, settings, strategies as st  # noqa: E402

# a hang (a FIFO read, a lock) fails within 300 s rather than at the suite's 600 s
pytestmark = pytest.mark.timeout(300)

SRC = str(Path(__file__).resolve().parents[2] / "src")
STEPS = 24
TRAIN = ["--steps", str(STEPS), "--size", "32", "--batch", "1", "--backbone", "random", "--channels", "8,16,16",
         "--res-blocks", "1", "--precision", "fp32", "--no-progress", "--checkpoint-every", "3", "--seed", "3",
         "--set", "size_start=0", "--set", "holdout=0", "--set", "eval_every=1000", "--set", "preview_every=1000",
         "--set", "style_match=gram", "--set", "style_size=64"]  # Gram: these tests are about kills, not the loss; the sliced term costs 25% more
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


# ---------------------------------------------------------------- a folder of images, a video render

# The child slows its painting down (a sleep around each write, inside the write's temporary-name window, or
# around each batch of frames) so that a drawn kill moment lands inside the run, not after it; the kill is real.
SLOW_FOLDER = ("import sys, time\nimport PIL.Image\n_save = PIL.Image.Image.save\n"
               "def save(self, *a, **k):\n    time.sleep(0.03)\n    _save(self, *a, **k)\n    time.sleep(0.08)\n"
               "PIL.Image.Image.save = save\n")
SLOW_VIDEO = ("import sys, time\nimport rotoscope.video.render as r\n_paint = r.stylize_frames\n"
              "def paint(*a, **k):\n    time.sleep(0.12)\n    return _paint(*a, **k)\n"
              "r.stylize_frames = paint\n")
RUN_CLI = "from rotoscope import cli\nsys.argv = ['rotoscope'] + sys.argv[1:]\ncli.main()\n"


def _kill_when(cmd_args: list[str], env: dict, slow: str, ready, extra_s: float) -> int:
    """Run the CLI with ARGS in a slowed child; once ready() holds, wait extra_s more and kill -9 its process group.
    Returns the child's exit code (-9 when killed, 0 when it finished first)."""
    p = subprocess.Popen([sys.executable, "-c", slow + RUN_CLI, *cmd_args], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while p.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert time.monotonic() < deadline, "the run never reached the drawn kill point"
        try:
            p.wait(timeout=extra_s)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
        code = p.wait(timeout=60)
        assert code in (0, -signal.SIGKILL), p.stderr.read()
        return code
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=60)
        p.stderr.close()


def _finished(folder: Path) -> dict[str, tuple]:
    """Each finished output (not a hidden temporary) with what would change if it were written again."""
    import hashlib

    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.glob("*.png")) if not p.name.startswith(".")} if folder.is_dir() else {}


FOLDER_N = 8


@pytest.fixture(scope="module")
def folder_case(tmp_path_factory):
    """A folder of photos, a filter, and the outputs an uninterrupted run (in this process) paints from them."""
    from conftest import make_filter

    root = tmp_path_factory.mktemp("kill-folder")
    (root / "photos").mkdir()
    # names, not numbers: a folder of numbered pictures is a clip's frames (a video render)
    for i, name in enumerate(("ash", "birch", "cedar", "elm", "fir", "hazel", "larch", "oak")[:FOLDER_N]):
        make_image(root / "photos" / f"{name}.png", size=(40, 32), seed=i)
    filt = make_filter(root / "f.safetensors")
    args = ["apply", str(filt), str(root / "photos"), "--engine", "torch", "--precision", "fp32", "--no-progress"]
    code, err, _ = _in_process([*args, "-o", str(root / "reference")], root / "home")
    assert code == 0, err
    return {"root": root, "args": args, "reference": root / "reference"}


@settings(max_examples=2, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.integers(1, FOLDER_N - 2), extra=st.floats(0.0, 0.1))
@example(before=2, extra=0.07)  # always once while a picture waits under its temporary name
def test_a_folder_run_killed_does_not_repaint_what_it_wrote(folder_case, tmp_path_factory, before, extra):
    """kill -9 once `before` pictures are written (and up to 0.1 s more: often while the next one is under its
    temporary name); the same command paints only the rest: the earlier outputs keep their inode, mtime and bytes,
    every output equals the uninterrupted run's pixels, and no temporary file is left."""
    import numpy as np
    from PIL import Image

    out = tmp_path_factory.mktemp("killed-folder") / "out"
    args = [*folder_case["args"], "-o", str(out)]
    env = _env(folder_case["root"] / "home")
    code = _kill_when(args, env, SLOW_FOLDER, lambda: len(_finished(out)) >= before, extra)
    written = _finished(out)
    event(f"killed: {code == -signal.SIGKILL}, written before: {len(written)}, "
          f"mid-write: {any('.partial' in p.name for p in out.iterdir())}")
    assert len(written) >= before
    code, err, _ = _in_process(args, folder_case["root"] / "home")
    assert code == 0, err
    after = _finished(out)
    again = {k: (written[k], after.get(k)) for k in written if after.get(k) != written[k]}
    assert not again, f"outputs written before the kill were painted again: {again}\n{err}"
    assert sorted(after) == sorted(_finished(folder_case["reference"]))
    for name in after:
        with Image.open(out / name) as a, Image.open(folder_case["reference"] / name) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b)), name
    assert not [p.name for p in out.iterdir() if ".partial" in p.name], "a killed write's temporary file is left"


@pytest.fixture(scope="module")
def video_case(tmp_path_factory):
    from conftest import make_clip, make_filter

    root = tmp_path_factory.mktemp("kill-video")
    clip = make_clip(root / "clip.mp4", frames=24, size=(48, 32))
    filt = make_filter(root / "f.safetensors")
    args = ["apply", str(filt), str(clip), "--engine", "torch", "--precision", "fp32", "--no-progress",
            "--set", "segment_frames=8", "--set", "batch=4"]
    (root / "reference").mkdir()
    code, err, _ = _in_process([*args, "-o", str(root / "reference" / "out.mp4")], root / "home")
    assert code == 0, err
    return {"root": root, "args": args, "reference": (root / "reference" / "out.mp4").read_bytes(),
            "reference_path": root / "reference" / "out.mp4"}


@settings(max_examples=2, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=st.integers(0, 2), extra=st.floats(0.0, 0.4))
@example(segments=1, extra=0.2)  # always once in the middle of a segment
def test_a_video_render_killed_anywhere_resumes_to_the_same_file(video_case, tmp_path_factory, segments, extra):
    """kill -9 once `segments` segments are finished and up to 0.4 s more (mid-batch, mid-segment, mid-assembly):
    the same command resumes from the finished segments and writes exactly the bytes of an uninterrupted render;
    no work folder or temporary file is left. (tests/test_video.py kills at a segment boundary, from inside.)"""
    folder = tmp_path_factory.mktemp("killed-video")
    dest = folder / "out.mp4"
    args = [*video_case["args"], "-o", str(dest)]

    def ready():
        works = [w for w in folder.glob(".out.mp4.rotoscope-*") if w.is_dir()]
        return bool(works) and (segments == 0 or (works[0] / f"seg-{segments - 1:05d}.json").exists())

    code = _kill_when(args, _env(video_case["root"] / "home"), SLOW_VIDEO, ready, extra)
    if dest.exists():  # killed after the rename (while it cleared its work folder): the file must be whole
        assert dest.read_bytes() == video_case["reference"], "a killed render left a partial file under its name"
    kept = [s for w in folder.glob(".out.mp4.rotoscope-*") for s in w.glob("seg-*.json")]
    how = f"killed: {code == -signal.SIGKILL}, segments kept: {len(kept)}, output there: {dest.exists()}"
    event(how)
    code, err, _ = _in_process(args, video_case["root"] / "home")
    assert code == 0, err
    reference = video_case["reference_path"]
    if kept:
        assert f"resuming: {len(kept) * 8} frames already rendered" in err, err
    same = dest.read_bytes() == video_case["reference"]
    if not same:  # seen three times under the AVX2 caps in full runs, never alone: say what could explain it
        import cv2
        import torch

        state = (f"this process: OpenCV optimized {cv2.useOptimized()}, {cv2.getNumThreads()} OpenCV threads, "
                 f"{torch.get_num_threads()} torch threads")
        assert same, (f"the resumed render differs from an uninterrupted one ({how}; {state}): "
                      f"{render_differences(dest, reference)}")
    assert not list(folder.iterdir())[1:], list(folder.iterdir())  # the output alone: no work folder, no partial
