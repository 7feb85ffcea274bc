"""One job, run in its own process: `python -m rotoscope.server.worker DB JOBS_ROOT JOB_ID [CLUSTER]`.

The worker calls the same library functions as the CLI (train.train, video.run_job) and writes its progress into
the job record. It stops cleanly, with a checkpoint, when the job is cancelled, when the server asks it to
(SIGINT/SIGTERM on shutdown) or when the server that started it has died; the latter two put the job back in the
queue so the next server resumes it. With a cluster address (`... JOB_ID CLUSTER`, the server's `cluster`
setting) the painting or the training happens on Ray and this process stays the job's supervisor: it follows the
work, writes the progress and stops it, as above.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from ..errors import RotoscopeError
from ..paths import sha256_file
from .jobs import MADE_FILTER, Job, JobStore

PROGRESS_EVERY_S = 0.3  # how often step records are written to the database
PREVIEW_EVERY_S = 2.0  # how often a training job renders its preview
PREVIEW_SIZE = 256


class Stop:
    """Why the worker is stopping early, if it is."""

    reason: str | None = None


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def job_preview_photo(job: Job):
    """The photo a training preview paints: the first uploaded photo, else a built-in sample photo."""
    from ..data import sample_photos
    from ..images import list_images, load_rgb

    photos = Path(job.folder) / "photos"
    if photos.is_dir() and list_images(photos):
        return load_rgb(list_images(photos)[0])
    return next(p.image for p in sample_photos() if p.name == "chelsea")


def stop_reason(store: JobStore, job: Job, parent: int) -> str | None:
    """Why the job must stop now, if it must: it was cancelled, or the server that started this worker is gone."""
    if store.cancel_requested(job.id):
        return "cancelled"
    if os.getppid() != parent:
        return "the server that started this job has stopped"
    return None


class Reporter:
    """Writes a training job's step records, latest loss terms, ETA and preview step into its record, and says why
    it must stop, if it must (stop_reason). The same for a training here and one on a cluster."""

    def __init__(self, store: JobStore, job: Job, total: int, parent: int):
        self.store, self.job, self.total, self.parent = store, job, total, parent
        self.first_step, self.t0 = None, 0.0

    def report(self, records: list[dict], preview_step: int | None = None) -> str | None:
        if records:
            step = records[-1]["step"]
            if self.first_step is None:  # the rate is measured from the end of the first step (no start-up costs)
                self.first_step, self.t0 = records[0]["step"], time.time()
            rate = (step - self.first_step) / max(1e-6, time.time() - self.t0)
            extra = {"preview_step": preview_step} if preview_step is not None else {}
            self.store.progress(self.job.id, records, step=step, terms=records[-1]["train"],
                                eta_s=round((self.total - step) / rate, 1) if rate > 0 else None, **extra)
        elif preview_step is not None:
            self.store.update(self.job.id, preview_step=preview_step)
        return stop_reason(self.store, self.job, self.parent)


def run_train(store: JobStore, job: Job, parent: int, cluster: str | None = None) -> str:
    """Train the job's filter here or, with `cluster`, in a Ray actor that this worker follows."""
    from ..config import TrainConfig
    from ..images import save_image
    from ..paths import runs_dir
    from ..stylize import training_preview
    from ..train import CHECKPOINT, Monitor, StopRequest, checkpoint_state, train

    folder = Path(job.folder)
    params = job.params
    cfg = TrainConfig.from_dict(params["config"])
    ckpt = runs_dir() / job.name / CHECKPOINT
    # resume the run the job was asked to continue (resume=true: a checkpoint gone since is train()'s "nothing to
    # resume", not a silent fresh start), else only from a checkpoint this job wrote (not an older run's)
    resume = bool(params.get("resume")) or (ckpt.exists() and job.attempts > 1 and job.started is not None
                                            and ckpt.stat().st_mtime >= job.started)
    if job.attempts > 1 or resume:
        log(f"attempt {job.attempts}: " + (f"resuming from the checkpoint at {ckpt}" if resume else
                                           "no checkpoint from this job yet; starting again"))
    # the history restarts where the weights do: the checkpoint may be ahead of the last records flushed to the
    # database (a kill between the two), or behind them (steps recorded after it are trained again)
    store.reset_history(job.id, checkpoint_state(ckpt)["run"]["history"] if resume and ckpt.exists() else [])
    photo = job_preview_photo(job)
    photos = folder / "photos"
    photos = photos if photos.is_dir() else None
    reporter = Reporter(store, job, cfg.steps, parent)
    if cluster:
        return _train_on_cluster(store, job, cluster, cfg, resume, photo, photos, reporter)

    class Follow(Monitor):
        """Writes the job's step records, ETA and preview; asks train() to stop when the job is cancelled or the
        server that started it is gone (train() then saves a checkpoint and stops)."""

        def __init__(self):
            self.flushed, self.preview, self.preview_step = 0.0, 0.0, None
            self.buffer: list[dict] = []
            self.reported = 0  # the last step written to the job's record

        def step(self, record: dict, net) -> StopRequest | None:
            step = record["step"]
            self.buffer.append(record)
            now = time.time()
            last = step >= cfg.steps
            if now - self.preview >= PREVIEW_EVERY_S or last:
                save_image(training_preview(net, photo, PREVIEW_SIZE), folder / "preview.png")
                self.preview, self.preview_step = now, step
            if now - self.flushed >= PROGRESS_EVERY_S or last:
                reason = reporter.report(self.buffer, self.preview_step)  # written first, whatever happens next
                self.reported = step
                Stop.reason, self.buffer, self.flushed = Stop.reason or reason, [], now
                if Stop.reason:
                    return StopRequest(Stop.reason)
            return None

        def start(self, run, net) -> None:
            self.reported = run.step  # a resumed run's earlier steps are in the record already

        def end(self, run) -> None:
            # a cancel or a stopping server wakes the worker mid-step (SIGINT): the steps since the last write are
            # written now, so the record ends where the checkpoint train() saves does ("cancelled at step N" was a
            # step or more behind the step a resume then started from). From the run's history, not this monitor's
            # buffer: the signal can land in a monitor before this one, after the step was recorded
            pending = [r for r in run.history if r["step"] > self.reported]
            if pending:
                reporter.report(pending, self.preview_step)
                self.reported, self.buffer = pending[-1]["step"], []

    train(folder / params["artwork"], job.name, photos, cfg, title=params.get("title"), resume=resume, log=log,
          progress=False, monitors=[Follow()])
    return job.name


