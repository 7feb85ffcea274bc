"""Reading a clip, an animated image or a folder of numbered frames: what it is (probe), its frames (decode) and a
few picked ones.

Frames come out as RGB uint8 at the render's size, with their timestamps carried over from the source, never
re-spaced, and in the colours every later step assumes (BT.709 primaries, standard dynamic range: `colour_plan`).
Bad input gives one-line RotoscopeErrors.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
from PIL import Image

from ..errors import RotoscopeError, TooLarge
from ..images import IMAGE_SUFFIXES, can_be_transparent, longer_side, max_pixels, open_image, over_white, split_alpha

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
                  ".wmv", ".flv", ".3gp", ".ogv", ".y4m",
                  # cameras' and broadcasters' own: XDCAM and Canon XF, DVD and camcorder MPEG-2, DV, QuickTime's
                  # old name, Windows Media, Flash, FFmpeg's own, raw H.264 and H.265 streams
                  ".mxf", ".vob", ".mod", ".tod", ".dv", ".qt", ".asf", ".f4v", ".nut", ".h264", ".264", ".hevc",
                  ".h265", ".265"}
DEFAULT_RATE = Fraction(25)  # frame rate given to numbered-frame folders, which carry no timing
NUMBERED = re.compile(r"^(.*?)(\d+)$")


ANIMATED_SUFFIXES = {".gif", ".webp", ".png"}  # Pillow reads their frames (FFmpeg here cannot decode animated WebP)
# browsers show a frame timed at 10 ms or less (a GIF's 0 or 1 centisecond) for 100 ms: a painted animation keeps the
# timing its viewers saw
UNTIMED_MS, SHOWN_MS = 10, 100


def is_video_path(path: Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_animated(path: Path) -> bool:
    """An image file with more than one frame (animated GIF, WebP or PNG): painted as a clip, not as a still."""
    path = Path(path)
    if path.suffix.lower() not in ANIMATED_SUFFIXES or not path.is_file():
        return False
    try:
        with Image.open(path) as im:
            return bool(getattr(im, "is_animated", False))  # reads as far as a second frame, no further
    except Exception:  # noqa: BLE001 - unreadable: the still-image path says why
        return False


def is_clip(path: Path) -> bool:
    """A file painted frame by frame: a video, or an animated image."""
    return is_video_path(path) or is_animated(path)


def list_clips(folder: Path) -> list[Path]:
    """Video files and animated images directly in a folder, sorted by name (hidden files skipped)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_clip(p) and not p.name.startswith("."))


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
    width: int  # as stored (before rotation and resizing); a clip of non-square pixels: as shown
    height: int
    time_base: Fraction
    rate: Fraction  # average frame rate, for the encoder's rate control and frame-count estimates
    frames: int  # estimated count (0 when unknown)
    rotation: int  # display rotation, degrees counter-clockwise, as PyAV reports it
    audio: int  # number of audio streams
    pix_fmt: str = ""
    files: list[Path] | None = None  # a numbered-frame folder
    duration: float = 0.0
    frame_ms: list[int] | None = None  # an animated image: each frame's duration (the time base is 1/1000 s)
    plays: int = 0  # an animated image: how many times it plays (0: for ever), kept when written as one
    first_frame: int = 0  # an animated PNG's frame 0 may be a fallback picture that its animation does not show
    transparent: bool = False  # an animated image with transparent pixels, a clip with an alpha channel: over white
    flip: bool = False  # shown mirrored after the rotation (a display matrix with a flip: a mirrored selfie clip)
    convert: dict = field(default_factory=dict)  # how its YUV frames become RGB (colour_plan), for every frame
    colour: str = ""  # a wide-gamut or HDR clip: what it is, said when it is painted


# A clip made for a wider gamut or a brighter display is converted to BT.709 SDR (swscale maps the gamut and the
# tones): read as plain numbers, an HDR phone clip (HLG or PQ, BT.2020) was painted washed out and grey, and the
# output is tagged BT.709 SDR
WIDE_PRIMARIES = {9: "BT.2020", 11: "DCI-P3", 12: "Display P3"}
HDR_TRANSFERS = {16: "PQ", 18: "HLG"}
UNSPECIFIED = 2  # AVCOL_SPC_UNSPECIFIED, AVCOL_PRI_UNSPECIFIED, AVCOL_TRC_UNSPECIFIED


