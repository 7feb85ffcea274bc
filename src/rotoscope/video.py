"""Video: paint every frame of a clip with a filter, steadily, keeping its timing, rotation and sound.

How a render runs (apply_video):
  - a reader thread decodes frames with PyAV (timestamps carried over, never re-spaced) and, for flicker
    reduction, computes the optical flow back to the previous input frame and where that flow is reliable;
  - the main thread stylizes frames in batches, then blends each with the previous *output* warped along the
    flow on reliable pixels (Ruder et al. 2016's temporal idea applied after a feed-forward net);
  - a writer thread encodes fixed-length segments into a work folder beside the output, each finished segment
    kept with its last frame, so a render killed at any point resumes from the finished segments;
  - at the end the segments are remuxed (not re-encoded) into one file together with every audio stream of the
    input, copied packet for packet, and the file appears under its final name only then.
Queues between the threads are bounded, so memory stays flat whatever the clip's length.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import os
import queue
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import torch
from PIL import Image

from . import flow as fl
from .config import VideoConfig
from .devices import pick_device
from .errors import RotoscopeError
from .filter import Filter
from .images import IMAGE_SUFFIXES, max_pixels, open_image, save_image, split_alpha
from .paths import atomic_path
from .stylize import ApplySettings, finish, make_runner, provenance, resolve, stylize_tensor

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
                  ".wmv", ".flv", ".3gp", ".ogv", ".y4m"}
H264_OUTPUTS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
ANIMATED_OUTPUTS = {".gif": "GIF", ".webp": "WEBP"}
DEFAULT_RATE = Fraction(25)  # frame rate given to numbered-frame folders, which carry no timing
NUMBERED = re.compile(r"^(.*?)(\d+)$")


def is_video_path(path: Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


# ---------------------------------------------------------------- inputs


def frame_sequence(folder: Path) -> list[Path] | None:
    """The images of a folder of numbered frames (frame_0001.png, ...) in number order, else None.

    A folder counts as a frame sequence when it holds at least three images of one size and type whose names
    differ only by a run of consecutive numbers; any other folder of images is painted picture by picture.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    if len(files) < 3:
        return None
    keys = []
    for p in files:
        m = NUMBERED.match(p.stem)
        if not m:
            return None
        keys.append((m.group(1), p.suffix.lower(), int(m.group(2)), p))
    if len({(k[0], k[1]) for k in keys}) != 1:
        return None
    keys.sort(key=lambda k: k[2])
    if keys[-1][2] - keys[0][2] != len(keys) - 1:
        return None
    try:
        sizes = set()
        for k in keys:
            with Image.open(k[3]) as im:  # reads the header only
                sizes.add(im.size)
    except Exception:
        return None
    return [k[3] for k in keys] if len(sizes) == 1 else None


@dataclass
class Source:
    """What the renderer needs to know about an input before decoding it."""

    path: Path
    width: int  # as stored (before rotation and resizing)
    height: int
    time_base: Fraction
    rate: Fraction  # average frame rate, for the encoder's rate control and frame-count estimates
    frames: int  # estimated count (0 when unknown)
    rotation: int  # display rotation, degrees counter-clockwise, as PyAV reports it
    audio: int  # number of audio streams
    pix_fmt: str = ""
    files: list[Path] | None = None  # a numbered-frame folder
    duration: float = 0.0


def _open(path: Path):
    import av

    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise RotoscopeError(f"{path}: not a video, or a damaged or empty one ({_av_reason(e)})") from None
    except OSError as e:
        raise RotoscopeError(f"{path}: cannot open ({e.strerror or e})") from None


def _av_reason(e: Exception) -> str:
    return (getattr(e, "strerror", None) or str(e)).splitlines()[0][:120]


