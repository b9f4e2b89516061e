"""Offline face detection and FER2013-style face crops (OpenCV only; nothing is downloaded).

Two detectors:

* ``yunet``: YuNet through ``cv2.FaceDetectorYN``, from the bundled ``weights/yunet.onnx``
  (SHA-256 checked before loading). YuNet finds faces of about 28-400 px at its input, so one
  pass at full size misses close-ups and one scaled down misses small faces. ``pass_sides`` picks
  as few passes as cover faces from ``MIN_FACE_PX`` px to the whole image: one pass for images
  up to 685 px, else a fine pass plus a 320 px pass, boxes merged with NMS (docs/faces.md has the
  measurements behind this).
* ``haar``: OpenCV's frontal-face Haar cascade, shipped in the opencv-python wheels: the floor,
  used when asked for, or by ``auto`` when this OpenCV build has no ``FaceDetectorYN``.

``crop_face`` turns a detection into what the model was trained on: a square grayscale face
from the forehead to the chin, eyes level, 48x48.
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError, ModelError
from .images import to_gray
from .meta import DEFAULT_MARGIN
from .weights import bundled_file

DETECTORS = ("auto", "yunet", "haar")
YUNET_FACE_PX = (28, 400)   # face side (px at YuNet's input): found 88 % at 28, >= 92 % from 32 to 420 (docs/faces.md)
YUNET_COARSE_SIDE = 320     # long side (px) of the pass for the large faces
YUNET_MAX_SIDE = 1280       # the fine pass never runs on a larger image; images are never upscaled
MIN_FACE_PX = 48            # the smallest face searched for (image px): the models' input size
YUNET_MIN_SCORE = 0.7       # on the test photos: true faces score >= 0.77, false ones <= 0.37 (docs/faces.md)
NMS_IOU = 0.3               # boxes of the two passes overlapping more than this are one face
HAAR_MAX_SIDE = 640         # Haar's cost grows with the pixel count; it runs on a copy capped at this
HAAR_MIN_FACE = 24          # px at the capped size
FACE_SIZE = 48
FACE_IMAGE_MAX = 64         # px; an image this small on both sides is taken as one pre-cropped face


@dataclass(frozen=True)
class Detection:
    """One face: ``box`` (x, y, w, h) in image pixels, clipped to the image.

    ``score``: the detector's confidence (None for Haar, which has none). ``landmarks``: (5, 2)
    float32 image coordinates of the two eyes, the nose tip and the two mouth corners, as YuNet
    orders them (the first eye is the one on the image's left), or None.
    """

    box: tuple[int, int, int, int]
    score: float | None = None
    landmarks: np.ndarray | None = None


# --- detectors --------------------------------------------------------------------------------


def work_side(face_size: int = FACE_SIZE) -> int:
    """The largest image side worth converting for faces cropped to ``face_size`` px.

    At it, the smallest face that YuNet's capped fine pass (or Haar's 640-px copy) can find still
    spans ``face_size`` px, so a larger copy of the image would give no crop more detail.
    """
    return math.ceil(YUNET_MAX_SIDE * face_size / YUNET_FACE_PX[0])


class FaceDetector:
    """A callable BGR uint8 image -> list[Detection], known by its name in ``DETECTORS``.

    It compares equal to that name, so ``recognizer.detector == "haar"`` reads as it did when the
    recognizer held the name instead of the detector.
    """

    name = ""

    def __call__(self, image_bgr: np.ndarray) -> list[Detection]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return other == self.name
        return other is self

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _scaled(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """The image shrunk so its long side is at most ``long_side``, and the factor applied."""
    h, w = image.shape[:2]
    factor = min(1.0, long_side / max(h, w))
    if factor == 1.0:
        return image, 1.0
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor


def _clip_box(x: float, y: float, w: float, h: float, width: int, height: int) -> tuple[int, int, int, int] | None:
    x0, y0 = max(0, round(x)), max(0, round(y))
    x1, y1 = min(width, round(x + w)), min(height, round(y + h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1 - x0, y1 - y0


def pass_sides(long_side: int, min_face: int = MIN_FACE_PX) -> tuple[int, ...]:
    """Long sides (px) of the YuNet passes for an image: as few as see faces from ``min_face`` px to the whole image.

    A pass at long side S sees the image's faces from ``YUNET_FACE_PX[0] * long_side / S`` px up.
    The fine pass is the smallest S that sees ``min_face``-px faces. When S is at most
    ``YUNET_FACE_PX[1]``, even a face as large as the image fits in that pass and it runs alone;
    otherwise a ``YUNET_COARSE_SIDE`` pass is added for the large faces.
    """
    coarse = min(long_side, YUNET_COARSE_SIDE)
    fine = min(long_side, YUNET_MAX_SIDE, math.ceil(long_side * YUNET_FACE_PX[0] / min_face))
    if fine <= YUNET_FACE_PX[1]:
        return (max(fine, coarse),)
    return (fine, coarse)


class YuNetDetector(FaceDetector):
    """YuNet at the sides of ``pass_sides`` (or at fixed ``scales``); boxes of all passes merged with NMS.

    Each pass has its own ``cv2.FaceDetectorYN``: changing a detector's input size makes OpenCV
    re-allocate the network, which cost more than the pass itself when one detector alternated
    between two sizes (docs/faces.md).
    """

    name = "yunet"

    def __init__(self, model_path: Path, min_score: float = YUNET_MIN_SCORE, min_face: int = MIN_FACE_PX,
                 scales: tuple[int, ...] | None = None):
        self.min_score = min_score
        self.min_face = min_face
        self.scales = scales  # fixed long sides, each capped at the image's; None: pass_sides
        try:
            self._nets = [cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), min_score, NMS_IOU, 5000)
                          for _ in range(len(scales) if scales else 2)]
        except cv2.error as e:
            raise ModelError(f"OpenCV cannot load the YuNet face detector {model_path}: {e}") from e
        self._lock = threading.Lock()  # setInputSize + detect mutate the detectors

    def sides(self, long_side: int) -> tuple[int, ...]:
        """Long sides of the passes run on an image with this long side, largest first."""
        if self.scales is None:
            return pass_sides(long_side, self.min_face)
        return tuple(sorted({min(s, long_side) for s in self.scales}, reverse=True))

    def _detect_rows(self, net, image: np.ndarray, long_side: int) -> np.ndarray:
        """YuNet rows (x, y, w, h, 10 landmark coords, score) in full-image coordinates."""
        small, factor = _scaled(image, long_side)
        net.setInputSize((small.shape[1], small.shape[0]))  # free when the size is unchanged
        _, rows = net.detect(small)
        if rows is None:
            return np.zeros((0, 15), np.float32)
        rows = rows.copy()
        rows[:, :14] /= factor
        return rows

    def __call__(self, image_bgr: np.ndarray) -> list[Detection]:
        sides = self.sides(max(image_bgr.shape[:2]))
        with self._lock:
            rows = np.concatenate([self._detect_rows(net, image_bgr, side) for net, side in zip(self._nets, sides)])
        rows = rows[rows[:, 14] >= self.min_score]
        if len(rows) == 0:
            return []
        keep = cv2.dnn.NMSBoxes(rows[:, :4].tolist(), rows[:, 14].tolist(), self.min_score, NMS_IOU)
        height, width = image_bgr.shape[:2]
        found = []
        for row in rows[np.asarray(keep, int).reshape(-1)]:
            box = _clip_box(*row[:4], width, height)
            if box is not None:
                found.append(Detection(box, float(row[14]), row[4:14].reshape(5, 2).astype(np.float32)))
        return found


class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade (scaleFactor 1.1, minNeighbors 5) on a copy capped at 640 px."""

    name = "haar"

    def __init__(self):
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise ModelError(f"OpenCV's Haar cascade {path} is missing or unreadable; reinstall opencv-python-headless 4.x")

    def __call__(self, image_bgr: np.ndarray) -> list[Detection]:
        gray = to_gray(image_bgr)
        small, factor = _scaled(gray, HAAR_MAX_SIDE)
        boxes = self._cascade.detectMultiScale(small, scaleFactor=1.1, minNeighbors=5,
                                               minSize=(HAAR_MIN_FACE, HAAR_MIN_FACE))
        height, width = gray.shape[:2]
        clipped = (_clip_box(*(np.asarray(b, float) / factor), width, height) for b in boxes)
        return [Detection(b) for b in clipped if b is not None]


