"""Finding people, offline, for `--keep people`: Google's MediaPipe Selfie Segmentation (the general 256x256
model, Apache-2.0), shipped inside this package (`weights/selfie_segmentation.tflite`, 249,505 bytes, copied
unaltered from the mediapipe 0.10.21 wheel; provenance and licence beside it) and run by OpenCV's own TFLite
importer (opencv-python-headless, already a dependency). Nothing is fetched at run time and the mediapipe package
is not needed (it pins numpy < 2 and opencv-contrib). The file is checked against its SHA-256 before it is read.

The model gives, for every pixel, the probability that it shows a person. It sees the picture squeezed to
256 x 256: letterboxing to a square (keeping the aspect ratio) and the 144 x 256 landscape model were tried on
the 76 shared photos and found people no better but kept more that is not a person (the parrots of kodim23:
4 % of the picture kept squeezed, 58 % letterboxed, 43 % with the landscape model); square crops across a wide
frame (2 or 3, their maximum) found more of the small players of the sports clips but also more that is not a
person (the coffee cup: 19 % to 55 %) at two to three times the cost. It is a selfie model: a large close-up
subject that is not a person (a cat's face, a burger, a piggy bank) is often taken for one, and people under
about a third of the picture's height are often missed (the players of the shared basketball clip).
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from .errors import Refused

MODEL = Path(__file__).parent / "weights" / "selfie_segmentation.tflite"
KNOWN_SHA256 = "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"  # mediapipe 0.10.21's copy
SIDE = 256  # the model's input: 256 x 256 RGB, 0-1, NCHW for OpenCV's importer
# The model is nearly binary (on the shared photos 2-8 % of a picture lies between 0.1 and 0.9); its soft
# probabilities below LOW are mostly texture it half-believes in (fog, a bridge's cables): kept weight ramps from
# 0 at LOW to 1 at HIGH
LOW, HIGH = 0.3, 0.7

_local = threading.local()  # a cv2.dnn net per thread: a net keeps its buffers and is not thread-safe


def _net() -> cv2.dnn.Net:
    """This thread's network, read once from MODEL after its checksum is checked; one line when it cannot be."""
    nets = _local.__dict__.setdefault("nets", {})
    path = MODEL
    if path not in nets:
        from .backbones import require_sha256

        if not path.is_file():
            raise Refused(f"--keep people needs the person segmenter that ships with rotoscope ({path}): "
                          "reinstall rotoscope")
        require_sha256(path, KNOWN_SHA256, "person segmenter", "MediaPipe Selfie Segmentation from mediapipe "
                       "0.10.21; reinstall rotoscope")
        if not hasattr(cv2.dnn, "readNetFromTFLite"):
            raise Refused(f"--keep people needs OpenCV 4.8 or later to read its model (this is {cv2.__version__}): "
                          "pip install -U opencv-python-headless")
        try:
            nets[path] = cv2.dnn.readNetFromTFLite(str(path))
        except cv2.error as e:
            raise Refused(f"OpenCV {cv2.__version__} cannot read the person segmenter {path.name}: "
                          f"{str(e).strip().splitlines()[-1]}") from None
    return nets[path]


def person_probability(rgb: np.ndarray) -> np.ndarray:
    """H x W float32 in [0, 1]: the model's probability that each pixel of an H x W x 3 uint8 picture shows a
    person (found at 256 x 256, scaled back up bilinearly)."""
    h, w = rgb.shape[:2]
    x = cv2.resize(np.ascontiguousarray(rgb[..., :3]), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    net = _net()
    net.setInput((x.astype(np.float32) * (1 / 255)).transpose(2, 0, 1)[None])
    p = np.ascontiguousarray(np.squeeze(net.forward()), dtype=np.float32)
    return np.clip(cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR), 0, 1)


def person_mask(rgb: np.ndarray, feather_share: float = 0.0) -> np.ndarray:
    """H x W float32: 1 on the people found, 0 elsewhere. The probability is sharpened (LOW to HIGH) and its edge
    feathered over `feather_share` of the longer side, the feathered edge moved outward so the person is kept
    whole and the photo shows a little around them rather than paint eating into their outline."""
    from .mask import feather

    p = person_probability(rgb)
    k = np.clip((p - LOW) * (1 / (HIGH - LOW)), 0, 1)
    if feather_share > 0:
        h, w = k.shape
        # the blur runs at the model's detail (a few times its 256 px) and is scaled up: at 1280x720 the full-size
        # Gaussian (sigma 13 px) cost more than the network
        s = min(1.0, 4 * SIDE / max(h, w))
        if s < 1:
            small = cv2.resize(k, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            k = cv2.resize(feather(small, feather_share), (w, h), interpolation=cv2.INTER_LINEAR)
        else:
            k = feather(k, feather_share)
        k = np.minimum(k * 2, 1)  # the edge's middle (0.5) becomes fully kept
    return k.astype(np.float32, copy=False)