def colour_plan(frame, name: str = "the clip") -> tuple[dict, str]:
    """How to turn this clip's decoded frames into the RGB that painting, flow and output assume (keywords for
    PyAV's reformat), and what to tell the user about it ("" when nothing needs saying).

    A clip that does not say which YUV matrix it uses is read as players read it (mpv, browsers): BT.709 from HD
    up, BT.601 below; FFmpeg's own guess is always BT.601, which shifted an untagged HD clip's colours by up to
    20 levels. JPEG-range formats (yuvj*, Motion JPEG) are BT.601 by definition."""
    plan: dict = {}
    fmt = frame.format
    yuv = not fmt.is_rgb and len(fmt.components) >= 3 and not fmt.name.startswith("yuvj")  # nv12, p010 too
    if frame.colorspace == UNSPECIFIED and yuv and (frame.width >= 1280 or frame.height > 576):
        plan["src_colorspace"] = 1  # BT.709
    wide, hdr = WIDE_PRIMARIES.get(frame.color_primaries), HDR_TRANSFERS.get(frame.color_trc)
    if not (wide or hdr):
        return plan, ""
    plan.update(dst_color_primaries=1, dst_color_trc=1)
    said = f"HDR ({hdr}{', ' + wide if wide else ''})" if hdr else f"wide gamut ({wide})"
    refused = _refused(fmt.name, frame.colorspace, frame.color_range, frame.color_primaries, frame.color_trc)
    if refused:
        del plan["dst_color_primaries"], plan["dst_color_trc"]
        return plan, f"warning: {name} is {said}, which FFmpeg cannot convert here ({refused}): painted from its " \
                     "numbers as they are, so its colours may look washed out"
    return plan, f"note: {name} is {said}: converted to standard colours (BT.709, SDR), which the painting " \
                 "assumes and the output is tagged with (slower: about 1.5 s to try and 1.5 s to set up, then about " \
                 "15 ms a 720p frame)"


@functools.lru_cache(maxsize=None)
def _refused(fmt: str, colorspace: int, color_range: int, primaries: int, transfer: int) -> str:
    """Why swscale cannot convert frames of this kind to BT.709 SDR ("" when it can), tried once a process on a
    small frame: the trial costs the conversion's set-up, 1.5 s."""
    import av

    try:
        frame = av.VideoFrame(16, 16, fmt)
        frame.colorspace, frame.color_range, frame.color_primaries, frame.color_trc = (colorspace, color_range,
                                                                                      primaries, transfer)
        frame.to_ndarray(format="rgb24", dst_color_primaries=1, dst_color_trc=1)
    except Exception as e:  # noqa: BLE001 - av.FFmpegError: a combination this swscale cannot convert
        return _av_reason(e)
    return ""


def rgb_reader(src: Source) -> Callable:
    """Decoded frames -> RGB uint8 by the clip's colour plan, through one reformatter for the whole pass: an HDR
    conversion's set-up (1.5 s here) is then paid once, not for every frame (about 15 ms a 720p frame after it)."""
    from av.video.reformatter import VideoReformatter

    reformatter = VideoReformatter()
    if not src.transparent:
        return lambda frame: reformatter.reformat(frame, format="rgb24", **src.convert).to_ndarray()

    def frame_on_white(frame) -> np.ndarray:  # an alpha channel (ProRes 4444, PNG in .mov)
        return _on_white(Image.fromarray(reformatter.reformat(frame, format="rgba", **src.convert).to_ndarray(),
                                         "RGBA"))

    return frame_on_white


def _open(path: Path):
    import av

    try:
        # metadata is decoded as UTF-8 on opening: a clip whose tags are not (found by the fuzz) still opens
        return av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as e:
        raise RotoscopeError(f"{path}: not a video, or a damaged or empty one ({_av_reason(e)})") from None
    except OSError as e:
        raise RotoscopeError(f"{path}: cannot open ({e.strerror or e})") from None


