"""Video: paint every frame of a clip with a filter (work in progress, see issue 3)."""

from __future__ import annotations

from pathlib import Path

from .errors import RotoscopeError

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}


def is_video_path(path: Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def apply_video_cli(filt, src, dest, settings, progress):
    raise RotoscopeError("video input is not supported yet")
    yield  # pragma: no cover
