"""Is this input like the photos the filter was trained on? A distance, a calibrated threshold, a warning.

A network always produces an answer, even for inputs unlike anything it saw. At the end of training the card
stores the mean and spread of the training photos' image statistics (audit.STATS: brightness, contrast,
colourfulness, saturation, warmth, fine detail, dark and bright shares). On apply, the input's statistics are
standardised against them; the distance is the root-mean-square of those z-scores. This uses image statistics
only, no backbone features: it sees light, colour and detail, not subject matter.

Calibration, stated plainly: each training photo is scored against the statistics of the others
(leave-one-out); the threshold is 1.25x the largest of those distances, and at least MIN_THRESHOLD. The held-out
photos are not used to set it: they are scored afterwards, as an independent check, and the card records how
many of them the threshold would (wrongly) flag. With few photos the threshold is rough; the card keeps every
calibration distance so anyone can judge it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .audit import STATS, Audit, measure

# The smallest spread assumed per statistic, so a set that happens to be uniform in something (e.g. all
# equally bright) does not make every slight difference look enormous.
STD_FLOOR = {"brightness": 0.05, "contrast": 0.02, "colourfulness": 5.0, "saturation": 0.04, "warmth": 0.03,
             "edges": 0.005, "dark_share": 0.04, "bright_share": 0.04}
MIN_THRESHOLD = 2.0
MARGIN = 1.25
MEASURE = "image statistics only (no backbone features): " + ", ".join(STATS)


@dataclass
class Assessment:
    """How far one input lies from the training photos."""

    distance: float
    threshold: float
    in_distribution: bool
    furthest: list[dict]  # the statistics that differ most: name, value, training mean, z
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def _z(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (x - mean) / std


def distance(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:
    return float(np.sqrt(np.mean(_z(x, mean, std) ** 2)))


def _spread(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    floor = np.array([STD_FLOOR[k] for k in STATS])
    return X.mean(0), np.maximum(X.std(0), floor)


def reference(audit: Audit, train_names: list[str], holdout_names: list[str]) -> dict:
    """The training photos' statistics and the calibrated threshold, for the card."""
    by = {p.name: p for p in audit.photos}
    X = np.array([by[n].vector() for n in train_names if n in by])
    if len(X) == 0:
        return {}
    mean, std = _spread(X)
    loo = []
    if len(X) >= 3:
        for i in range(len(X)):
            m, s = _spread(np.delete(X, i, 0))
            loo.append(distance(X[i], m, s))
    held = [distance(by[n].vector(), mean, std) for n in holdout_names if n in by]
    calib = loo or held  # fewer than 3 training photos: no leave-one-out, fall back on the held-out ones
    threshold = max(MIN_THRESHOLD, MARGIN * max(calib)) if calib else MIN_THRESHOLD * 1.5
    return {"measure": MEASURE, "stats": list(STATS), "mean": [round(float(v), 5) for v in mean],
            "std": [round(float(v), 5) for v in std], "photos": int(len(X)),
            "threshold": round(float(threshold), 3),
            "calibration": {"rule": f"{MARGIN}x the largest leave-one-out distance of the training photos "
                                    f"(held-out ones when fewer than 3), at least {MIN_THRESHOLD}",
                            "leave_one_out": [round(v, 3) for v in loo],
                            "holdout": {n: round(d, 3) for n, d in zip([n for n in holdout_names if n in by], held)},
                            "holdout_flagged": sum(d > threshold for d in held)}}


def assess_image(card: dict, img: Image.Image, name: str = "input") -> Assessment | None:
    """The input's distance from the training photos; None when the card has no statistics (older filters)."""
    ref = card.get("confidence") or {}
    if not ref.get("mean") or ref.get("stats") != list(STATS):
        return None
    mean, std = np.array(ref["mean"]), np.array(ref["std"])
    x = measure(name, img).vector()
    z = _z(x, mean, std)
    d = float(np.sqrt(np.mean(z ** 2)))
    thr = float(ref["threshold"])
    order = np.argsort(-np.abs(z))[:2]
    furthest = [{"stat": STATS[i], "value": round(float(x[i]), 4), "training_mean": round(float(mean[i]), 4),
                 "z": round(float(z[i]), 2)} for i in order]
    ok = d <= thr
    why = "; ".join(f"{f['stat']} {f['value']:.3g} vs {f['training_mean']:.3g} on average in training "
                    f"({abs(f['z']):.1f} spreads {'above' if f['z'] > 0 else 'below'})" for f in furthest)
    if ok:
        msg = f"{name} is within what the filter was trained on (distance {d:.2f}, threshold {thr:.2f})"
    else:
        msg = (f"{name} is unlike the filter's training photos (distance {d:.2f} > threshold {thr:.2f}: {why}); "
               "the filter still paints it, but it has not been shown how to handle such pictures: check the result")
    return Assessment(round(d, 3), thr, ok, furthest, msg)


def assess_path(card: dict, path: str | os.PathLike) -> Assessment | None:
    from ..images import load_rgb

    return assess_image(card, load_rgb(path), Path(path).name)
