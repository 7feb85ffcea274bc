"""Writing a render's outputs: finished segments in a work folder, then the final file assembled from them.

A segment is a fixed number of frames (H.264 in an .mp4, or PNGs for GIF, WebP and frame folders) and counts
only once its .json exists, so a render killed at any point resumes from the finished ones. At the end the
segments are remuxed (not re-encoded) into one file together with every audio stream of the input, copied packet
for packet (or encoded again as AAC where the container cannot hold it: audio_plan), and the file appears under its
final name only then.
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from PIL import Image

from ..errors import RotoscopeError
from ..filter import Filter
from ..images import as_shown, provenance_exif, save_image
from ..paths import atomic_path, drop_partials
from .source import Frame, Source, _av_reason, _open

if TYPE_CHECKING:
    from .render import RenderJob

H264_OUTPUTS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
ANIMATED_OUTPUTS = {".gif": "GIF", ".webp": "WEBP"}


def output_kind(dest: Path) -> str:
    suffix = dest.suffix.lower()
    if suffix in H264_OUTPUTS:
        return "h264"
    if suffix in ANIMATED_OUTPUTS:
        return "animated"
    if not suffix or dest.is_dir():
        return "frames"
    raise RotoscopeError(f"cannot write video as '{suffix}': use .mp4, .mov, .mkv, .m4v, .gif, .webp or a folder")


def default_clip_output(filt: Filter, src: Path) -> Path:
    if src.is_dir():
        return src.with_name(f"{src.name}-{filt.name}")
    # an animated GIF or WebP comes back as one (an animated PNG, which nothing here writes, as .mp4)
    suffix = src.suffix.lower() if src.suffix.lower() in ANIMATED_OUTPUTS else ".mp4"
    return src.with_name(f"{src.stem}-{filt.name}{suffix}")


# ---------------------------------------------------------------- segments


def add_h264_stream(container, width: int, height: int, rate, time_base, crf: int, preset: str,
                    threads: int | None = None, bt709_colours: bool = False, tune: str | None = None):
    """An H.264 stream as rotoscope writes every clip (renders and live's recording): yuv420p in limited range,
    what browsers expect, no B-frames, and its colours tagged so that players need not guess."""
    s = container.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": preset, "bf": "0",
                                                            **({"threads": str(threads)} if threads else {}),
                                                            **({"tune": tune} if tune else {})})
    # bf=0: no B-frames, so decode order = display order and segments concatenate with monotonic dts
    s.width, s.height, s.pix_fmt = width, height, "yuv420p"
    s.time_base = time_base
    s.codec_context.time_base = time_base
    s.codec_context.color_range = 1  # MPEG (limited) range
    # the matrix the frames are converted with (h264_frame): BT.709 (1) for HD, SMPTE 170M / BT.601 (6) below 720
    # lines; the colours as well, BT.709's where an HDR or wide-gamut clip was converted to them (colour_plan)
    tag = 1 if height >= 720 else 6
    colours = 1 if bt709_colours else tag
    s.codec_context.colorspace, s.codec_context.color_primaries = tag, colours
    s.codec_context.color_trc = colours
    return s


def h264_frame(rgb: np.ndarray, pts: int, time_base, reformatter):
    """An RGB frame (even sides) as add_h264_stream's frames: yuv420p with the matrix its stream is tagged with.
    `reformatter` (av.video.reformatter.VideoReformatter) is kept for the stream: it sets the conversion up once,
    where frame.reformat sets it up afresh every frame (2.3-2.8 against 1.8-2.0 ms a 720p frame on a quiet 2-core
    EPYC; benchmarks/bench_recording.py)."""
    import av

    vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    vf = reformatter.reformat(vf, format="yuv420p", dst_colorspace="ITU709" if rgb.shape[0] >= 720 else "ITU601")
    vf.pts, vf.time_base = pts, time_base
    return vf


class _SegmentWriter:
    """Writes frames into numbered segments in the work folder; a segment counts only once its .json exists."""

    def __init__(self, job: RenderJob):
        self.job = job
        self.seg = -1
        self.frames: list[tuple[int, int]] = []
        self.container = self.stream = None
        self.tmp: Path | None = None
        self.last: np.ndarray | None = None

    def open(self, seg: int) -> None:
        import av
        from av.video.reformatter import VideoReformatter

        self.seg, self.frames = seg, []
        final = self.job.seg_media(seg)
        self.tmp = final.with_name(f".{final.name}.partial{final.suffix}")
        if self.job.kind == "h264":
            self.container = av.open(str(self.tmp), "w", format="mp4")
            v = self.job.video
            self.yuv = VideoReformatter()
            self.stream = add_h264_stream(self.container, self.job.width, self.job.height, self.job.src.rate,
                                          self.job.src.time_base, v.crf, v.preset, v.codec_threads,
                                          bt709_colours="dst_color_primaries" in self.job.src.convert)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp.mkdir(parents=True)

    def write(self, fr: Frame, rgb: np.ndarray) -> None:
        if self.job.kind == "h264":
            for p in self.stream.encode(h264_frame(rgb, fr.pts, self.job.src.time_base, self.yuv)):
                self.container.mux(p)
        else:  # GIF, WebP and PNG frames carry no rotation flag: turn the pixels upright instead
            upright = as_shown(rgb, self.job.src.rotation, self.job.src.flip)
            Image.fromarray(upright).save(self.tmp / f"{fr.index:08d}.png", compress_level=1)
        self.frames.append((fr.pts, fr.duration))
        self.last = fr.painted if fr.painted is not None else rgb  # a resumed render chains on the unmasked one

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


# ---------------------------------------------------------------- assembling the output


def _segment_packets(job: RenderJob, segs: int, tb_out: Fraction) -> Iterator[tuple[float, object]]:
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


def audio_plan(src: Source, dest: Path) -> tuple[dict[int, str], list[str]]:
    """How each audio stream of the source goes into an H.264 output: "copy" (its packets as they are) where the
    container takes them, else "aac" (decoded and encoded again: PCM in .mp4, Opus in .mov). Tried on a throwaway
    file before anything is painted, so that a render never fails at its last step. Returns the plan (a stream that
    neither way can store is not in it: left out) and the notes to say."""
    import tempfile

    if not src.audio or src.files is not None or src.frame_ms is not None:
        return {}, []
    fmt = H264_OUTPUTS[dest.suffix.lower()]
    plan: dict[int, str] = {}
    notes = []
    with _open(src.path) as c, tempfile.TemporaryDirectory(prefix="rotoscope-audio-") as tmp:
        for a in c.streams.audio:
            name = a.codec_context.name if a.codec_context is not None else "unknown"  # a codec FFmpeg lacks
            for how in ("copy", "aac") if a.codec_context is not None else ():
                try:
                    with _open_output(Path(tmp) / f"{a.index}-{how}", fmt) as out:
                        dst = _audio_stream(out, a, how)
                        muxed = 0
                        for _, p in _AUDIO_PACKETS[how](src, a.index, dst, None, limit=2):
                            out.mux(p)
                            muxed += 1
                    if not muxed:  # nothing to write: the header, which refuses, was never tried
                        continue
                    plan[a.index] = how
                    break
                except Exception:  # noqa: BLE001 - FFmpeg says "Invalid argument" at best: the plan says what to do
                    continue
            else:  # not even decodable, or no sound in it: the picture is still worth painting
                hint = "" if fmt == "matroska" else " (.mkv may keep it)"
                notes.append(f"warning: the {name} audio of {src.path.name} can go into {dest.suffix} neither as it is "
                             f"nor as AAC, or holds no sound: left out{hint}")
                continue
            if plan[a.index] == "aac":
                notes.append(f"note: the {name} audio cannot go into {dest.suffix} as it is: encoded again as AAC "
                             "(.mkv keeps it untouched)")
    return plan, notes


USUAL_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def _open_output(path: Path, fmt: str):
    import av

    return av.open(str(path), "w", format=fmt, options={"movflags": "+faststart"} if fmt in ("mp4", "mov") else {})


def _audio_stream(out, a, how: str):
    """The output's stream for source audio stream `a`: its template ("copy") or an AAC encoder of its rate and
    channel layout ("aac")."""
    if how == "copy":
        return out.add_stream_from_template(a)
    dst = out.add_stream("aac", rate=a.codec_context.sample_rate or 48000)
    # a layout without an order (a PCM track's "2 channels") is its channel count's usual one to the encoder
    layout = a.codec_context.layout.name
    dst.layout = USUAL_LAYOUTS.get(a.codec_context.channels, layout) if layout.endswith("channels") else layout
    return dst


class _FollowOn:
    """A stream's timestamps carried on where its clock starts again midway (clips joined end to end, as the video's
    frames are in decode()): the later packets follow the last one instead of going back in time, which an MP4 or
    MOV refuses ("Invalid argument", after the whole clip was painted)."""

    def __init__(self) -> None:
        self.offset, self.end = 0, None

    def __call__(self, ts: int, dur: int) -> int:
        """The shift for a packet or frame at `ts` (before shifting) lasting `dur`, in the stream's time base."""
        dur = max(dur, 1)  # a packet that says no duration still takes a tick: the next may not share its time
        t = ts + self.offset
        if self.end is not None and t < self.end - dur:
            self.offset += self.end - t
            t = self.end
        self.end = t + dur if self.end is None else max(self.end, t + dur)
        return self.offset