def probe(path: Path) -> Source:
    """Open an input (video file or numbered-frame folder) and describe it; bad input -> one-line RotoscopeError."""
    path = Path(path)
    if not path.exists():
        raise RotoscopeError(f"no such file or folder: {path}")
    if path.is_dir():
        files = frame_sequence(path)
        if not files:
            raise RotoscopeError(f"{path} is not a folder of numbered frames")
        img = open_image(files[0])
        return Source(path, img.width, img.height, 1 / DEFAULT_RATE, DEFAULT_RATE, len(files), 0, 0, "rgb24",
                      files, len(files) / float(DEFAULT_RATE))
    with _open(path) as c:
        if not c.streams.video:
            kind = "audio only" if c.streams.audio else "no video stream"
            raise RotoscopeError(f"{path} has no video to paint ({kind})")
        vs = c.streams.video[0]
        cc = vs.codec_context
        w, h = cc.width, cc.height
        if not w or not h:
            raise RotoscopeError(f"{path}: the video stream has no picture size (damaged?)")
        if w * h > max_pixels():
            raise RotoscopeError(f"{path}: {w}x{h} frames are larger than the {max_pixels():,}-pixel safety limit "
                                 "(set ROTOSCOPE_MAX_PIXELS to raise it)")
        tb = vs.time_base or Fraction(1, 90000)
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate or DEFAULT_RATE
        duration = float(vs.duration * tb) if vs.duration else (c.duration / 1e6 if c.duration else 0.0)
        frames = vs.frames or (round(duration * float(rate)) if duration else 0)
        rotation = 0
        try:  # rotation lives on decoded frames (display matrix side data); peek at the first one
            for frame in c.decode(vs):
                rotation = int(round(frame.rotation or 0)) % 360
                break
        except Exception:
            pass  # the reader reports decoding problems properly
        return Source(path, w, h, Fraction(tb), Fraction(rate), frames, rotation, len(c.streams.audio),
                      cc.format.name if cc.format else "", None, duration)


def output_size(w: int, h: int, size: int | None, even: bool) -> tuple[int, int]:
    """Frame size after --size (longer side) and, for yuv420p, rounding down to even dimensions."""
    if size and max(w, h) != size:
        s = size / max(w, h)
        w, h = max(1, round(w * s)), max(1, round(h * s))
    if even:
        w, h = max(2, w - w % 2), max(2, h - h % 2)
    return w, h


@dataclass
class Frame:
    index: int
    pts: int  # in the source's time_base
    duration: int
    rgb: np.ndarray  # H x W x 3 uint8, the (resized) input frame
    warp: np.ndarray | None = None  # flow to the previous input frame (H x W x 2), for stabilization
    weight: np.ndarray | None = None  # H x W blend weight of the warped previous output (0 = fresh)


