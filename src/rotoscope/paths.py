"""Where rotoscope keeps things, and how it writes files without ever leaving half a file under its final name."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import platformdirs


def home() -> Path:
    """ROTOSCOPE_HOME, else the user's data dir. Holds filters/, runs/ (checkpoints) and cache/."""
    env = os.environ.get("ROTOSCOPE_HOME")
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("rotoscope"))


def filters_dir() -> Path:
    return home() / "filters"


def runs_dir() -> Path:
    return home() / "runs"


def cache_dir() -> Path:
    return home() / "cache"


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike):
    """Yield a temporary path beside `final`; rename it into place only if the block finishes without error.

    The temporary name keeps the final suffix so libraries that pick a format from the extension still work.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.partial{final.suffix}")
    try:
        yield tmp
        if tmp.exists():  # some writers (safetensors) create 0600 files: give the usual permissions instead
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