def _av_reason(e: Exception) -> str:
    """An error's first line, short (PyAV's strerror, or the message; the type where there is no message)."""
    return ((getattr(e, "strerror", None) or str(e)).splitlines() or [type(e).__name__])[0][:120]


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
                      files, len(files) / float(DEFAULT_RATE), transparent=can_be_transparent(img))
    if is_animated(path):
        return _probe_animated(path)
    with _open(path) as c:
        if not c.streams.video:
            kind = "audio only" if c.streams.audio else "no video stream"
            raise RotoscopeError(f"{path} has no video to paint ({kind})")
        vs = c.streams.video[0]
        cc = vs.codec_context  # None when the stream's codec is unknown (a damaged header)
        w, h = (cc.width, cc.height) if cc is not None else (0, 0)
        if not w or not h:
            raise RotoscopeError(f"{path}: the video stream has no picture size (damaged?)")
        sar = vs.sample_aspect_ratio or (cc.sample_aspect_ratio if cc is not None else None)
        if sar and sar > 0 and sar != 1:
            # non-square pixels (HDV's 1440x1080, DV and DVD): painted at the width it is shown at, square (a
            # stroke painted on the stored pixels would be stretched with them, and no GIF or WebP keeps the ratio)
            w = max(1, round(w * sar))
        if w * h > max_pixels():  # as painted, so after the widening
            raise TooLarge(f"{path}: {w}x{h} frames are larger than the {max_pixels():,}-pixel safety limit "
                                 "(set ROTOSCOPE_MAX_PIXELS to raise it)")
        tb = vs.time_base or Fraction(1, 90000)
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate or DEFAULT_RATE
        duration = float(vs.duration * tb) if vs.duration else (c.duration / 1e6 if c.duration else 0.0)
        frames = vs.frames or (round(duration * float(rate)) if duration else 0)
        rotation, flip, convert, colour = 0, False, {}, ""
        try:  # rotation (display matrix side data) and colours live on decoded frames; peek at the first one
            for frame in c.decode(vs):
                rotation, flip = _orientation(frame)
                convert, colour = colour_plan(frame, path.name)
                break
        except Exception:
            pass  # the reader reports decoding problems properly
        alpha = cc.format is not None and any(part.is_alpha for part in cc.format.components)
        return Source(path, w, h, Fraction(tb), Fraction(rate), frames, rotation, len(c.streams.audio),
                      cc.format.name if cc.format else "", None, duration, transparent=alpha, convert=convert,
                      colour=colour, flip=flip)


def _probe_animated(path: Path) -> Source:
    """An animated GIF, WebP or PNG, read with Pillow: its size, every frame's duration and how often it plays."""
    st = path.stat()
    w, h, frame_ms, plays, first, transparent = _animated_header(path.resolve(), st.st_size, st.st_mtime_ns)
    total = sum(frame_ms)
    rate = Fraction(1000 * len(frame_ms), total).limit_denominator(1001)
    return Source(path, w, h, Fraction(1, 1000), rate, len(frame_ms), 0, 0, "rgb24", None, total / 1000,
                  list(frame_ms), plays, first, transparent)


