"""The threaded renderer: a reader thread decodes (and prepares the flicker reduction), the main thread paints
frames in batches and steadies them, a writer thread encodes fixed-length segments. Queues between the threads
are bounded, so memory stays flat whatever the clip's length; finished segments make a render resumable.

Entry points: apply_video (the library call), make_job + run_job (the server's worker), apply_video_cli (the
`rotoscope apply` command) and preview_sheet (a contact sheet before a full render).
"""

from __future__ import annotations

import hashlib
import json
import math
import queue
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import torch
from PIL import Image

from .. import flow as fl
from ..config import VideoConfig
from ..devices import keep_freed_memory, pick_device
from ..errors import CannotWrite, Invalid, RotoscopeError
from ..filter import Filter
from ..guided import guided_upsample_frame
from ..images import as_shown, save_image
from ..mask import composite_uint8
from ..paths import check_writable, write_failure
from ..stylize import (ApplySettings, finish, frames_nchw, make_runner, paint, paint_frames_on_device,
                       paint_reduced_frames, paint_small_frames, painted_uint8, paints_frames_on_device,
                       paints_reduced_frames, provenance, resolve, shrink_frames, to_uint8)
from .output import (_SegmentWriter, assemble_animated, assemble_frames, assemble_h264, audio_plan, default_clip_output,
                     output_kind)
from .source import Frame, Source, _pick_frames, count_frames, decode, frame_table, output_size, probe
from .stages import StageTimes
from .steady import Stabilizer


