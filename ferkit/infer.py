"""CPU inference: image in, faces and their emotions out (ONNX Runtime + OpenCV, no torch).

    recognizer = ferkit.load()                     # bundled default model, checksum verified
    faces = recognizer.predict("photo.jpg")        # [FaceResult(box, label, confidence, ...)], left to right
    cv2.imwrite("out.jpg", recognizer.annotate(ferkit.infer.read_image("photo.jpg"), faces))

A model file describes itself: classes, input size, normalisation, calibration temperature and
the unsure threshold are read from its ``ferkit`` metadata property (docs/design.md), never guessed.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, ModelError
from .faces import (DEFAULT_MARGIN, DETECTORS, YUNET_MIN_SCORE, Detection, bundled_file, check_sha256, crop_face,
                    detect_faces, get_detector, read_manifest)
from .meta import REQUIRED, check_meta
from .preprocess import as_uint8_image, to_model_input
from .tta import TTA_MODES, tta_views

META_PROPERTY = "ferkit"
REQUIRED_META = REQUIRED
BUNDLED_DEFAULT = "default"
MAX_PIXELS = 50_000_000   # larger images are refused before they are decoded (a 50 MP RGB image is 150 MB)
MIN_SIDE = 16             # px; smaller images cannot hold a recognisable face
EXIF_ORIENTATION = 0x0112  # the EXIF tag that says how the camera was held
FACE_IMAGE_MAX = 64       # px; an image this small on both sides is taken as one pre-cropped face
BATCH_SIZE = 64           # faces per ONNX Runtime call
COLOR_ORDERS = ("bgr", "rgb")
# Box colours (BGR) by emotion, from matplotlib's tab10; other class names get OTHER_COLOUR.
EMOTION_COLOURS = {
    "angry": (40, 39, 214), "disgust": (44, 160, 44), "fear": (189, 103, 148), "happy": (14, 201, 255),
    "sad": (180, 119, 31), "surprise": (14, 127, 255), "neutral": (160, 160, 160), "contempt": (75, 86, 140),
}
OTHER_COLOUR = (34, 189, 188)
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class FaceResult:
    """One face: where it is, what it shows, and how sure the model is (calibrated probabilities)."""

    box: tuple[int, int, int, int]
    label: str
    confidence: float
    probabilities: dict[str, float]
    unsure: bool
    detection_score: float | None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["box"] = list(self.box)
        return d


# --- images in ----------------------------------------------------------------------------------


def read_image(source: Any, *, color: str = "bgr", name: str | None = None) -> np.ndarray:
    """Any image source as a BGR uint8 (H, W, 3) array; ImageError naming the source when unusable.

    ``source``: a path, encoded bytes, a PIL image or a numpy array (BGR, or RGB with
    ``color="rgb"``, or gray (H, W); BGRA drops its alpha; 16-bit is scaled to 8-bit). Files and
    bytes honour their EXIF orientation; images over 50 MP are refused from their header, before
    decoding. ``name`` is used in error messages (e.g. an upload's file name).
    """
    if color not in COLOR_ORDERS:
        raise ValueError(f"unknown color order {color!r}; choose one of {', '.join(COLOR_ORDERS)}")
    if isinstance(source, np.ndarray):
        where = name or f"array {source.shape}"
        image = as_uint8_image(source, where)
        if image.ndim == 3 and color == "rgb":
            image = image[:, :, ::-1]
    elif isinstance(source, Image.Image):
        where = name or "PIL image"
        _check_pixels(source.size, where)
        image = _pil_to_bgr(source, where)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        where = name or "image bytes"
        if len(source) == 0:
            raise ImageError(f"{where}: empty (0 bytes)")
        image = _decode(io.BytesIO(bytes(source)), where)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = name or str(path)
        if not path.is_file():
            raise ImageError(f"image not found: {path}" if not path.exists() else f"not a file: {path}")
        if path.stat().st_size == 0:
            raise ImageError(f"{where}: empty file (0 bytes)")
        image = _decode(path, where)
    else:
        raise ImageError(f"cannot read an image from a {type(source).__name__}: pass a path, bytes, "
                         "a PIL image or a numpy array")
    h, w = image.shape[:2]
    _check_pixels((w, h), where)
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{where} is {w}x{h} px: too small to hold a face (at least {MIN_SIDE} px a side)")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image)


def _check_pixels(size: tuple[int, int], where: str) -> None:
    w, h = size
    if w * h > MAX_PIXELS:
        raise ImageError(f"{where} is {w}x{h} px ({w * h / 1e6:.0f} MP): more than the {MAX_PIXELS // 1_000_000} MP "
                         "ferkit reads; downscale it first")


def _decode(fp: Path | io.BytesIO, where: str) -> np.ndarray:
    """Open lazily, check the header's size, then decode with the EXIF orientation applied."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is lower; checked below
        try:
            opened = Image.open(fp)
        except Image.DecompressionBombError as e:
            raise ImageError(f"{where} is more than the {MAX_PIXELS // 1_000_000} MP ferkit reads ({e}); "
                             "downscale it first") from e
        except UnidentifiedImageError as e:
            raise ImageError(f"{where} is not an image (or not in a format ferkit reads: JPEG, PNG, WebP, BMP, "
                             "TIFF, GIF)") from e
        except OSError as e:
            raise ImageError(f"cannot read {where}: {e}") from e
        with opened:
            _check_pixels(opened.size, where)
            try:
                # exif_transpose copies the image even when it is upright: call it only when it turns it
                upright = ImageOps.exif_transpose(opened) if opened.getexif().get(EXIF_ORIENTATION, 1) != 1 else opened
                upright.load()
                return _pil_to_bgr(upright, where)
            except (OSError, SyntaxError, ValueError, EOFError) as e:
                raise ImageError(f"cannot decode {where}: the file is truncated or corrupt ({e})") from e


def _pil_to_bgr(image: Image.Image, where: str) -> np.ndarray:
    """A PIL image of any mode as uint8 gray (H, W) or BGR (H, W, 3)."""
    mode = image.mode
    if mode.startswith("I;16"):
        return as_uint8_image(np.asarray(image).astype(np.uint16), where)
    if mode == "I":  # 32-bit integers; in practice 16-bit data
        data = np.asarray(image)
        data = np.clip(data, 0, 65535).astype(np.uint16) if data.max() > 255 else data.astype(np.uint8)
        return as_uint8_image(data, where)
    if mode == "F":
        return as_uint8_image(np.asarray(image), where)
    if mode in ("1", "LA", "La"):
        image = image.convert("L")
    elif (mode == "P" and "transparency" in image.info) or mode in ("PA", "RGBa"):
        image = image.convert("RGBA")
    elif mode not in ("L", "RGB", "RGBA"):  # CMYK, YCbCr, LAB, HSV, palette
        image = image.convert("RGB")
    data = np.asarray(image)
    if data.ndim == 3:  # RGB(A) -> BGR, alpha dropped
        data = cv2.cvtColor(data, cv2.COLOR_RGBA2BGR if data.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(data)


# --- model files ----------------------------------------------------------------------------------


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The checked path of a bundled model name or of a user's .onnx file."""
    if model is None:
        model = BUNDLED_DEFAULT
    bundled = read_manifest().get("models", {})
    if isinstance(model, str) and model in bundled:
        return bundled_file("models", model)
    path = Path(model)
    if not path.exists():
        if isinstance(model, str) and os.sep not in model and not path.suffix:
            known = ", ".join(bundled) or "none installed"
            raise ModelError(f"no bundled model named {model!r} (bundled: {known}); pass the path of an .onnx file "
                             "written by ferkit export")
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"model path is not a file: {path}")
    if path.suffix in (".pt", ".pth"):
        raise ModelError(f"{path} is a PyTorch checkpoint; export it first: ferkit export {path} --out model.onnx")
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        expected = sidecar.read_text().split()
        if not expected:
            raise ModelError(f"checksum file {sidecar} is empty; re-export the model or delete it")
        check_sha256(path, expected[0], f"model {path.name}")
    return path


def open_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's choice (one per physical core)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"ONNX Runtime cannot load the model {path}: {reason}") from e


def session_meta(session: ort.InferenceSession, where: str) -> dict:
    raw = session.get_modelmeta().custom_metadata_map.get(META_PROPERTY)
    if raw is None:
        raise ModelError(f"{where} has no '{META_PROPERTY}' metadata: it was not written by ferkit export "
                         "(the metadata holds its classes and normalisation)")
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise ModelError(f"{where}: the '{META_PROPERTY}' metadata is not valid JSON ({e})") from e
    meta = check_meta(meta, where)
    out_shape = session.get_outputs()[0].shape
    if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != len(meta["classes"])):
        raise ModelError(f"{where}: the model outputs shape {out_shape} but its metadata lists "
                         f"{len(meta['classes'])} classes")
    return meta


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --- the pipeline -----------------------------------------------------------------------------------


