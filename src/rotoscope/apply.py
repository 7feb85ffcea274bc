"""`rotoscope apply` as a library call: one image, or a folder of images (video lives in video/).

apply_path yields data, not sentences: a `Note` for what the run chose or warns about, a `Painted` per input
written, a `Skipped` per input of a folder that could not be painted. The CLI formats them; `--json` is their
serialisation (report()).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Union

from .errors import CannotWrite, Invalid, NotFound, RotoscopeError
from .filter import Filter
from .images import IMAGE_SUFFIXES, WRITE_FORMATS, list_images, longer_side, open_image, read_provenance, save_image
from .paths import check_writable, drop_partials
from .stylize import ApplySettings, provenance, resolve, stylize_image


@dataclass
class Note:
    """A line the run says: what it chose ("precision: ...", "engine: ..."), a "warning: ..." or a "note: ..."."""

    text: str


@dataclass
class Painted:
    """One input painted and written."""

    source: str
    output: str
    size: tuple[int, int]  # the output's width and height
    seconds: float
    assessment: dict | None = None  # the input's distance from the training photos (truthful/confidence.py)
    notes: list[str] = field(default_factory=list)
    frames: int | None = None  # for a video
    reused: bool = False  # an earlier, interrupted run had already written it with the same filter and settings
    precision: str | None = None  # the number format and engine it was painted with (resolved, never "auto")
    engine: str | None = None
    stages: dict | None = None  # a video painted here: where the time went (video/stages.py, StageTimes.to_dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Skipped:
    """An input of a folder that could not be painted, and why."""

    source: str
    reason: str


Result = Union[Note, Painted, Skipped]


def default_output(filt: Filter, src: Path) -> Path:
    return src.with_name(f"{src.stem}-{filt.name}{src.suffix if src.suffix.lower() in WRITE_FORMATS else '.png'}")


def apply_image(filt: Filter, src: Path, dest: Path, settings: ApplySettings, img=None, mask=None) -> Painted:
    """Paint one image file and write it (with provenance); the input's distance from the training photos is
    measured on the way. `mask`: where to paint (mask.py)."""
    t0 = time.perf_counter()
    img = img if img is not None else open_image(src)
    assessment = assess(filt, img, src.name)
    styled = stylize_image(filt, img, settings, mask)
    out = save_image(styled, dest, _provenance(filt, settings, src.name, mask))
    notes = [f"warning: {assessment['message']}"] if assessment and not assessment["in_distribution"] else []
    return Painted(str(src), str(out), styled.size, round(time.perf_counter() - t0, 3), assessment, notes,
                   precision=settings.precision, engine=settings.engine)


def assess(filt: Filter, img, name: str) -> dict | None:
    """The input's distance from the training photos, measured on the picture as seen (over white, as training
    reads its photos)."""
    from .images import over_white, split_alpha
    from .truthful.confidence import assess_image

    a = assess_image(filt.card, over_white(*split_alpha(img)), name)
    return a.to_dict() if a is not None else None


def apply_path(filter: str | Filter, src: Path, dest: Path | None, settings: ApplySettings,
               progress: bool = True, video=None, preview: int | None = None, mask=None,
               cluster: str | None = None, cluster_cfg=None) -> Iterator[Result]:
    """Apply to a file or a folder; yields a Note for each thing said, a Painted per input written.

    Videos and folders of numbered frames go to video.py (`video` is a config.VideoConfig, `preview` a frame count).
    `filter` may be a mix ("a:0.6+b:0.4", mix.py); `mask` a mask image, or for a video a folder of one per frame
    (mask.py). `cluster` ("auto", "ray://host:port" or a Ray address) paints a clip or a folder on Ray (cluster.py,
    its settings a config.ClusterConfig); a single image is painted here.
    """
    src = Path(src)
    if not src.exists():
        raise RotoscopeError(f"no such file or folder: {src}")
    if not (src.is_file() or src.is_dir()):
        raise RotoscopeError(f"{src} is not a regular file (a pipe, socket or device): rotoscope reads files")
    if dest is not None and Path(dest).exists() and Path(dest).resolve() == src.resolve():
        raise RotoscopeError("the output would overwrite the input: choose another -o")
    from . import video as vid

    if dest is not None and Path(dest).suffix.lower() and Path(dest).suffix.lower() not in WRITE_FORMATS \
            and src.suffix.lower() in IMAGE_SUFFIXES and not vid.is_animated(src):
        raise RotoscopeError(f"cannot write '{Path(dest).suffix}': use one of {', '.join(sorted(WRITE_FORMATS))}")
    from .mix import load_any

    filt = filter if isinstance(filter, Filter) else load_any(filter, settings.mix)
    if isinstance(mask, (str, os.PathLike)) and not Path(mask).exists():
        raise NotFound(f"no such mask file or folder: {mask}")
    # an animated GIF, WebP or PNG is a clip: painted frame by frame, steadied, its timing kept
    is_video = vid.is_clip(src) or (src.is_dir() and vid.frame_sequence(src))
    if preview is not None and preview < 1:
        raise Invalid(f"preview must be at least 1 frame (got {preview})")
    if preview and not is_video:
        raise RotoscopeError("--preview is for videos and folders of numbered frames")
    images, clips = (list_stills(src), vid.list_clips(src)) if src.is_dir() and not is_video else ([], [])
    if src.is_dir() and not is_video and not images and not clips:
        raise RotoscopeError(f"no images or clips in {src}")
    if src.is_dir() and not is_video and dest is not None and not Path(dest).is_dir() \
            and Path(dest).suffix.lower() in {*WRITE_FORMATS, *vid.VIDEO_SUFFIXES}:  # a typo'd folder named x.png
        raise RotoscopeError(f"a folder is painted into a folder: give -o a folder name, not {Path(dest).name}")
    # bad input is found before anything is said, so that an error stays one line
    img = open_image(src) if src.is_file() and not is_video else None
    if mask is not None and not is_video:
        from .mask import read_mask

        read_mask(mask)  # a folder of masks is for a video (one mask per frame)
    # precision and engine are chosen once per run, for the size of its first picture; the lines saying which and
    # why come first in the output (a video says them once its job is checked); a render's frames are painted
    # beside its decoding and encoding threads, and the engine is chosen as it runs there
    as_video = (is_video and not preview) or (clips and not images)
    asked = settings
    settings, lines = resolve(filt, settings, painted_shape(src, settings.size, is_video, img), video=bool(as_video))
    if cluster is not None:
        from . import cluster as cl

        cl.require_ray()  # a missing extra, or a cluster that is not there, is one line before anything is said
        cl.check_address(cluster)
    if is_video:
        renderer = cl.video_renderer(cluster, cluster_cfg) if cluster is not None and not preview else None
        yield from vid.apply_video_cli(filt, src, dest, settings, progress, video, preview, announce=lines,
                                       mask=mask, renderer=renderer)
        return
    # what was chosen is said with the first result, so that an input or output that fails is one line: the error
    if src.is_dir():  # its images, then its clips (a folder may hold both)
        folder = Path(dest) if dest else src.with_name(f"{src.name}-{filt.name}")
        if images:
            painted = (cl.apply_folder(filt, src, folder, settings, progress, mask, cluster, cluster_cfg)
                       if cluster is not None else apply_folder(filt, src, folder, settings, progress, mask))
            yield from _said_first(lines, painted)
            lines = []
        if clips:
            if images and asked.engine == "auto":  # chosen for the pictures above: the clips' engine is timed as a
                # render paints, beside its decoding and encoding threads
                settings, again = resolve(filt, asked, painted_shape(clips[0], asked.size, True), video=True)
                lines = [f"clips: {ln}" for ln in again]
            renderer = cl.video_renderer(cluster, cluster_cfg) if cluster is not None else None
            yield from _said_first(lines, apply_clips(filt, clips, folder, settings, progress, video, mask, renderer))
        return
    dest = Path(dest) if dest else default_output(filt, src)
    if dest.is_dir():  # `-o painted/`: into that folder, under the name it would have had beside the photo
        dest = dest / default_output(filt, src).name
    painted = apply_image(filt, src, dest, settings, img, mask)
    if cluster is not None:
        lines = [*lines, "note: one image is painted here: --cluster is for videos and folders"]
    yield from map(Note, lines)
    yield from map(Note, painted.notes)
    yield painted


def list_stills(folder: Path) -> list[Path]:
    """A folder's images that are painted as pictures: its animated GIFs, WebPs and PNGs are clips (list_clips)."""
    from .video import is_animated

    return [p for p in list_images(folder) if not is_animated(p)]