def _fit(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resize to (w, h); when only a pixel or so of odd size must go, crop instead of resampling."""
    ih, iw = rgb.shape[:2]
    if (iw, ih) == (w, h):
        return rgb
    if iw - w in (0, 1) and ih - h in (0, 1):
        return np.ascontiguousarray(rgb[:h, :w])
    interp = cv2.INTER_AREA if w < iw else cv2.INTER_CUBIC
    return cv2.resize(rgb, (w, h), interpolation=interp)


def decode(src: Source, w: int, h: int, warn: Callable[[str], None],
           max_seconds: float | None = None, threads: int = 0) -> Iterator[tuple[int, int, np.ndarray]]:
    """(pts, duration, rgb) for every frame, resized to w x h. Truncated streams end early with a warning.
    threads: the decoder's threads (0 = FFmpeg's choice)."""
    if src.files is not None:
        for i, p in enumerate(src.files):
            if max_seconds is not None and i * src.time_base >= max_seconds:
                return
            img = split_alpha(open_image(p))[0]
            if img.size != (src.width, src.height):
                raise RotoscopeError(f"{p.name} is {img.width}x{img.height}, the first frame {src.width}x{src.height}")
            yield i, 1, _fit(np.asarray(img), w, h)
        return
    import av

    default_dur = max(1, round(1 / (float(src.rate) * float(src.time_base)))) if src.rate else 1
    pending = None  # one frame of look-ahead: a frame's duration is the gap to the next one (VFR kept)
    count = 0
    last_pts = first_pts = None
    expected = src.frames
    with _open(src.path) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        if threads:
            vs.codec_context.thread_count = threads
        try:
            for frame in c.decode(vs):
                pts = frame.pts if frame.pts is not None else (last_pts + default_dur if last_pts is not None else 0)
                if last_pts is not None and pts <= last_pts:
                    pts = last_pts + 1  # duplicate or missing timestamps: keep them strictly increasing
                first_pts = pts if first_pts is None else first_pts
                if max_seconds is not None and (pts - first_pts) * src.time_base >= max_seconds:
                    expected = 0
                    break
                try:
                    rgb = frame.to_ndarray(format="rgb24")
                except Exception as e:
                    raise RotoscopeError(f"{src.path}: cannot convert pixel format {frame.format.name} "
                                         f"({_av_reason(e)})") from None
                if pending is not None:
                    yield pending[0], pts - pending[0], pending[1]
                pending = (pts, _fit(rgb, w, h), frame.duration)
                last_pts = pts
                count += 1
        except av.FFmpegError as e:
            if count == 0:
                raise RotoscopeError(f"{src.path}: cannot decode video ({_av_reason(e)})") from None
            warn(f"warning: {src.path.name}: the stream ends early after {count} frames ({_av_reason(e)}); "
                 "painted what was readable")
        if pending is not None:
            yield pending[0], pending[2] or default_dur, pending[1]
    # headers over-count at times (edit lists, a frame count rounded from the rate): a stream whose last frame
    # reaches the announced duration is complete, whatever the count says
    reached = (last_pts is not None and first_pts is not None and src.duration
               and (last_pts - first_pts + default_dur) * src.time_base >= 0.9 * src.duration)
    if expected and count < 0.9 * expected and not reached:
        warn(f"warning: {src.path.name}: only {count} of the {expected} frames its header announces could be "
             "decoded (truncated file?); painted what was readable")


# ---------------------------------------------------------------- flicker reduction


class Stabilizer:
    """Blend each stylized frame with the previous output warped along the input's optical flow.

    Weight per pixel = blend x (forward-backward consistent) x (the input itself agrees after warping), eroded
    and feathered so occlusion edges do not leave trails. A scene cut (almost nothing reliable) restarts the chain.
    """

    def __init__(self, blend: float, flow_preset: str):
        self.blend, self.preset = blend, flow_preset
        self.prev_in: np.ndarray | None = None

    def prepare(self, fr: Frame) -> None:
        """Reader side (needs only input frames): flow to the previous input and the blend weights."""
        prev, self.prev_in = self.prev_in, fr.rgb
        if prev is None or prev.shape != fr.rgb.shape or self.blend <= 0:
            return
        g_cur, g_prev = fl.gray(fr.rgb), fl.gray(prev)
        # current pixel p is at p + f_back(p) in the previous frame
        f_back = fl.flow(g_cur, g_prev, preset=self.preset)
        f_fwd = fl.flow(g_prev, g_cur, preset=self.preset)
        ok = fl.reliable(f_back, f_fwd)
        err = np.abs(fl.warp(prev, f_back).astype(np.int16) - fr.rgb.astype(np.int16)).mean(-1) / 255.0
        # full trust below 8 % colour error, none above 25 %. A stricter check (4 % / 10 %, 5x5 erosion) also
        # refused moving players whose flow was right, and left sports clips at 0.7x the naive warping error;
        # this one reaches 0.4x with no trails seen on the shared clips (benchmarks/bench_video.py)
        photometric = np.clip((0.25 - err) / 0.17, 0, 1)
        wgt = cv2.erode(ok * photometric, np.ones((3, 3), np.uint8))
        wgt = cv2.GaussianBlur(wgt, (0, 0), 1.0)
        if wgt.mean() < 0.15:
            return  # a cut or a jump: start afresh rather than drag the old picture in
        fr.warp, fr.weight = f_back, (self.blend * wgt).astype(np.float32)

    @staticmethod
    def apply(fr: Frame, styled: np.ndarray, prev_out: np.ndarray | None) -> np.ndarray:
        """Main side: out = w * warp(prev_out) + (1 - w) * styled (uint8 in and out, so a resumed chain is exact)."""
        if fr.weight is None or prev_out is None or prev_out.shape != styled.shape:
            return styled
        warped = fl.warp(prev_out, fr.warp).astype(np.float32)
        w = fr.weight[..., None]
        out = w * warped + (1 - w) * styled.astype(np.float32)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- the render


@dataclass
class Job:
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
    announce: list[str] = field(default_factory=list)  # precision and engine lines, when make_job chose them

    def __post_init__(self):
        st = self.src.path.stat()
        key = json.dumps({"src": str(self.src.path.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns,
                          "filter": self.filt.card_hash, "settings": self.settings.to_dict(), "kind": self.kind,
                          "w": self.width, "h": self.height, "crf": self.video.crf, "preset": self.video.preset,
                          "stabilize": self.video.stabilize, "blend": self.video.blend,
                          "segment": self.video.segment_frames, "max_seconds": self.video.max_seconds},
                         sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        self.work = self.dest.parent / f".{self.dest.name}.rotoscope-{digest}"

    def seg_done(self, i: int) -> Path:
        return self.work / f"seg-{i:05d}.json"

    def seg_media(self, i: int) -> Path:
        return self.work / (f"seg-{i:05d}.mp4" if self.kind == "h264" else f"seg-{i:05d}")

    def seg_last(self, i: int) -> Path:
        return self.work / f"seg-{i:05d}.last.png"

    def finished_segments(self) -> int:
        n = 0
        while self.seg_done(n).exists():
            n += 1
        return n


def output_kind(dest: Path) -> str:
    suffix = dest.suffix.lower()
    if suffix in H264_OUTPUTS:
        return "h264"
    if suffix in ANIMATED_OUTPUTS:
        return "animated"
    if not suffix or dest.is_dir():
        return "frames"
    raise RotoscopeError(f"cannot write video as '{suffix}': use .mp4, .mov, .mkv, .m4v, .gif, .webp or a folder")


def default_output(filt: Filter, src: Path) -> Path:
    if src.is_dir():
        return src.with_name(f"{src.name}-{filt.name}")
    return src.with_name(f"{src.stem}-{filt.name}.mp4")


class _Stop(Exception):
    pass


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stop
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


def _reader(job: Job, start: int, q: queue.Queue, stop: threading.Event, errors: list, warn) -> None:
    try:
        stab = Stabilizer(job.video.blend, job.video.flow_preset) if job.video.stabilize else None
        frames = decode(job.src, job.width, job.height, warn, job.video.max_seconds, job.video.codec_threads)
        for i, (pts, dur, rgb) in enumerate(frames):
            fr = Frame(i, pts, dur, rgb)
            if stab is not None:
                if i >= start:
                    stab.prepare(fr)
                else:
                    stab.prev_in = rgb  # skipped (already rendered) frames still feed the flow of the next one
            if i >= start:
                _put(q, fr, stop)
        _put(q, END, stop)
    except _Stop:
        pass
    except BaseException as e:  # handed to the main thread, which reports it
        errors.append(e)


class _SegmentWriter:
    """Writes frames into numbered segments in the work folder; a segment counts only once its .json exists."""

    def __init__(self, job: Job):
        self.job = job
        self.seg = -1
        self.frames: list[tuple[int, int]] = []
        self.container = self.stream = None
        self.tmp: Path | None = None
        self.last: np.ndarray | None = None

    def open(self, seg: int) -> None:
        import av

        self.seg, self.frames = seg, []
        final = self.job.seg_media(seg)
        self.tmp = final.with_name(f".{final.name}.partial{final.suffix}")
        if self.job.kind == "h264":
            self.container = av.open(str(self.tmp), "w", format="mp4")
            v = self.job.video
            s = self.container.add_stream("libx264", rate=self.job.src.rate,
                                          options={"crf": str(v.crf), "preset": v.preset, "bf": "0",
                                                   **({"threads": str(v.codec_threads)} if v.codec_threads else {})})
            # bf=0: no B-frames, so decode order = display order and segments concatenate with monotonic dts
            s.width, s.height, s.pix_fmt = self.job.width, self.job.height, "yuv420p"
            s.time_base = self.job.src.time_base
            s.codec_context.time_base = self.job.src.time_base
            s.codec_context.color_range = 1  # MPEG (limited) range, what browsers expect
            # tag the matrix the frames are converted with (write() below), so players need not guess:
            # BT.709 (1) for HD, SMPTE 170M / BT.601 (6) below 720 lines
            tag = 1 if self.job.height >= 720 else 6
            s.codec_context.colorspace = s.codec_context.color_primaries = s.codec_context.color_trc = tag
            self.stream = s
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp.mkdir(parents=True)

    def write(self, fr: Frame, rgb: np.ndarray) -> None:
        import av

        if self.job.kind == "h264":
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            vf.pts, vf.time_base = fr.pts, self.job.src.time_base
            vf = vf.reformat(format="yuv420p", dst_colorspace="ITU709" if self.job.height >= 720 else "ITU601")
            vf.pts, vf.time_base = fr.pts, self.job.src.time_base
            for p in self.stream.encode(vf):
                self.container.mux(p)
        else:  # GIF, WebP and PNG frames carry no rotation flag: turn the pixels upright instead
            Image.fromarray(_rotate(rgb, self.job.src.rotation)).save(self.tmp / f"{fr.index:08d}.png",
                                                                      compress_level=1)
        self.frames.append((fr.pts, fr.duration))
        self.last = rgb

    def close(self) -> None:
        """Finish the segment: media renamed into place, then its last frame, then the .json that marks it done."""
        if self.job.kind == "h264":
            for p in self.stream.encode():
                self.container.mux(p)
            self.container.close()
            self.container = None
        final = self.job.seg_media(self.seg)
        if final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        os.replace(self.tmp, final)
        with atomic_path(self.job.seg_last(self.seg)) as t:
            Image.fromarray(self.last).save(t, compress_level=1)
        with atomic_path(self.job.seg_done(self.seg)) as t:
            t.write_text(json.dumps({"frames": self.frames}))

    def abandon(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except Exception:
                pass
        if self.tmp is not None and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True) if self.tmp.is_dir() else self.tmp.unlink()


def _writer(job: Job, start_seg: int, q: queue.Queue, stop: threading.Event, errors: list,
            on_segment: Callable[[int], None] | None) -> None:
    w = _SegmentWriter(job)
    n = job.video.segment_frames
    try:
        while True:
            item = _get(q, stop, [])
            if item is END:
                if w.frames:
                    w.close()
                    if on_segment:
                        on_segment(w.seg)
                return
            fr, rgb = item
            seg = fr.index // n
            if seg != w.seg:
                if w.frames:
                    w.close()
                    if on_segment:
                        on_segment(w.seg)
                w.open(seg)
            w.write(fr, rgb)
    except _Stop:
        w.abandon()
    except BaseException as e:
        w.abandon()
        errors.append(e)


def stylize_frames(run, rgbs: list[np.ndarray], st: ApplySettings) -> np.ndarray:
    """A batch of same-size uint8 frames (H x W x 3) -> stylized, strength and colour settings applied, uint8.

    `run` is the engine's runner (stylize.make_runner)."""
    x = torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).float().div_(255)
    if x.shape[2] * x.shape[3] <= st.max_tile_pixels:
        y = run(x)
    else:  # larger than the memory budget: the tiled path, one frame at a time
        y = torch.cat([stylize_tensor(run, x[i:i + 1], st.precision, st.max_tile_pixels) for i in range(len(x))])
    y = finish(x, y, st.strength, st.preserve_colors)
    return (y.permute(0, 2, 3, 1).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)