def _train_on_cluster(store: JobStore, job: Job, address: str, cfg, resume: bool, photo, photos: Path | None,
                      reporter: Reporter) -> str:
    """The training in a Ray actor (cluster.Training), followed from here every PROGRESS_EVERY_S: its step records,
    log lines and preview go into the job's record and folder as a local training's do; a cancel, a stopping server
    or a vanished parent asks it to stop at its next step, and it saves its checkpoint before it does."""
    from .. import cluster
    from ..paths import atomic_path

    folder = Path(job.folder)
    ray = cluster.require_ray()
    actor, ref = cluster.start_training(address, folder / job.params["artwork"], job.name, photos, cfg,
                                        title=job.params.get("title"), resume=resume, photo=photo,
                                        preview_every=PREVIEW_EVERY_S, preview_size=PREVIEW_SIZE)
    _signals_stop()  # after joining Ray, which sets a SIGTERM handler of its own
    log(f"training on the Ray cluster at {address}")
    asked = False
    try:
        while True:
            ready, _ = ray.wait([ref], timeout=PROGRESS_EVERY_S)
            got = ray.get(actor.poll.remote())
            for line in got["lines"]:
                log(line)
            preview_step = None
            if got["preview"]:
                preview_step, png = got["preview"]
                with atomic_path(folder / "preview.png") as tmp:
                    tmp.write_bytes(png)
            reason = reporter.report(got["records"], preview_step)  # written first, whatever happens next
            Stop.reason = Stop.reason or reason
            if Stop.reason and not asked:
                actor.stop.remote(Stop.reason)
                asked = True
            if ready:
                break
        where = ray.get(ref)
    except Exception as e:  # noqa: BLE001 - the run's own error ('interrupted at step N', a bad artwork), or Ray's
        raise cluster.task_error(e) from None
    finally:
        with contextlib.suppress(Exception):
            ray.kill(actor)  # its CPU goes back to the cluster now, not when this worker exits
    log(f"trained by process {where['pid']} on {where['host']}")
    return job.name


