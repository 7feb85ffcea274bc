"""cluster.py: a clip cut into Ray tasks renders as the local render does (frames, timing, sound, seams), a lost
worker's task is re-run, a killed driver resumes; folders and train-many on Ray. One local Ray cluster (2 CPUs)
for the module."""

import os
import signal
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import (assert_one_line_error, interrupt_training_at, make_clip, make_filter, make_scene,
                      require_module, rotoscope)
from rotoscope import cluster, flow, video
from rotoscope.config import ClusterConfig, TrainConfig, VideoConfig
from rotoscope.filter import load_filter_file
from rotoscope.stylize import ApplySettings

# named engine and precision: the local and the cluster render must not each measure and pick their own
ST = ApplySettings(engine="torch", precision="fp32")
# lossless x264 (crf 0): the comparisons below are of what was painted. At crf 10 the encoder magnified a warm-up's
# sub-level differences (0.001 levels on average at a task's first frame) over the segment's frames to 0.2, and
# once to 1.2 (crf picks each frame's quantiser from the frame itself): the test measured x264, not the seam
SEG = VideoConfig(batch=4, segment_frames=8, crf=0)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray = require_module("ray", "pip install -e '.[cluster]'")
    # the workers start with this environment: one thread each (2 tasks on 2 cores), a home of their own
    env = {"OMP_NUM_THREADS": "1", "ROTOSCOPE_HOME": str(tmp_path_factory.mktemp("ray-home"))}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": env})
    # the tests' hooks run on the workers: send them by value (the workers cannot import this file)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def one_thread():
    """The local runs compared with the workers' compute on one thread, as the workers do: a CLI test earlier in
    the same process sets PyTorch to one thread per core, and float sums in another order can flip a pixel's
    rounding or a weight's last digits."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def filt(tmp_path_factory):
    return load_filter_file(make_filter(tmp_path_factory.mktemp("f") / "tiny.safetensors"))


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """64 frames: the second task's seam (frame 32) lies past a full warm-up (25 frames)."""
    return make_clip(tmp_path_factory.mktemp("clips") / "long.mp4", frames=64)


@pytest.fixture(scope="module")
def local(filt, long_clip, tmp_path_factory):
    return video.apply_video(filt, long_clip, tmp_path_factory.mktemp("local") / "local.mp4", ST, SEG)