def _copied(src: Source, index: int, dst, until: float | None, limit: int | None = None
            ) -> Iterator[tuple[float, object]]:
    """Audio stream `index`'s packets as they are, given to stream `dst`; with `until` (seconds), only those that
    start before it; `limit`: at most that many (a trial)."""
    import av

    with _open(src.path) as c:
        n, follow = 0, _FollowOn()
        try:
            for p in c.demux(c.streams[index]):
                if p.size == 0 or p.dts is None:
                    continue
                shift = follow(p.dts, p.duration or 0)
                if shift:
                    p.dts += shift
                    p.pts = p.pts + shift if p.pts is not None else None
                t = float(p.dts * p.time_base)
                if until is not None and t >= until:
                    continue
                p.stream = dst
                yield t, p
                n += 1
                if limit is not None and n >= limit:
                    return
        except av.FFmpegError:
            return  # a truncated file: the audio that was readable is kept


def _encoded(src: Source, index: int, dst, until: float | None, limit: int | None = None
             ) -> Iterator[tuple[float, object]]:
    """Audio stream `index` decoded and encoded by `dst` (AAC); the same cut and limit as _copied."""
    import av

    n, follow = 0, _FollowOn()
    with _open(src.path) as c:
        frames = c.decode(c.streams[index])
        while True:
            try:
                frame = next(frames, None)
            except av.FFmpegError:
                frame = None  # a truncated file: the audio that was readable is kept
            if frame is not None and frame.pts is not None:
                frame.pts += follow(frame.pts, round(frame.samples / (frame.sample_rate * frame.time_base)))
            if frame is not None and until is not None and frame.time is not None and frame.time >= until:
                frame = None
            for p in dst.encode(frame):  # None: the encoder's last packets
                yield (float(p.pts * p.time_base) if p.pts is not None else 0.0), p
                n += 1
                if limit is not None and n >= limit:
                    return
            if frame is None:
                return