def _signals_stop(on_stop=None) -> None:
    """SIGINT and SIGTERM (the server stopping, or waking a cancelled job) set Stop.reason and call `on_stop`,
    raising nothing: a worker that follows Ray polls Stop.reason and stops its tasks itself."""

    def on_signal(_signum, _frame):
        Stop.reason = Stop.reason or "the server is shutting down"
        if on_stop:
            on_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def run_video(store: JobStore, job: Job, parent: int, cluster: str | None = None) -> str:
    """Paint a clip with video.run_job, here or with `cluster` on Ray (cluster.video_renderer); a requeued job
    resumes from the segments it already finished, wherever they were painted."""
    import numpy as np
    from PIL import Image

    from .. import video
    from ..config import VideoConfig
    from ..filter import load_filter_file
    from ..images import as_shown, save_image
    from ..stylize import ApplySettings

    folder = Path(job.folder)
    params = job.params
    if not Path(params["filter_path"]).is_file():
        raise RotoscopeError(f"the filter '{job.name}' was removed after the job was queued")
    filt = load_filter_file(params["filter_path"])
    settings = ApplySettings(**params["settings"])
    mask = folder / params["mask"] if params.get("mask") else None
    vjob = video.make_job(filt, folder / params["input"], folder / params["output"], settings,
                          VideoConfig(stabilize=params.get("stabilize", True)), mask)
    total = vjob.src.frames or 0
    store.update(job.id, total=total)
    t0, first = time.time(), None

    def on_segment(i: int) -> None:  # after each finished segment: from the video writer thread, or the Ray driver
        nonlocal first
        frames = min(total, (i + 1) * vjob.video.segment_frames) if total else (i + 1) * vjob.video.segment_frames
        first = frames if first is None else first
        rate = (frames - first) / max(1e-6, time.time() - t0) if frames > first else 0
        with contextlib.suppress(OSError, RotoscopeError):  # a preview that cannot be written fails no job
            # the segment's last frame is kept as stored: shown as a player shows it
            with Image.open(vjob.seg_last(i)) as im:
                last = np.asarray(im.convert("RGB"))
            save_image(Image.fromarray(as_shown(last, vjob.src.rotation, vjob.src.flip)), folder / "preview.png")
        store.progress(job.id, [], step=frames, preview_step=frames,
                       eta_s=round((total - frames) / rate, 1) if rate and total else None)
        Stop.reason = Stop.reason or stop_reason(store, job, parent)
        if Stop.reason:
            vjob.stop_request.set()  # the render stops at its next batch, finished segments kept

    renderer, reports = None, []
    if cluster:
        from .. import cluster as cl

        cl.connect(cluster)
        _signals_stop(vjob.stop_request.set)  # the renderer sees the request within half a second
        renderer = cl.video_renderer(cluster, reports=reports)
        log(f"painting on the Ray cluster at {cluster}")
    out = video.run_job(vjob, progress=False, warn=log, on_segment=on_segment, renderer=renderer)
    if reports:
        log(f"painted by {len(reports)} Ray task(s): " + ", ".join(
            f"segments {r.first}-{'end' if r.end is None else r.end - 1} by process {r.pid} on {r.host}"
            for r in sorted(reports, key=lambda r: r.first)))
    log(f"wrote {out} ({vjob.width}x{vjob.height})")
    store.update(job.id, step=total or job.step)
    return params["output"]