@functools.lru_cache(maxsize=8)
def _animated_header(path: Path, size: int, mtime_ns: int) -> tuple[int, int, tuple[int, ...], int, int, bool]:
    """(w, h, durations, plays, first frame, transparent). Reading the durations decodes every frame (Pillow's WebP
    reader sets them on load): once per file version, though a run probes its input more than once."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels():
                raise TooLarge(f"{path}: {w}x{h} frames are larger than the {max_pixels():,}-pixel safety "
                                     "limit (set ROTOSCOPE_MAX_PIXELS to raise it)")
            plays = _plays(im)
            first = 1 if im.format == "PNG" and im.info.get("default_image") else 0
            frame_ms: list[int] = []
            transparent = False
            while True:
                try:
                    im.seek(first + len(frame_ms))
                    im.load()
                except EOFError:
                    break
                except Exception:  # noqa: BLE001 - a damaged or cut file: its readable frames are painted
                    if len(frame_ms) < 2:  # (and decoding says where it ends)
                        raise
                    break
                ms = int(im.info.get("duration") or 0)
                frame_ms.append(ms if ms > UNTIMED_MS else SHOWN_MS)
                transparent = transparent or _has_transparency(im)
    except RotoscopeError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file trips Pillow's parsers in several ways
        raise RotoscopeError(f"{path}: cannot read its frames ({_av_reason(e)})") from None
    return w, h, tuple(frame_ms), plays, first, transparent


def _plays(im: Image.Image) -> int:
    """How many times an animated image plays (0: for ever). A GIF's loop field counts the plays after the first and
    its absence means one play (Pillow's "loop"); WebP's and APNG's count every play."""
    loop = im.info.get("loop")
    if im.format == "GIF":
        return 1 if loop is None else 0 if loop == 0 else loop + 1
    return int(loop or 0)


def _rgba(im: Image.Image) -> Image.Image | None:
    """The current frame as RGBA where its mode can hold transparency (an alpha channel or a transparent colour)."""
    return im.convert("RGBA") if can_be_transparent(im) else None


def _has_transparency(im: Image.Image) -> bool:
    rgba = _rgba(im)
    return rgba is not None and rgba.getextrema()[3][0] < 255


def _on_white(rgba: Image.Image) -> np.ndarray:
    """An RGBA frame as a viewer on a white page shows it (images.over_white)."""
    return np.asarray(over_white(rgba.convert("RGB"), rgba.getchannel("A")))


def _still_over_white(img: Image.Image) -> np.ndarray:
    """A numbered frame as the painter gets it: read as a still is (colour profile, 16-bit), its transparent
    pixels white."""
    return np.asarray(over_white(*split_alpha(img)))


def _over_white(im: Image.Image) -> np.ndarray:
    """The current frame of an animation, its transparent pixels white."""
    rgba = _rgba(im)
    return np.asarray(im.convert("RGB")) if rgba is None else _on_white(rgba)


def output_size(w: int, h: int, size: int | None, even: bool) -> tuple[int, int]:
    """Frame size after --size (longer side) and, for yuv420p, rounding down to even dimensions."""
    w, h = longer_side(w, h, size, what="{w}x{h} frames")
    if even:
        w, h = max(2, w - w % 2), max(2, h - h % 2)
    return w, h


@dataclass
class Frame:
    """One decoded frame on its way through the render (the Stabilizer fills in warp and weight)."""

    index: int
    pts: int  # in the source's time_base
    duration: int
    rgb: np.ndarray  # H x W x 3 uint8, the (resized) input frame
    # flow to the previous input frame (h x w x 2) and the blend weight (h x w) of the warped previous output
    # (0 = fresh), for stabilization; h x w is the frame's size, or the reduced one at a paint scale
    warp: np.ndarray | None = None
    weight: np.ndarray | None = None
    mask: np.ndarray | None = None  # H x W paint weight, when a mask or `keep` is asked for (mask.MaskChain)
    painted: np.ndarray | None = None  # the steadied painting before the mask or the upsampling: the next frame's
    small: np.ndarray | None = None  # the frame at a paint scale's size, which the writer guides the painting up with


def _fit(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resize to (w, h); when only a pixel or so of odd size must go, crop instead of resampling."""
    ih, iw = rgb.shape[:2]
    if (iw, ih) == (w, h):
        return rgb
    if iw - w in (0, 1) and ih - h in (0, 1):
        return np.ascontiguousarray(rgb[:h, :w])
    interp = cv2.INTER_AREA if w < iw else cv2.INTER_CUBIC
    return cv2.resize(rgb, (w, h), interpolation=interp)


def _sizer(src: Source, stream, w: int, h: int, warn: Callable[[str], None] | None = None
           ) -> Callable[[np.ndarray], np.ndarray]:
    """A clip's frames -> w x h. A stream whose picture size changes midway (a recording of a call, a stream
    spliced from two) keeps its later frames' shape, fitted inside with black bars (stretched to the header's size,
    a 4:3 part of a 16:9 clip came out wide), and says so once."""
    cc = stream.codec_context
    h0, w0 = (cc.height, cc.width) if cc is not None and cc.width and cc.height else (src.height, src.width)
    said = []

    def fit(rgb: np.ndarray) -> np.ndarray:
        shape = rgb.shape[:2]
        if shape == (h0, w0):
            return _fit(rgb, w, h)
        aspect = rgb.shape[1] / rgb.shape[0] * (src.width * h0) / (w0 * src.height)  # as shown: pixel shape kept
        bw, bh = (w, max(1, round(w / aspect))) if aspect > w / h else (max(1, round(h * aspect)), h)
        if not said and warn is not None:
            said.append(shape)
            warn(f"warning: {src.path.name} changes its picture size midway ({w0}x{h0} -> {shape[1]}x{shape[0]}): "
                 f"those frames are fitted inside {w}x{h}" + (" with black bars" if (bw, bh) != (w, h) else ""))
        out = np.zeros((h, w, 3), np.uint8)
        y, x = (h - bh) // 2, (w - bw) // 2
        out[y:y + bh, x:x + bw] = _fit(rgb, bw, bh)
        return out
    return fit


def decode(src: Source, w: int, h: int, warn: Callable[[str], None],
           max_seconds: float | None = None, threads: int = 0, start: int = 0,
           table: list[int] | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """(pts, duration, rgb) for every frame from index `start` on, resized to w x h. Truncated streams end early
    with a warning. threads: the decoder's threads (0 = FFmpeg's choice). table: every frame's pts (frame_table),
    so that a start in the middle seeks to it instead of decoding all the frames before it (a cluster task)."""
    if start and src.files is None and src.frame_ms is None and table is not None and start < len(table):
        try:
            yield from _decode_video(src, w, h, warn, max_seconds, threads, start, table[start], table[0])
            return
        except _SeekMissed:  # the container could not seek there exactly: decode from the start instead
            pass
    if src.frame_ms is not None:
        yield from _decode_animated(src, w, h, warn, max_seconds, start)
        return
    if src.files is not None:
        for i, p in enumerate(src.files):
            if i < start:
                continue
            if max_seconds is not None and i * src.time_base >= max_seconds:
                return
            img = open_image(p)
            if img.size != (src.width, src.height):
                raise RotoscopeError(f"{p.name} is {img.width}x{img.height}, the first frame {src.width}x{src.height}")
            yield i, 1, _fit(_still_over_white(img), w, h)
        return
    yield from _decode_video(src, w, h, warn, max_seconds, threads, start, None, None)


def _decode_animated(src: Source, w: int, h: int, warn, max_seconds, start: int
                     ) -> Iterator[tuple[int, int, np.ndarray]]:
    """decode() for an animated image: Pillow composes each frame over the ones before it, as viewers show it."""
    pts = 0
    with Image.open(src.path) as im:
        for i, ms in enumerate(src.frame_ms or []):
            if max_seconds is not None and pts >= 1000 * max_seconds:
                return
            if i >= start:
                try:
                    im.seek(src.first_frame + i)
                    rgb = _over_white(im)
                except Exception as e:  # noqa: BLE001 - a damaged frame: keep what came before it
                    if i == start:
                        raise RotoscopeError(f"{src.path}: cannot decode frame {i + 1} ({_av_reason(e)})") from None
                    warn(f"warning: {src.path.name}: frame {i + 1} of {len(src.frame_ms or [])} cannot be decoded; "
                         "painted the frames before it")
                    return
                yield pts, ms, _fit(rgb, w, h)
            pts += ms
        try:
            im.seek(src.first_frame + len(src.frame_ms or []))
            im.load()
        except EOFError:
            return
        except Exception as e:  # noqa: BLE001
            warn(f"warning: {src.path.name}: the file ends early after {len(src.frame_ms or [])} frames "
                 f"({_av_reason(e)}); painted what was readable")


class _SeekMissed(Exception):
    """A seek landed after the frame asked for (some containers index only part of their frames)."""


def _decode_video(src: Source, w: int, h: int, warn, max_seconds, threads, start: int, seek_pts: int | None,
                  origin: int | None) -> Iterator[tuple[int, int, np.ndarray]]:
    """decode() for a video file. Frames before `start` (or before `seek_pts`, after a seek) are decoded but not
    converted; `origin` is the clip's first pts when decoding does not begin there (max_seconds counts from it)."""
    import av

    as_rgb = rgb_reader(src)
    default_dur = max(1, round(1 / (float(src.rate) * float(src.time_base)))) if src.rate else 1
    pending = None  # one frame of look-ahead: a frame's duration is the gap to the next one (VFR kept)
    count = 0
    last_pts = None
    first_pts = origin
    expected = src.frames if not start else 0  # a part of the clip cannot tell whether the whole is complete
    skip = start if seek_pts is None else 0
    offset = 0  # added to the timestamps after the clock starts again (1-tick frames before: a flash)
    with _open(src.path) as c:
        vs = c.streams.video[0]
        fit = _sizer(src, vs, w, h, warn)
        vs.thread_type = "AUTO"
        if threads:
            vs.codec_context.thread_count = threads
        if seek_pts is not None:
            c.seek(seek_pts, stream=vs, backward=True, any_frame=False)  # the keyframe at or before it
        try:
            for frame in c.decode(vs):
                pts = frame.pts + offset if frame.pts is not None else (
                    last_pts + default_dur if last_pts is not None else 0)
                if last_pts is not None and pts <= last_pts:
                    if last_pts - pts > restart_ticks(src):  # the clock started again: two recordings joined
                        if not offset:
                            warn(f"warning: {src.path.name}: its timestamps start again after frame {count} (clips "
                                 "joined end to end?): the frames after it follow on at their own pace")
                        offset += last_pts + default_dur - pts
                        pts = last_pts + default_dur
                    else:
                        pts = last_pts + 1  # duplicate timestamps: keep them strictly increasing
                first_pts = pts if first_pts is None else first_pts
                if max_seconds is not None and (pts - first_pts) * src.time_base >= max_seconds:
                    expected = 0
                    break
                if seek_pts is not None and pending is None and pts != seek_pts:
                    if pts < seek_pts:  # between the keyframe and the frame asked for: decoded, not wanted
                        last_pts = pts
                        continue
                    raise _SeekMissed
                if skip:  # before `start`: the decoder must see it, the picture is not needed
                    skip -= 1
                    last_pts = pts
                    count += 1
                    continue
                try:
                    rgb = as_rgb(frame)
                except Exception as e:
                    raise RotoscopeError(f"{src.path}: cannot convert pixel format {frame.format.name} "
                                         f"({_av_reason(e)})") from None
                if pending is not None:
                    yield pending[0], pts - pending[0], pending[1]
                pending = (pts, fit(rgb), frame.duration)
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
             "decoded (a truncated file, or frames before its first keyframe?); painted what was readable")


