"""Batch work on a Ray cluster (`--cluster auto | ray://host:port | host:port`; the `cluster` extra).

- A clip is cut at segment boundaries into runs of segments, one Ray task each. A task paints and encodes its
  segments where it runs, into the render's own work folder (video/render.py's layout), so a killed driver resumes
  from the finished segments and the driver assembles the output once at the end, exactly as the local render does
  (run_job with this module's renderer). A task whose previous segment is not finished paints a few frames before
  its first one and throws them away, so that the flicker reduction has settled at the seam.
- A folder of images becomes a stream of tasks of a few images each, at most `max_in_flight` submitted at once
  (bounded memory), written under the same names, with the same provenance, as the local folder loop.
- train_many trains one filter per artwork, one task each (or one after the other without a cluster).
- The server's jobs (server/worker.py): a video job renders with this module's renderer; a training job runs in a
  Training actor whose step records, log lines and previews the job's worker collects (poll) and writes into the
  job's record, and which it stops, with a checkpoint, when the job is cancelled or the server stops (stop).

The filter goes into Ray's object store once (ray.put) and every task reads it from there. Ray re-runs the task of
a lost worker (max_retries); a re-run keeps the segments (or images) its first attempt finished. Every node must
see the clip, the output's folder and ROTOSCOPE_HOME at the same paths (one machine, or a shared file system),
and have rotoscope installed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import socket
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .config import ClusterConfig, TrainConfig
from .errors import Interrupted, RotoscopeError


def require_ray():
    """The ray module, or one line saying how to get it."""
    try:
        import ray
    except ImportError:
        raise RotoscopeError("--cluster needs Ray: pip install 'rotoscope[cluster]'") from None
    return ray


def connect(address: str = "auto") -> dict:
    """Join a Ray cluster (or keep the connection this process has). `auto`: the cluster RAY_ADDRESS names, or the
    one running on this machine (`ray start --head`), else a new local one with a CPU per core. `ray://host:port`
    is Ray Client, `host:port` a cluster's GCS address. Returns the cluster's CPUs and nodes."""
    ray = require_ray()
    if not ray.is_initialized():
        check_address(address)
        quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        try:
            if address == "auto" and not os.environ.get("RAY_ADDRESS"):  # (a RAY_ADDRESS that fails is an error)
                try:
                    ray.init(address="auto", log_to_driver=False, logging_level="ERROR")
                except ConnectionError:  # no cluster running here: a local one, on this machine's cores
                    ray.init(num_cpus=os.cpu_count() or 1, **quiet)
            else:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, ValueError, RuntimeError) as e:
            where = os.environ.get("RAY_ADDRESS") if address == "auto" else address
            raise RotoscopeError(f"cannot reach the Ray cluster at {where}: {str(e).splitlines()[0][:200]}") \
                from None
    res = ray.cluster_resources()
    return {"cpus": int(res.get("CPU", 0)), "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
            "gpus": int(res.get("GPU", 0))}


def job_address(address: str) -> str:
    """Join the cluster a server hands its jobs to (one line if it cannot) and say the address its job workers
    join: the cluster's own (GCS) address, so that `auto`, which may have started a local cluster in the server,
    names that one to them; a ray:// address as it is (Ray Client)."""
    ray = require_ray()
    connect(address)
    target = os.environ.get("RAY_ADDRESS", "auto") if address == "auto" else address
    return target if target.startswith("ray://") else ray.get_runtime_context().gcs_address


def check_address(address: str) -> None:
    """`auto`, or a cluster (ray://host:port, host:port; RAY_ADDRESS for auto) that takes a TCP connection: else
    one line, at once (Ray itself retries for minutes, printing lines of its own, before it gives up)."""
    target = os.environ.get("RAY_ADDRESS", "auto") if address == "auto" else address
    if target == "auto" or require_ray().is_initialized():
        return
    named = f"--cluster {address}" if address != "auto" else f"RAY_ADDRESS={target}"
    m = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", target.strip())
    if not m:
        raise RotoscopeError(f"{named}: give auto, ray://HOST:PORT or HOST:PORT")
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=5).close()
    except OSError as e:
        raise RotoscopeError(f"cannot reach the Ray cluster at {target} ({named}): {e.strerror or e or 'timed out'}") \
            from None


