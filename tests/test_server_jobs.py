"""Durable jobs: the SQLite record, the scheduler's limits and endings, real workers, and a server restart."""

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from rotoscope.config import ServerConfig  # noqa: E402
from rotoscope.filter import load_filter_file  # noqa: E402
from rotoscope.server import create_app  # noqa: E402
from rotoscope.server.jobs import JobStore  # noqa: E402
from rotoscope.server.runner import Scheduler  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")
# Gram style term: these tests are about jobs, not the loss (tests/test_losses.py), and the sliced one costs 25% more
TINY_TRAIN = {"size": "32", "channels": "8,16,16", "res_blocks": "1", "backbone": "random",
              "precision": "fp32", "set": ["style_match=gram", "style_size=64"]}  # the same arithmetic on every CPU class: timing budgets hold everywhere
JOB_TIMEOUT = 600  # seconds: generous, the test machine is shared and may be of the slowest class (AVX2)
# a wait on a job that keeps progressing does not time out; one with no progress for this long fails (a server
# start, a worker's start and its first step fit in it many times over: ~10 s here)
STALL = 180


def png_bytes(size=(64, 64), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(autouse=True)
def one_thread_workers(monkeypatch):
    """Workers and servers started here use one torch thread: tiny tensors, a busy shared machine."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def store(tmp_path):
    return JobStore(tmp_path / "jobs.sqlite", tmp_path / "jobs")


def wait_for(get, until, timeout=JOB_TIMEOUT, every=0.3, progress=None, stall=STALL):
    """Poll get() until until(value) holds. With `progress` (value -> anything comparable, e.g. the step), the wait
    lasts while progress is made and gives up only after `stall` seconds without any: it scales with the machine's
    speed (a slow CPU keeps stepping) instead of guessing it, and a hung job still fails within `stall` seconds."""
    start = last_change = time.time()
    seen = object()
    while True:
        value = get()
        if until(value):
            return value
        now = time.time()
        if progress is not None:
            mark = progress(value)
            if mark != seen:
                seen, last_change = mark, now
            if now - last_change > stall:
                raise AssertionError(f"no progress for {stall} s; last value: {value}")
        elif now - start > timeout:
            raise AssertionError(f"timed out after {timeout} s; last value: {value}")
        time.sleep(every)


# ---------------------------------------------------------------- the record


def test_a_job_is_claimed_once_and_records_progress(store):
    job = store.create(store.new_id(), "train", "x", {"a": 1}, total=3)
    assert job.status == "queued" and job.params == {"a": 1}
    assert store.claim(job.id) and not store.claim(job.id)
    store.progress(job.id, [{"step": 1, "train": {"total": 2.0}}, {"step": 2, "train": {"total": 1.5}}],
                   step=2, terms={"total": 1.5}, eta_s=1.0)
    got = store.get(job.id, history=True)
    assert got.status == "running" and got.attempts == 1 and got.step == 2 and got.terms == {"total": 1.5}
    assert [h["step"] for h in got.history] == [1, 2]
    assert store.finish(job.id, "done", result="x") and not store.finish(job.id, "failed")
    assert store.get(job.id).status == "done"


def test_cancel_a_queued_job_at_once_and_flag_a_running_one(store):
    a = store.create(store.new_id(), "train", "a", {})
    b = store.create(store.new_id(), "train", "b", {})
    store.claim(b.id)
    assert store.request_cancel(a.id) == "cancelled"
    assert store.request_cancel(b.id) == "running" and store.cancel_requested(b.id)


# ---------------------------------------------------------------- the scheduler, with stand-in workers


class SleepScheduler(Scheduler):
    """Workers that only sleep: for testing limits and endings without training anything."""

    def _spawn(self, job_id):
        return subprocess.Popen([sys.executable, "-c", f"import time  # {job_id}\ntime.sleep(60)"])


def test_at_most_max_jobs_run_at_once_and_a_dead_worker_fails_its_job(store):
    ids = [store.create(store.new_id(), "train", f"j{i}", {}).id for i in range(3)]
    sched = SleepScheduler(store, max_jobs=2)
    try:
        sched.tick()
        status = {i: store.get(i).status for i in ids}
        assert list(status.values()).count("running") == 2 and list(status.values()).count("queued") == 1
        assert status[ids[2]] == "queued"  # oldest first
        victim = sched.procs[ids[0]]
        victim.kill()
        victim.wait()
        sched.tick()
        dead = store.get(ids[0])
        assert dead.status == "failed" and "exit code -9" in dead.error
        assert store.get(ids[2]).status == "running"  # the freed slot went to the next job
    finally:
        for p in sched.procs.values():
            p.kill()


def test_restart_requeues_jobs_whose_worker_is_gone_and_gives_up_after_n_attempts(store):
    job = store.create(store.new_id(), "train", "x", {})
    store.claim(job.id)
    store.update(job.id, pid=2**22 + 12345, step=7)  # a pid that is not running
    sched = SleepScheduler(store, max_jobs=1, attempts=1)
    sched.recover()
    got = store.get(job.id)
    assert got.status == "queued" and "interrupted at step 7" in got.note
    sched.tick()  # attempts exhausted: failed, clearly, rather than retried forever
    got = store.get(job.id)
    assert got.status == "failed" and "interrupted 1 times" in got.error


def test_a_resumed_jobs_note_says_what_is_true_once_it_runs_again(store):
    """Running again, the job still said "interrupted at step 7 (...); resuming" beside its running badge."""
    job = store.create(store.new_id(), "train", "x", {})
    store.claim(job.id)
    store.update(job.id, pid=2**22 + 12345, step=7)
    SleepScheduler(store, max_jobs=1, attempts=3).recover()
    assert store.get(job.id).note == "interrupted at step 7 (the server stopped); resuming"
    assert store.claim(job.id)
    assert store.get(job.id).note == "running again after it was interrupted at step 7 (the server stopped)"


def test_a_resumed_training_job_takes_its_history_from_the_checkpoint(store, tmp_path):
    """The checkpoint and the step records flushed to the database can disagree when a worker is killed between
    the two writes; the resumed job's history is the checkpoint's, then the steps it trains again, each once."""
    from rotoscope.config import TrainConfig
    from rotoscope.errors import RotoscopeError
    from rotoscope.server import worker
    from rotoscope.train import Monitor, StopRequest, train

    class StopAfter3(Monitor):  # as the worker stops a cancelled job
        def step(self, record, net):
            return StopRequest("cancelled") if record["step"] == 3 else None

    cfg = TrainConfig().replace(steps=4, size=32, size_start=0, backbone="random", checkpoint_every=2, eval_every=2,
                                channels=(8, 16, 16), res_blocks=1)
    job = store.create(store.new_id(), "train", "resumed", {"artwork": "art.png", "config": cfg.to_dict()}, total=4)
    store.folder(job.id).mkdir(parents=True, exist_ok=True)
    (store.folder(job.id) / "art.png").write_bytes(png_bytes())
    store.claim(job.id)
    with pytest.raises(RotoscopeError, match="interrupted at step 3"):  # the checkpoint holds steps 1-3: the checkpoint holds steps 1-3
        train(store.folder(job.id) / "art.png", "resumed", None, cfg, log=lambda m: None, progress=False,
              monitors=[StopAfter3()])
    # the database lost step 3's record (never flushed) and kept a step 9 from nowhere
    store.reset_history(job.id, [{"step": s, "train": {"total": 1.0}} for s in (1, 2, 9)])
    store.finish(job.id, "queued")
    assert store.claim(job.id)
    job = store.get(job.id)
    worker.run_train(store, job, os.getppid())
    assert [h["step"] for h in store.get(job.id, history=True).history] == [1, 2, 3, 4]


def test_a_resume_job_whose_checkpoint_has_gone_says_so_instead_of_training_afresh(store):
    """resume=true is checked when the job is sent; a checkpoint removed before the job ran made it train from the
    start, silently, over the name."""
    from rotoscope.config import TrainConfig
    from rotoscope.errors import RotoscopeError
    from rotoscope.server import worker

    cfg = TrainConfig().replace(steps=4, size=32, size_start=0, backbone="random", channels=(8, 16, 16),
                                res_blocks=1)
    job = store.create(store.new_id(), "train", "gone", {"artwork": "art.png", "config": cfg.to_dict(),
                                                          "resume": True}, total=4)
    store.folder(job.id).mkdir(parents=True, exist_ok=True)
    (store.folder(job.id) / "art.png").write_bytes(png_bytes())
    assert store.claim(job.id)
    with pytest.raises(RotoscopeError, match="nothing to resume: no checkpoint for 'gone'"):
        worker.run_train(store, store.get(job.id), os.getppid())


def test_restart_adopts_a_worker_that_is_still_alive(store):
    job = store.create(store.new_id(), "train", "x", {})
    store.claim(job.id)
    p = subprocess.Popen([sys.executable, "-c", f"import time  # {job.id}\ntime.sleep(60)"])
    try:
        store.update(job.id, pid=p.pid)
        sched = SleepScheduler(store, max_jobs=1)
        sched.recover()
        assert job.id in sched.adopted and store.get(job.id).status == "running"
        other = store.create(store.new_id(), "train", "y", {})
        sched.tick()
        assert store.get(other.id).status == "queued"  # the adopted worker holds the only slot
        p.kill()
        p.wait()
        sched.tick()  # the adopted worker is gone: its job is requeued and, a slot being free, restarted
        got = store.get(job.id)
        assert "its worker stopped" in got.note and got.attempts == 2 and job.id in sched.procs
    finally:
        p.kill()
        for q in sched.procs.values():
            q.kill()


# ---------------------------------------------------------------- several servers on one database


def test_of_many_claims_made_at_once_on_one_job_exactly_one_succeeds(store):
    """Servers sharing a job database claim from their own connections at the same moment: one claim per job wins."""
    ids = [store.create(store.new_id(), "train", f"j{i}", {}).id for i in range(20)]
    stores = [JobStore(store.db, store.jobs_root) for _ in range(4)]  # one per server, as separate processes have
    barrier = threading.Barrier(len(stores))
    won: dict[int, list[str]] = {}

    def claim_all(k):
        barrier.wait()
        won[k] = [i for i in ids if stores[k].claim(i, f"server-{k}")]

    threads = [threading.Thread(target=claim_all, args=(k,)) for k in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [i for k in won for i in won[k]]
    assert sorted(claimed) == sorted(ids)  # every job claimed once, none twice
    for k, mine in won.items():
        assert all(store.get(i).server == f"server-{k}" and store.get(i).attempts == 1 for i in mine)


def test_two_servers_sharing_a_database_never_start_the_same_job(store):
    ids = [store.create(store.new_id(), "video", f"j{i}", {}).id for i in range(6)]
    a = SleepScheduler(store, max_jobs=6)
    b = SleepScheduler(JobStore(store.db, store.jobs_root), max_jobs=6)
    barrier = threading.Barrier(2)

    def tick(s):
        barrier.wait()
        s.tick()

    threads = [threading.Thread(target=tick, args=(s,)) for s in (a, b)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not set(a.procs) & set(b.procs) and set(a.procs) | set(b.procs) == set(ids)
        for i in ids:
            job = store.get(i)
            assert job.status == "running" and job.attempts == 1
            assert job.server == (a.id if i in a.procs else b.id) and job.pid == (a.procs.get(i) or b.procs[i]).pid
    finally:
        for p in [*a.procs.values(), *b.procs.values()]:
            p.kill()


def test_a_server_starting_leaves_the_jobs_of_a_running_one_alone_and_settles_those_of_a_stopped_one(store):
    a = SleepScheduler(store, max_jobs=2)
    running = store.create(store.new_id(), "train", "running", {}).id
    a.tick()
    starting = store.create(store.new_id(), "train", "starting", {}).id
    assert store.claim(starting, a.id)  # claimed by the first server, its worker not started yet (no pid)
    b = SleepScheduler(JobStore(store.db, store.jobs_root), max_jobs=2)
    try:
        b.recover()
        b.tick()
        assert not b.adopted and not b.procs  # neither adopted nor requeued: they are the first server's
        assert [(store.get(i).status, store.get(i).attempts) for i in (running, starting)] == [("running", 1)] * 2
        a.shutdown(timeout=30)  # the first server stops: it requeues its worker's job, not the one it never started
        assert store.get(running).status == "queued" and store.get(starting).status == "running"
        b.recover()  # what a stopped server left running is settled by the next one to start
        assert store.get(starting).status == "queued" and "interrupted" in store.get(starting).note
    finally:
        for p in [*a.procs.values(), *b.procs.values()]:
            p.kill()


# ---------------------------------------------------------------- real workers


def test_training_job_runs_to_a_filter_and_can_be_followed_then_a_running_job_is_cancelled(tiny_filter):
    with TestClient(create_app(ServerConfig(max_jobs=1))) as c:
        r = c.post("/api/jobs/train", files={"artwork": ("art.png", png_bytes(), "image/png")},
                   data={"name": "learned", "steps": "5", "title": "Noise", **TINY_TRAIN})
        job_id = r.json()["id"]
        with c.stream("GET", f"/api/jobs/{job_id}/events", timeout=JOB_TIMEOUT) as s:
            events = [json.loads(line[5:]) for line in s.iter_lines() if line.startswith("data:")]
        assert events[-1]["status"] == "done", c.get(f"/api/jobs/{job_id}").json()
        # the stream carried every step's loss terms exactly once
        records = [h for e in events for h in e["new_history"]]
        assert [h["step"] for h in records] == [1, 2, 3, 4, 5]
        assert set(records[-1]["train"]) >= {"content", "style", "total"}
        job = c.get(f"/api/jobs/{job_id}").json()
        assert job["step"] == 5 and job["eta_s"] == 0 and job["terms"]["total"] > 0 and len(job["history"]) == 5
        assert "saved filter 'learned'" in job["log"]
        preview = c.get(f"/api/jobs/{job_id}/preview")
        assert preview.status_code == 200 and Image.open(io.BytesIO(preview.content)).format == "PNG"
        result = c.get(f"/api/jobs/{job_id}/result")
        assert result.status_code == 200
        assert result.headers["content-disposition"] == 'attachment; filename="learned.safetensors"'
        path = Path(os.environ["ROTOSCOPE_HOME"]) / "filters" / "learned.safetensors"
        assert result.content == path.read_bytes()
        filt = load_filter_file(path)
        assert filt.card["artwork"]["title"] == "Noise" and filt.card["timings"]["steps"] == 5
        assert "learned" in [f["name"] for f in c.get("/api/filters").json()]

        # a long job, cancelled while it runs: it stops at a step, keeps its checkpoint, makes no filter
        r = c.post("/api/jobs/train", files={"artwork": ("art.png", png_bytes(), "image/png")},
                   data={"name": "long", "steps": "5000", **TINY_TRAIN})
        long_id = r.json()["id"]
        wait_for(lambda: c.get(f"/api/jobs/{long_id}").json(), lambda j: j["step"] >= 2)
        assert c.post(f"/api/jobs/{long_id}/cancel").status_code == 200
        job = wait_for(lambda: c.get(f"/api/jobs/{long_id}").json(), lambda j: j["status"] != "running")
        assert job["status"] == "cancelled" and 2 <= job["step"] < 5000, job
        assert (Path(os.environ["ROTOSCOPE_HOME"]) / "runs" / "long" / "checkpoint.safetensors").exists()
        assert not (Path(os.environ["ROTOSCOPE_HOME"]) / "filters" / "long.safetensors").exists()
        assert c.get(f"/api/jobs/{long_id}/result").status_code == 409
        # a new job of that name would start afresh over the kept run: refused unless overwrite=true, as train is
        again = c.post("/api/jobs/train", files={"artwork": ("art.png", png_bytes(), "image/png")},
                       data={"name": "long", "steps": "5", **TINY_TRAIN})
        assert again.status_code == 409 and "an interrupted run of 'long' is kept" in again.json()["detail"]
        assert "resume=true continues it, overwrite=true starts afresh" in again.json()["detail"], again.text
        # resume=true continues it from its checkpoint, to a nearer end than the 5000 steps first asked
        from rotoscope.train import checkpoint_state

        # the job's record ends at the step its checkpoint holds, although the cancel landed mid-step
        kept = checkpoint_state(Path(os.environ["ROTOSCOPE_HOME"]) / "runs" / "long" / "checkpoint.safetensors"
                                )["run"]["step"]
        assert job["step"] == kept and job["note"] == f"cancelled at step {kept}", (job, kept)
        assert [h["step"] for h in job["history"]] == list(range(1, kept + 1))
        r = c.post("/api/jobs/train", files={"artwork": ("art.png", png_bytes(), "image/png")},
                   data={"name": "long", "steps": str(kept + 2), "resume": "true", **TINY_TRAIN})
        assert r.status_code == 202, r.text
        job = wait_for(lambda: c.get(f"/api/jobs/{r.json()['id']}").json(),
                       lambda j: j["status"] not in ("queued", "running"))
        assert job["status"] == "done" and job["step"] == kept + 2, job
        log = (Path(os.environ["ROTOSCOPE_HOME"]) / "server" / "jobs" / job["id"] / "log.txt").read_text()
        assert f"resuming 'long' at step {kept}" in log
        assert [h["step"] for h in job["history"]][-2:] == [kept + 1, kept + 2]
        assert load_filter_file(Path(os.environ["ROTOSCOPE_HOME"]) / "filters" / "long.safetensors"
                                ).card["timings"]["steps"] == kept + 2
        nothing = c.post("/api/jobs/train", files={"artwork": ("art.png", png_bytes(), "image/png")},
                         data={"name": "nothing-kept", "resume": "true", **TINY_TRAIN})
        assert nothing.status_code == 409 and "no interrupted run of 'nothing-kept'" in nothing.json()["detail"]
        # trained again under the name (overwrite=true): the first job's result is not the new filter, it is gone
        r = c.post("/api/jobs/train", files={"artwork": ("art.png", png_bytes(seed=5), "image/png")},
                   data={"name": "learned", "steps": "3", "seed": "9", "overwrite": "true", **TINY_TRAIN})
        again_id = r.json()["id"]
        wait_for(lambda: c.get(f"/api/jobs/{again_id}").json(), lambda j: j["status"] == "done")
        replaced = c.get(f"/api/jobs/{job_id}/result")
        assert replaced.status_code == 410 and "replaced by another training" in replaced.json()["detail"]
        assert c.get(f"/api/jobs/{again_id}/result").content == path.read_bytes()
        # deleting the filter a finished job made: its result is gone, and the API says so
        c.delete("/api/filters/learned")
        assert c.get(f"/api/jobs/{again_id}/result").status_code == 410


def test_of_many_training_requests_for_one_name_at_once_one_is_queued(store, tiny_filter, monkeypatch):
    """The check "a job is already training NAME" and the job's creation were two steps: three requests at once all
    passed the check and each filter replaced the last, without overwrite. create(alone=True) checks and inserts in
    one statement."""
    made = []

    def create(i):
        made.append(store.create(f"job{i}", "train", "race", {}, alone=True))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(j is not None for j in made) == 1
    assert store.create("other", "train", "race", {}) is not None  # without alone, as before
    # through the API, with the early check passed by both (as when two requests interleave)
    monkeypatch.setattr(JobStore, "active_with_name", lambda self, kind, name: None)
    with TestClient(create_app(ServerConfig(), run_jobs=False)) as c:
        def post():
            return c.post("/api/jobs/train", files={"artwork": ("art.png", png_bytes(), "image/png")},
                          data={"name": "twice", "steps": "3", **TINY_TRAIN})

        first, second = post(), post()
        assert first.status_code == 202 and second.status_code == 409, second.text
        assert "already training 'twice'" in second.json()["detail"]
        jobs_root = Path(os.environ["ROTOSCOPE_HOME"]) / "server" / "jobs"
        assert [p.name for p in jobs_root.iterdir()] == [first.json()["id"]]  # the refused one's uploads are gone


def test_a_failing_job_reports_the_library_error(tiny_filter):
    with TestClient(create_app(ServerConfig())) as c:
        mp4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00" * 64  # a header, no frames
        r = c.post("/api/jobs/video", files={"video": ("clip.mp4", mp4, "video/mp4")}, data={"filter": "tiny"})
        job = wait_for(lambda: c.get(f"/api/jobs/{r.json()['id']}").json(), lambda j: j["status"] not in
                       ("queued", "running"))
        assert job["status"] == "failed" and job["error"] and "Traceback" not in job["error"]


def test_a_training_teacher_is_a_registry_filter_by_name_never_a_file_on_the_server(tiny_filter):
    with TestClient(create_app(ServerConfig(), run_jobs=False)) as c:
        def train(teacher):
            return c.post("/api/jobs/train", files={"artwork": ("a.png", png_bytes(), "image/png")},
                          data={**TINY_TRAIN, "name": "student", "arch": "lite",
                                "set": [*TINY_TRAIN["set"], f"teacher={teacher}"]})
        for path in (str(tiny_filter), "/etc/hostname"):
            r = train(path)
            assert r.status_code == 422 and r.json()["detail"].startswith("teacher: invalid filter name"), r.text
        r = train("no-such-filter")
        assert r.status_code == 404 and r.json()["detail"].startswith("teacher: unknown filter"), r.text
        r = train("tiny")
        assert r.status_code == 202 and r.json()["params"]["config"]["teacher"] == "tiny", r.text


def test_a_training_device_this_machine_lacks_is_refused_at_submit(tiny_filter):
    """set=device=cuda:7 was queued (202) and failed when the job ran; the CLI refuses it before any work."""
    import torch

    with TestClient(create_app(ServerConfig(), run_jobs=False)) as c:
        def train(device):
            return c.post("/api/jobs/train", files={"artwork": ("a.png", png_bytes(), "image/png")},
                          data={**TINY_TRAIN, "name": "gpu", "set": [*TINY_TRAIN["set"], f"device={device}"]})

        missing = f"cuda:{torch.cuda.device_count() + 7}"
        r = train(missing)
        assert r.status_code == 422 and r.json()["detail"].startswith(f"device {missing}:"), r.text
        assert c.get("/api/jobs").json() == []
        assert train("cpu").status_code == 202

def test_video_job_paints_a_clip_to_a_downloadable_result(tiny_filter, tmp_path):
    import av

    from conftest import make_clip

    clip = make_clip(tmp_path / "clip.mp4", frames=12, size=(64, 48), audio=False)
    with TestClient(create_app(ServerConfig())) as c:
        job = finished_video_job(c, "clip.bin", clip.read_bytes(), "application/octet-stream", strength="0.9")
        assert job["step"] == job["total"] == 12
        result = c.get(job["links"]["result"])
        assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
        assert result.headers["content-disposition"] == 'attachment; filename="clip-tiny.mp4"'  # the clip's name
        assert c.get(f"/api/jobs/{job['id']}/preview").status_code == 200  # the last frame painted
    out = tmp_path / "result.mp4"
    out.write_bytes(result.content)
    with av.open(str(out)) as f:
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (48, 64, 3)


def finished_video_job(c, filename: str, data: bytes, ctype: str, **form) -> dict:
    """Send a clip as a video job with the tiny filter and wait until it has ended; the job as the API shows it."""
    r = c.post("/api/jobs/video", files={"video": (filename, data, ctype)}, data={"filter": "tiny", **form})
    assert r.status_code == 202, r.text
    job = wait_for(lambda: c.get(f"/api/jobs/{r.json()['id']}").json(), lambda j: j["status"] not in
                   ("queued", "running"))
    assert job["status"] == "done", job
    return job


def test_a_turned_clips_preview_is_shown_as_its_player_shows_it(tiny_filter, tmp_path):
    """A phone clip stored 64x48 and shown turned a quarter: the job's preview was the stored frame, lying on its
    side beside a result that plays upright."""
    from conftest import make_clip

    clip = make_clip(tmp_path / "clip.mp4", frames=6, size=(64, 48), rotation=90, audio=False)
    with TestClient(create_app(ServerConfig())) as c:
        job = finished_video_job(c, "clip.mp4", clip.read_bytes(), "video/mp4")
        preview = c.get(f"/api/jobs/{job['id']}/preview")
    with Image.open(io.BytesIO(preview.content)) as im:
        assert im.size == (48, 64)


def test_an_animated_gif_sent_as_a_video_job_comes_back_as_an_animated_gif(tiny_filter, tmp_path):
    from PIL import Image

    from conftest import make_clip, rgb_frames

    frames = rgb_frames(make_clip(tmp_path / "clip.mp4", frames=5, size=(64, 48), audio=False))
    pics = [Image.fromarray(f.astype(np.uint8)) for f in frames]
    gif = io.BytesIO()
    pics[0].save(gif, format="GIF", save_all=True, append_images=pics[1:], duration=60, loop=0)
    with TestClient(create_app(ServerConfig())) as c:
        job = finished_video_job(c, "loop.gif", gif.getvalue(), "image/gif")
        result = c.get(job["links"]["result"])
        assert result.status_code == 200 and result.headers["content-type"] == "image/gif"
        assert result.headers["content-disposition"] == 'attachment; filename="loop-tiny.gif"'
    with Image.open(io.BytesIO(result.content)) as im:
        assert im.n_frames == 5 and im.size == (64, 48) and im.info["duration"] == 60


def test_a_clip_over_the_pixel_limit_is_refused_at_upload_as_a_picture_is(tiny_filter, tmp_path, monkeypatch):
    """413 at once, no job, no folder left: a GIF whose header claims 65535x65535 (two tiny frames) was queued and
    failed as "damaged"; an MP4 too large for the server's limit was painted."""
    import struct

    from conftest import make_clip

    small = io.BytesIO()
    Image.new("P", (4, 4)).save(small, format="GIF", save_all=True, append_images=[Image.new("P", (4, 4), 1)])
    claimed = bytearray(small.getvalue())
    claimed[6:10] = struct.pack("<HH", 65535, 65535)  # the logical screen: what Pillow reports as the size
    mp4 = make_clip(tmp_path / "clip.mp4", frames=3, size=(64, 48), audio=False).read_bytes()
    with TestClient(create_app(ServerConfig(max_pixels=64 * 48 - 1), run_jobs=False)) as c:
        for name, data in (("bomb.gif", bytes(claimed)), ("clip.mp4", mp4)):
            r = c.post("/api/jobs/video", files={"video": (name, data, "application/octet-stream")},
                       data={"filter": "tiny"})
            assert r.status_code == 413 and "pixel limit" in r.json()["detail"], (name, r.text)
        assert c.get("/api/jobs").json() == []
        jobs_root = Path(os.environ["ROTOSCOPE_HOME"]) / "server" / "jobs"
        assert not jobs_root.exists() or list(jobs_root.iterdir()) == []
    with TestClient(create_app(ServerConfig(max_pixels=64 * 48), run_jobs=False)) as c:  # at the limit: queued
        r = c.post("/api/jobs/video", files={"video": ("clip.mp4", mp4, "video/mp4")}, data={"filter": "tiny"})
        assert r.status_code == 202, r.text
        monkeypatch.setenv("ROTOSCOPE_MAX_PIXELS", "1000")  # over the library's own limit too (probe refuses it)
        r = c.post("/api/jobs/video", files={"video": ("clip.mp4", mp4, "video/mp4")}, data={"filter": "tiny"})
        assert r.status_code == 413 and "pixel limit" in r.json()["detail"], r.text


def mask_png(size=(128, 96)) -> bytes:
    """Black (keep) on the left half, white (paint) on the right; twice the clip's size (a mask is resized)."""
    a = np.zeros((size[1], size[0]), np.uint8)
    a[:, size[0] // 2:] = 255
    buf = io.BytesIO()
    Image.fromarray(a, "L").save(buf, "PNG")
    return buf.getvalue()


def test_a_video_job_with_a_mask_keeps_the_clip_where_the_mask_is_black_as_the_cli_does(tiny_filter, tmp_path,
                                                                                        capsys):
    from conftest import clip_provenance, make_clip, rgb_frames, rotoscope

    clip = make_clip(tmp_path / "clip.mp4", frames=8, size=(64, 48), audio=False)
    (tmp_path / "mask.png").write_bytes(mask_png())
    with TestClient(create_app(ServerConfig())) as c:
        r = c.post("/api/jobs/video", data={"filter": "tiny"},
                   files={"video": ("clip.mp4", clip.read_bytes(), "video/mp4"),
                          "mask": ("mask.png", mask_png(), "image/png")})
        assert r.status_code == 202 and r.json()["params"]["mask"] == "mask.png", r.text
        job = wait_for(lambda: c.get(f"/api/jobs/{r.json()['id']}").json(), lambda j: j["status"] not in
                       ("queued", "running"))
        assert job["status"] == "done", job
        (tmp_path / "job.mp4").write_bytes(c.get(job["links"]["result"]).content)
    src, out = rgb_frames(clip), rgb_frames(tmp_path / "job.mp4")
    assert len(out) == len(src) == 8
    # left of the mask's edge (x = 32, feathered over a pixel, then H.264's deblocking) the clip is kept: only the
    # second encoding differs, right of it the filter paints. Measured: kept at most 4.0 levels from the clip on
    # average (this clip's own round trip through yuv420p H.264 at crf 20 is 2.7-3.6), painted at least 22.5
    kept = [float(np.abs(o[:, :26] - i[:, :26]).mean()) for o, i in zip(out, src)]
    painted = [float(np.abs(o[:, 38:] - i[:, 38:]).mean()) for o, i in zip(out, src)]
    assert max(kept) < 6 and min(painted) > 3 * max(kept), (kept, painted)
    # the job paints what `rotoscope apply tiny clip.mp4 --mask mask.png` paints with the engine the job used (each
    # picks the fastest engine it measured, and two measurements can pick two engines), and both name the mask
    made = clip_provenance(tmp_path / "job.mp4")
    code, _, err = rotoscope("apply", "tiny", clip, "--mask", tmp_path / "mask.png", "-o", tmp_path / "cli.mp4",
                             "--engine", made["settings"]["engine"], "--precision", made["settings"]["precision"],
                             "--no-progress", capsys=capsys)
    assert code == 0, err
    assert made["mask"] == clip_provenance(tmp_path / "cli.mp4")["mask"] and "mask.png sha256:" in made["mask"]["mask"]
    assert max(float(np.abs(a - b).mean()) for a, b in zip(out, rgb_frames(tmp_path / "cli.mp4"), strict=True)) < 1.0


def test_a_video_jobs_mask_must_be_an_image_and_keep_takes_faces(tiny_filter):
    from conftest import make_clip

    clip = make_clip(Path(os.environ["ROTOSCOPE_HOME"]).parent / "clip.mp4", frames=2, audio=False).read_bytes()
    with TestClient(create_app(ServerConfig(), run_jobs=False)) as c:
        def post(data=None, **files):
            return c.post("/api/jobs/video", data={"filter": "tiny", **(data or {})},
                          files={"video": ("clip.mp4", clip, "video/mp4"), **files})

        r = post(mask=("mask.png", b"not a picture", "image/png"))
        assert r.status_code == 415 and r.json()["detail"].startswith("mask: not an image"), r.text
        truncated = mask_png()[:60]  # a PNG header, no pixels: sniffed as an image, refused when read
        r = post(mask=("mask.png", truncated, "image/png"))
        assert r.status_code in (415, 422) and r.json()["detail"].startswith("mask: "), r.text
        assert "/" not in r.json()["detail"]  # no server path
        assert post({"keep": "hands"}).status_code == 422
        assert post({"paint_scale": "0.01"}).status_code == 422
        r = post({"keep": "faces", "paint_scale": "0.5"})
        assert r.status_code == 202 and r.json()["params"]["settings"]["keep"] == "faces"
        assert r.json()["params"]["settings"]["paint_scale"] == 0.5  # the job paints as `apply --paint-scale`
        assert c.get("/api/jobs").json()[0]["id"] == r.json()["id"]  # the refused requests made no jobs
        assert len(c.get("/api/jobs").json()) == 1


# ---------------------------------------------------------------- a server restart


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen([sys.executable, "-m", "rotoscope", "serve", "--port", str(port)], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def get(port, path):
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    except httpx.TransportError:
        return None


def status_in_db(job_id):
    store = JobStore(Path(os.environ["ROTOSCOPE_HOME"]) / "server" / "jobs.sqlite")
    return store.get(job_id)


STEPS = 120  # enough steps to be killed twice mid-run; ~50 s in all on a 2-core AMX machine


def http_progress(r):
    """What changes while a job advances (None while the server is starting: a start is not progress)."""
    if r is None or r.status_code != 200:
        return None
    j = r.json()
    return j["status"], j["step"], j["attempts"]


def test_a_job_survives_server_restarts():
    """Mid-training, the server dies alone (its worker checkpoints and requeues the job), then the server and its
    worker die together; each new server resumes the job from its checkpoint, and its result outlives restarts."""
    import httpx

    # 1. the server is killed alone: the orphaned worker notices, checkpoints and puts the job back in the queue
    port = free_port()
    server = start_server(port)
    try:
        wait_for(lambda: get(port, "/api/health"), lambda r: r is not None and r.status_code == 200, timeout=120)
        r = httpx.post(f"http://127.0.0.1:{port}/api/jobs/train", timeout=30,
                       files={"artwork": ("art.png", png_bytes(), "image/png")},
                       data={"name": "durable", "steps": str(STEPS), "checkpoint_every": "2", **TINY_TRAIN})
        job_id = r.json()["id"]
        wait_for(lambda: get(port, f"/api/jobs/{job_id}").json(), lambda j: j["step"] >= 2, every=0.1,
                 progress=lambda j: (j["status"], j["step"]))
        server.kill()
        server.wait()
        job = wait_for(lambda: status_in_db(job_id), lambda j: j.status != "running", timeout=120)
        assert job.status == "queued" and "has stopped" in job.note and job.step < STEPS, job
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)

    # 2. a new server resumes it; then this server and its worker are killed together, mid-step
    port = free_port()
    server = start_server(port)
    try:
        wait_for(lambda: get(port, f"/api/jobs/{job_id}"), lambda r: r is not None and r.json()["attempts"] == 2
                 and r.json()["step"] >= job.step + 1, every=0.1, progress=http_progress)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
    assert status_in_db(job_id).status == "running"  # nobody was left to say otherwise

    # 3. the next server finds it 'running' with no worker, and resumes it to the end
    port = free_port()
    server = start_server(port)
    try:
        job = wait_for(lambda: get(port, f"/api/jobs/{job_id}"), lambda r: r is not None and
                       r.json()["status"] in ("done", "failed", "cancelled"), progress=http_progress)
        job = job.json()
        assert job["status"] == "done" and job["attempts"] == 3, job
        log = (Path(os.environ["ROTOSCOPE_HOME"]) / "server" / "jobs" / job_id / "log.txt").read_text()
        assert log.count("resuming from the checkpoint") == 2, log
        assert job["note"] == "done after 2 interruption(s), each resumed from its checkpoint"
        assert [h["step"] for h in job["history"]] == list(range(1, STEPS + 1))  # no step lost or counted twice
        result = get(port, f"/api/jobs/{job_id}/result")
        assert result.status_code == 200
        saved = Path(os.environ["ROTOSCOPE_HOME"]) / "filters" / "durable.safetensors"
        assert result.content == saved.read_bytes() and load_filter_file(saved).card["timings"]["steps"] == STEPS
    finally:
        server.send_signal(signal.SIGINT)  # a clean stop
        server.wait(60)

    # 4. a finished result survives the next restart too
    port = free_port()
    server = start_server(port)
    try:
        r = wait_for(lambda: get(port, f"/api/jobs/{job_id}/result"), lambda r: r is not None, timeout=120)
        assert r.status_code == 200 and r.content == result.content
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)


def test_a_failed_jobs_error_names_the_upload_and_the_filter_never_a_server_path(tmp_path):
    """The API's refusals name the upload or the filter; a job that fails later must say it the same way."""
    from rotoscope.paths import filters_dir
    from rotoscope.server.jobs import Job
    from rotoscope.server.worker import public_error

    folder = tmp_path / "server" / "jobs" / "0d5e3077c59b"
    job = Job("0d5e3077c59b", "video", "failed", "m6", {"input": "input.mp4", "output": "result.mp4",
                                                         "filter_path": str(filters_dir() / "m6.safetensors")},
              0.0, 0.0, folder=str(folder))
    said = public_error(f"{folder / 'input.mp4'}: not a video, or a damaged or empty one (moov atom not found)", job)
    assert said == "video: not a video, or a damaged or empty one (moov atom not found)"
    said = public_error(f"no such filter file: {filters_dir() / 'm6.safetensors'}", job)
    assert said == "no such filter file: the filter 'm6'"
    said = public_error(f"cannot write {folder / 'segments' / 's0001.mp4'}: No space left on device", job)
    assert str(tmp_path) not in said and "segments/s0001.mp4" in said
    from rotoscope.paths import runs_dir

    said = public_error(f"the checkpoint {runs_dir() / 'm6' / 'checkpoint.safetensors'} cannot be read", job)
    assert said == "the checkpoint m6/checkpoint.safetensors cannot be read"
    import torch

    from rotoscope.backbones import torchvision_cache_path

    said = public_error(f"cannot download a (b); without internet, put the file at {torchvision_cache_path('vgg16')}, "
                        "give it to `train --backbone-weights`", job)
    assert said == ("cannot download a (b); without internet, put the file in the server's torch cache as "
                    f"{torchvision_cache_path('vgg16').name}, give it to `train --backbone-weights`")
    assert torch.hub.get_dir() not in said


def test_a_job_worker_reaches_its_signal_handling_before_torch_loads(tmp_path):
    """A job cancelled while its worker starts is signalled while the worker loads (torch takes a second or two):
    the worker's module and package load no torch, so the worker's own handling records 'cancelled' instead of a
    KeyboardInterrupt traceback in the job's log."""
    env = {**os.environ, "ROTOSCOPE_HOME": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    probe = "import sys, rotoscope.server.worker; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "False", r.stdout + r.stderr


def test_listing_jobs_by_an_unknown_status_is_refused_not_empty(tiny_filter):
    with TestClient(create_app(ServerConfig(), run_jobs=False)) as c:
        assert c.get("/api/jobs", params={"status": "done"}).json() == []
        r = c.get("/api/jobs", params={"status": "finished"})
        assert r.status_code == 422 and "unknown status 'finished'" in r.json()["detail"], r.text
