"""`rotoscope live`: paint a camera (or a clip standing in for one) frame by frame, as fast as the machine allows.

Frames come from a camera (OpenCV's capture) or a clip standing in for one (read as `apply` reads it: the tests
and a dry run use one), are painted with the engine and precision `resolve()` picks for their size, steadied
against flicker by the same optical-flow blend as a rendered video (with the real-time flow by default:
config.LIVE_FLOW), optionally masked (`--keep faces`, `--mask`), and go to a window (when OpenCV has a GUI), a
virtual camera (`pyvirtualcam`, the `live` extra), a file, or nowhere (a measurement). The frame rate is shown
on the picture and said every few seconds.

A camera's frames are painted as they come: when painting is slower than the camera, the capture's one-frame
buffer drops the ones in between, so the picture stays current instead of lagging further and further behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .config import LIVE_FLOW, LIVE_RECORDING, ApplySettings
from .devices import keep_freed_memory
from .errors import Invalid, NotFound, Refused
from .filter import Filter
from .images import as_shown, longer_side
from .paths import atomic_path, drop_partials
from .video.output import H264_OUTPUTS


@dataclass
class LiveStats:
    """What a live run did: frames painted, its wall time and frame rate, the mean milliseconds per stage."""

    frames: int = 0
    seconds: float = 0.0
    ms: dict = field(default_factory=dict)  # "paint", "steady", "mask", "show"
    size: tuple[int, int] = (0, 0)
    engine: str = ""
    precision: str = ""
    paint_scale: float = 1.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        stages = ", ".join(f"{k} {v:.0f} ms" for k, v in self.ms.items() if v > 0.05)
        scale = f", paint scale {self.paint_scale:g}" if self.paint_scale != 1 else ""
        return (f"painted {self.frames} frame(s) at {self.size[0]}x{self.size[1]} in {self.seconds:.1f} s: "
                f"{self.fps:.1f} fps ({stages}; {self.engine} {self.precision}{scale})")


def has_gui() -> bool:
    """Whether this OpenCV can open a window (opencv-python-headless cannot)."""
    info = cv2.getBuildInformation()
    line = next((ln for ln in info.splitlines() if ln.strip().startswith("GUI:")), "")
    return bool(line) and not line.strip().endswith("NONE")


@dataclass
class Feed:
    """Where live frames come from: RGB frames as shown, their rate, what reading them changed, how to let go."""

    frames: Iterator[np.ndarray]
    fps: float
    is_file: bool
    notes: list[str] = field(default_factory=list)
    close: Callable[[], None] = lambda: None


def open_feed(camera: str, warn: Callable[[str], None] = print) -> Feed:
    """A camera index ("0") through OpenCV, or a clip read as `apply` reads one (its colours converted, turned and
    mirrored as its display matrix says, transparency over white; OpenCV's capture did none of that for a
    mirrored, HDR or untagged HD clip). One line if it cannot be opened."""
    device = camera.startswith("/dev/")  # a camera by its device file (/dev/video0): OpenCV's too
    if not camera.strip().isdigit() and not device:
        from .video.source import decode, probe
        from .video.render import source_notes

        path = Path(camera)
        if not path.exists():
            raise NotFound(f"no camera '{camera}' and no such video file (give a camera number, e.g. --camera 0)")
        src = probe(path)
        decoded = decode(src, src.width, src.height, warn)
        shown = (as_shown(rgb, src.rotation, src.flip) for _, _, rgb in decoded)
        return Feed(shown, plausible_fps(float(src.rate or 0)), True, source_notes(src), decoded.close)
    quiet = getattr(getattr(cv2, "utils", None), "logging", None)
    level = quiet.getLogLevel() if quiet else None
    if quiet:  # OpenCV's own warnings about a missing camera would make the error several lines
        quiet.setLogLevel(quiet.LOG_LEVEL_SILENT)
    try:
        cap = cv2.VideoCapture(camera if device else int(camera))
    finally:
        if quiet:
            quiet.setLogLevel(level)
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # paint the newest frame, not a queue of old ones
    if not cap.isOpened():
        cap.release()
        raise Invalid(f"cannot open camera {camera}: is it connected, and free?")

    def frames() -> Iterator[np.ndarray]:
        while True:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return Feed(frames(), camera_fps(cap), False, close=cap.release)


def plausible_fps(fps: float) -> float:
    """A frame rate as said; 30 where it is none or something no camera gives (0, -1, NaN and 1000 were all seen
    from OpenCV's backends)."""
    return float(fps) if math.isfinite(fps) and 1 <= fps <= 240 else 30.0


def camera_fps(cap: cv2.VideoCapture) -> float:
    """The capture's frame rate (plausible_fps)."""
    return plausible_fps(cap.get(cv2.CAP_PROP_FPS))


class Recording:
    """live's `-o`: H.264 as renders write it (OpenCV's MPEG-4 Part 2 played in no browser), each frame at the time it
    was painted. A camera's frames that painting cannot keep up with are dropped (a one-frame capture buffer): written
    at the camera's rate, a recording painted at 10 of its 30 fps played three times too fast. Its frames take the
    camera's frame slots they were painted in, and a player holds a frame over the slots dropped after it. A clip
    standing in for a camera loses no frame: its frames are written one slot apart."""

    def __init__(self, path: Path, w: int, h: int, fps: float, real_time: bool):
        import av
        from av.video.reformatter import VideoReformatter

        from .video.output import add_h264_stream

        self.rate = Fraction(fps).limit_denominator(1001)
        self.time_base = 1 / self.rate
        self.real_time, self.t0, self.pts, self.yuv = real_time, None, -1, VideoReformatter()
        self.w, self.h = w + w % 2, h + h % 2  # yuv420p: even sides (an odd one is padded with its edge)
        try:
            self.container = av.open(str(path), "w", format=H264_OUTPUTS.get(path.suffix.lower()))
        except (OSError, ValueError) as e:
            raise Invalid(f"cannot write {path.name}: {e}") from None
        try:
            self.stream = add_h264_stream(self.container, self.w, self.h, self.rate, self.time_base,
                                          LIVE_RECORDING["crf"], LIVE_RECORDING["preset"], tune=LIVE_RECORDING["tune"])
        except BaseException:
            self.container.close()
            raise
        self.written = 0

    def write(self, rgb: np.ndarray, t: float) -> None:
        from .video.output import h264_frame

        if self.real_time:
            self.t0 = t if self.t0 is None else self.t0
            self.pts = max(self.pts + 1, round((t - self.t0) * self.rate))
        else:
            self.pts += 1
        h, w = rgb.shape[:2]
        if (h, w) != (self.h, self.w):
            rgb = np.pad(rgb, ((0, self.h - h), (0, self.w - w), (0, 0)), mode="edge")
        for p in self.stream.encode(h264_frame(rgb, self.pts, self.time_base, self.yuv)):
            self.container.mux(p)
        self.written += 1

    def close(self) -> None:
        try:
            for p in self.stream.encode():
                self.container.mux(p)
        finally:
            self.container.close()


def _require_pyvirtualcam():
    try:
        import pyvirtualcam
    except ImportError:
        raise Refused("--virtual-camera needs pyvirtualcam: pip install 'rotoscope[live]'") from None
    return pyvirtualcam


class _VirtualCamera:
    def __init__(self, w: int, h: int, fps: float):
        pyvirtualcam = _require_pyvirtualcam()
        try:
            self.cam = pyvirtualcam.Camera(width=w, height=h, fps=fps)
        except Exception as e:  # noqa: BLE001 - no virtual camera device (v4l2loopback, OBS): one line
            raise Refused(f"no virtual camera to send to ({str(e).splitlines()[0] if str(e) else e!r})") from None

    def send(self, rgb: np.ndarray) -> None:
        self.cam.send(rgb)

    def close(self) -> None:
        self.cam.close()


# `paint_scale=None` (the default): the largest of these that paints a frame within LIVE_PAINT_SHARE of the
# camera's frame interval, the rest left for decoding, the flow, the blend and showing. A 720p stand-in camera at
# 26 fps on 2 AVX2 cores (great-wave-lite, OpenVINO fp32): whole frames 10.7-12.4 fps, fitted 27-33 fps
# (benchmarks/bench_live.py; speed.md, "Live fits its paint scale to the camera")
LIVE_SCALES = (1.0, 0.75, 0.5, 0.4)  # 0.4: the smallest, `apply --real-time`'s
LIVE_PAINT_SHARE = 0.6


@dataclass
class Fitted:
    """The paint scale live chose, the milliseconds a frame each scale tried took, and the budget it fitted."""

    scale: float
    tried: dict
    budget_ms: float

    def line(self) -> str:
        took = ", ".join(f"{s:g}: {ms:.0f} ms" for s, ms in self.tried.items())
        fits = "the largest that fits" if self.tried[self.scale] <= self.budget_ms else "the smallest: none fits"
        return (f"paint scale {self.scale:g} ({fits} {self.budget_ms:.0f} ms a frame, {LIVE_PAINT_SHARE:.0%} of the "
                f"camera's interval; painting took {took}; --paint-scale chooses)")


def fit_paint_scale(paint_ms: Callable[[float], float], budget_ms: float) -> Fitted:
    """The largest of LIVE_SCALES whose painting (`paint_ms(scale)`, milliseconds a frame) fits `budget_ms`, trying
    them from the largest down; the smallest when none does."""
    tried = {}
    for scale in LIVE_SCALES:
        tried[scale] = paint_ms(scale)
        if tried[scale] <= budget_ms:
            return Fitted(scale, tried, budget_ms)
    return Fitted(LIVE_SCALES[-1], tried, budget_ms)


def _paint_ms(run, rgb: np.ndarray, st: ApplySettings, scale: float) -> float:
    """Milliseconds to paint `rgb` at `scale`: the faster of two calls after one that compiles the shape."""
    from .devices import _time
    from .video.render import stylize_frames

    at = dataclasses.replace(st, paint_scale=scale)
    return _time(lambda: stylize_frames(run, [rgb], at), 2) * 1000


ARCHES = ("auto", "lite", "full")


def pick_architecture(spec: str, arch: str, full_hint: str = "--arch full") -> tuple[str, str | None]:
    """The filter to paint live with: auto takes a registry filter's lite version (NAME-lite) when one exists,
    lite insists on it, full keeps the name as given. Returns the spec and a line saying what was chosen
    (`full_hint`: how this command keeps the full filter)."""
    from .filter import lite_version

    if arch not in ARCHES:
        raise Invalid(f"unknown architecture '{arch}': use {', '.join(ARCHES)}")
    if arch == "full":
        return spec, None
    lite = lite_version(spec)  # None for a path or a mix: no registry name ends in theirs + "-lite"
    if lite is None:
        if arch == "lite":
            raise NotFound(f"no lite version of '{spec}' (train one: rotoscope train ART --name {spec}-lite --arch "
                           f"lite --teacher {spec})")
        return spec, _no_lite_note(spec)
    said = f"painting with {lite}, the lite version of {spec} ({full_hint}: the full one)"
    return lite, None if lite == spec else said


def _no_lite_note(spec: str) -> str | None:
    """Said when `auto` finds no lite version of a full registry filter: the painting is the full network's, far
    from real time, and the user should know why (a path, a mix or a lite filter of another name: nothing)."""
    from .filter import read_card, registry_paths

    path = registry_paths().get(spec)
    try:
        full = path is not None and (read_card(path).get("architecture") or {}).get("arch", "full") == "full"
    except Exception:  # noqa: BLE001 - an unreadable card is said when the filter is loaded
        full = False
    return (f"note: '{spec}' has no lite version: painting with the full network, several times slower (train one: "
            f"rotoscope train ART --name {spec}-lite --arch lite --teacher {spec})") if full else None


def run_live(filt: Filter, camera: str = "0", settings: ApplySettings | None = None, frames: int | None = None,
             window: bool = True, virtual: bool = False, out: Path | None = None, stabilize: bool = True,
             flow_preset: str = LIVE_FLOW["flow_preset"], flow_side: int = LIVE_FLOW["flow_side"], blend: float = 0.8,
             mask=None, log: Callable[[str], None] = print, say_every: float = 5.0,
             announce: tuple[str, ...] = (), paint_scale: float | None = None) -> LiveStats:
    """Paint frames from `camera` until `frames` are done, the source ends, q or Esc in the window, or Ctrl-C.
    `announce`: lines said once the first frame is in (so that a camera that gives none is the only line).
    `paint_scale`: a number paints at that share of the size; None takes the settings' when it is not 1, else fits
    one to the camera (fit_paint_scale)."""
    from .mask import MaskChain, composite_uint8
    from .stylize import resolve
    from .video.render import stylize_frames
    from .video.source import Frame
    from .video.steady import Stabilizer

    st = settings or ApplySettings()
    if window and not has_gui():
        raise Refused("this OpenCV cannot open a window (opencv-python-headless): pass --no-window, with --out FILE "
                      "or --virtual-camera to see the painting")
    if out is not None and Path(out).suffix.lower() not in H264_OUTPUTS:  # what `apply` writes H.264 into
        raise Invalid(f"--out writes a video: {', '.join(sorted(H264_OUTPUTS))} (got '{Path(out).suffix}')")
    if virtual:
        _require_pyvirtualcam()
    if not window and out is None and not virtual:  # a timing run, or a forgotten -o: either way, said
        announce = (*announce, "note: no window, no --out and no --virtual-camera: the painting is shown nowhere; "
                               "only its frame rate is said")
    # the output's temporary name is renamed into place (atomic_path) after the finally below has closed it
    with contextlib.ExitStack() as stack:
        feed = open_feed(camera, log)
        writer = vcam = None
        try:
            first = next(feed.frames, None)
            if first is None:
                raise Invalid(f"no frames from {'video file' if feed.is_file else 'camera'} {camera}")
            h0, w0 = first.shape[:2]
            w, h = longer_side(w0, h0, st.size)
            src_fps = feed.fps
            if virtual:  # before anything is said or measured: no device is one line, and nothing else
                vcam = _VirtualCamera(w, h, src_fps)
            from .stylize import make_runner

            if paint_scale is None and st.paint_scale != 1.0:
                paint_scale = st.paint_scale
            asked = st if paint_scale is None else dataclasses.replace(st, paint_scale=paint_scale)
            st, lines = resolve(filt, asked, (h, w))  # the fastest engine and precision here, for this frame size
            for ln in [*announce, *feed.notes]:  # said before the fit below, which takes a few paintings
                log(ln)
            run = make_runner(filt, st)
            keep_freed_memory()  # a frame's buffers every frame: reused, not mapped afresh (devices.py)
            def to_rgb(rgb: np.ndarray) -> np.ndarray:  # a frame at the painted size
                return rgb if (w, h) == (w0, h0) else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)

            if paint_scale is None:
                rgb0 = to_rgb(first)
                fitted = fit_paint_scale(lambda s: _paint_ms(run, rgb0, st, s), LIVE_PAINT_SHARE * 1000 / src_fps)
                st = dataclasses.replace(st, paint_scale=fitted.scale)
                if fitted.scale != asked.paint_scale and asked.engine == "auto":  # timed for the size painted
                    st, lines = resolve(filt, dataclasses.replace(asked, paint_scale=fitted.scale), (h, w))
                    run = make_runner(filt, st)
                lines = [*lines, fitted.line()]
            for ln in lines:
                log(ln)
            stab = Stabilizer(blend, flow_preset, flow_side) if stabilize else None
            masks = MaskChain(mask, st.keep, st.feather) if (mask is not None or st.keep) else None
            if out is not None:  # under a temporary name until the run ends: a killed run leaves no torn file as `out`
                drop_partials(out)
                tmp = stack.enter_context(atomic_path(out))
                writer = Recording(tmp, w, h, src_fps, real_time=not feed.is_file)
            stats = LiveStats(size=(w, h), engine=st.engine, precision=st.precision, paint_scale=st.paint_scale,
                              ms={"paint": 0.0, "steady": 0.0, "mask": 0.0, "show": 0.0})
            prev_out = None
            t_start = last_said = time.perf_counter()
            recent: list[float] = []
            got = first
            i = 0
            try:
                while got is not None and (frames is None or i < frames):
                    t_got = time.perf_counter()
                    rgb = to_rgb(got)
                    fr = Frame(i, i, 1, rgb)
                    t0 = time.perf_counter()
                    if stab is not None:
                        stab.prepare(fr)
                    t1 = time.perf_counter()
                    styled = stylize_frames(run, [rgb], st)[0]
                    t2 = time.perf_counter()
                    painted = Stabilizer.apply(fr, styled, prev_out) if stab is not None else styled
                    prev_out = painted
                    t3 = time.perf_counter()
                    shown = painted
                    if masks is not None:
                        shown = composite_uint8(rgb, painted, masks.next(rgb, fr.warp))
                    t4 = time.perf_counter()
                    i += 1
                    now = time.perf_counter()
                    recent = [t for t in recent if now - t < 1.0] + [now]
                    fps_now = len(recent) / max(1e-6, now - recent[0]) if len(recent) > 1 else 0.0
                    if writer is not None:
                        writer.write(shown, t_got)
                    if vcam is not None:
                        vcam.send(shown)
                    if window:
                        view = cv2.cvtColor(shown, cv2.COLOR_RGB2BGR)
                        cv2.putText(view, f"{fps_now:.1f} fps", (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255),
                                    2, cv2.LINE_AA)
                        cv2.imshow(f"rotoscope live: {filt.name}", view)
                        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                            break
                    t5 = time.perf_counter()
                    for k, dt in (("steady", (t1 - t0) + (t3 - t2)), ("paint", t2 - t1), ("mask", t4 - t3),
                                  ("show", t5 - t4)):
                        stats.ms[k] += 1000 * dt
                    if now - last_said >= say_every:
                        log(f"live: {fps_now:.1f} fps, {i} frames")
                        last_said = now
                    got = next(feed.frames, None)
            except KeyboardInterrupt:
                log("interrupted: stopping")
            if writer is not None and not writer.written:  # stopped before the first painting: said, and no file
                raise Invalid(f"no frame was painted, so nothing was recorded to {out}")
            stats.frames = i
            stats.seconds = time.perf_counter() - t_start
            stats.ms = {k: v / max(1, i) for k, v in stats.ms.items()}
            return stats
        finally:
            feed.close()
            if writer is not None:
                writer.close()
            if vcam is not None:
                vcam.close()
            if window:
                try:
                    cv2.destroyAllWindows()
                except cv2.error:
                    pass