# how a stream's audio reaches the output (audio_plan's plan): its packets as they are, or encoded again as AAC
_AUDIO_PACKETS = {"copy": _copied, "aac": _encoded}


def assemble_h264(job: RenderJob, segs: int, prov: dict) -> None:
    """Remux the segments' H.264 and the source's audio (its packets untouched, or encoded again as AAC where the
    container cannot take them: job.audio) into the final file, atomically."""
    import av

    fmt = H264_OUTPUTS[job.dest.suffix.lower()]
    tb = job.src.time_base
    drop_partials(job.dest)  # a killed run's half-assembled copy (kill -9 mid-remux runs no cleanup)
    with atomic_path(job.dest) as tmp, av.open(str(job.seg_media(0))) as first:
        with _open_output(tmp, fmt) as out:
            out.metadata["comment"] = json.dumps(prov, sort_keys=True)
            vs = out.add_stream_from_template(first.streams.video[0])
            vs.time_base = tb
            # the frame rate too: Matroska writes it as each frame's default duration, and without it took the time
            # base's (1/30000 s), so players and readers saw a 0.3 s clip as 10,860 frames at 30,000 fps
            vs.codec_context.framerate = job.src.rate
            if job.src.rotation or job.src.flip:
                vs.set_display_rotation(job.src.rotation, hflip=job.src.flip)
            tracks = []
            if job.audio:  # audio_plan, before painting: which streams are copied, which encoded again
                with _open(job.src.path) as source:
                    tracks = [(i, _audio_stream(out, source.streams[i], how), how) for i, how in job.audio.items()]
            vids = _segment_packets(job, segs, tb)
            until = None
            if job.video.max_seconds is not None:  # a cut: the sound ends with the last frame
                last = json.loads(job.seg_done(segs - 1).read_text())["frames"][-1]
                until = float((last[0] + last[1]) * tb)
            auds = [_AUDIO_PACKETS[how](job.src, i, dst, until) for i, dst, how in tracks]
            # a clip whose first frames come before time 0 (an MPEG-TS whose 33-bit clock wrapped, a cut with its
            # sound ahead): an MP4 or MOV hides them behind an edit list (half a clip that wrapped a second in went
            # missing), so every stream starts that much later, in step
            first = json.loads(job.seg_done(0).read_text())["frames"][0][0]
            late = -first * tb if first < 0 else 0
            try:
                for _, p in heapq.merge(vids, *auds, key=lambda tp: tp[0]):
                    if p.stream.type == "video":
                        p.stream = vs
                    if late:
                        shift = round(late / p.time_base)
                        p.dts = p.dts + shift if p.dts is not None else None
                        p.pts = p.pts + shift if p.pts is not None else None
                    out.mux(p)
            except av.FFmpegError as e:
                raise RotoscopeError(f"cannot write {job.dest.name}: {_av_reason(e)}") from None