@dataclass
class RenderJob:
    """One render: what goes in, what comes out, where the unfinished parts live."""

    filt: Filter
    src: Source
    dest: Path
    kind: str  # "h264", "animated" or "frames"
    settings: ApplySettings
    video: VideoConfig
    width: int
    height: int
    work: Path = field(init=False)
    key: str = field(init=False)  # what the output depends on, hashed: names the work folder, kept in the provenance
    announce: list[str] = field(default_factory=list)  # precision and engine lines, when make_job chose them
    frames_written: int = 0  # after run_job: the frames in the output
    mask: object = None  # a mask image, or a folder of one per frame (mask.py; `settings.keep` finds faces)
    audio: dict[int, str] = field(default_factory=dict)  # audio stream -> "copy" or "aac" (output.audio_plan)
    # set it (from any thread) to stop the render at the next batch; finished segments are kept, and the same
    # command resumes (the server's worker cancels and requeues jobs with it)
    stop_request: threading.Event = field(default_factory=threading.Event)
    stages: StageTimes = field(default_factory=StageTimes)  # where the time went (stages.py), filled as it renders

    def __post_init__(self):
        st = self.src.path.stat()
        key = json.dumps({"src": str(self.src.path.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns,
                          "filter": self.filt.card_hash, "settings": self.settings.to_dict(), "kind": self.kind,
                          "w": self.width, "h": self.height, "crf": self.video.crf, "preset": self.video.preset,
                          "stabilize": self.video.stabilize, "blend": self.video.blend,
                          "flow_preset": self.video.flow_preset, "flow_side": self.video.flow_side,
                          "segment": self.video.segment_frames, "max_seconds": self.video.max_seconds,
                          **_mask_key(self)}, sort_keys=True)
        self.key = hashlib.sha256(key.encode()).hexdigest()[:12]
        self.work = self.dest.parent / f".{self.dest.name}.rotoscope-{self.key}"

    @property
    def steady_scale(self) -> float:
        """The scale the flicker reduction works at: the paint scale when frames are painted small and guided up
        afterwards (stylize.paints_reduced_frames; a quarter of the warping and blending at 0.5, and the steadied
        picture still takes its edges from the current frame), else 1 (the frame's own size)."""
        return self.settings.paint_scale if paints_reduced_frames(self.height, self.width, self.settings) else 1.0

    @property
    def shown_size(self) -> tuple[int, int]:
        """(w, h) as the output is seen: a clip turned a quarter by its display rotation is stored on its side."""
        return (self.height, self.width) if self.src.rotation % 180 == 90 else (self.width, self.height)

    def seg_done(self, i: int) -> Path:
        return self.work / f"seg-{i:05d}.json"

    def seg_media(self, i: int) -> Path:
        return self.work / (f"seg-{i:05d}.mp4" if self.kind == "h264" else f"seg-{i:05d}")

    def seg_last(self, i: int) -> Path:
        return self.work / f"seg-{i:05d}.last.png"

    def finished_output(self) -> tuple[tuple[int, int], int | None] | None:
        """(size, frames) of this job's output when an earlier run wrote it already, else None: the output's
        provenance (written by run_job: the container's comment tag, an animated GIF's comment or WebP's EXIF)
        carries the job's key. An output appears under its final name only when it is
        whole, so one that is there with the key is finished."""
        import av

        from ..images import read_provenance

        try:
            if self.kind == "h264" and self.dest.is_file():
                with av.open(str(self.dest)) as c:
                    meta = {k.lower(): v for k, v in c.metadata.items()}  # Matroska upper-cases the tag: COMMENT
                    prov = json.loads(meta.get("comment") or "null")
                    vs = c.streams.video[0]
                    size = (vs.codec_context.width, vs.codec_context.height)
            elif self.kind == "animated" and self.dest.is_file():
                prov = read_provenance(self.dest)
                with Image.open(self.dest) as im:
                    size = im.size
            else:  # nothing there, or a frame folder (a folder's clips are written as clips)
                return None
        except Exception:  # noqa: BLE001 - not a finished render of ours: painted again
            return None
        video = prov.get("video") if isinstance(prov, dict) else None
        if not isinstance(video, dict) or video.get("render") != self.key:
            return None
        return size, video.get("frames")

    def finished_segments(self) -> int:
        n = 0
        while self.seg_done(n).exists():
            n += 1
        return n


class _Stop(Exception):
    pass


def _put(q: queue.Queue, item, stop: threading.Event, errors: list | None = None) -> None:
    """Put with a timeout loop, so that a stop, or an error of the thread at the other end (which will never take
    from the queue again), ends the wait instead of blocking forever on a full queue."""
    while True:
        if stop.is_set():
            raise _Stop
        if errors:
            raise errors[0]
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            pass


def _get(q: queue.Queue, stop: threading.Event, errors: list):
    while True:
        if errors:
            raise errors[0]
        try:
            return q.get(timeout=0.2)
        except queue.Empty:
            if stop.is_set() and not errors:
                raise _Stop from None


END = object()


def _mask_key(job: RenderJob) -> dict:
    """What a mask adds to a render's identity (a changed mask starts the render over)."""
    if job.mask is None and not job.settings.keep:
        return {}
    from ..mask import describe

    return {"mask": describe(job.mask), "keep": job.settings.keep, "feather": job.settings.feather}


def mask_chain(job: RenderJob):
    """The job's mask.MaskChain, or None when every pixel is painted."""
    if job.mask is None and not job.settings.keep:
        return None
    from ..mask import MaskChain

    return MaskChain(job.mask, job.settings.keep, job.settings.feather, job.src.rotation, job.src.flip)


def _reader(job: RenderJob, start: int, q: queue.Queue, stop: threading.Event, errors: list, warn,
            stop_at: int | None = None, table: list[int] | None = None) -> None:
    """Decode frames from `start` (painted) to `stop_at` (None: the end) and prepare their flicker reduction and
    masks. With a frame table it seeks: decoding begins a frame before `start` (the flow needs it), or the kept
    faces' memory before it, instead of at the clip's first frame."""
    try:
        stab = Stabilizer(job.video.blend, job.video.flow_preset, job.video.flow_side, job.steady_scale) \
            if job.video.stabilize else None
        masks = mask_chain(job)
        first = 0
        if table is not None:
            first = max(0, start - 1 - (masks.MEMORY if masks is not None and masks.keep else 0))
            for _ in range(first if masks is not None else 0):
                masks.skip()  # a folder of per-frame masks: frame i takes mask i
        clock = job.stages
        frames = decode(job.src, job.width, job.height, warn, job.video.max_seconds, job.video.codec_threads,
                        first, table)
        for i, ((pts, dur, rgb), took) in enumerate(clock.timed(frames), start=first):
            ours = i >= start  # frames before `start` are decoded only to feed the flow: not this render's work
            if ours:
                clock.seconds["decode"] += took
                if i == start:
                    clock.start_wall(time.perf_counter() - took)
            t = time.perf_counter()
            fr = Frame(i, pts, dur, rgb)
            # a resumed render with faces kept replays the kept faces' last frames (their fading memory) first
            replay = masks is not None and masks.keep and start - i <= masks.MEMORY
            if stab is not None:
                if i >= start or replay:
                    stab.prepare(fr)
                else:
                    stab.prev_in = rgb  # skipped (already rendered) frames still feed the flow of the next one
                t = clock.add("flow", t) if ours else time.perf_counter()
            if masks is not None:
                if i >= start or replay:
                    f = fr.warp  # kept faces follow the flow at the frame's size (it is smaller at a paint scale)
                    if f is not None and f.shape[:2] != rgb.shape[:2]:
                        f = fl.resize_flow(f, rgb.shape[1], rgb.shape[0])
                    fr.mask = masks.next(rgb, f)
                else:
                    masks.skip()
                if ours:
                    clock.add("masks", t)
            if i >= start:
                _put(q, fr, stop)
            if stop_at is not None and i + 1 >= stop_at:
                break  # a cluster task's run of segments ends here (its last frame's duration is known by now)
        _put(q, END, stop)
    except _Stop:
        pass
    except BaseException as e:  # handed to the main thread, which reports it
        errors.append(e)


def _writer(job: RenderJob, start_seg: int, q: queue.Queue, stop: threading.Event, errors: list,
            on_segment: Callable[[int], None] | None) -> None:
    w = _SegmentWriter(job)
    n = job.video.segment_frames
    try:
        while True:
            item = _get(q, stop, [])
            if item is END:
                if w.frames:
                    t = time.perf_counter()
                    w.close()
                    job.stages.add("encode", t)
                    if on_segment:
                        on_segment(w.seg)
                return
            fr, rgb = item
            t = time.perf_counter()
            if fr.small is not None:  # painted and steadied at a paint scale (render_range): lifted to full size
                fr.painted, rgb = rgb, guided_upsample_frame(rgb, fr.rgb, fr.small)
                if fr.mask is not None:
                    rgb = composite_uint8(fr.rgb, rgb, fr.mask)
                fr.rgb = fr.small = fr.mask = None
                t = job.stages.add("upsample", t)
            seg = fr.index // n
            if seg != w.seg:
                if w.frames:
                    w.close()
                    if on_segment:
                        on_segment(w.seg)
                w.open(seg)
            w.write(fr, rgb)
            job.stages.add("encode", t)
    except _Stop:
        w.abandon()
    except BaseException as e:
        w.abandon()
        errors.append(e)


def stylize_frames(run, rgbs: list[np.ndarray], st: ApplySettings) -> np.ndarray:
    """A batch of same-size uint8 frames (H x W x 3) -> stylized, strength and colour settings applied, uint8.

    `run` is the engine's runner (stylize.make_runner)."""
    if paints_reduced_frames(*rgbs[0].shape[:2], st):
        return paint_reduced_frames(run, rgbs, st)  # uint8 in, uint8 out: no float round trip at full size
    if paints_frames_on_device(run, *rgbs[0].shape[:2], st):
        return paint_frames_on_device(run, rgbs, st)  # a GPU: uint8 there and back, the float work stays there
    x = frames_nchw(rgbs)
    y = paint(run, x, st)  # whole frames, or tiles past the memory budget, or reduced and guided (paint_scale)
    return painted_uint8(finish(x, y, st.strength, st.preserve_colors))


def frames_per_call(video: VideoConfig, device: torch.device) -> int:
    """VideoConfig.batch, or for 0 (auto): 1 on the CPU, where batches were slower per frame, 4 on a GPU."""
    return video.batch or (4 if device.type == "cuda" else 1)


def render_segments(job: RenderJob, progress: bool, warn: Callable[[str], None],
                    on_segment: Callable[[int], None] | None = None) -> int:
    """Stylize and encode every frame not already in a finished segment (the local render). Returns the number
    of frames."""
    count = render_range(job, job.finished_segments(), None, progress, warn, on_segment)
    if count == 0:
        raise RotoscopeError(f"{job.src.path}: no video frames")
    return count


def resume_chain(job: RenderJob, first: int) -> np.ndarray | None:
    """The last painted frame before segment `first`, when that segment is finished: the flicker reduction goes
    on from it exactly as an uninterrupted render would."""
    if first == 0 or not job.seg_done(first - 1).exists():
        return None
    return np.asarray(Image.open(job.seg_last(first - 1)).convert("RGB"))


def render_range(job: RenderJob, first: int, end: int | None, progress: bool, warn: Callable[[str], None],
                 on_segment: Callable[[int], None] | None = None, warmup: int = 0,
                 table: list[int] | None = None) -> int:
    """Stylize and encode segments first .. end-1 (end None: to the clip's end) into the job's work folder: the one
    renderer of the local render (all unfinished segments) and of a cluster task (a run of them).

    The flicker reduction chains on from the previous segment's last frame when that segment is finished;
    otherwise (a cluster task whose previous segment is painted elsewhere) `warmup` frames before `first` are
    painted and discarded, so the chain has settled when the first written frame comes. `table`
    (source.frame_table) lets the decoder seek to the range instead of decoding the clip from its start.
    Returns the index after the last frame painted (`first`'s first frame when the clip ends before it)."""
    keep_freed_memory()  # frame-sized buffers come and go every frame: reuse them (devices.py)
    reduced = job.steady_scale < 1  # the small painting is steadied, then guided up by the writer
    n_seg = job.video.segment_frames
    start = first * n_seg
    prev_out = resume_chain(job, first)
    lo = start if prev_out is not None else max(0, start - warmup)  # the first frame painted
    stop_at = None if end is None else end * n_seg
    device = pick_device(job.settings.device)
    net = make_runner(job.filt, job.settings)
    fits = job.settings.max_tile_pixels // max(1, job.width * job.height)  # frames per call within the memory budget
    batch = max(1, min(frames_per_call(job.video, device), fits))
    if lo % batch:  # a whole number of batches of warm-up, so that they are the batches a whole render paints
        lo = max(0, lo - lo % batch)
    stop = threading.Event()
    errors: list[BaseException] = []
    q_in: queue.Queue = queue.Queue(maxsize=2 * batch + 2)
    q_out: queue.Queue = queue.Queue(maxsize=2 * batch + 2)
    reader = threading.Thread(target=_reader, args=(job, lo, q_in, stop, errors, warn, stop_at, table), daemon=True)
    writer = threading.Thread(target=_writer, args=(job, first, q_out, stop, errors, on_segment), daemon=True)
    job.stages.began = None  # a run that failed before left its mark
    reader.start()
    writer.start()
    count = start
    bar = _Progress(progress, job.src.frames if end is None else stop_at, start)
    clock = job.stages
    try:
        with bar:
            finished = False
            while not finished:
                if job.stop_request.is_set():
                    raise RenderStopped(f"stopped at frame {count}: finished segments are kept")
                frames: list[Frame] = []
                while len(frames) < batch:
                    item = _get(q_in, stop, errors)
                    if item is END:
                        finished = True
                        break
                    frames.append(item)
                    if (item.index + 1) % n_seg == 0:
                        break  # batches never straddle a segment: a resumed render repeats the same batches
                if frames:
                    t = time.perf_counter()
                    rgbs = [f.rgb for f in frames]
                    if reduced:  # painted and steadied at the reduced size, guided up to the frame's afterwards
                        smalls = shrink_frames(rgbs, job.settings)
                        styled = [to_uint8(p) for p in paint_small_frames(net, smalls, job.settings)]
                    else:
                        styled = stylize_frames(net, rgbs, job.settings)
                    t = clock.add("paint", t)
                    clock.frames += len(frames)
                    for i, (fr, s) in enumerate(zip(frames, styled)):
                        out = prev_out = Stabilizer.apply(fr, s, prev_out) if job.video.stabilize else s
                        fr.warp = fr.weight = None
                        if reduced:  # the writer guides it up and applies the mask, beside the encoder
                            fr.small = smalls[i]
                        else:
                            if fr.mask is not None:  # the chain goes on with the unmasked painting
                                fr.painted, out = out, composite_uint8(fr.rgb, out, fr.mask)
                            fr.rgb = fr.mask = None  # the writer needs only the timing
                        t = clock.add("steady", t)
                        if fr.index >= start:  # warm-up frames only settle the chain
                            _put(q_out, (fr, out), stop, errors)
                            t = time.perf_counter()
                            count = fr.index + 1
                    bar.update(count)
            _put(q_out, END, stop, errors)
            while writer.is_alive():
                writer.join(0.2)
                if errors:
                    raise errors[0]
            clock.stop_wall()
    except BaseException:
        stop.set()
        writer.join(10)
        reader.join(2)
        raise
    if errors:
        raise errors[0]
    return count


class RenderStopped(Exception):
    """A render ended by its stop request (not an error: the same command resumes it)."""


class _Progress:
    """A rich progress bar with frames, fps and ETA (to stderr; nothing when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.enabled, self.total, self.start = enabled, total or None, start
        self.p = None

    def __enter__(self):
        from rich.console import Console

        console = Console(stderr=True)
        if self.enabled and console.is_terminal:  # a transient bar in a log file is only a blank line
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.p = Progress(TextColumn("painting"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
                              TextColumn("{task.fields[fps]} fps"), TimeElapsedColumn(), TextColumn("ETA"),
                              TimeRemainingColumn(), console=console, transient=True)
            self.p.__enter__()
            self.task = self.p.add_task("painting", total=self.total, completed=self.start, fps="-")
            self.t0 = time.perf_counter()
        return self

    def update(self, count: int) -> None:
        if self.p is not None:
            dt = time.perf_counter() - self.t0
            fps = (count - self.start) / dt if dt > 0 else 0
            total = max(self.total or 0, count) or None
            self.p.update(self.task, completed=count, total=total, fps=f"{fps:.1f}")

    def __exit__(self, *exc):
        if self.p is not None:
            self.p.__exit__(*exc)


# ---------------------------------------------------------------- entry points


def make_job(filt: Filter, src: Path, dest: Path | None, settings: ApplySettings,
             video: VideoConfig | None = None, mask=None) -> RenderJob:
    video = video or VideoConfig()
    if video.segment_frames % frames_per_call(video, torch.device("cuda")):  # the largest batch "auto" picks
        raise ValueError("segment_frames must be a multiple of batch")
    if not 0 <= settings.strength <= 1:
        raise ValueError("strength must be between 0 and 1")
    if video.flow_preset not in fl.PRESETS:
        raise ValueError(f"flow_preset must be one of {', '.join(fl.PRESETS)}")
    source = probe(Path(src))
    dest = Path(dest) if dest else default_clip_output(filt, Path(src))
    if dest.resolve() == Path(src).resolve():
        raise RotoscopeError("the output would overwrite the input: choose another -o")
    kind = output_kind(dest)
    check_writable(dest.parent, dest)  # a read-only folder is one line now, not after the announcements
    if video.max_seconds is not None and source.frames:
        source.frames = min(source.frames, math.ceil(video.max_seconds * float(source.rate)))
        if mask is not None and Path(mask).is_dir():  # one mask a frame: the count must be the cut's own, which
            # decoding makes by timestamp (the average rate said 28 frames of a cut that has 30)
            table = frame_table(source, video.max_seconds)
            source.frames = len(table) if table is not None else source.frames
    w, h = source.width, source.height
    ow, oh = output_size(w, h, settings.size, even=kind == "h264")
    announce: list[str] = []
    if not settings.resolved:  # the library call: precision and engine chosen here (the CLI has said which)
        settings, announce = resolve(filt, settings, (oh, ow), video=True)
    if kind == "animated" and source.frames > video.gif_max_frames:
        raise RotoscopeError(f"{source.frames} frames is too long for {dest.suffix} (at most "
                             f"{video.gif_max_frames}): write .mp4, or cut the clip first")
    job = RenderJob(filt, source, dest, kind, settings, video, ow, oh, mask=mask)
    if kind == "h264":  # tried before painting: a render must not fail at its last step for its sound
        job.audio, notes = audio_plan(source, dest)
        announce += notes
    job.announce = announce
    chain = mask_chain(job)  # a bad mask or too few per-frame masks: one line before anything is painted
    if chain is not None:
        chain.check_frames(source.frames)
    return job


def apply_video(filt: Filter | str, src: Path, dest: Path | None = None, settings: ApplySettings | None = None,
                video: VideoConfig | None = None, progress: bool = False, warn: Callable[[str], None] = print,
                on_segment: Callable[[int], None] | None = None, mask=None, **keywords) -> Path:
    """Paint a clip (or a numbered-frame folder) with a filter (a Filter, a name, a path or a mix "a:0.6+b:0.4")
    and write it (dest None: beside the clip); resumes an interrupted render. The settings: an ApplySettings and a
    VideoConfig, or as keywords, the picture's (strength=0.8, as rotoscope.stylize takes them) and the video's
    (stabilize=False, crf=18, max_seconds=5) alike. `mask`: one mask image for every frame or a folder of one per
    frame (mask.py)."""
    from ..config import fields_of, refuse_unknown
    from ..mix import as_filter

    moving = {k: keywords.pop(k) for k in list(keywords) if k in fields_of(VideoConfig)}
    if settings is not None and keywords or video is not None and moving:
        raise Invalid("give the settings as an ApplySettings and a VideoConfig or as keywords, not both")
    if settings is not None and not isinstance(settings, ApplySettings):
        raise Invalid(f"settings must be an ApplySettings (got {type(settings).__name__})")
    if video is not None and not isinstance(video, VideoConfig):
        raise Invalid(f"video must be a VideoConfig (got {type(video).__name__})")
    refuse_unknown(keywords, picture=ApplySettings, video=VideoConfig)
    settings = (settings if settings is not None else ApplySettings(**keywords)).validate()  # names checked above
    if moving:
        video = VideoConfig(**moving).validate()
    filt = as_filter(filt, settings.mix)
    return run_job(make_job(filt, src, dest, settings, video, mask), progress, warn, on_segment)


def run_job(job: RenderJob, progress: bool = False, warn: Callable[[str], None] = print,
            on_segment: Callable[[int], None] | None = None, renderer=None) -> Path:
    """Render a job and assemble its output. `renderer(job, progress, warn, on_segment) -> frames` paints the
    segments: render_segments here, or a cluster's (cluster.py), which writes the same work folder; preparing it,
    resuming, assembling and reporting failures are the same for both."""
    filt, settings = job.filt, job.settings
    for line in job.announce:
        warn(line)
    _clear_stale_work(job, warn)
    try:
        job.work.mkdir(parents=True, exist_ok=True)
        (job.work / "job.json").write_text(json.dumps({"source": str(job.src.path), "dest": str(job.dest)}))
    except OSError as e:
        shutil.rmtree(job.work, ignore_errors=True)
        raise write_failure(e, job.dest) from None
    done = job.finished_segments()
    if done:
        warn(f"resuming: {done * job.video.segment_frames} frames already rendered in {job.work.name}")
    try:
        count = job.frames_written = (renderer or render_segments)(job, progress, warn, on_segment)
        segs = math.ceil(count / job.video.segment_frames)
        masked = _mask_key(job)  # hashes the mask files: once
        prov = {**provenance(filt, settings, job.src.path.name),
                "video": {"stabilize": job.video.stabilize, "crf": job.video.crf, "frames": count, "render": job.key,
                          **({"max_seconds": job.video.max_seconds} if job.video.max_seconds is not None else {})},
                **({"mask": masked} if masked else {})}
        {"h264": assemble_h264, "animated": assemble_animated, "frames": assemble_frames}[job.kind](job, segs, prov)
    except Exception as e:
        # a full disk or a read-only folder mid-render (PyAV's errors are OSErrors) is one line too, and says
        # where the finished segments wait for the same command to resume them
        failure = e if isinstance(e, RotoscopeError) else write_failure(e, job.dest)
        if failure is None:
            raise
        kept = job.finished_segments()
        if not kept:
            shutil.rmtree(job.work, ignore_errors=True)  # nothing worth resuming
        elif isinstance(failure, CannotWrite):
            failure = CannotWrite(f"{failure}; {kept * job.video.segment_frames} painted frames are kept in "
                                  f"{job.work}: run the same command again to resume (or delete that folder)")
        raise failure from None
    shutil.rmtree(job.work, ignore_errors=True)
    return job.dest


def _clear_stale_work(job: RenderJob, warn) -> None:
    """Unfinished renders of this output with other settings cannot be resumed by this command: drop them."""
    for other in job.dest.parent.glob(f".{glob_escape(job.dest.name)}.rotoscope-*"):
        if other != job.work and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)
            warn(f"note: dropped an unfinished render of {job.dest.name} made with other settings")


def glob_escape(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)


def source_notes(src: Source) -> list[str]:
    """What reading the input changed, said with every render or preview: transparency painted over white, colours
    converted (or not convertible)."""
    notes = []
    if src.transparent:
        has = "has transparent pixels:" if src.frame_ms is not None else "has an alpha channel: its transparent " \
            "pixels are"
        notes.append(f"note: {src.path.name} {has} painted over white (the painting is opaque)")
    return notes + ([src.colour] if src.colour else [])


def preview_sheet(filt: Filter, src: Path, n: int, dest: Path | None, settings: ApplySettings, mask=None) -> Path:
    """A contact sheet of n frames spread over the clip, painted at the render's size, before a full render.
    A mask file or `keep` applies to each frame as to a still (a folder of per-frame masks is for the render)."""
    if n < 1:
        raise RotoscopeError("--preview needs at least 1 frame")
    source = probe(Path(src))
    dest = Path(dest) if dest else Path(src).with_name(f"{Path(src).stem}-{filt.name}-preview.png")
    if dest.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise RotoscopeError("--preview writes a picture: give -o sheet.png")
    w, h = output_size(source.width, source.height, settings.size, even=False)
    picked = _pick_frames(source, n, w, h)
    if not picked:
        raise RotoscopeError(f"{src}: no video frames")
    if not settings.resolved:
        settings, _ = resolve(filt, settings, (h, w))
    run = make_runner(filt, settings)
    tiles = [stylize_frames(run, [rgb], settings)[0] for rgb in picked]
    if settings.keep or (mask is not None and not (isinstance(mask, (str, Path)) and Path(mask).is_dir())):
        from ..mask import MaskChain

        tiles = [composite_uint8(rgb, t, MaskChain(mask, settings.keep, settings.feather, source.rotation,
                                                   source.flip).next(rgb))
                 for rgb, t in zip(picked, tiles)]
    tiles = [as_shown(t, source.rotation, source.flip) for t in tiles]
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    th, tw = tiles[0].shape[:2]
    scale = min(1.0, 1600 / (cols * tw))
    tw2, th2 = max(1, round(tw * scale)), max(1, round(th * scale))
    gap = 4
    sheet = np.full((rows * th2 + (rows + 1) * gap, cols * tw2 + (cols + 1) * gap, 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        y, x = gap + r * (th2 + gap), gap + c * (tw2 + gap)
        sheet[y:y + th2, x:x + tw2] = cv2.resize(t, (tw2, th2), interpolation=cv2.INTER_AREA) if scale < 1 else t
    return save_image(Image.fromarray(sheet), dest, provenance(filt, settings, Path(src).name))


def apply_video_cli(filt: Filter, src, dest, settings: ApplySettings, progress: bool,
                    video: VideoConfig | None = None, preview: int | None = None,
                    announce: list[str] = (), mask=None, renderer=None, job: RenderJob | None = None) -> Iterator:
    """`rotoscope apply` on a clip: yields apply.Note for what is said (`announce` first, once the job is checked)
    and one apply.Painted for the clip (or the preview sheet) written. `renderer`: see run_job (a cluster's);
    `job`: the make_job of these arguments, when the caller made it already."""
    from ..apply import Note, Painted

    t0 = time.perf_counter()
    if preview:
        path = preview_sheet(filt, Path(src), preview, dest, settings, mask)
        yield from map(Note, announce)
        yield from map(Note, source_notes(probe(Path(src))))  # the sheet's frames were read the same way
        with Image.open(path) as im:
            size = im.size
        yield Painted(str(src), str(path), size, round(time.perf_counter() - t0, 3), precision=settings.precision,
                      engine=settings.engine)
        return
    lines: list[str] = []
    video = video or VideoConfig()
    job = job or make_job(filt, Path(src), Path(dest) if dest else None, settings, video, mask)
    yield from map(Note, announce)
    if job.kind == "h264" and (job.width, job.height) != output_size(job.src.width, job.src.height,
                                                                     settings.size, even=False):
        yield Note(f"note: H.264 needs even sizes, writing {'x'.join(map(str, job.shown_size))} (.gif, .webp or a "
                   "folder keep odd ones)")
    if job.kind != "h264" and job.src.audio:
        yield Note(f"note: {job.dest.suffix or 'a frame folder'} holds no sound: the audio is left out")
    yield from map(Note, source_notes(job.src))
    if job.kind != "h264" and video.crf != VideoConfig().crf:
        yield Note(f"note: --crf is H.264's quality; {job.dest.suffix or 'a frame folder'} is written without it "
                   "(write .mp4 to use it)")
    try:
        out = run_job(job, progress, warn=lines.append, renderer=renderer)
    except KeyboardInterrupt:
        yield from map(Note, lines)
        kept = job.finished_segments() * video.segment_frames if job.work.exists() else 0
        yield Note(f"interrupted: {kept} frames kept; run the same command again to resume")
        raise
    yield from map(Note, lines)
    yield Painted(str(src), str(out), job.shown_size, round(time.perf_counter() - t0, 3),
                  frames=count_frames(out) if job.kind == "frames" else job.frames_written,
                  precision=job.settings.precision, engine=job.settings.engine,
                  stages=job.stages.to_dict() if job.stages.frames else None)