def frames_per_call(video: VideoConfig, device: torch.device) -> int:
    """VideoConfig.batch, or for 0 (auto): 1 on the CPU, where batches were slower per frame, 4 on a GPU."""
    return video.batch or (4 if device.type == "cuda" else 1)


def render_segments(job: Job, progress: bool, warn: Callable[[str], None],
                    on_segment: Callable[[int], None] | None = None) -> int:
    """Stylize and encode every frame not already in a finished segment. Returns the number of frames."""
    n_seg = job.video.segment_frames
    done = job.finished_segments()
    start = done * n_seg
    prev_out = np.asarray(Image.open(job.seg_last(done - 1)).convert("RGB")) if done else None
    device = pick_device(job.settings.device)
    net = make_runner(job.filt, job.settings)
    fits = job.settings.max_tile_pixels // max(1, job.width * job.height)  # frames per call within the memory budget
    batch = max(1, min(frames_per_call(job.video, device), fits))
    stop = threading.Event()
    errors: list[BaseException] = []
    q_in: queue.Queue = queue.Queue(maxsize=2 * batch + 2)
    q_out: queue.Queue = queue.Queue(maxsize=2 * batch + 2)
    reader = threading.Thread(target=_reader, args=(job, start, q_in, stop, errors, warn), daemon=True)
    writer = threading.Thread(target=_writer, args=(job, done, q_out, stop, errors, on_segment), daemon=True)
    reader.start()
    writer.start()
    count = start
    bar = _Progress(progress, job.src.frames, start)
    try:
        with bar:
            finished = False
            while not finished:
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
                    styled = stylize_frames(net, [f.rgb for f in frames], job.settings)
                    for fr, s in zip(frames, styled):
                        out = Stabilizer.apply(fr, s, prev_out) if job.video.stabilize else s
                        prev_out = out
                        fr.rgb = fr.warp = fr.weight = None  # the writer needs only the timing
                        _put(q_out, (fr, out), stop)
                    count = frames[-1].index + 1
                    bar.update(count)
            _put(q_out, END, stop)
            while writer.is_alive():
                writer.join(0.2)
                if errors:
                    raise errors[0]
    except BaseException:
        stop.set()
        writer.join(10)
        reader.join(2)
        raise
    if errors:
        raise errors[0]
    if count == 0:
        raise RotoscopeError(f"{job.src.path}: no video frames")
    return count