def _segment_frames(job: RenderJob, segs: int) -> Iterator[tuple[Path, int]]:
    for i in range(segs):
        info = json.loads(job.seg_done(i).read_text())
        for p, (_, dur) in zip(sorted(job.seg_media(i).glob("*.png")), info["frames"]):
            yield p, dur


def assemble_animated(job: RenderJob, segs: int, prov: dict) -> None:
    """Animated GIF or WebP with each frame's own duration (VFR kept, to the millisecond)."""
    tb = job.src.time_base
    frames, durations = [], []
    for p, dur in _segment_frames(job, segs):
        frames.append(Image.open(p).convert("RGB"))
        durations.append(max(10 if job.kind == "animated" else 1, round(1000 * float(dur * tb))))
    fmt = ANIMATED_OUTPUTS[job.dest.suffix.lower()]
    kwargs = {"duration": durations, "save_all": True, "append_images": frames[1:]}
    plays = job.src.plays  # a GIF's loop field counts the plays after the first, and is left out for one play
    if fmt == "WEBP":
        kwargs["loop"] = plays
    elif plays != 1:
        kwargs["loop"] = 0 if plays == 0 else plays - 1
    text = json.dumps(prov, sort_keys=True)  # what made it, read back by RenderJob.finished_output
    if fmt == "WEBP":
        kwargs.update(quality=90, method=4, exif=provenance_exif(text))
    else:
        kwargs.update(optimize=False, disposal=1, comment=text)
    drop_partials(job.dest)
    with atomic_path(job.dest) as tmp:
        frames[0].save(tmp, format=fmt, **kwargs)


def assemble_frames(job: RenderJob, segs: int, prov: dict) -> None:
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