def _slots(cfg: ClusterConfig) -> int:
    """How many tasks the cluster runs at once."""
    ray = require_ray()
    return max(1, int(ray.cluster_resources().get("CPU", 1) // cfg.cpus_per_task))


def _cancel(refs) -> None:
    ray = require_ray()
    for ref in list(refs):
        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001 - finished already, or the cluster is gone: nothing left to stop
            pass


def task_error(e: BaseException) -> BaseException:
    """A task's own exception (a RotoscopeError, an OSError) instead of Ray's wrapper with the remote traceback."""
    ray = require_ray()
    if isinstance(e, ray.exceptions.RayTaskError) and isinstance(getattr(e, "cause", None), Exception):
        return e.cause
    if isinstance(e, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                      ray.exceptions.TaskCancelledError)):
        return RotoscopeError(f"a Ray worker was lost and its retries ran out ({type(e).__name__}); what was "
                              "finished is kept: run the same command again to resume")
    if isinstance(e, ray.exceptions.RayActorError):  # a training's actor (its process killed, its node lost)
        return RotoscopeError(f"the Ray worker training this was lost ({type(e).__name__}); its last checkpoint "
                              "is kept")
    return e


# ---------------------------------------------------------------- video: runs of segments


@dataclass
class TaskReport:
    """What one render task did (returned to the driver; the benchmark reads them)."""

    first: int  # its first segment, and the end (None: to the clip's end)
    end: int | None
    frames: int  # frames written
    warmup: int  # frames it painted before its first segment and threw away (0 when it chained on: render_range)
    seconds: float
    host: str
    pid: int
    node: str  # the Ray node it ran on (a host may run several)
    warnings: list[str] = field(default_factory=list)
    stages: dict | None = None  # where its time went (video/stages.py, StageTimes.to_dict), summed by the driver


def warmup_frames(cfg: ClusterConfig, video) -> int:
    """Frames a task paints before its first segment: until what the flicker reduction remembers of the frames
    before it, blend ** k, is below one 8-bit level (25 at the default blend 0.8); none without stabilization."""
    if cfg.warmup_frames is not None:
        return cfg.warmup_frames
    if not video.stabilize or video.blend <= 0:
        return 0
    if video.blend >= 1:
        return 10 * video.segment_frames  # no decay: as much as a task can afford (the seam cannot be exact)
    return math.ceil(math.log(1 / 255) / math.log(video.blend))


def plan_tasks(todo: list[int], total: int, per_task: int) -> list[tuple[int, int | None]]:
    """Unfinished segments -> (first, end) runs of at most per_task consecutive segments; the run that reaches
    the last segment ends at None (the clip's end), so a frame count the header got wrong loses nothing."""
    runs: list[tuple[int, int | None]] = []
    i = 0
    while i < len(todo):
        first = todo[i]
        j = i
        while j + 1 < len(todo) and todo[j + 1] == todo[j] + 1 and j + 1 - i < per_task:
            j += 1
        end = todo[j] + 1
        runs.append((first, None if end >= total else end))
        i = j + 1
    return runs


def segments_per_task(cfg: ClusterConfig, todo: int, slots: int) -> int:
    if cfg.segments_per_task:
        return cfg.segments_per_task
    per = math.ceil(todo / (2 * slots))  # two tasks per worker: one slow task does not hold up the end
    if per < 4:  # short clips: one task per worker (up to 4 segments), so that the warm-ups stay a small share
        per = min(4, math.ceil(todo / slots))
    return max(1, per)


def _own_cpus() -> int:
    """On a worker: PyTorch's, OpenVINO's and OpenCV's threads = the CPUs Ray gave the task (OMP_NUM_THREADS,
    which Ray sets from num_cpus), not every core of the machine, which the other tasks are using. Returns them
    (0: not known)."""
    import cv2
    import torch

    n = os.environ.get("OMP_NUM_THREADS", "")
    if not (n.isdigit() and int(n) > 0):
        return 0
    os.environ["ROTOSCOPE_THREADS"] = n
    torch.set_num_threads(int(n))
    cv2.setNumThreads(int(n))  # the optical flow
    return int(n)


def _render_task(job, filt, first: int, end: int | None, warmup: int, table, hook) -> TaskReport:
    """On a worker: paint segments first .. end-1 of the job into its work folder (render_range). A re-run after a
    lost worker keeps the segments the first attempt finished and chains on from them exactly."""
    from .video.render import render_range

    t0 = time.perf_counter()
    cpus = _own_cpus()
    job.filt, job.stop_request = filt, threading.Event()
    if cpus and not job.video.codec_threads:  # x264 and the decoder too (FFmpeg's choice is every core)
        job.video = dataclasses.replace(job.video, codec_threads=cpus)
    while (end is None or first < end) and job.seg_done(first).exists():
        first += 1
    lines: list[str] = []
    frames = 0
    if end is None or first < end:
        start = first * job.video.segment_frames
        frames = render_range(job, first, end, False, lines.append, hook, warmup, table) - start
    # the warm-up it painted: none when the previous segment was finished before it began (it chained on from that,
    # as render_range does) or before the clip's first frame; else `warmup` rounded up to whole batches
    painted = max(0, job.stages.frames - max(0, frames))
    return TaskReport(first, end, max(0, frames), painted, round(time.perf_counter() - t0, 3), socket.gethostname(),
                      os.getpid(), _node_id(), lines, job.stages.to_dict() if job.stages.frames else None)


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def render_on_cluster(job, address: str = "auto", cfg: ClusterConfig | None = None, progress: bool = False,
                      warn: Callable[[str], None] = print, on_segment: Callable[[int], None] | None = None,
                      task_hook: Callable[[int], None] | None = None, reports: list | None = None) -> int:
    """Paint a RenderJob's unfinished segments as Ray tasks; returns the clip's frame count, as render_segments.

    `on_segment(i)` is called here, on the driver, for each segment a finished task wrote; `task_hook(i)` on the
    worker after each segment it writes (fault injection in the tests). `reports` collects each task's
    TaskReport."""
    import copy

    from .video.render import RenderStopped, _Progress
    from .video.source import frame_table

    ray = require_ray()
    cfg = (cfg or ClusterConfig()).validate()
    connect(address)
    n = job.video.segment_frames
    table = frame_table(job.src, job.video.max_seconds)  # seeking, and the exact count, without decoding
    total = max(1, math.ceil((len(table) if table else job.src.frames or 1) / n))
    todo = [i for i in range(total) if not job.seg_done(i).exists()]
    runs = plan_tasks(todo, total, segments_per_task(cfg, len(todo), _slots(cfg)))
    warmup = warmup_frames(cfg, job.video)
    # the job travels without its filter (in the object store once), its stop flag (a lock: not picklable) and
    # the lines already said
    spec = copy.copy(job)
    spec.filt, spec.stop_request, spec.announce = None, None, []
    spec.stages = type(job.stages)()  # each task times its own work; the driver adds the reports up
    filt_ref, spec_ref = ray.put(job.filt), ray.put(spec)
    table_ref = ray.put(table)
    remote = ray.remote(_render_task).options(num_cpus=cfg.cpus_per_task, max_retries=cfg.max_retries,
                                              retry_exceptions=False)
    pending = {remote.remote(spec_ref, filt_ref, a, b, warmup, table_ref, task_hook): (a, b) for a, b in runs}
    waiting = set(todo)  # segments not yet reported to on_segment and the progress bar
    bar = _Progress(progress, len(table) if table else job.src.frames, (total - len(waiting)) * n)
    polled, t0 = 0.0, time.perf_counter()
    try:
        with bar:
            while pending:
                if job.stop_request.is_set():
                    raise RenderStopped("stopped: finished segments are kept")
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                # the work folder is looked at every 2 s (or when a task ends): on a shared file system a film's
                # thousands of segment files are not to be listed twice a second
                if not ready and time.monotonic() - polled < 2:
                    continue
                polled = time.monotonic()
                for ref in ready:
                    pending.pop(ref)
                    try:
                        rep = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - the task's own error, as the local render raises it
                        raise task_error(e) from None
                    for line in rep.warnings:
                        warn(line)
                    if rep.stages:
                        job.stages.merge(rep.stages)
                    if reports is not None:
                        reports.append(rep)
                for i in sorted(i for i in waiting if job.seg_done(i).exists()):
                    waiting.discard(i)
                    if on_segment:
                        on_segment(i)
                bar.update((total - len(waiting)) * n)
    except BaseException:
        _cancel(pending)  # an error, a stop or Ctrl-C: the other tasks stop too (their finished segments stay)
        raise
    job.stages.wall += time.perf_counter() - t0
    return _frames_in_order(job, warn)


def _frames_in_order(job, warn) -> int:
    """The frames the output will hold: the finished segments from the first on, up to the first gap or short
    segment. Every task succeeded, so a gap means the decoder stopped early inside some task's range (a damaged
    stretch of the file): the output ends there, as the local render's does at the first unreadable frame."""
    n = job.video.segment_frames
    count = k = 0
    while job.seg_done(k).exists():
        frames = len(json.loads(job.seg_done(k).read_text())["frames"])
        count, k = count + frames, k + 1
        if frames < n:
            break
    if count == 0:
        raise RotoscopeError(f"{job.src.path}: no video frames")
    if any(int(p.stem[4:9]) >= k for p in job.work.glob("seg-*.json")):
        warn(f"warning: {job.src.path.name}: frame {count} could not be decoded; the output ends there, as a local "
             "render's would")
    return count


def video_renderer(address: str = "auto", cfg: ClusterConfig | None = None, task_hook=None, reports=None):
    """A renderer for video.run_job / apply_video_cli that paints on the cluster."""

    def render(job, progress, warn, on_segment):
        return render_on_cluster(job, address, cfg, progress, warn, on_segment, task_hook, reports)

    return render


def apply_video(filt, src, dest, settings, video=None, address: str = "auto", cfg: ClusterConfig | None = None,
                warn: Callable[[str], None] = print, progress: bool = False, on_segment=None, task_hook=None,
                reports: list | None = None, mask=None) -> Path:
    """video.apply_video on a Ray cluster: the same output, work folder and resuming."""
    from .video.render import make_job, run_job

    job = make_job(filt, src, dest, settings, video, mask)
    return run_job(job, progress, warn, on_segment,
                   renderer=video_renderer(address, cfg, task_hook, reports))


# ---------------------------------------------------------------- folders of images


def _paint_task(filt, files: list[Path], dest: Path, settings, mask) -> list:
    from .apply import paint_into

    _own_cpus()
    return [r for f in files for r in paint_into(filt, f, dest, settings, mask)]


def apply_folder(filt, src: Path, dest: Path, settings, progress: bool, mask=None, address: str = "auto",
                 cfg: ClusterConfig | None = None) -> Iterator:
    """apply.apply_folder on a Ray cluster: tasks of `images_per_task` images, at most `max_in_flight` submitted
    at once (memory stays bounded whatever the folder's size); results come back in the folder's order."""
    from rich.console import Console
    from rich.progress import Progress

    from .apply import Skipped, claim_names, list_stills, still_name, taken_reason
    from .paths import check_writable

    ray = require_ray()
    cfg = (cfg or ClusterConfig()).validate()
    files = list_stills(src)
    if not files:
        raise RotoscopeError(f"no images in {src}")
    check_writable(dest)
    owner = claim_names(files, still_name)
    for f in files:
        if owner[f] != f:
            yield Skipped(str(f), taken_reason(f, still_name(f), owner[f], still_name(owner[f])))
    files = [f for f in files if owner[f] == f]
    connect(address)
    in_flight = cfg.max_in_flight or 2 * _slots(cfg)
    filt_ref = ray.put(filt)
    remote = ray.remote(_paint_task).options(num_cpus=cfg.cpus_per_task, max_retries=cfg.max_retries,
                                             retry_exceptions=False)
    chunks = [files[i:i + cfg.images_per_task] for i in range(0, len(files), cfg.images_per_task)]
    queue: deque = deque()
    nxt = 0
    console = Console(stderr=True)
    bar = Progress(transient=True, disable=not progress or not console.is_terminal, console=console)
    try:
        with bar:
            task = bar.add_task("painting", total=len(files))
            while nxt < len(chunks) or queue:
                while nxt < len(chunks) and len(queue) < in_flight:
                    queue.append(remote.remote(filt_ref, chunks[nxt], Path(dest), settings, mask))
                    nxt += 1
                try:
                    results = ray.get(queue[0])  # in order: the oldest task first
                except Exception as e:  # noqa: BLE001
                    raise task_error(e) from None
                queue.popleft()
                bar.advance(task, sum(1 for r in results if hasattr(r, "output") or hasattr(r, "reason")))
                yield from results
    except BaseException:
        _cancel(queue)
        raise


# ---------------------------------------------------------------- many filters


@dataclass
class Trained:
    """One row of train_many's table."""

    name: str
    artwork: str
    status: str  # "trained", "resumed", "kept" (finished by an earlier run), or "failed: why"
    steps: int | None = None
    holdout: float | None = None  # the final held-out score (total loss on the photos held out; lower is better)
    minutes: float | None = None
    path: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def filter_name(artwork: Path) -> str:
    """The filter an artwork's training makes: its file stem, with anything a filter name cannot hold as '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", artwork.stem).strip("-.")[:64] or "artwork"


def _plan_many(artworks: Path, cfg: TrainConfig, overwrite: bool, out_dir) -> list[tuple[Path, str, str]]:
    """(artwork, name, what to do) for each artwork; a filter in the way is refused now, before any training."""
    import hashlib

    from .filter import read_card
    from .images import list_images
    from .paths import check_writable
    from .train import filter_destination, refuse_taken, run_of

    if not Path(artworks).is_dir():
        raise RotoscopeError(f"{artworks} is not a folder of artworks" if Path(artworks).exists() else
                             f"no such folder of artworks: {artworks}")
    arts = list_images(artworks)
    if not arts:
        raise RotoscopeError(f"no images in {artworks}")
    plan, seen = [], {}
    for art in arts:
        name = filter_name(art)
        if name in seen:
            raise RotoscopeError(f"{seen[name].name} and {art.name} would both make the filter '{name}': rename one")
        seen[name] = art
        dest = filter_destination(name, Path(out_dir) / f"{name}.safetensors" if out_dir else None)
        if overwrite:
            plan.append((art, name, "train"))
            continue
        if dest.exists():
            card = None
            try:
                card = read_card(dest)
            except Exception:  # noqa: BLE001 - unreadable: refused below like any other filter in the way
                pass
            sha = hashlib.sha256(art.read_bytes()).hexdigest()
            if card and (card.get("artwork") or {}).get("sha256") == sha and \
                    (card.get("timings") or {}).get("steps") == cfg.steps:
                plan.append((art, name, "kept"))  # finished by an earlier run of the same command
                continue
            raise RotoscopeError(f"a filter named '{name}' exists ({dest}); pass --overwrite to replace it")
        refuse_taken(name, dest if out_dir else None)  # a shipped filter's name, in the registry
        run = run_of(name)  # the checkpoint's header, read once
        if run is not None and not run["finished"]:
            if run["artwork_sha256"] == hashlib.sha256(art.read_bytes()).hexdigest():
                plan.append((art, name, "resume"))  # an interrupted run: it goes on from its checkpoint
                continue
            raise RotoscopeError(f"an interrupted run of '{name}' from another artwork is kept at step {run['step']} "
                                 f"of {run['steps']}: --overwrite starts afresh")
        plan.append((art, name, "train"))  # a finished run's record without its filter (removed) is replaced
    if out_dir:  # said now, not as a failed row after the first training; after the refusals above, which
        check_writable(out_dir)  # would otherwise leave the folder it makes behind, empty
    return plan


def _train_one(art: Path, name: str, photos, cfg: TrainConfig, how: str, out_dir, since: float = 0.0) -> Trained:
    """One artwork's training (locally, or on a worker); its row of the table. A re-run after a lost worker
    resumes from the checkpoint its first attempt left (one written after `since`, when this command began)."""
    from .filter import load_filter_file
    from .paths import runs_dir
    from .train import CHECKPOINT, filter_destination
    from .train import train as run_train

    _own_cpus()
    dest = filter_destination(name, Path(out_dir) / f"{name}.safetensors" if out_dir else None)
    t0 = time.perf_counter()
    try:
        if how == "kept":
            filt = load_filter_file(dest)
        else:
            ckpt = runs_dir() / name / CHECKPOINT
            resume = how == "resume" or (ckpt.exists() and ckpt.stat().st_mtime >= since)
            how = "resumed" if resume else "trained"
            filt = run_train(art, name, photos, cfg, resume=resume, out=dest if out_dir else None,
                             log=lambda *_: None, progress=False)
    except Interrupted:
        raise  # Ctrl-C (its checkpoint kept) ends the command, not only this artwork's row
    except Exception as e:  # noqa: BLE001 - one training that fails is a row of the table, the others go on
        why = str(e) if isinstance(e, RotoscopeError) else f"{type(e).__name__}: {e}"
        return Trained(name, art.name, f"failed: {' '.join(why.split())[:200]}",
                       minutes=round((time.perf_counter() - t0) / 60, 2))
    card = filt.card
    last = (card.get("history") or {}).get("holdout_last") or {}
    return Trained(name, art.name, how, (card.get("timings") or {}).get("steps"), last.get("total"),
                   round(((card.get("timings") or {}).get("seconds") or 0) / 60, 2), str(filt.path or dest))


def train_many(artworks: str | os.PathLike, photos=None, cfg: TrainConfig | None = None, *, overwrite=False,
               cluster: str | None = None, cluster_cfg: ClusterConfig | None = None, out_dir=None,
               on_result: Callable[[Trained], None] | None = None) -> list[Trained]:
    """One filter per artwork of a folder, named after the file (filter_name): one after the other here, or one
    Ray task each with `cluster`. Each resumes its own interrupted run; a filter finished by an earlier run of the
    same command is kept, and any other filter of the same name is refused before anything is trained (unless
    `overwrite`). Returns the table's rows, in the folder's order; a failed training is a row, not an exception."""
    cfg = (cfg or TrainConfig()).validate()
    if cfg.teacher:  # every artwork's student would learn one filter's look: a teacher belongs to one artwork
        raise RotoscopeError("train-many takes no teacher: a teacher filter paints one artwork's look; train each "
                             "lite filter with `rotoscope train ART --arch lite --teacher NAME`")
    if cluster_cfg is not None:
        cluster_cfg.validate()
    if cluster is not None:
        require_ray()
        check_address(cluster)
    if photos is not None and Path(photos).is_file():
        raise RotoscopeError(f"--photos takes a folder of pictures: {photos} is one file")
    if photos is not None and not Path(photos).is_dir():
        raise RotoscopeError(f"no such folder of photos: {photos}")
    since = time.time()
    plan = _plan_many(Path(artworks), cfg, overwrite, out_dir)
    rows: list[Trained] = []
    if cluster is None:
        for art, name, how in plan:
            try:
                rows.append(_train_one(art, name, photos, cfg, how, out_dir, since))
            except Interrupted as e:
                raise _many_interrupted(name, e) from None
            if on_result:
                on_result(rows[-1])
        return rows
    ray = require_ray()
    connect(cluster)
    ccfg = cluster_cfg or ClusterConfig()
    # the registry and the runs are the driver's: a ROTOSCOPE_HOME set here is set for the tasks too
    env = {k: os.environ[k] for k in ("ROTOSCOPE_HOME",) if os.environ.get(k)}
    remote = ray.remote(_train_one).options(num_cpus=ccfg.cpus_per_task, max_retries=ccfg.max_retries,
                                            retry_exceptions=False,
                                            **({"runtime_env": {"env_vars": env}} if env else {}))
    refs = [remote.remote(art, name, photos, cfg, how, out_dir, since) for art, name, how in plan]
    try:
        for (art, name, _), ref in zip(plan, refs):
            try:
                row = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - a lost worker past its retries: this row fails, not the rest
                cause = task_error(e)
                if isinstance(cause, Interrupted):  # a worker's Ctrl-C: the whole command stops, as here
                    raise _many_interrupted(name, cause) from None
                row = Trained(name, art.name, f"failed: {' '.join(str(cause).split())[:200]}")
            rows.append(row)
            if on_result:
                on_result(row)
    except KeyboardInterrupt:  # Ctrl-C here: the tasks are cancelled, each keeping its checkpoint
        _cancel(refs)
        raise Interrupted("interrupted; run the same command again to continue (finished filters are kept, the "
                          "others resume from their checkpoints)") from None
    except BaseException:
        _cancel(refs)
        raise
    return rows


def _many_interrupted(name: str, e: Interrupted) -> Interrupted:
    """train's 'interrupted at step N/M; run the same command with --resume' as train-many says it: it resumes
    by itself, and takes no --resume."""
    where = str(e).partition(";")[0]
    return Interrupted(f"{name}: {where}; run the same command again to continue (filters finished before it are "
                       "kept)")


# ---------------------------------------------------------------- one training, followed (the server's jobs)


class Training:
    """One train() run on a worker, followed from the driver: run() trains (on one thread of this actor) while
    poll() hands over the step records, log lines and latest preview gathered since the last poll, and stop() asks
    the run to end after its current step, with a checkpoint (train() then raises 'interrupted at step N').
    A threaded actor (max_concurrency 2), so poll and stop answer while run works."""

    def __init__(self):
        self._lock = threading.Lock()
        self._records: list[dict] = []
        self._lines: list[str] = []
        self._preview: tuple[int, bytes] | None = None
        self._stop: str | None = None

    def run(self, artwork: str, name: str, photos, cfg: TrainConfig, title: str | None, resume: bool, photo,
            preview_every: float, preview_size: int) -> dict:
        """Train (resuming from the run's checkpoint with `resume`) and say where: {name, host, pid}. `photo` is
        painted for the previews every `preview_every` seconds and at the last step."""
        import io

        from .stylize import training_preview
        from .train import Monitor, StopRequest, train

        _own_cpus()
        actor = self

        class Gather(Monitor):
            def __init__(self):
                self.previewed = 0.0

            def step(self, record, net):
                now = time.time()
                preview = None
                if now - self.previewed >= preview_every or record["step"] >= cfg.steps:
                    buf = io.BytesIO()
                    training_preview(net, photo, preview_size).save(buf, "PNG")
                    preview, self.previewed = (record["step"], buf.getvalue()), now
                with actor._lock:
                    actor._records.append(record)
                    actor._preview = preview or actor._preview
                    stop = actor._stop
                return StopRequest(stop) if stop else None

        def said(msg: str) -> None:
            with self._lock:
                self._lines.append(str(msg))

        filt = train(artwork, name, photos, cfg, title=title, resume=resume, log=said, progress=False,
                     monitors=[Gather()])
        return {"name": filt.name, "host": socket.gethostname(), "pid": os.getpid()}

    def poll(self) -> dict:
        """What happened since the last poll: {records, lines, preview: (step, PNG bytes) or None}."""
        with self._lock:
            got = {"records": self._records, "lines": self._lines, "preview": self._preview}
            self._records, self._lines, self._preview = [], [], None
        return got

    def stop(self, reason: str) -> None:
        with self._lock:
            self._stop = self._stop or reason


def start_training(address: str, artwork: Path, name: str, photos: Path | None, cfg: TrainConfig, *,
                   title: str | None = None, resume: bool = False, photo=None, preview_every: float = 2.0,
                   preview_size: int = 256, cluster_cfg: ClusterConfig | None = None):
    """A Training actor on the cluster at `address`, already training: (actor, the ObjectRef of its run).
    The registry and the runs are this process's: its ROTOSCOPE_HOME is set for the actor too (a worker on another
    machine must see it, and the artwork and photos, at the same paths)."""
    ray = require_ray()
    ccfg = (cluster_cfg or ClusterConfig()).validate()
    connect(address)
    env = {k: os.environ[k] for k in ("ROTOSCOPE_HOME",) if os.environ.get(k)}
    actor = ray.remote(Training).options(num_cpus=ccfg.cpus_per_task, max_concurrency=2,
                                         **({"runtime_env": {"env_vars": env}} if env else {})).remote()
    ref = actor.run.remote(str(artwork), name, str(photos) if photos else None, cfg, title, resume, photo,
                           preview_every, preview_size)
    return actor, ref