class _Progress:
    """A rich progress bar with frames, fps and ETA (to stderr; nothing when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.enabled, self.total, self.start = enabled, total or None, start
        self.p = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.p = Progress(TextColumn("painting"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
                              TextColumn("{task.fields[fps]} fps"), TimeElapsedColumn(), TextColumn("ETA"),
                              TimeRemainingColumn(), console=Console(stderr=True), transient=True)
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


# ---------------------------------------------------------------- assembling the output


def _segment_packets(job: Job, segs: int, tb_out: Fraction) -> Iterator[tuple[float, object]]:
    """Video packets of the finished segments in order, timestamps as in the source (time_base tb_out)."""
    import av

    for i in range(segs):
        info = json.loads(job.seg_done(i).read_text())
        frames = info["frames"]
        with av.open(str(job.seg_media(i))) as c:
            s = c.streams.video[0]
            k = 0
            for p in c.demux(s):
                if p.size == 0:
                    continue
                if k >= len(frames):
                    raise RotoscopeError(f"{job.seg_media(i)} holds more frames than recorded: delete {job.work}")
                # No B-frames, so packet k is frame k: restore its exact source timestamps (the mp4 segment's
                # own timing may have been rounded or shifted by an edit list).
                p.time_base = tb_out
                p.pts = p.dts = frames[k][0]
                p.duration = frames[k][1]
                k += 1
                yield float(p.dts * tb_out), p


def _audio_packets(src: Source, until: float | None) -> Iterator[tuple[float, object]]:
    """The source's audio packets as they are; with `until` (seconds), only those that start before it."""
    import av

    with _open(src.path) as c:
        streams = list(c.streams.audio)
        try:
            for p in c.demux(streams):
                if p.size == 0 or p.dts is None:
                    continue
                t = float(p.dts * p.time_base)
                if until is not None and t >= until:
                    continue
                yield t, p
        except av.FFmpegError:
            return  # a truncated file: the audio that was readable is kept


