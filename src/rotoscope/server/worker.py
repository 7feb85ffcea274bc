"""One job, run in its own process: `python -m rotoscope.server.worker DB JOBS_ROOT JOB_ID`.

The worker calls the same library functions as the CLI (train.train, video.apply_video_cli) and writes its progress
into the job record. It stops cleanly, with a checkpoint, when the job is cancelled, when the server asks it to
(SIGINT/SIGTERM on shutdown) or when the server that started it has died; the latter two put the job back in the
queue so the next server resumes it.
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
from .jobs import Job, JobStore

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


def run_train(store: JobStore, job: Job, parent: int) -> str:
    from ..config import TrainConfig
    from ..filter import Filter
    from ..images import save_image
    from ..paths import runs_dir
    from ..stylize import ApplySettings, stylize_image
    from ..train import CHECKPOINT, Monitor, StopRequest, checkpoint_state, train

    folder = Path(job.folder)
    params = job.params
    cfg = TrainConfig.from_dict(params["config"])
    ckpt = runs_dir() / job.name / CHECKPOINT
    # resume only from a checkpoint this job wrote (not one left by an older run of the same name)
    resume = job.attempts > 1 and ckpt.exists() and job.started is not None and ckpt.stat().st_mtime >= job.started
    if job.attempts > 1:
        log(f"attempt {job.attempts}: " + (f"resuming from the checkpoint at {ckpt}" if resume else
                                           "no checkpoint from this job yet; starting again"))
    # the history restarts where the weights do: the checkpoint may be ahead of the last records flushed to the
    # database (a kill between the two), or behind them (steps recorded after it are trained again)
    store.reset_history(job.id, checkpoint_state(ckpt)["run"]["history"] if resume else [])
    photo = job_preview_photo(job)

    class Follow(Monitor):
        """Writes the job's step records, ETA and preview; asks train() to stop when the job is cancelled or the
        server that started it is gone (train() then saves a checkpoint and stops)."""

        def __init__(self):
            self.first_step, self.t0, self.flushed, self.preview, self.preview_step = None, 0.0, 0.0, 0.0, None
            self.buffer: list[dict] = []

        def step(self, record: dict, net) -> StopRequest | None:
            step = record["step"]
            if self.first_step is None:  # the rate is measured from the end of the first step (no start-up costs)
                self.first_step, self.t0 = step, time.time()
            self.buffer.append(record)
            now = time.time()
            last = step >= cfg.steps
            if now - self.preview >= PREVIEW_EVERY_S or last:
                was_training = net.training
                device = str(next(net.parameters()).device)
                img = stylize_image(Filter(job.name, {}, net), photo,
                                    ApplySettings(size=PREVIEW_SIZE, device=device, engine="torch"))
                net.train(was_training)
                save_image(img, folder / "preview.png")
                self.preview, self.preview_step = now, step
            if now - self.flushed >= PROGRESS_EVERY_S or last:
                rate = (step - self.first_step) / max(1e-6, now - self.t0)
                extra = {"preview_step": self.preview_step} if self.preview_step is not None else {}
                store.progress(job.id, self.buffer, step=step, terms=record["train"],
                               eta_s=round((cfg.steps - step) / rate, 1) if rate > 0 else None, **extra)
                self.buffer, self.flushed = [], now
                if store.cancel_requested(job.id):
                    Stop.reason = "cancelled"
                elif os.getppid() != parent:
                    Stop.reason = "the server that started this job has stopped"
                if Stop.reason:
                    return StopRequest(Stop.reason)
            return None

    photos = folder / "photos"
    train(folder / params["artwork"], job.name, photos if photos.is_dir() else None, cfg,
          title=params.get("title"), resume=resume, log=log, progress=False, monitors=[Follow()])
    return job.name


def run_video(store: JobStore, job: Job, parent: int) -> str:
    """Paint a clip with video.run_job; a requeued job resumes from the segments it already finished."""
    import shutil

    from .. import video
    from ..config import VideoConfig
    from ..filter import load_filter_file
    from ..stylize import ApplySettings

    folder = Path(job.folder)
    params = job.params
    filt = load_filter_file(params["filter_path"])
    settings = ApplySettings(**params["settings"])
    vjob = video.make_job(filt, folder / params["input"], folder / params["output"], settings,
                          VideoConfig(stabilize=params.get("stabilize", True)))
    total = vjob.src.frames or 0
    store.update(job.id, total=total)
    t0, first = time.time(), None

    def on_segment(i: int) -> None:  # called from the video writer thread after each finished segment
        nonlocal first
        frames = min(total, (i + 1) * vjob.video.segment_frames) if total else (i + 1) * vjob.video.segment_frames
        first = frames if first is None else first
        rate = (frames - first) / max(1e-6, time.time() - t0) if frames > first else 0
        with contextlib.suppress(OSError):
            shutil.copyfile(vjob.seg_last(i), folder / "preview.png")
        store.progress(job.id, [], step=frames, preview_step=frames,
                       eta_s=round((total - frames) / rate, 1) if rate and total else None)
        if store.cancel_requested(job.id):
            Stop.reason = "cancelled"
        elif os.getppid() != parent:
            Stop.reason = "the server that started this job has stopped"
        if Stop.reason:
            vjob.stop_request.set()  # the render stops at its next batch, finished segments kept

    out = video.run_job(vjob, progress=False, warn=log, on_segment=on_segment)
    log(f"wrote {out} ({vjob.width}x{vjob.height})")
    store.update(job.id, step=total or job.step)
    return params["output"]


RUNNERS = {"train": run_train, "video": run_video}


def run(db: str, jobs_root: str, job_id: str) -> int:
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
        result = RUNNERS[job.kind](store, job, parent)
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
                                                f"it resumes when a server runs")
            log(f"stopped: {why}; back in the queue")
            return 0
        if isinstance(e, RotoscopeError):
            msg = str(e)
        else:
            msg = f"{type(e).__name__}: {e}".splitlines()[0]
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
    sys.exit(run(*sys.argv[1:4]))