RESTART_S = 0.5  # a step back in time longer than this is a clock starting again; frames out of order move less


def restart_ticks(src: Source) -> int:
    return max(1, round(RESTART_S / float(src.time_base)))


def frame_table(src: Source, max_seconds: float | None = None) -> list[int] | None:
    """Every frame's pts in display order, read from the packets without decoding them (a film's take seconds),
    so that a render of a clip's middle (a cluster task) can seek straight to its first frame and number its
    frames as a whole render would. None where the packets cannot be trusted for that (a timestamp missing or
    repeated), and the renderer then decodes from the start. A numbered-frame folder: 0, 1, 2, ..."""
    if src.frame_ms is not None:
        starts = [0, *itertools.accumulate(src.frame_ms[:-1])]
        return [t for t in starts if max_seconds is None or t < 1000 * max_seconds]
    if src.files is not None:
        n = len(src.files)
        if max_seconds is not None:
            n = min(n, math.ceil(max_seconds / float(src.time_base)))
        return list(range(n))
    import av

    pts: list[int] = []
    back, latest = restart_ticks(src), None
    with _open(src.path) as c:
        vs = c.streams.video[0]
        try:
            for p in c.demux(vs):
                if p.size == 0:
                    continue
                if getattr(p, "is_discard", False):
                    continue  # dropped by the decoder too (an edit list's lead-in)
                if p.pts is None or (latest is not None and p.pts < latest - back):
                    return None  # no timestamp, or a clock that starts again: decode() renumbers those
                pts.append(p.pts)
                latest = p.pts if latest is None else max(latest, p.pts)  # kept as it goes: max(pts) was quadratic
        except av.FFmpegError:
            return None  # a damaged file: the plain decode finds what is readable
    pts.sort()
    if not pts or any(a == b for a, b in zip(pts, pts[1:])):
        return None
    if max_seconds is not None:
        pts = [p for p in pts if (p - pts[0]) * src.time_base < max_seconds]
    return pts


