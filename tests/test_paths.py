"""paths.py: where rotoscope keeps things, how a refused write reads, and what a killed write leaves for the next run
to clear. (Written to kill the mutants tools/mutation.py found surviving in paths.py.)"""

from __future__ import annotations

import errno
from pathlib import Path

import platformdirs
import pytest

from rotoscope.errors import CannotWrite
from rotoscope.paths import cache_dir, check_writable, drop_partials, filters_dir, home, runs_dir, write_failure


def test_home_is_rotoscope_home_expanded_else_the_users_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ROTOSCOPE_HOME", "~/studio")
    assert home() == tmp_path / "studio"
    monkeypatch.delenv("ROTOSCOPE_HOME")
    assert home() == Path(platformdirs.user_data_dir("rotoscope"))
    monkeypatch.setenv("ROTOSCOPE_HOME", "")  # set but empty: the default, not the current folder
    assert home() == Path(platformdirs.user_data_dir("rotoscope"))


def test_the_homes_layout(rotoscope_home):
    """The folders README names (filters/, runs/ for checkpoints, cache/): a rename would strand users' files."""
    assert (filters_dir(), runs_dir(), cache_dir()) == (rotoscope_home / "filters", rotoscope_home / "runs",
                                                        rotoscope_home / "cache")


@pytest.mark.parametrize("error, reason", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
    (OSError("the device went away"), "the device went away"),  # no errno: a refusal, worded by its text
    (OSError(), "OSError"),  # no errno, no text: its type
])
def test_a_refused_write_is_one_line_naming_what_was_written(error, reason):
    failure = write_failure(error, "out.png")
    assert isinstance(failure, CannotWrite)
    assert str(failure) == f"cannot write out.png: {reason}"


def test_an_error_that_is_not_a_refused_write_is_left_alone():
    assert write_failure(OSError(errno.EINVAL, "Invalid argument"), "out.png") is None
    assert write_failure(ValueError("no"), "out.png") is None


def test_safetensors_io_errors_read_like_the_os_ones():
    class SafetensorError(Exception):  # safetensors' own type, by name: the library raises it for I/O failures
        pass

    e = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert str(write_failure(e, "f.safetensors")) == "cannot write f.safetensors: No space left on device"
    e = SafetensorError("I/O error: Read-only file system: x (os error 30)")
    assert str(write_failure(e, "f.safetensors")) == "cannot write f.safetensors: Read-only file system: x"
    assert write_failure(SafetensorError("header too large"), "f.safetensors") is None


def test_check_writable_names_what_will_be_written_else_the_folder(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    folder = tmp_path / "a-file" / "out"
    with pytest.raises(CannotWrite, match=r"^cannot write painted\.png: "):
        check_writable(folder, "painted.png")
    with pytest.raises(CannotWrite) as e:
        check_writable(folder)
    assert str(e.value).startswith(f"cannot write {folder}: ")
    ok = tmp_path / "made" / "here"
    check_writable(ok)
    assert ok.is_dir() and not list(ok.iterdir())  # made, and its probe removed


def test_drop_partials_removes_a_killed_writes_temporary_file_and_nothing_else(tmp_path):
    final = tmp_path / "my photo.png"
    left = tmp_path / ".my photo.0123abcd.partial.png"  # what paths.atomic_path leaves when killed mid-write
    keep = [tmp_path / ".my photo.0123abcd.partial.jpg",  # another output's
            tmp_path / ".my photo2.0123abcd.partial.png",  # another name's
            tmp_path / ".my photo.notahex!.partial.png",  # not atomic_path's pattern
            tmp_path / ".my photo.0123abcd.partial.png.keep",
            tmp_path / "my photo.png"]
    for p in [left, *keep]:
        p.write_bytes(b"x")
    drop_partials(final)
    assert not left.exists()
    assert all(p.exists() for p in keep), [p.name for p in keep if not p.exists()]
    drop_partials(tmp_path / "missing-folder" / "x.png")  # nothing to do: no error