def assemble_h264(job: Job, segs: int, prov: dict) -> None:
    """Remux the segments' H.264 and the source's audio packets (untouched) into the final file, atomically."""
    import av

    fmt = H264_OUTPUTS[job.dest.suffix.lower()]
    tb = job.src.time_base
    with atomic_path(job.dest) as tmp, av.open(str(job.seg_media(0))) as first:
        opts = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
        with av.open(str(tmp), "w", format=fmt, options=opts) as out:
            out.metadata["comment"] = json.dumps(prov, sort_keys=True)
            vs = out.add_stream_from_template(first.streams.video[0])
            vs.time_base = tb
            if job.src.rotation:
                vs.set_display_rotation(job.src.rotation)
            audio_in = _open(job.src.path) if job.src.audio and job.src.files is None else None
            amap = {}
            try:
                if audio_in is not None:
                    for a in audio_in.streams.audio:
                        try:
                            amap[a.index] = out.add_stream_from_template(a)
                        except (ValueError, av.FFmpegError) as e:
                            raise RotoscopeError(f"cannot copy the {a.codec_context.name} audio into "
                                                 f"{job.dest.suffix}: {_av_reason(e)}; try .mkv") from None
                vids = _segment_packets(job, segs, tb)
                until = None
                if job.video.max_seconds is not None:  # a cut: the sound ends with the last frame
                    last = json.loads(job.seg_done(segs - 1).read_text())["frames"][-1]
                    until = float((last[0] + last[1]) * tb)
                auds = _audio_packets(job.src, until) if amap else iter(())
                try:
                    for _, p in heapq.merge(vids, auds, key=lambda tp: tp[0]):
                        if p.stream.type == "audio":
                            p.stream = amap[p.stream.index]
                        else:
                            p.stream = vs
                        out.mux(p)
                except av.FFmpegError as e:
                    raise RotoscopeError(f"cannot write {job.dest.name}: {_av_reason(e)}") from None
            finally:
                if audio_in is not None:
                    audio_in.close()


def _segment_frames(job: Job, segs: int) -> Iterator[tuple[Path, int]]:
    for i in range(segs):
        info = json.loads(job.seg_done(i).read_text())
        for p, (_, dur) in zip(sorted(job.seg_media(i).glob("*.png")), info["frames"]):
            yield p, dur