def count_frames(folder: Path) -> int:
    return sum(1 for p in Path(folder).glob("*.png") if not p.name.startswith("."))


def _orientation(frame) -> tuple[int, bool]:
    """(rotation, flip) of a decoded frame's display matrix. PyAV's rotation reads a mirrored matrix as a turn (a
    left-right mirror is "-180"): where the matrix mirrors (a negative determinant), its first column is negated
    back, as FFmpeg's av_display_matrix_flip set it, and the rotation read from what is left."""
    import av

    try:
        m = np.frombuffer(bytes(frame.side_data[av.sidedata.sidedata.Type.DISPLAYMATRIX]), np.int32)[:9]
        a, b, c, d = (float(x) / 65536 for x in m[[0, 1, 3, 4]])
    except (KeyError, AttributeError, ValueError):
        a, b, c, d = 1.0, 0.0, 0.0, 1.0  # no matrix: upright
    if a * d - b * c >= 0:  # a turn alone: as PyAV reads it
        return int(round(frame.rotation or 0)) % 360, False
    a, c = -a, -c
    turn = -math.degrees(math.atan2(b / (math.hypot(b, d) or 1), a / (math.hypot(a, c) or 1)))  # FFmpeg's reading
    return int(round(turn)) % 360, True


def _pick_frames(src: Source, n: int, w: int, h: int) -> list[np.ndarray]:
    if src.files is not None:
        idx = sorted({min(len(src.files) - 1, int((k + 0.5) * len(src.files) / n)) for k in range(n)})
        return [_fit(_still_over_white(open_image(src.files[i])), w, h) for i in idx]
    if src.frame_ms is not None:
        idx = sorted({min(src.frames - 1, int((k + 0.5) * src.frames / n)) for k in range(n)})
        with Image.open(src.path) as im:
            out = []
            for i in idx:
                im.seek(src.first_frame + i)
                out.append(_fit(_over_white(im), w, h))
            return out
    import av

    picked: dict = {}  # pts -> picture: a frame two seeks land on is shown once
    as_rgb = rgb_reader(src)
    duration = src.duration or 0
    with _open(src.path) as c:
        vs = c.streams.video[0]
        fit = _sizer(src, vs, w, h)
        start = vs.start_time or 0
        for k in range(n if duration else 0):  # seek to n times spread over the clip, where it says its length
            target = start + int((k + 0.5) / n * duration / vs.time_base)
            last = None
            try:
                c.seek(target, stream=vs, backward=True, any_frame=False)
                for f in c.decode(vs):
                    last = f
                    if f.pts is None or f.pts >= target:
                        break
            except av.FFmpegError:
                break
            if last is not None:  # past the last frame's time (a short clip): the last frame
                picked.setdefault(last.pts, fit(as_rgb(last)))
    if len(picked) >= n:
        return list(picked.values())[:n]
    # too few: a clip of fewer frames, no length, timestamps seeking cannot use (a wrap, a late start, a first
    # frame that is not a keyframe). Read it through instead, keeping frames evenly spread in bounded memory.
    with _open(src.path) as c:
        kept, stride, fit = [], 1, _sizer(src, c.streams.video[0], w, h)
        try:
            for i, f in enumerate(c.decode(c.streams.video[0])):
                if i % stride == 0:
                    kept.append(fit(as_rgb(f)))
                    if len(kept) > 4 * n:
                        kept, stride = kept[::2], stride * 2
        except av.FFmpegError:
            pass  # a damaged end: what was read
    if len(kept) <= n:
        return kept
    return [kept[int((j + 0.5) * len(kept) / n)] for j in range(n)]