def still_name(f: Path) -> str:
    """The name a folder's picture is painted under: its own, or .png where its format is not written."""
    return f.name if f.suffix.lower() in WRITE_FORMATS else f"{f.stem}.png"


def claim_names(inputs: list[Path], name_of) -> dict[Path, Path]:
    """Inputs of a folder whose outputs would share a name (a.gif and a.png -> a.png; a.ts and a.mp4 -> a.mp4;
    compared as a case-insensitive file system would): each input -> the input that has the name. The one that
    keeps its own name has it, the others are skipped (`Skipped(..., taken_reason(...))`)."""
    owner: dict[str, Path] = {}
    for f in sorted(inputs, key=lambda f: f.name != name_of(f)):
        owner.setdefault(name_of(f).casefold(), f)
    return {f: owner[name_of(f).casefold()] for f in inputs}


def taken_reason(f: Path, name: str, owner: Path, owners_name: str) -> str:
    """Why `f` is skipped: its output's name is that of `owner`'s output (the CLI says `skipped ` before it)."""
    case = "" if name == owners_name else " (the same name where case is ignored, as on macOS and Windows)"
    return f"{f.name}: its painting would be {name}, the name of {owner.name}'s{case}: rename one of them"


def _said_first(lines: list[str], results: Iterator[Result]) -> Iterator[Result]:
    """The lines saying what was chosen, then the results: the lines once the first result is in."""
    for r in results:
        yield from map(Note, lines)
        lines = []
        yield r
    yield from map(Note, lines)