class Recognizer:
    """Detect faces, crop them like FER2013, classify them in batches; see ``load()``."""

    def __init__(self, session: ort.InferenceSession, meta: dict, *, detector: str = "auto",
                 unsure_threshold: float | None = None, batch_size: int = BATCH_SIZE,
                 min_score: float = YUNET_MIN_SCORE, source: str = ""):
        if detector not in DETECTORS:
            raise ValueError(f"unknown face detector {detector!r}; choose one of {', '.join(DETECTORS)}")
        if unsure_threshold is not None and not 0.0 <= unsure_threshold <= 1.0:
            raise ValueError(f"unsure_threshold must be in [0, 1], got {unsure_threshold}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.meta = meta
        self.name: str = meta["name"]
        self.classes: tuple[str, ...] = tuple(meta["classes"])
        self.input_size: int = meta["input_size"]
        self.temperature: float = float(meta["temperature"])
        self.unsure_threshold: float = float(meta["unsure_threshold"] if unsure_threshold is None else unsure_threshold)
        self.detector = detector
        self.batch_size = batch_size
        self.source = source
        self._session = session
        self._input = session.get_inputs()[0].name
        self.min_score = min_score
        get_detector(detector, min_score)  # built now, so a missing or corrupt detector fails at load time

    def __repr__(self) -> str:
        return (f"Recognizer(name={self.name!r}, classes={len(self.classes)}, detector={self.detector!r}, "
                f"source={self.source!r})")

    # faces -> numbers

    def _face_stack(self, faces: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(N, S, S) uint8 from faces of any size, gray or BGR."""
        s = self.input_size
        stack = np.empty((len(faces), s, s), np.uint8)
        for i, face in enumerate(faces):
            face = as_uint8_image(np.asarray(face), f"face {i}")
            if face.ndim == 3:
                face = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
            stack[i] = face if face.shape == (s, s) else cv2.resize(face, (s, s), interpolation=cv2.INTER_AREA)
        return stack

    def _run(self, x: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) float32 -> (N, C) logits, ``batch_size`` faces per ONNX Runtime call."""
        chunks = [self._session.run(None, {self._input: x[i:i + self.batch_size]})[0]
                  for i in range(0, len(x), self.batch_size)]
        return np.concatenate(chunks).astype(np.float32)

    def _view_logits(self, faces: Sequence[np.ndarray] | np.ndarray, tta: str) -> np.ndarray:
        """(V, N, C) logits, one row of faces per TTA view."""
        if tta not in TTA_MODES:
            raise ValueError(f"unknown TTA mode {tta!r}; choose one of {', '.join(TTA_MODES)}")
        if len(faces) == 0:
            return np.zeros((1, 0, len(self.classes)), np.float32)
        views = tta_views(self._face_stack(faces), tta)  # (V, N, S, S)
        v, n, s, _ = views.shape
        return self._run(to_model_input(views.reshape(v * n, s, s), self.meta)).reshape(v, n, -1)

    def logits_faces(self, faces: Sequence[np.ndarray] | np.ndarray, tta: str = "none") -> np.ndarray:
        """Uncalibrated (N, C) logits of pre-cropped faces, averaged over TTA views (for evaluation)."""
        return self._view_logits(faces, tta).mean(axis=0)

    def predict_faces(self, faces: Sequence[np.ndarray] | np.ndarray, tta: str = "none") -> np.ndarray:
        """Calibrated (N, C) probabilities of pre-cropped faces: softmax(logits / T), averaged over TTA views."""
        return softmax(self._view_logits(faces, tta) / self.temperature).mean(axis=0)

    # images -> faces

    def faces_in(self, image: np.ndarray, detect: bool | None = None) -> tuple[list[np.ndarray], list[Detection]]:
        """Face crops (S x S gray) of a BGR image and where they are, left to right.

        ``detect=None``: an image of at most 64 px a side is one pre-cropped face, larger ones are searched.
        """
        h, w = image.shape[:2]
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if detect is False or (detect is None and max(h, w) <= FACE_IMAGE_MAX):
            return [gray], [Detection((0, 0, w, h))]
        found = detect_faces(image, self.detector, self.min_score)
        margin = float(self.meta["face_margin"])
        return [crop_face(gray, d, self.input_size, margin) for d in found], found

    def _results(self, probs: np.ndarray, detections: list[Detection]) -> list[FaceResult]:
        results = []
        for p, d in zip(probs, detections):
            top = int(np.argmax(p))
            results.append(FaceResult(
                box=tuple(int(v) for v in d.box), label=self.classes[top], confidence=float(p[top]),
                probabilities={c: float(v) for c, v in zip(self.classes, p)},
                unsure=bool(p[top] < self.unsure_threshold), detection_score=d.score,
            ))
        return results

    def predict_batch(self, images: Sequence[Any], *, detect: bool | None = None, tta: str = "none",
                      color: str = "bgr") -> list[list[FaceResult]]:
        """Faces of several images, all classified together; one list per image, [] when it has no face."""
        crops: list[np.ndarray] = []
        where: list[list[Detection]] = []
        for image in images:
            faces, found = self.faces_in(read_image(image, color=color), detect)
            crops += faces
            where.append(found)
        probs = self.predict_faces(crops, tta)
        results, start = [], 0
        for found in where:
            results.append(self._results(probs[start:start + len(found)], found))
            start += len(found)
        return results

    def predict(self, image: Any, *, detect: bool | None = None, tta: str = "none", color: str = "bgr") -> list[FaceResult]:
        """Faces of one image (path, bytes, PIL image or array), left to right; [] when there is none."""
        return self.predict_batch([image], detect=detect, tta=tta, color=color)[0]

    def annotate(self, image: np.ndarray, results: list[FaceResult]) -> np.ndarray:
        """A BGR copy of ``image`` with each face's box and "label 87%" ("label? 41%" when unsure)."""
        canvas = as_uint8_image(np.asarray(image), "image to annotate")
        canvas = cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR) if canvas.ndim == 2 else canvas.copy()
        for result in results:
            draw_box(canvas, result)
        for result in sorted(results, key=lambda r: r.box[2] * r.box[3]):  # the larger faces' labels on top
            draw_label(canvas, result)
        return canvas


def draw_face(canvas: np.ndarray, result: FaceResult) -> None:
    """Draw one face's box and label on a BGR image, in place (``annotate`` draws all boxes, then all labels)."""
    draw_box(canvas, result)
    draw_label(canvas, result)


def draw_box(canvas: np.ndarray, result: FaceResult) -> None:
    """Draw one face's box on a BGR image, in place; the line width follows the image size."""
    x, y, bw, bh = result.box
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    cv2.rectangle(canvas, (x, y), (x + bw - 1, y + bh - 1), EMOTION_COLOURS.get(result.label, OTHER_COLOUR),
                  thickness, cv2.LINE_AA)


def draw_label(canvas: np.ndarray, result: FaceResult) -> None:
    """Draw "label 87%" ("label? 41%" when unsure) above a face's box (inside it at the image's top edge)."""
    h, w = canvas.shape[:2]
    x, y, bw, _ = result.box
    colour = EMOTION_COLOURS.get(result.label, OTHER_COLOUR)
    text = f"{result.label}{'?' if result.unsure else ''} {result.confidence:.0%}"
    # About as wide as the box (crowded photos stay readable), within bounds that follow the image size.
    unit_width = cv2.getTextSize(text, FONT, 1.0, 2)[0][0]
    scale = float(np.clip(min(1.3 * bw / unit_width, max(h, w) / 900), 0.4, 3.0))
    weight = max(1, round(scale * 1.5))
    (tw, th), baseline = cv2.getTextSize(text, FONT, scale, weight)
    pad = max(2, round(th * 0.3))
    lx = int(np.clip(x, 0, max(0, w - tw - 2 * pad)))
    top = y - th - baseline - 2 * pad
    if top < 0:
        top = y
    cv2.rectangle(canvas, (lx, top), (lx + tw + 2 * pad, top + th + baseline + 2 * pad), colour, cv2.FILLED)
    ink = (0, 0, 0) if 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2] > 140 else (255, 255, 255)
    cv2.putText(canvas, text, (lx + pad, top + pad + th), FONT, scale, ink, weight, cv2.LINE_AA)


def load(model: str | os.PathLike | None = None, *, detector: str = "auto", unsure_threshold: float | None = None,
         threads: int | None = None, batch_size: int = BATCH_SIZE) -> Recognizer:
    """A ready Recognizer. ``model``: None or "default" (bundled FER2013 model), "ferplus", or a .onnx path.

    The file's SHA-256 is checked first (against the manifest for bundled models, against
    ``<file>.sha256`` for others when it exists); ModelError says what is wrong and where.
    """
    path = resolve_model(model)
    session = open_session(path, threads)
    meta = session_meta(session, str(path))
    return Recognizer(session, meta, detector=detector, unsure_threshold=unsure_threshold, batch_size=batch_size,
                      source=str(path))
