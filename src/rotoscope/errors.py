"""The one exception type users see: the CLI prints its message on one line and exits non-zero.

Each subclass carries its kind, so a skin can answer by kind without reading the wording (the server maps kinds
to HTTP statuses in one place, server/app.py). The CLI treats them all alike.
"""


class RotoscopeError(Exception):
    """A problem with the user's input or environment, worded for the user."""

    kind = "error"


class NotFound(RotoscopeError):
    """Something named does not exist: an unknown filter, a missing file or job."""

    kind = "not found"


class Refused(RotoscopeError):
    """Not allowed: removing a shipped filter, a public bind without a token, a disabled feature."""

    kind = "refused"


class Conflict(Refused):
    """Refused because of the current state: a filter that exists (without overwrite), a job already finished."""

    kind = "conflict"


class TooLarge(RotoscopeError):
    """Over a limit: an upload's bytes, an image's pixels."""

    kind = "too large"


class Invalid(RotoscopeError):
    """Bad settings or input that cannot be read (an undecodable image, a corrupt filter file)."""

    kind = "invalid"


class CannotWrite(RotoscopeError):
    """The file system refused a write: a read-only or missing folder, no permission, a full disk."""

    kind = "cannot write"


class Interrupted(RotoscopeError):
    """Stopped on request (Ctrl-C, a stop from the server or a cluster) with the work kept: the message says how to
    go on. The CLI exits 130 for it, as for any Ctrl-C."""

    kind = "interrupted"


class Unsupported(Invalid):
    """Input of a type that is not accepted at all (an upload that is not an image or not a video)."""

    kind = "unsupported"


__all__ = ["RotoscopeError", "NotFound", "Refused", "Conflict", "TooLarge", "Invalid", "Unsupported", "CannotWrite",
           "Interrupted"]