def painted_shape(src: Path, size: int | None, is_video: bool, img=None) -> tuple[int, int]:
    """(h, w) of the first picture the run will paint, read from headers only; 720p when it cannot be read
    (the run then fails on that input with its own message)."""
    from PIL import Image

    try:
        if img is not None:
            w, h = img.size
        elif is_video:
            from .video import probe

            s = probe(src)
            w, h = s.width, s.height
        else:
            first = src if src.is_file() else next(iter(list_stills(src)), None)
            if first is None:  # a folder of clips
                from .video import list_clips, probe

                s = probe(list_clips(src)[0])
                w, h = s.width, s.height
            else:
                with Image.open(first) as im:
                    w, h = im.size
    except Exception:  # noqa: BLE001 - unreadable input: reported where it is opened
        w, h = 1280, 720
    try:
        w, h = longer_side(w, h, size)
    except RotoscopeError:  # over the pixel limit at this size: refused where it is painted (a folder goes on)
        w, h = 1280, 720
    return h, w


def apply_folder(filt: Filter, src: Path, dest: Path, settings: ApplySettings, progress: bool,
                 mask=None) -> Iterator[Result]:
    from rich.console import Console
    from rich.progress import track

    files = list_stills(src)
    if not files:
        raise RotoscopeError(f"no images in {src}")
    check_writable(dest)  # a folder that cannot be written ends the run in one line, before any painting
    owner = claim_names(files, still_name)
    console = Console(stderr=True)  # a transient bar in a log file is only a blank line
    for f in track(files, description="painting", disable=not progress or not console.is_terminal, transient=True,
                   console=console):
        if owner[f] != f:
            yield Skipped(str(f), taken_reason(f, still_name(f), owner[f], still_name(owner[f])))
            continue
        yield from paint_into(filt, f, dest, settings, mask)