RUNNERS = {"train": run_train, "video": run_video}


def public_error(msg: str, job: Job) -> str:
    """A job's error as its client may read it: the uploads and the filter by the names the request gave them,
    never the server's paths (the job's folder, the registry, the torch cache), as the API's refusals name them."""
    from ..filter import SHIPPED_DIR
    from ..paths import filters_dir, home, runs_dir

    folder, params = Path(job.folder), job.params
    names = {params.get("input"): "video", params.get("artwork"): "artwork", params.get("mask"): "mask",
             params.get("output"): "result"}
    for file, said in names.items():
        if file:
            msg = msg.replace(str(folder / file), said)
    if params.get("filter_path"):
        msg = msg.replace(str(params["filter_path"]), f"the filter '{job.name}'")
    wheres = [folder / "photos", folder, filters_dir(), runs_dir(), SHIPPED_DIR, home()]
    torch = sys.modules.get("torch")  # only a job that got as far as torch can name its cache
    if torch is not None:  # a backbone's weights the server could not download: said by file name only
        hub = Path(torch.hub.get_dir())
        msg = msg.replace(f"put the file at {hub / 'checkpoints'}{os.sep}", "put the file in the server's torch "
                                                                             "cache as ")
        wheres.append(hub)
    for where in wheres:
        msg = msg.replace(f"{where}{os.sep}", "").replace(str(where), "")
    if job.kind == "train":  # training's refusals name the CLI's flags: the API's fields instead
        for flag, field_ in (("--overwrite", "overwrite=true"), ("--resume", "resume=true"), ("--steps", "steps"),
                             ("--photos", "photos"), ("--backbone ", "backbone=")):
            msg = msg.replace(flag, field_)
    return msg


def run(db: str, jobs_root: str, job_id: str, cluster: str | None = None) -> int:
    store = JobStore(db, Path(jobs_root))
    job = store.get(job_id)
    if job is None or job.status != "running":
        log(f"job {job_id} is not running ({job.status if job else 'missing'}); nothing to do")
        return 0
    parent = os.getppid()

    def on_signal(signum, _frame):
        Stop.reason = Stop.reason or "the server is shutting down"
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log(f"job {job.id}: {job.kind} '{job.name}' (attempt {job.attempts}, pid {os.getpid()})")
    try:
        result = RUNNERS[job.kind](store, job, parent, cluster)
        if job.kind == "train":  # what its result is: this filter, not a later one of the name
            from ..filter import registry_path

            (Path(job.folder) / MADE_FILTER).write_text(sha256_file(registry_path(job.name)))
    except BaseException as e:  # noqa: BLE001 - every ending is recorded, then the worker exits
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cur = store.get(job.id)
        if Stop.reason == "cancelled" or (cur and cur.cancel_requested):
            store.finish(job.id, "cancelled", note=f"cancelled at step {cur.step}" if cur else "cancelled")
            log("cancelled")
            return 0
        from ..video.render import RenderStopped

        if Stop.reason or isinstance(e, (KeyboardInterrupt, RenderStopped)):
            why = Stop.reason or "interrupted"
            store.finish(job.id, "queued", note=f"interrupted at step {cur.step if cur else 0} ({why}); "
                                                f"it resumes when a server runs")  # JobStore.claim rewrites it
            log(f"stopped: {why}; back in the queue")
            return 0
        if isinstance(e, RotoscopeError):
            msg = public_error(str(e), job)
        else:
            msg = public_error(f"{type(e).__name__}: {e}".splitlines()[0], job)
            traceback.print_exc()
        store.finish(job.id, "failed", error=msg)
        log(f"failed: {msg}")
        return 1
    resumed = f"done after {job.attempts - 1} interruption(s), each resumed from its checkpoint" \
        if job.attempts > 1 else None
    store.finish(job.id, "done", result=result, eta_s=0, note=resumed)
    log(f"done: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(run(*sys.argv[1:5]))
