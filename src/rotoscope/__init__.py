"""rotoscope: turn one piece of art into a reusable filter, and paint photos and video with it.

    import rotoscope
    f = rotoscope.train("poster.jpg", name="propaganda")        # or rotoscope.load_filter("propaganda")
    rotoscope.stylize(f, "street.jpg").save("street-propaganda.png")
"""

__version__ = "0.1.0"

import os  # noqa: E402

# first, before anything imports NumPy: its AVX2 kernels on an AMD Zen 4, whose AVX-512 sort runs in microcode
from . import numpy_kernels as _numpy_kernels  # noqa: E402

_numpy_kernels.choose()

import sys  # noqa: E402
import types  # noqa: E402

from .config import NetConfig, TrainConfig  # noqa: E402
from .errors import RotoscopeError  # noqa: E402

# Importing the package stays light (no torch, which takes a second or two to load): the command line imports what
# each command needs inside its error handling, so Ctrl-C in the first second is one line, not a traceback, and
# `rotoscope --help` answers at once. The library's names load on first use (PEP 562).
_LAZY = {"Filter": "filter", "list_filters": "filter", "load_filter": "filter", "apply_video": "video"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """The import system binds a loaded submodule on its package: rotoscope.train and rotoscope.stylize, the
    modules, would replace the functions of those names below the first time anything imported them. They stay
    functions (the modules: importlib.import_module("rotoscope.train"))."""

    def __setattr__(self, name, value):
        if name in ("train", "stylize") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def train(artwork, name, photos=None, overwrite=False, **settings):
    """Train a filter from one artwork; keyword settings override TrainConfig's defaults. An existing filter of the
    same name (or the file `out=`) is never replaced unless overwrite=True, as on the command line."""
    from .errors import Invalid
    from .train import refuse_dropping_a_run, refuse_taken, train as _train

    extra = {k: settings.pop(k) for k in ("title", "backbone_weights", "resume", "out", "log", "progress")
             if k in settings}
    if not isinstance(artwork, (str, os.PathLike)):  # the card keeps the file's name and hash
        raise Invalid(f"artwork is the path of an image file, not {type(artwork).__module__}.{type(artwork).__name__}"
                      " (save a picture first)")
    from .filter import check_name

    check_name(name)
    try:
        cfg = TrainConfig().replace(**settings)
    except (TypeError, ValueError) as e:
        raise Invalid(str(e)) from None
    if not (overwrite or extra.get("resume")):  # as on the command line
        refuse_taken(name, extra.get("out"), flag="overwrite=True")
        refuse_dropping_a_run(name, flag="overwrite=True", resume="resume=True")
    return _train(artwork, name, photos, cfg, **extra)


def stylize(filt, image, mask=None, **settings):
    """Paint an image (path or PIL image) with a filter (Filter, name or path, or a mix "a:0.6+b:0.4"); returns a
    PIL image. `mask` (path, PIL image or array, any size): white paints, black keeps the photo, grey blends."""
    from PIL.Image import Image as PILImage

    from .errors import Invalid
    from .images import open_image
    from .mix import as_filter
    from .stylize import ApplySettings, stylize_image

    settings = ApplySettings.of(**settings)  # the settings table's ranges, as for the CLI and the server
    filt = as_filter(filt, settings.mix)
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image)
    elif not isinstance(image, PILImage):
        raise Invalid(f"image must be a file path or a PIL image (got {type(image).__module__}."
                      f"{type(image).__name__})")
    if image.width < 1 or image.height < 1:
        raise Invalid(f"image is {image.width}x{image.height}: nothing to paint")
    return stylize_image(filt, image, settings, mask)


__all__ = ["train", "stylize", "apply_video", "load_filter", "list_filters", "Filter", "TrainConfig", "NetConfig",
           "RotoscopeError"]
