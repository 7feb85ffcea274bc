"""`rotoscope apply` as a library call: one image, or a folder of images (video lives in video.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .errors import RotoscopeError
from .filter import Filter, load_filter
from .images import IMAGE_SUFFIXES, WRITE_FORMATS, list_images, open_image, read_provenance, save_image
from .stylize import ApplySettings, provenance, resolve, stylize_image


def default_output(filt: Filter, src: Path) -> Path:
    return src.with_name(f"{src.stem}-{filt.name}{src.suffix if src.suffix.lower() in WRITE_FORMATS else '.png'}")


def apply_image(filt: Filter, src: Path, dest: Path, settings: ApplySettings, img=None) -> Path:
    img = img if img is not None else open_image(src)
    styled = stylize_image(filt, img, settings)
    return save_image(styled, dest, provenance(filt, settings, src.name))


def apply_path(filter: str | Filter, src: Path, dest: Path | None, settings: ApplySettings,
               progress: bool = True, video=None, preview: int | None = None) -> Iterator[str]:
    """Apply to a file or a folder; yields one line per result for the caller to print.

    Videos and folders of numbered frames go to video.py (`video` is a config.VideoConfig, `preview` a frame count).
    """
    src = Path(src)
    if not src.exists():
        raise RotoscopeError(f"no such file or folder: {src}")
    if dest is not None and Path(dest).suffix.lower() and Path(dest).suffix.lower() not in WRITE_FORMATS \
            and src.suffix.lower() in IMAGE_SUFFIXES:
        raise RotoscopeError(f"cannot write '{Path(dest).suffix}': use one of {', '.join(sorted(WRITE_FORMATS))}")
    filt = filter if isinstance(filter, Filter) else load_filter(filter)
    from . import video as vid

    is_video = vid.is_video_path(src) or (src.is_dir() and vid.frame_sequence(src))
    if preview and not is_video:
        raise RotoscopeError("--preview is for videos and folders of numbered frames")
    if src.is_dir() and not is_video and not list_images(src):
        raise RotoscopeError(f"no images in {src}")
    # bad input is found before anything is said, so that an error stays one line
    img = open_image(src) if src.is_file() and not is_video else None
    # precision and engine are chosen once per run, for the size of its first picture; the lines saying which and
    # why come first in the output (a video says them once its job is checked)
    settings, lines = resolve(filt, settings, painted_shape(src, settings.size, is_video, img))
    if is_video:
        yield from vid.apply_video_cli(filt, src, dest, settings, progress, video, preview, announce=lines)
        return
    yield from lines
    if src.is_dir():
        yield from apply_folder(filt, src, Path(dest) if dest else src.with_name(f"{src.name}-{filt.name}"),
                                settings, progress)
        return
    dest = Path(dest) if dest else default_output(filt, src)
    yield from confidence_warning(filt, src)
    yield f"wrote {apply_image(filt, src, dest, settings, img)}"


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
            first = src if src.is_file() else next(iter(list_images(src)), None)
            with Image.open(first) as im:
                w, h = im.size
    except Exception:  # noqa: BLE001 - unreadable input: reported where it is opened
        w, h = 1280, 720
    if size:
        s = size / max(w, h)
        w, h = max(1, round(w * s)), max(1, round(h * s))
    return h, w


def apply_folder(filt: Filter, src: Path, dest: Path, settings: ApplySettings, progress: bool) -> Iterator[str]:
    from rich.progress import track

    files = list_images(src)
    if not files:
        raise RotoscopeError(f"no images in {src}")
    dest.mkdir(parents=True, exist_ok=True)
    failed = 0
    for f in track(files, description="painting", disable=not progress, transient=True):
        target = dest / (f.name if f.suffix.lower() in WRITE_FORMATS else f"{f.stem}.png")
        if target.exists() and _same_result(target, filt, settings, f.name):
            continue  # finished by an earlier, interrupted run with the same filter and settings
        try:
            yield from confidence_warning(filt, f)
            apply_image(filt, f, target, settings)
        except RotoscopeError as e:
            failed += 1
            yield f"warning: skipped {e}"
    yield f"wrote {len(files) - failed} image(s) to {dest}" + (f"; {failed} skipped" if failed else "")


def confidence_warning(filt: Filter, src: Path) -> Iterator[str]:
    """A warning line when the input is unlike the filter's training photos (confidence.py)."""
    from .confidence import assess_path

    a = assess_path(filt.card, src)
    if a is not None and not a.in_distribution:
        yield f"warning: {a.message}"


def _same_result(target: Path, filt: Filter, settings: ApplySettings, source: str) -> bool:
    try:
        prov = read_provenance(target)
    except Exception:
        return False
    return bool(prov) and prov.get("card_hash") == filt.card_hash and prov.get("settings") == settings.to_dict() \
        and prov.get("source") == source