def apply_clips(filt: Filter, clips: list[Path], dest: Path, settings: ApplySettings, progress: bool,
                video=None, mask=None, renderer=None) -> Iterator[Result]:
    """The clips of a folder, one after another, into `dest` under their own names (H.264, or an animated GIF or
    WebP; a .webm, .avi, animated PNG or other container H.264 cannot go in becomes .mp4). Each is a whole video
    render: resumable, and on a cluster (`renderer`, cluster.video_renderer) its segments spread over the workers.
    A clip finished by an earlier run with the same source, filter and settings is kept; one that cannot be painted
    is skipped, saying why."""
    from . import video as vid

    check_writable(dest)
    kept = {*vid.H264_OUTPUTS, *vid.ANIMATED_OUTPUTS}  # an animated GIF or WebP stays one

    def name_of(c: Path) -> str:
        return c.name if c.suffix.lower() in kept else f"{c.stem}.mp4"

    owner = claim_names(clips, name_of)
    for clip in clips:
        target = dest / name_of(clip)
        if owner[clip] != clip:
            yield Skipped(str(clip), taken_reason(clip, target.name, owner[clip], name_of(owner[clip])))
            continue
        try:
            job = vid.make_job(filt, clip, target, settings, video, mask)
        except RotoscopeError as e:
            yield Skipped(str(clip), skip_reason(clip, e))
            continue
        done = job.finished_output()
        if done is not None:
            yield Painted(str(clip), str(target), done[0], 0.0, frames=done[1], reused=True,
                          precision=settings.precision, engine=settings.engine)
            continue
        try:
            yield from vid.apply_video_cli(filt, clip, target, settings, progress, video, mask=mask,
                                           renderer=renderer, job=job)
        except CannotWrite:
            raise  # the output's fault (a full disk): every later clip would fail the same way
        except RotoscopeError as e:
            yield Skipped(str(clip), skip_reason(clip, e))


def skip_reason(path: Path, e: RotoscopeError) -> str:
    """Why an input of a folder was skipped (apply, score), naming it (most messages start with the path; a size refusal does not)."""
    return str(e) if path.name in str(e) else f"{path.name}: {e}"


def paint_into(filt: Filter, f: Path, dest: Path, settings: ApplySettings, mask=None) -> list[Result]:
    """One image of a folder into the output folder (the local loop and a cluster task both call it): its notes
    and Painted, or a Skipped; one already written by an earlier run with the same filter and settings is kept."""
    target = dest / still_name(f)
    drop_partials(target)  # an interrupted run's half-written copy (kill -9 mid-write)
    if target.exists() and _same_result(target, filt, settings, f.name, mask):
        # finished by an earlier, interrupted run with the same filter and settings
        return [Painted(str(f), str(target), _size(target), 0.0, reused=True, precision=settings.precision,
                        engine=settings.engine)]
    try:
        painted = apply_image(filt, f, target, settings, mask=mask)
    except CannotWrite:
        raise  # the output's fault (a full disk): every later image would fail the same way
    except RotoscopeError as e:
        return [Skipped(str(f), skip_reason(f, e))]
    return [*map(Note, painted.notes), painted]


def _size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def report(filt: Filter, results: list[Result]) -> dict:
    """The JSON result of `rotoscope apply --json`: what was chosen, each output, each input's distance from the
    training photos (measured once, while painting), and the warnings."""
    painted = [r for r in results if isinstance(r, Painted)]
    said = [r.text for r in results if isinstance(r, Note)]
    return {"filter": filt.name, "card_hash": filt.card_hash,
            "confidence_measure": (filt.card.get("confidence") or {}).get("measure"),
            "precision": painted[0].precision if painted else None, "engine": painted[0].engine if painted else None,
            "outputs": [p.output for p in painted],
            "warnings": [t[len("warning: "):] for t in said if t.startswith("warning: ")]
            + [f"skipped {r.source}: {r.reason}" for r in results if isinstance(r, Skipped)],
            "inputs": [{"input": p.source, **(p.assessment or {"distance": None, "note": _no_distance(filt, p)})}
                       for p in painted],
            "painted": [p.to_dict() for p in painted]}


def _no_distance(filt: Filter, p: Painted) -> str:
    if p.frames is not None:
        return "a video: its frames are not measured against the training photos"
    if p.reused:
        return "painted by an earlier run: not measured again"
    return "this filter's card has no training statistics (trained before they were stored)"


def _same_result(target: Path, filt: Filter, settings: ApplySettings, source: str, mask=None) -> bool:
    try:
        prov = read_provenance(target)
    except Exception:
        return False
    return bool(prov) and prov.get("card_hash") == filt.card_hash and prov.get("settings") == settings.to_dict() \
        and prov.get("source") == source \
        and prov.get("mask") == _provenance(filt, settings, source, mask).get("mask")


def _provenance(filt: Filter, settings: ApplySettings, source: str, mask=None) -> dict:
    """stylize.provenance, and the mask when there is one (its file name and hash, the feathering)."""
    prov = provenance(filt, settings, source)
    if mask is not None:
        from .mask import describe

        prov["mask"] = {"mask": describe(mask), "feather": settings.feather}
    return prov
