"""The one exception type users see: the CLI prints its message on one line and exits non-zero."""


class RotoscopeError(Exception):
    """A problem with the user's input or environment, worded for the user."""
