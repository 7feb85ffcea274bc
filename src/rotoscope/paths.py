"""Where rotoscope keeps things, and how it writes files without ever leaving half a file under its final name."""

from __future__ import annotations

import contextlib
import errno
import hashlib
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


# the file system refusing a write: read-only, no permission, full disk or quota, a file where a folder should be
WRITE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST,
                errno.EISDIR, errno.ENOENT, errno.ENAMETOOLONG, errno.EFBIG, errno.EIO}


def write_failure(e: BaseException, what) -> Exception | None:
    """A refusal by the file system (a read-only or missing folder, no permission, a full disk) as one line that
    names what was being written; None for any other exception. Covers OSError and safetensors' I/O errors."""
    from .errors import CannotWrite

    if isinstance(e, OSError):
        if e.errno is not None and e.errno not in WRITE_ERRNOS:  # e.g. EINVAL from a decoder: not a refused write
            return None
        reason = e.strerror or (str(e).splitlines() or [type(e).__name__])[0]
    elif type(e).__name__ == "SafetensorError" and "I/O error" in str(e):
        reason = str(e).split("I/O error:", 1)[1].strip().split(" (os error")[0]
    else:
        return None
    return CannotWrite(f"cannot write {what}: {reason}")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike):
    """Yield a temporary path beside `final`; rename it into place only if the block finishes without error.

    The temporary name keeps the final suffix so libraries that pick a format from the extension still work.
    A refusal by the file system (read-only, no permission, a full disk) becomes one CannotWrite line naming `final`;
    the temporary file is removed whatever happens, so nothing incomplete is ever left under either name.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        from .errors import CannotWrite

        raise CannotWrite(f"cannot write {final}: a file stands where its folder would be") from None
    except OSError as e:
        raise write_failure(e, final) from None
    tmp = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.partial{final.suffix}")
    try:
        yield tmp
        if tmp.exists():  # some writers (safetensors) create 0600 files: give the usual permissions instead
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)
        os.replace(tmp, final)
    except Exception as e:
        failure = write_failure(e, final)
        if failure is None:
            raise
        raise failure from None
    finally:
        with contextlib.suppress(OSError):  # FileNotFoundError, or a read-only folder where nothing was written
            tmp.unlink()


def drop_partials(final: str | os.PathLike) -> None:
    """Remove what a process killed inside atomic_path(final) left: its temporary file (a kill -9 runs no cleanup).
    The run that writes `final` again calls it first."""
    import glob
    import re

    final = Path(final)
    pattern = re.compile(rf"\.{re.escape(final.stem)}\.[0-9a-f]{{8}}\.partial{re.escape(final.suffix)}")
    for p in final.parent.glob(f".{glob.escape(final.stem)}.*.partial{glob.escape(final.suffix)}"):
        if pattern.fullmatch(p.name):
            with contextlib.suppress(OSError):
                p.unlink()


def check_writable(folder: str | os.PathLike, what: str | os.PathLike | None = None) -> None:
    """Refuse at once (CannotWrite, one line) when nothing can be written in `folder` (made if missing): before a
    long run rather than at its end."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".rotoscope-write-check-{uuid.uuid4().hex[:8]}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise write_failure(e, what or folder) from None


def sha256_file(path: str | os.PathLike) -> str:
    """A file's sha256, read a MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