def assemble_animated(job: Job, segs: int, prov: dict) -> None:
    """Animated GIF or WebP with each frame's own duration (VFR kept, to the millisecond)."""
    tb = job.src.time_base
    frames, durations = [], []
    for p, dur in _segment_frames(job, segs):
        frames.append(Image.open(p).convert("RGB"))
        durations.append(max(10 if job.kind == "animated" else 1, round(1000 * float(dur * tb))))
    fmt = ANIMATED_OUTPUTS[job.dest.suffix.lower()]
    kwargs = {"loop": 0, "duration": durations, "save_all": True, "append_images": frames[1:]}
    if fmt == "WEBP":
        kwargs.update(quality=90, method=4)
    else:
        kwargs.update(optimize=False, disposal=1)
    with atomic_path(job.dest) as tmp:
        frames[0].save(tmp, format=fmt, **kwargs)


def assemble_frames(job: Job, segs: int, prov: dict) -> None:
    """A folder of numbered PNGs (input names kept for a frame folder); the folder is renamed in when complete."""
    dest = job.dest
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for n, (p, _) in enumerate(_segment_frames(job, segs)):
        name = f"{job.src.files[n].stem}.png" if job.src.files else f"frame_{n + 1:06d}.png"
        img = Image.open(p)
        img.load()
        save_image(img, tmp / name, {**prov, "frame": n})
    if dest.exists():
        if any(dest.iterdir()):
            for p in tmp.iterdir():
                os.replace(p, dest / p.name)
            tmp.rmdir()
            return
        dest.rmdir()
    os.replace(tmp, dest)


# ---------------------------------------------------------------- entry points


def make_job(filt: Filter, src: Path, dest: Path | None, settings: ApplySettings,
             video: VideoConfig | None = None) -> Job:
    video = video or VideoConfig()
    if video.segment_frames % frames_per_call(video, torch.device("cuda")):  # the largest batch "auto" picks
        raise ValueError("segment_frames must be a multiple of batch")
    if not 0 <= settings.strength <= 1:
        raise ValueError("strength must be between 0 and 1")
    if video.flow_preset not in fl.PRESETS:
        raise ValueError(f"flow_preset must be one of {', '.join(fl.PRESETS)}")
    source = probe(Path(src))
    dest = Path(dest) if dest else default_output(filt, Path(src))
    if dest.resolve() == Path(src).resolve():
        raise RotoscopeError("the output would overwrite the input: choose another -o")
    kind = output_kind(dest)
    if video.max_seconds is not None and source.frames:
        source.frames = min(source.frames, math.ceil(video.max_seconds * float(source.rate)))
    w, h = source.width, source.height
    ow, oh = output_size(w, h, settings.size, even=kind == "h264")
    announce: list[str] = []
    if not settings.resolved:  # the library call: precision and engine chosen here (the CLI has said which)
        settings, announce = resolve(filt, settings, (oh, ow))
    if kind == "animated" and source.frames > video.gif_max_frames:
        raise RotoscopeError(f"{source.frames} frames is too long for {dest.suffix} (at most "
                             f"{video.gif_max_frames}): write .mp4, or cut the clip first")
    job = Job(filt, source, dest, kind, settings, video, ow, oh)
    job.announce = announce
    return job


def apply_video(filt: Filter, src: Path, dest: Path | None, settings: ApplySettings,
                video: VideoConfig | None = None, progress: bool = False, warn: Callable[[str], None] = print,
                on_segment: Callable[[int], None] | None = None) -> Path:
    """Paint a clip (or a numbered-frame folder) with a filter and write it; resumes an interrupted render."""
    return run_job(make_job(filt, src, dest, settings, video), progress, warn, on_segment)