def has_yunet() -> bool:
    return hasattr(cv2, "FaceDetectorYN")


@lru_cache(maxsize=None)
def get_detector(name: str = "auto", min_score: float = YUNET_MIN_SCORE) -> FaceDetector:
    """A ready detector, built once per (name, min_score): a callable BGR image -> list[Detection]."""
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")
    if name == "auto" and not has_yunet():
        warnings.warn(f"OpenCV {cv2.__version__} has no FaceDetectorYN: falling back to the Haar cascade, "
                      "which misses more faces", stacklevel=2)
        name = "haar"
    if name == "haar":
        return HaarDetector()
    if not has_yunet():
        raise ModelError(f"the yunet detector needs OpenCV >= 4.8 (found {cv2.__version__}); use --detector haar")
    return YuNetDetector(bundled_file("detectors", "yunet"), min_score=min_score)


def detect_faces(image_bgr: np.ndarray, detector: str | FaceDetector = "auto",
                 min_score: float = YUNET_MIN_SCORE) -> list[Detection]:
    """Faces in a BGR (or gray) uint8 image, left to right; no face -> []. ``detector``: a name or a detector."""
    if image_bgr.ndim == 2:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    found = (detector if isinstance(detector, FaceDetector) else get_detector(detector, min_score))(image_bgr)
    return sorted(found, key=lambda d: (d.box[0], d.box[1]))


# --- crops --------------------------------------------------------------------------------------


def eye_angle(landmarks: np.ndarray | None) -> float:
    """Roll of the face in degrees (positive: the right-hand eye is lower), 0 without landmarks."""
    if landmarks is None:
        return 0.0
    (x0, y0), (x1, y1) = sorted(map(tuple, landmarks[:2]))
    return float(np.degrees(np.arctan2(y1 - y0, x1 - x0)))


def crop_face(image: np.ndarray, detection: Detection, size: int = FACE_SIZE, margin: float = DEFAULT_MARGIN,
              align: bool = True) -> np.ndarray:
    """The face as a (size, size) uint8 grayscale crop, framed like FER2013.

    A square centred on the detector box with side ``max(w, h) * (1 + margin)``, rotated so the
    eyes are level when ``align`` and the detection has landmarks, resized with INTER_AREA. Parts
    of the square outside the image are filled by edge replication.
    """
    gray = to_gray(image)
    x, y, w, h = detection.box
    side = max(w, h) * (1.0 + margin)
    if side < 1:
        raise ImageError(f"face box {detection.box} is empty")
    cx, cy = x + w / 2.0, y + h / 2.0
    angle = eye_angle(detection.landmarks) if align else 0.0
    out = max(1, round(side))
    # Source -> (out x out) square: rotate about the box centre, then move the centre to the square's.
    m = cv2.getRotationMatrix2D((cx, cy), angle, out / side)
    m[:, 2] += (out / 2.0 - cx, out / 2.0 - cy)
    square = cv2.warpAffine(gray, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if out == size:
        return square
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA if out > size else cv2.INTER_LINEAR)