def decoded(path):
    """(pts as rationals, rgb frames) of the first video stream."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames = list(c.decode(vs))
        return [f.pts * vs.time_base for f in frames], [f.to_ndarray(format="rgb24") for f in frames]


def audio_packets(path):
    with av.open(str(path)) as c:
        return [[(bytes(p), p.pts, p.dts, p.duration) for p in c.demux(s) if p.size] for s in c.streams.audio]


def seam_errors(out, rgb_in):
    """The warping error of each consecutive pair of frames (flow.pair_warping_error)."""
    return [flow.pair_warping_error(out[i], out[i + 1], rgb_in[i], rgb_in[i + 1]) for i in range(len(out) - 1)]


def frame_diffs(a, b):
    return [float(np.abs(x.astype(int) - y.astype(int)).mean()) for x, y in zip(a, b, strict=True)]


# ---------------------------------------------------------------- planning and seeking (no Ray)


def test_runs_of_unfinished_segments_become_tasks():
    assert cluster.plan_tasks([0, 1, 2, 5, 6, 7, 8], 9, 2) == [(0, 2), (2, 3), (5, 7), (7, None)]
    assert cluster.plan_tasks([3], 4, 10) == [(3, None)]  # the last run goes to the clip's real end
    cfg = ClusterConfig()
    assert cluster.segments_per_task(cfg, 100, 2) == 25  # two tasks per worker
    assert cluster.segments_per_task(cfg, 6, 2) == 3  # short: one task per worker rather than tiny ones
    assert cluster.warmup_frames(cfg, VideoConfig()) == 25  # 0.8 ** 25 * 255 < 1
    assert cluster.warmup_frames(cfg, VideoConfig(stabilize=False)) == 0


def test_a_seeking_decode_gives_the_frames_a_full_decode_gives(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=40, audio=False)
    src = video.probe(clip)
    table = video.frame_table(src)
    full = list(video.decode(src, 64, 48, print))
    assert table == [f[0] for f in full]
    part = list(video.decode(src, 64, 48, print, start=17, table=table))
    assert [f[:2] for f in part] == [f[:2] for f in full[17:]]  # pts and durations
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(part, full[17:]))
    cut = video.frame_table(src, max_seconds=0.5)
    assert len(cut) == 12  # 24 fps


def test_the_output_ends_at_the_first_gap_as_a_local_render_would(tmp_path):
    """Every task succeeded but one stopped early (a damaged stretch): the frames up to there, and a warning."""
    import json
    from types import SimpleNamespace

    job = SimpleNamespace(work=tmp_path, video=SimpleNamespace(segment_frames=4),
                          src=SimpleNamespace(path=Path("c.mp4")), seg_done=lambda i: tmp_path / f"seg-{i:05d}.json")
    for i, n in [(0, 4), (1, 2), (2, 4)]:  # segment 1 is short: its task's decoder stopped after 2 frames
        job.seg_done(i).write_text(json.dumps({"frames": [[k, 1] for k in range(n)]}))
    said = []
    assert cluster._frames_in_order(job, said.append) == 6
    assert len(said) == 1 and "frame 6 could not be decoded" in said[0]
    job.seg_done(2).unlink()
    job.seg_done(1).write_text(json.dumps({"frames": [[k, 1] for k in range(4)]}))
    assert cluster._frames_in_order(job, said.append) == 8 and len(said) == 1  # whole: nothing to say


# ---------------------------------------------------------------- a clip on 2 workers


def second_task_first(flag: str):
    """A task hook: the first task waits after its first segment until the second task has finished one, so the
    second cannot chain on from a finished first task and must warm up (on a loaded machine it otherwise might)."""

    def hook(seg: int) -> None:
        if seg >= 4:
            Path(flag).touch()
        elif seg == 0:
            t = time.monotonic()
            while not os.path.exists(flag):
                assert time.monotonic() - t < 120, "the second task did not finish a segment in 2 minutes"
                time.sleep(0.05)

    return hook


def test_a_clip_in_two_tasks_matches_the_local_render(ray_cluster, filt, long_clip, local, tmp_path):
    reports = []
    out = cluster.apply_video(filt, long_clip, tmp_path / "ray.mp4", ST, SEG, cfg=ClusterConfig(segments_per_task=4),
                              task_hook=second_task_first(str(tmp_path / "second-began")), reports=reports)
    assert sorted((r.first, r.end) for r in reports) == [(0, 4), (4, None)]
    assert len({r.pid for r in reports}) == 2  # two workers painted
    assert all(r.node for r in reports)  # and each says on which node
    assert sorted(r.frames for r in reports) == [32, 32]
    # each task times its stages and says so; its warm-up frames (a whole number of batches) are painted and count
    first, second = sorted(reports, key=lambda r: r.first)
    assert first.stages["frames"] == 32
    assert first.warmup == 0 and second.stages["frames"] == 32 + second.warmup
    warmup = cluster.warmup_frames(ClusterConfig(), SEG)
    assert warmup <= second.warmup < warmup + SEG.batch
    assert all(r.stages["ms_per_frame"]["paint"] > 0 for r in reports)
    pts_l, rgb_l = decoded(local)
    pts_c, rgb_c = decoded(out)
    _, rgb_in = decoded(long_clip)
    assert len(rgb_c) == len(rgb_l) == 64
    assert pts_c == pts_l == decoded(long_clip)[0]  # every timestamp, exactly
    assert audio_packets(out) == audio_packets(local) == audio_packets(long_clip)  # the sound untouched
    # measured: every frame equal to the local render's (the warm-up settles the chain to the same uint8 values);
    # the stated tolerance is under one 8-bit level on average for every frame
    assert max(frame_diffs(rgb_c, rgb_l)) < 1.0
    # the seam (frames 31 -> 32) is as steady as the pairs inside the segments (measured: 0.0032 against a median
    # of 0.0031 and a largest of 0.0068 inside; without the warm-up 4.5x the median, below)
    errs = seam_errors(rgb_c, rgb_in)
    inside = [e for i, e in enumerate(errs) if i != 31]
    assert errs[31] <= 1.25 * float(np.median(inside)) and errs[31] <= max(inside)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # the work folder is gone


def test_without_a_warm_up_the_seam_shows(ray_cluster, filt, long_clip, local, tmp_path):
    """What the warm-up is for: a task that starts its chain cold paints frames the local render does not."""
    out = cluster.apply_video(filt, long_clip, tmp_path / "cold.mp4", ST, SEG,
                              cfg=ClusterConfig(segments_per_task=4, warmup_frames=0),
                              task_hook=second_task_first(str(tmp_path / "second-began")))
    rgb = decoded(out)[1]
    d = frame_diffs(rgb, decoded(local)[1])
    assert max(d[:32]) < 1.0 and d[32] > 2.0  # measured: 0 before the seam, 8.4 levels at it
    errs = seam_errors(rgb, decoded(long_clip)[1])
    assert errs[31] > 2 * float(np.median(errs[:31] + errs[32:]))  # and the seam's flicker is measurable: 4.5x


def kill_once(flag: str):
    """A task hook: the first time a segment finishes, the worker dies (SIGKILL), as a lost machine would."""

    def hook(seg: int) -> None:
        if not os.path.exists(flag):
            Path(flag).write_text(str(seg))
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def test_a_lost_worker_is_retried_and_keeps_what_it_finished(ray_cluster, filt, tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=24)
    flag = tmp_path / "killed"
    reports = []
    out = cluster.apply_video(filt, clip, tmp_path / "ray.mp4", ST, SEG, cfg=ClusterConfig(segments_per_task=3),
                              task_hook=kill_once(str(flag)), reports=reports)
    assert flag.exists()  # a worker did die
    # the re-run began after the segment the dead attempt had finished
    assert [(r.first, r.end) for r in reports] == [(1, None)]
    whole = video.apply_video(filt, clip, tmp_path / "local.mp4", ST, SEG)
    assert decoded(out)[0] == decoded(whole)[0]
    assert max(frame_diffs(decoded(out)[1], decoded(whole)[1])) < 1.0
    assert audio_packets(out) == audio_packets(clip)


def test_a_killed_driver_resumes_from_the_local_work_folder(ray_cluster, filt, long_clip, local, tmp_path):
    dest = tmp_path / "out.mp4"

    def interrupt(seg):
        if seg == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # a local render stopped after 3 segments
        video.apply_video(filt, long_clip, dest, ST, SEG, on_segment=interrupt)
    assert not dest.exists()
    reports, lines = [], []
    cluster.apply_video(filt, long_clip, dest, ST, SEG, cfg=ClusterConfig(segments_per_task=3), reports=reports,
                        warn=lines.append)
    assert any("resuming: 24 frames" in line for line in lines)
    assert sorted((r.first, r.end) for r in reports) == [(3, 6), (6, None)]  # only the unfinished segments
    assert max(frame_diffs(decoded(dest)[1], decoded(local)[1])) < 1.0
    assert audio_packets(dest) == audio_packets(long_clip)


# ---------------------------------------------------------------- folders


def test_a_folder_on_the_cluster_writes_what_the_local_loop_writes(ray_cluster, filt, tmp_path, capsys):
    from rotoscope.apply import Painted, Skipped, apply_folder
    from rotoscope.images import read_provenance

    src = tmp_path / "photos"
    src.mkdir()
    for i, name in enumerate(["street.png", "beach.jpg", "cat.png", "dog.png", "tree.png"]):
        make_scene(src / name, seed=i)
    (src / "broken.png").write_bytes(b"not a picture")
    ray_res = list(cluster.apply_folder(filt, src, tmp_path / "ray", ST, False,
                                        cfg=ClusterConfig(images_per_task=2, max_in_flight=1)))
    loc_res = list(apply_folder(filt, src, tmp_path / "loc", ST, False))
    assert [type(r).__name__ for r in ray_res] == [type(r).__name__ for r in loc_res]
    assert sum(isinstance(r, Skipped) for r in ray_res) == 1
    names = sorted(p.name for p in (tmp_path / "ray").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "loc").iterdir()) and len(names) == 5
    for n in names:
        assert read_provenance(tmp_path / "ray" / n) == read_provenance(tmp_path / "loc" / n)
        if n.endswith(".png"):
            from PIL import Image

            a = np.asarray(Image.open(tmp_path / "ray" / n)).astype(int)
            b = np.asarray(Image.open(tmp_path / "loc" / n)).astype(int)
            assert np.abs(a - b).max() <= 1  # measured: equal (one thread each); at most a rounding flip
    again = list(cluster.apply_folder(filt, src, tmp_path / "ray", ST, False, cfg=ClusterConfig(images_per_task=2)))
    assert all(r.reused for r in again if isinstance(r, Painted))  # nothing repainted


def test_a_folder_of_clips_on_the_cluster_writes_what_the_local_loop_writes(ray_cluster, filt, tmp_path,
                                                                          monkeypatch):
    """Each clip of a folder is a render whose segments spread over the workers; same names, frames and sound as
    the local loop, and a second run keeps what is finished."""
    from rotoscope.apply import Painted, apply_path

    src = tmp_path / "clips"
    src.mkdir()
    make_clip(src / "one.mp4", frames=16)
    make_clip(src / "two.mkv", frames=16, audio=False, seed=1)
    make_scene(src / "still.png")
    cfg = ClusterConfig(segments_per_task=1)
    rendered, real = [], cluster.render_on_cluster
    monkeypatch.setattr(cluster, "render_on_cluster",
                        lambda job, *a: rendered.append(job.src.path.name) or real(job, *a))
    ray_res = [r for r in apply_path(filt, src, tmp_path / "ray", ST, progress=False, video=SEG, cluster="auto",
                                     cluster_cfg=cfg) if isinstance(r, Painted)]
    loc_res = [r for r in apply_path(filt, src, tmp_path / "loc", ST, progress=False, video=SEG)
               if isinstance(r, Painted)]
    assert [Path(r.output).name for r in ray_res] == [Path(r.output).name for r in loc_res] \
        == ["still.png", "one.mp4", "two.mkv"]
    assert rendered == ["one.mp4", "two.mkv"]  # each clip went to the cluster (16 frames: two tasks of 8)
    for name in ("one.mp4", "two.mkv"):
        pts_c, rgb_c = decoded(tmp_path / "ray" / name)
        pts_l, rgb_l = decoded(tmp_path / "loc" / name)
        assert pts_c == pts_l and len(rgb_c) == 16
        assert max(frame_diffs(rgb_c, rgb_l)) < 1.0  # as for one clip (above)
        assert audio_packets(tmp_path / "ray" / name) == audio_packets(src / name)
    again = [r for r in apply_path(filt, src, tmp_path / "ray", ST, progress=False, video=SEG, cluster="auto",
                                   cluster_cfg=cfg) if isinstance(r, Painted)]
    assert len(again) == 3 and all(r.reused for r in again)


# ---------------------------------------------------------------- train-many


TINY = TrainConfig().replace(channels=(8, 16, 16), res_blocks=1, size=32, batch=2, steps=2, backbone="random",
                             precision="fp32", style_match="gram", eval_every=1, checkpoint_every=1, preview_every=1000)


@pytest.fixture
def artworks(tmp_path):
    arts = tmp_path / "arts"
    arts.mkdir()
    make_scene(arts / "Red Poster.png", seed=3, size=(64, 64))
    make_scene(arts / "blue.png", seed=4, size=(64, 64))
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        make_scene(photos / f"p{i}.png", seed=10 + i)
    return arts, photos


def test_train_many_on_the_cluster_and_here_make_the_same_filters(ray_cluster, artworks, tmp_path):
    arts, photos = artworks
    rows = cluster.train_many(arts, photos, TINY, cluster="auto", out_dir=tmp_path / "ray")
    assert [(r.name, r.status, r.steps) for r in rows] == [("Red-Poster", "trained", 2), ("blue", "trained", 2)]
    assert all(r.holdout is not None and r.minutes is not None for r in rows)
    here = cluster.train_many(arts, photos, TINY, out_dir=tmp_path / "here", overwrite=True)
    for a, b in zip(rows, here):
        fa, fb = load_filter_file(a.path), load_filter_file(b.path)
        for k, v in fa.net.state_dict().items():
            assert np.allclose(v.numpy(), fb.net.state_dict()[k].numpy(), rtol=1e-4, atol=1e-5), k
    # the same command again keeps what is finished
    again = cluster.train_many(arts, photos, TINY, cluster="auto", out_dir=tmp_path / "ray")
    assert [r.status for r in again] == ["kept", "kept"]


def test_train_many_command_table_and_refusals(artworks, tmp_path, capsys):
    arts, photos = artworks
    tiny = ["--steps", "2", "--size", "32", "--set", "channels=8,16,16", "--set", "res_blocks=1", "--set",
            "backbone=random", "--set", "batch=2", "--set", "precision=fp32", "--set", "eval_every=1"]
    code, out, err = rotoscope("train-many", arts, "--photos", photos, *tiny, capsys=capsys)
    assert code == 0, err
    assert "Red-Poster" in out and "blue" in out and "held-out score" in out and out.count("trained") == 2
    # another artwork under a trained filter's name: refused in one line, before anything is trained
    make_scene(arts / "blue.png", seed=99, size=(64, 64))
    assert_one_line_error(*rotoscope("train-many", arts, "--photos", photos, *tiny, capsys=capsys),
                          "'blue' exists", "--overwrite")
    assert_one_line_error(*rotoscope("train-many", tmp_path / "nothing", capsys=capsys), "no such folder")
    assert_one_line_error(*rotoscope("train-many", arts / "blue.png", capsys=capsys), "blue.png is not a folder")
    # an output folder that cannot be written: said before the first training, not as a failed row after it
    (tmp_path / "a-file").write_text("x")
    assert_one_line_error(*rotoscope("train-many", arts, "--photos", photos, *tiny, "--overwrite", "-o",
                                     tmp_path / "a-file" / "out", capsys=capsys), "cannot write")
    # a shipped filter's name is taken like any other (a user filter would hide it)
    (tmp_path / "gw").mkdir()
    make_scene(tmp_path / "gw" / "great-wave.png", seed=5, size=(64, 64))
    assert_one_line_error(*rotoscope("train-many", tmp_path / "gw", "--photos", photos, *tiny, capsys=capsys),
                          "'great-wave' ships with rotoscope")
    # a refusal leaves no trace: the output folder it names is not made
    (tmp_path / "twins").mkdir()
    make_scene(tmp_path / "twins" / "dune.png", seed=6, size=(64, 64))
    make_scene(tmp_path / "twins" / "dune.jpg", seed=7, size=(64, 64))
    assert_one_line_error(*rotoscope("train-many", tmp_path / "twins", "--photos", photos, *tiny, "-o",
                                     tmp_path / "new-out", capsys=capsys), "would both make the filter 'dune'")
    assert not (tmp_path / "new-out").exists()
    assert_one_line_error(*rotoscope("train-many", arts, "--set", "segments_per_task=-2", capsys=capsys),
                          "segments_per_task")
    assert_one_line_error(*rotoscope("train-many", arts, "--set", "teacher=great-wave", capsys=capsys),
                          "train-many takes no teacher")


def test_ctrl_c_ends_train_many_and_the_same_command_goes_on(artworks, monkeypatch, capsys):
    """Ctrl-C stops the whole command (not just one artwork's row), saying how to continue: train-many has no
    --resume, it resumes by itself."""
    from rotoscope.data import PhotoSet

    arts, photos = artworks
    tiny = ["--steps", "3", "--size", "32", "--set", "channels=8,16,16", "--set", "res_blocks=1", "--set",
            "backbone=random", "--set", "batch=2", "--set", "precision=fp32", "--set", "checkpoint_every=1"]
    real_batch = interrupt_training_at(monkeypatch, 1)
    code, out, err = rotoscope("train-many", arts, "--photos", photos, *tiny, capsys=capsys)
    assert code == 130 and "Red-Poster: interrupted at step 1/3; run the same command again" in err, err
    assert "--resume" not in err and "Traceback" not in err and "blue" not in out + err
    monkeypatch.setattr(PhotoSet, "batch", real_batch)
    code, out, err = rotoscope("train-many", arts, "--photos", photos, *tiny, capsys=capsys)
    assert code == 0, err
    assert "Red-Poster: resumed" in err and "blue: trained" in err


def test_train_many_resumes_an_interrupted_training_and_a_failed_one_is_a_row(artworks, monkeypatch):
    """Here, without Ray: the same command again goes on from an interrupted run's checkpoint; an artwork that
    cannot be trained is its row of the table, and the others are trained."""
    import importlib

    from rotoscope.data import PhotoSet
    from rotoscope.errors import RotoscopeError

    tr = importlib.import_module("rotoscope.train")  # the module (the package's `train` is the function)
    arts, photos = artworks
    cfg = TINY.replace(steps=4)
    real_batch = interrupt_training_at(monkeypatch, 2)
    with pytest.raises(RotoscopeError, match="interrupted at step 2/4"):
        tr.train(arts / "blue.png", "blue", photos, cfg, log=lambda *_: None, progress=False)
    asked = []  # the training steps each run asks photos for, in order

    def record(self, step, *a, **k):
        asked.append(step)
        return real_batch(self, step, *a, **k)

    monkeypatch.setattr(PhotoSet, "batch", record)
    (arts / "broken.png").write_bytes(b"not a picture")
    table = cluster.train_many(arts, photos, cfg)
    rows = {r.name: r for r in table}
    assert (rows["blue"].status, rows["blue"].steps) == ("resumed", 4)
    # the runs go in the table's order: the fresh one asks for all four steps (0-3), the resumed one for 2 and 3 only
    by_run = {"Red-Poster": [0, 1, 2, 3], "blue": [2, 3], "broken": []}
    assert asked == [step for r in table for step in by_run[r.name]]
    assert (rows["Red-Poster"].status, rows["Red-Poster"].steps) == ("trained", 4)
    assert rows["broken"].status.startswith("failed: ") and rows["broken"].steps is None
    assert "\n" not in rows["broken"].status
    # an interrupted run of another artwork under the name: refused before any training, not resumed or dropped
    monkeypatch.setattr(PhotoSet, "batch", real_batch)
    interrupt_training_at(monkeypatch, 1)
    with pytest.raises(RotoscopeError, match="interrupted"):
        tr.train(arts / "Red Poster.png", "other", photos, cfg, log=lambda *_: None, progress=False)
    monkeypatch.setattr(PhotoSet, "batch", real_batch)
    make_scene(arts / "other.png", seed=7, size=(64, 64))
    with pytest.raises(RotoscopeError, match="an interrupted run of 'other' from another artwork is kept at step 1"):
        cluster.train_many(arts, photos, cfg)


def test_cluster_refusals_are_one_line(filt, tmp_path, capsys, monkeypatch):
    clip = make_clip(tmp_path / "c.mp4", frames=4, audio=False)
    assert_one_line_error(*rotoscope("apply", filt.path, clip, "-o", tmp_path / "o.mp4", "--cluster", "auto",
                                     "--set", "images_per_task=0", capsys=capsys), "images_per_task")
    ray = require_module("ray", "pip install -e '.[cluster]'")
    # as a process that has not joined a cluster yet (this module's cluster may be up: it would be reused)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    for where, said in [("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1"), ("nonsense", "HOST:PORT")]:
        assert_one_line_error(*rotoscope("apply", filt.path, clip, "-o", tmp_path / "o.mp4", "--cluster", where,
                                         capsys=capsys), said)
        assert_one_line_error(*rotoscope("train-many", tmp_path, "--cluster", where, capsys=capsys), said)
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    assert_one_line_error(*rotoscope("apply", filt.path, clip, "-o", tmp_path / "o.mp4", "--cluster", "auto",
                                     capsys=capsys), "rotoscope[cluster]")
    assert not (tmp_path / "o.mp4").exists()


# ---------------------------------------------------------------- the server's jobs on the cluster


@pytest.fixture
def ray_jobs(ray_cluster, tmp_path, monkeypatch):
    """A job store, and the address of this module's cluster for a server's Scheduler (as `serve --cluster auto`
    resolves it: the cluster's own address, which the job workers join)."""
    require_module("fastapi", "pip install -e '.[server]'")
    from rotoscope.server.jobs import JobStore

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the job workers: one thread, as the Ray workers
    return JobStore(tmp_path / "jobs.sqlite", tmp_path / "jobs"), cluster.job_address("auto")


def run_jobs(store, address, until, max_jobs=1, timeout=300):
    """Run a Scheduler on `store` with the cluster at `address` until until(store, scheduler) holds; then stop it (as
    a server stops: its running jobs checkpoint and go back to the queue)."""
    from rotoscope.server.runner import Scheduler

    sched = Scheduler(store, max_jobs, cluster=address)
    sched.start()
    try:
        deadline = time.time() + timeout
        while not until(store, sched):
            assert time.time() < deadline, [j.to_dict() for j in store.list()]
            time.sleep(0.1)
    finally:
        # the server's 20 s of patience is for people; here a loaded machine (a Ray actor still importing torch)
        # must not turn a checkpointed stop into a kill (seen once, with a training on the same 2 cores)
        sched.shutdown(timeout=180)
    return sched


def finished(job_id):
    return lambda store, _s: store.get(job_id).status in ("done", "failed", "cancelled")


def log_of(store, job_id) -> str:
    try:
        return (store.folder(job_id) / "log.txt").read_text()
    except FileNotFoundError:
        return ""


def pids_in_log(store, job_id):
    """(the job worker's pids, one per attempt; the Ray processes that painted or trained), from the job's log."""
    import re

    text = log_of(store, job_id)
    return [int(p) for p in re.findall(r", pid (\d+)\)", text)], [int(p) for p in re.findall(r"by process (\d+)", text)]


def test_a_server_video_job_paints_on_the_cluster_what_a_local_render_paints(ray_jobs, filt, tmp_path):
    store, address = ray_jobs
    clip = make_clip(tmp_path / "clip.mp4", frames=12)
    job = store.create(store.new_id(), "video", "tiny", {
        "input": "input.mp4", "output": "result.mp4", "source": "clip.mp4", "filter_path": str(filt.path),
        "settings": {"size": None, "strength": 1.0, "preserve_colors": False, "engine": "torch", "precision": "fp32"},
        "stabilize": True})  # as the API records it, the engine named (the local render below must not pick its own)
    store.folder(job.id).mkdir(parents=True)
    (store.folder(job.id) / "input.mp4").write_bytes(clip.read_bytes())
    run_jobs(store, address, finished(job.id))
    done = store.get(job.id)
    assert (done.status, done.step, done.total, done.result, done.note) == ("done", 12, 12, "result.mp4", None), done
    assert (store.folder(job.id) / "preview.png").exists()
    workers, painters = pids_in_log(store, job.id)
    assert len(workers) == 1 and len(painters) == 1 and painters[0] != workers[0]  # a Ray task painted it
    out, local = store.folder(job.id) / "result.mp4", video.apply_video(filt, clip, tmp_path / "local.mp4", ST)
    assert decoded(out)[0] == decoded(local)[0]
    assert max(frame_diffs(decoded(out)[1], decoded(local)[1])) < 1.0
    assert audio_packets(out) == audio_packets(clip)


def new_training_job(store, name: str, cfg: TrainConfig):
    """A training job as the API records it: the artwork and three photos in its folder."""
    job = store.create(store.new_id(), "train", name, {"artwork": "artwork.png", "title": "Scene", "photos": 3,
                                                        "config": cfg.to_dict()}, total=cfg.steps)
    folder = store.folder(job.id)
    (folder / "photos").mkdir(parents=True)
    make_scene(folder / "artwork.png", seed=3, size=(64, 64))
    for i in range(3):
        make_scene(folder / "photos" / f"{i:04d}.png", seed=10 + i)
    return job


JOB_TRAIN = TINY.replace(steps=8, eval_every=100, style_size=64, size_start=0)  # 64: the artwork's own size


def test_a_server_training_job_trains_on_the_cluster_stops_with_its_server_and_resumes_with_the_next(
        ray_jobs, tmp_path):
    from rotoscope.paths import filters_dir, runs_dir
    from rotoscope.train import train

    store, address = ray_jobs
    job = new_training_job(store, "scene", JOB_TRAIN)
    # the server stops once its worker has handed the training to Ray: the actor, still starting, stops after a
    # step (stopping later in the run is a race with the step rate; stopping there is the same code path)
    run_jobs(store, address, lambda s, _: "training on the Ray cluster" in log_of(s, job.id))
    mid = store.get(job.id)
    assert mid.status == "queued" and "the server is shutting down" in mid.note and 1 <= mid.step < 8, \
        (mid.note, mid.step, log_of(store, job.id))
    assert (runs_dir() / "scene" / "checkpoint.safetensors").exists()
    run_jobs(store, address, finished(job.id))  # the next server
    done = store.get(job.id, history=True)
    assert (done.status, done.attempts, done.step, done.total, done.eta_s) == ("done", 2, 8, 8, 0), done
    assert [h["step"] for h in done.history] == list(range(1, 9))  # no step lost or counted twice
    assert set(done.terms) >= {"content", "style", "total"} and done.preview_step == 8
    assert (store.folder(job.id) / "preview.png").exists()
    log = log_of(store, job.id)
    assert log.count("resuming from the checkpoint") == 1 and "saved filter 'scene'" in log  # train()'s own lines
    workers, trainers = pids_in_log(store, job.id)
    assert len(workers) == 2 and len(trainers) == 1 and trainers[0] not in workers  # a Ray actor trained it
    # the filter a local training makes of the same artwork, photos and settings, uninterrupted
    here = train(store.folder(job.id) / "artwork.png", "here", store.folder(job.id) / "photos", JOB_TRAIN,
                 out=tmp_path / "here.safetensors", log=lambda *_: None, progress=False)
    there = load_filter_file(filters_dir() / "scene.safetensors")
    assert there.card["timings"]["steps"] == 8
    for k, v in there.net.state_dict().items():
        assert np.allclose(v.numpy(), here.net.state_dict()[k].numpy(), rtol=1e-5, atol=1e-6), k


def test_a_server_training_job_on_the_cluster_is_cancelled_at_a_step_and_keeps_its_checkpoint(ray_cluster, ray_jobs):
    from rotoscope.paths import filters_dir, runs_dir

    store, address = ray_jobs
    job = new_training_job(store, "long", JOB_TRAIN.replace(steps=5000))

    def cancel_once_running(s, sched):
        if s.get(job.id).step >= 2 and not s.get(job.id).cancel_requested:
            s.request_cancel(job.id)  # as POST /api/jobs/ID/cancel does
            sched.interrupt(job.id)
        return finished(job.id)(s, sched)

    run_jobs(store, address, cancel_once_running)
    got = store.get(job.id)
    assert got.status == "cancelled" and 2 <= got.step < 5000, got
    assert (runs_dir() / "long" / "checkpoint.safetensors").exists()
    assert not (filters_dir() / "long.safetensors").exists()
    deadline = time.time() + 30
    while ray_cluster.available_resources().get("CPU", 0) < 2:  # the actor gave its CPU back
        assert time.time() < deadline, ray_cluster.available_resources()
        time.sleep(0.2)


def test_serve_refuses_a_cluster_it_cannot_reach_in_one_line(capsys, monkeypatch):
    uvicorn = require_module("uvicorn", "pip install -e '.[server]'")
    ray = require_module("ray", "pip install -e '.[cluster]'")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as a server that has not joined a cluster yet
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server started"))
    assert_one_line_error(*rotoscope("serve", "--port", "18000", "--cluster", "127.0.0.1:1", capsys=capsys),
                          "cannot reach the Ray cluster at 127.0.0.1:1")
    monkeypatch.setenv("ROTOSCOPE_CLUSTER", "nonsense")  # the setting from the environment, as a service sets it
    assert_one_line_error(*rotoscope("serve", "--port", "18000", capsys=capsys), "HOST:PORT")