def run_job(job: Job, progress: bool = False, warn: Callable[[str], None] = print,
            on_segment: Callable[[int], None] | None = None) -> Path:
    filt, settings = job.filt, job.settings
    for line in job.announce:
        warn(line)
    _clear_stale_work(job, warn)
    job.work.mkdir(parents=True, exist_ok=True)
    (job.work / "job.json").write_text(json.dumps({"source": str(job.src.path), "dest": str(job.dest)}))
    done = job.finished_segments()
    if done:
        warn(f"resuming: {done * job.video.segment_frames} frames already rendered in {job.work.name}")
    try:
        count = render_segments(job, progress, warn, on_segment)
    except RotoscopeError:
        if not job.finished_segments():
            shutil.rmtree(job.work, ignore_errors=True)  # nothing worth resuming
        raise
    segs = math.ceil(count / job.video.segment_frames)
    prov = {**provenance(filt, settings, job.src.path.name),
            "video": {"stabilize": job.video.stabilize, "crf": job.video.crf, "frames": count}}
    {"h264": assemble_h264, "animated": assemble_animated, "frames": assemble_frames}[job.kind](job, segs, prov)
    shutil.rmtree(job.work, ignore_errors=True)
    return job.dest


def _clear_stale_work(job: Job, warn) -> None:
    """Unfinished renders of this output with other settings cannot be resumed by this command: drop them."""
    for other in job.dest.parent.glob(f".{glob_escape(job.dest.name)}.rotoscope-*"):
        if other != job.work and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)
            warn(f"note: dropped an unfinished render of {job.dest.name} made with other settings")


def glob_escape(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)


def preview_sheet(filt: Filter, src: Path, n: int, dest: Path | None, settings: ApplySettings) -> Path:
    """A contact sheet of n frames spread over the clip, painted at the render's size, before a full render."""
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
    tiles = [_rotate(t, source.rotation) for t in tiles]
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


def count_frames(folder: Path) -> int:
    return sum(1 for p in Path(folder).glob("*.png") if not p.name.startswith("."))


def _rotate(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Upright for display: rotation is counter-clockwise degrees, as PyAV reports a display matrix."""
    k = {90: 1, 180: 2, 270: 3}.get(rotation % 360, 0)
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def _pick_frames(src: Source, n: int, w: int, h: int) -> list[np.ndarray]:
    if src.files is not None:
        idx = sorted({min(len(src.files) - 1, int((k + 0.5) * len(src.files) / n)) for k in range(n)})
        return [_fit(np.asarray(split_alpha(open_image(src.files[i]))[0]), w, h) for i in idx]
    import av

    out = []
    duration = src.duration or 0
    with _open(src.path) as c:
        vs = c.streams.video[0]
        start = vs.start_time or 0
        if not duration:  # unknown length: the first n frames
            for f in c.decode(vs):
                out.append(_fit(f.to_ndarray(format="rgb24"), w, h))
                if len(out) == n:
                    break
            return out
        for k in range(n):
            t = (k + 0.5) / n * duration
            target = start + int(t / vs.time_base)
            try:
                c.seek(target, stream=vs, backward=True, any_frame=False)
                for f in c.decode(vs):
                    if f.pts is None or f.pts >= target:
                        out.append(_fit(f.to_ndarray(format="rgb24"), w, h))
                        break
            except av.FFmpegError:
                break
    return out


def apply_video_cli(filt: Filter, src, dest, settings: ApplySettings, progress: bool,
                    video: VideoConfig | None = None, preview: int | None = None,
                    announce: list[str] = ()) -> Iterator[str]:
    """`rotoscope apply` on a clip: yields the lines to print (`announce` first, once the job is checked)."""
    if preview:
        path = preview_sheet(filt, Path(src), preview, dest, settings)
        yield from announce
        yield f"wrote {path}"
        return
    lines: list[str] = []
    video = video or VideoConfig()
    job = make_job(filt, Path(src), Path(dest) if dest else None, settings, video)
    yield from announce
    if job.kind == "h264" and (job.width, job.height) != output_size(job.src.width, job.src.height,
                                                                     settings.size, even=False):
        yield f"note: H.264 needs even sizes, writing {job.width}x{job.height} (.gif, .webp or a folder keep odd ones)"
    if job.kind != "h264" and job.src.audio:
        yield f"note: {job.dest.suffix or 'a frame folder'} holds no sound: the audio is left out"
    t0 = time.perf_counter()
    try:
        out = run_job(job, progress, warn=lines.append)
    except KeyboardInterrupt:
        yield from lines
        kept = job.finished_segments() * video.segment_frames if job.work.exists() else 0
        yield f"interrupted: {kept} frames kept; run the same command again to resume"
        raise
    yield from lines
    what = f"{count_frames(out)} frame(s) to {out}" if job.kind == "frames" else str(out)
    yield f"wrote {what} ({job.width}x{job.height}, {time.perf_counter() - t0:.1f} s" + \
        (", stabilized)" if video.stabilize else ")")
