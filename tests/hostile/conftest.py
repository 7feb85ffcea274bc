"""What every hostile case shares: a user's earlier work that must survive it, the CLI run in-process, the promise
checked in one place, and file systems that refuse (read-only, full) where this machine can make them.

The promise, for every refused input (README, "What rotoscope promises for bad input and faults"):
  - exit code 1 (the HTTP status for the server; a RotoscopeError for the Python API);
  - exactly one line on stderr, "error: ...", no traceback;
  - no file under a final name that is not complete (nothing half-written, no temporary file left behind);
  - no earlier data changed: registry filters, earlier outputs, checkpoints, the jobs database.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import assert_one_line_error, make_filter, make_image, rotoscope

# ---------------------------------------------------------------- a payload that must never run


class Payload:
    """Unpickling this writes the marker file: any loader that unpickles is caught by the marker's existence."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('unpickled')",))


def pickle_bytes(marker: Path, protocol: int = 4) -> bytes:
    return pickle.dumps(Payload(marker), protocol=protocol)


def torch_zip_bytes(marker: Path) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"w": Payload(marker)}, buf)
    return buf.getvalue()


# ---------------------------------------------------------------- the user's earlier work


@dataclass
class World:
    """A user's machine before the hostile case: two filters in the registry, a painted picture, a training
    checkpoint, a photo to paint. `check()` says the case changed none of it and left nothing half-written."""

    root: Path  # the test's tmp_path: everything the case may touch is under it
    home: Path
    work: Path  # the current folder
    capsys: object
    marker: Path
    protected: dict[Path, bytes] = field(default_factory=dict)

    @property
    def photo(self) -> Path:
        return self.work / "photo.png"

    @property
    def filters(self) -> Path:
        return self.home / "filters"

    def protect(self, *paths: Path) -> None:
        for p in paths:
            self.protected[Path(p)] = Path(p).read_bytes()

    def cli(self, *args):
        """`rotoscope ARGS` in-process, exactly as the console script runs it: (exit code, stdout, stderr)."""
        return rotoscope(*args, capsys=self.capsys)

    def refused(self, *args, words=(), absent=()) -> str:
        """The CLI refuses ARGS the promised way; returns the error line."""
        code, out, err = self.cli(*args)
        line = assert_one_line_error(code, out, err, *words)
        self.check(*absent)
        return line

    def check(self, *absent) -> None:
        """Nothing protected changed, no temporary or partial file anywhere, and no file under the given names."""
        for p, data in self.protected.items():
            assert p.is_file() and p.read_bytes() == data, f"{p} was changed"
        left = [p for p in self.root.rglob("*") if ".partial" in p.name or p.name.startswith(".rotoscope-write")]
        assert not left, f"left behind: {left}"
        for p in absent:
            assert not os.path.lexists(p), f"{p} exists"
        assert not self.marker.exists(), "something was unpickled"


@pytest.fixture
def world(tmp_path, rotoscope_home, capsys, monkeypatch) -> World:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # the CLI sets torch's threads (one per core): tiny cases run faster on one, as the suite does (tests/conftest.py)
    monkeypatch.setenv("ROTOSCOPE_THREADS", "1")
    w = World(tmp_path, rotoscope_home, work, capsys, tmp_path / "MARKER")
    make_filter(w.filters / "tiny.safetensors")
    make_filter(w.filters / "keep.safetensors", seed=1)
    make_image(w.photo, size=(40, 32))
    make_image(work / "earlier.png", size=(20, 16), seed=3)  # an earlier output
    ckpt = rotoscope_home / "runs" / "keep" / "checkpoint.safetensors"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"an earlier run's checkpoint")
    w.protect(w.filters / "tiny.safetensors", w.filters / "keep.safetensors", w.photo, work / "earlier.png", ckpt)
    yield w
    w.check()  # every case, whatever it asserted itself


# ---------------------------------------------------------------- file systems that refuse


def _mount(args: list[str]) -> bool:
    try:
        return subprocess.run(args, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _umount(path: Path) -> None:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


@pytest.fixture
def readonly(tmp_path):
    """make(files={name: bytes}) -> a folder holding those files in which nothing can be written: a tmpfs remounted
    read-only where we may mount one (root), else a folder without write permission (which root would ignore).
    Skipped, saying why, where neither refuses a write."""
    made: list[tuple[Path, bool]] = []

    def make(files: dict[str, bytes] | None = None) -> Path:
        d = tmp_path / f"readonly-{uuid.uuid4().hex[:6]}"
        d.mkdir()
        mounted = os.geteuid() == 0 and _mount(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)])
        made.append((d, mounted))
        for name, data in (files or {}).items():
            (d / name).write_bytes(data)
        if mounted:
            _mount(["mount", "-o", "remount,ro", str(d)])
        else:
            d.chmod(0o555)
        try:
            (d / ".probe").touch()
        except OSError:
            return d
        (d / ".probe").unlink()
        pytest.skip("no read-only folder can be made here (root without mount rights ignores permissions)")

    yield make
    for d, mounted in made:
        if mounted:
            _umount(d)
        else:
            d.chmod(0o755)


@pytest.fixture
def readonly_dir(readonly):
    return readonly()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 32 KiB tmpfs: a full disk after the first small file. Mounting needs root with mount rights; elsewhere the
    cases skip, saying why (the same refusals are also injected in-process: test_hostile_filesystem.py)."""
    d = tmp_path / "tiny-disk"
    d.mkdir()
    if os.geteuid() != 0 or not _mount(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(d)]):
        pytest.skip("a small tmpfs (a full disk) needs root with mount rights")
    try:
        yield d
    finally:
        _umount(d)
