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

A root-mean-square dilutes one extreme statistic among eight, and one unusual training photo lifts the threshold
for all: a white page of text (80% of it bright, where no training photo was over 55%) passed. So an input is also
flagged when one statistic lies outside the range of every training photo by more than RANGE_MARGIN spreads, where
there are RANGE_MIN_PHOTOS or more of them: the range of ten photos is narrow, and a new photo of the same kind
often lies beyond it (one of nine made like the tests' ten: 1.8 spreads beyond their contrast).
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
# Measured on starry-night's card (its 68 photos' range): 11 ordinary photos outside its training set lie at most
# 0.0 spreads beyond the range; a white text page 2.1, near-black and black pictures 3.0, a grey scanned page 0.5
RANGE_MARGIN = 1.0
RANGE_MIN_PHOTOS = 30
MEASURE = "image statistics only (no backbone features): " + ", ".join(STATS)


@dataclass
class Assessment:
    """How far one input lies from the training photos."""

    distance: float
    threshold: float
    in_distribution: bool
    furthest: list[dict]  # the statistics that differ most: name, value, training mean, z
    message: str
    outside: dict | None = None  # the statistic furthest beyond the training photos' range, when past RANGE_MARGIN

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
            "min": [round(float(v), 5) for v in X.min(0)], "max": [round(float(v), 5) for v in X.max(0)],
            "threshold": round(float(threshold), 3),
            "calibration": {"rule": f"{MARGIN}x the largest leave-one-out distance of the training photos "
                                    f"(held-out ones when fewer than 3), at least {MIN_THRESHOLD}",
                            "leave_one_out": [round(v, 3) for v in loo],
                            "holdout": {n: round(d, 3) for n, d in zip([n for n in holdout_names if n in by], held)},
                            "holdout_flagged": sum(d > threshold for d in held)}}


def training_range(card: dict) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Each statistic's lowest and highest value among the training photos, and what they are: the confidence
    record's, or for filters trained before it kept them, the audit's (which counts the held-out photos too).
    None for fewer than RANGE_MIN_PHOTOS photos."""
    ref = card.get("confidence") or {}
    if ref.get("min") and ref.get("max"):
        return (np.array(ref["min"]), np.array(ref["max"]), "the training photos") \
            if ref.get("photos", 0) >= RANGE_MIN_PHOTOS else None
    aud = card.get("audit") or {}
    dist = aud.get("distributions") or {}
    if aud.get("count", 0) >= RANGE_MIN_PHOTOS and all(k in dist and "min" in dist[k] and "max" in dist[k]
                                                        for k in STATS):
        return (np.array([dist[k]["min"] for k in STATS]), np.array([dist[k]["max"] for k in STATS]),
                "the training set's photos")
    return None


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
    outside = None
    rng = training_range(card)
    if rng is not None:
        lo, hi, whose = rng
        beyond = np.maximum(lo - x, x - hi) / std
        i = int(np.argmax(beyond))
        if beyond[i] > RANGE_MARGIN:
            outside = {"stat": STATS[i], "value": round(float(x[i]), 4), "training_min": round(float(lo[i]), 4),
                       "training_max": round(float(hi[i]), 4), "spreads_beyond": round(float(beyond[i]), 2),
                       "of": whose}
    ok = d <= thr and outside is None
    why = "; ".join(f"{f['stat']} {f['value']:.3g} vs {f['training_mean']:.3g} on average in training "
                    f"({abs(f['z']):.1f} spreads {'above' if f['z'] > 0 else 'below'})" for f in furthest)
    if ok:
        msg = (f"{name} is like the filter's training photos in light, colour and detail (distance {d:.2f}, "
               f"threshold {thr:.2f}; what it shows is not measured)")
    else:
        reasons = ([f"distance {d:.2f} > threshold {thr:.2f}: {why}"] if d > thr else []) + (
            [f"its {outside['stat']} ({outside['value']:.3g}) lies outside the range of {outside['of']} "
             f"({outside['training_min']:.3g}-{outside['training_max']:.3g}) by {outside['spreads_beyond']:.1f} "
             f"spreads"] if outside else [])
        msg = (f"{name} is unlike the filter's training photos ({'; and '.join(reasons)}); the filter still paints "
               "it, but it has not been shown how to handle such pictures: check the result")
    return Assessment(round(d, 3), thr, ok, furthest, msg, outside)


def assess_path(card: dict, path: str | os.PathLike) -> Assessment | None:
    from ..images import load_rgb

    return assess_image(card, load_rgb(path), Path(path).name)
