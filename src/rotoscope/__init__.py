"""rotoscope: turn one piece of art into a reusable filter, and paint photos and video with it.

    import rotoscope
    f = rotoscope.train("poster.jpg", name="propaganda")        # or rotoscope.load_filter("propaganda")
    rotoscope.stylize(f, "street.jpg").save("street-propaganda.png")
"""

__version__ = "0.1.0"

from .config import NetConfig, TrainConfig  # noqa: E402
from .errors import RotoscopeError  # noqa: E402
from .filter import Filter, list_filters, load_filter  # noqa: E402

# The submodules named like the functions below are loaded now: the first import of a submodule binds its name on
# the package, and a lazy import inside train() or stylize() used to replace the function by the module after its
# first call. (For the modules themselves: importlib.import_module("rotoscope.train").)
from . import stylize as _stylize_module, train as _train_module  # noqa: E402,F401


def train(artwork, name, photos=None, **settings):
    """Train a filter from one artwork; keyword settings override TrainConfig's defaults."""
    from .train import train as _train

    extra = {k: settings.pop(k) for k in ("title", "backbone_weights", "resume", "out", "log", "progress")
             if k in settings}
    return _train(artwork, name, photos, TrainConfig().replace(**settings), **extra)


def stylize(filt, image, **settings):
    """Paint an image (path or PIL image) with a filter (Filter, name or path); returns a PIL image."""
    from .images import open_image
    from .stylize import ApplySettings, stylize_image

    if not isinstance(filt, Filter):
        filt = load_filter(filt)
    if not hasattr(image, "size"):
        image = open_image(image)
    return stylize_image(filt, image, ApplySettings(**settings))


__all__ = ["train", "stylize", "load_filter", "list_filters", "Filter", "TrainConfig", "NetConfig", "RotoscopeError"]
