"""CPU inference: image in, faces and their emotions out (ONNX Runtime + OpenCV, no torch).

    recognizer = ferkit.load()                     # bundled default model, checksum verified
    result = recognizer.predict("photo.jpg")       # an ImageResult: its FaceResults, left to right
    cv2.imwrite("out.jpg", result.plot())          # boxes and labels on a copy of the photo

A model file describes itself: classes, input size, normalisation, calibration temperature and
the unsure threshold are read from its ``ferkit`` metadata property (``ferkit.meta.ModelMeta``,
docs/design.md), never guessed; the graph's input must agree with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from .calibration import softmax
from .draw import annotate
from .errors import ModelError
from .faces import FACE_IMAGE_MAX, YUNET_MIN_SCORE, Detection, crop_face, detect_faces, get_detector, work_side
from .images import as_gray, read_image, source_name, to_gray
from .meta import REQUIRED as REQUIRED_META  # noqa: F401 (the required keys, as this module has always named them)
from .meta import ModelMeta, check_meta
from .preprocess import face_stack, to_model_input
from .results import FaceResult, ImageResult, face_result, scaled_box
from .tta import TTA_MODES, tta_views
from .weights import model_file

META_PROPERTY = "ferkit"
BATCH_SIZE = 64           # faces per ONNX Runtime call
ONNX_FLOAT = "tensor(float)"


# --- model files ----------------------------------------------------------------------------------


def open_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session (``threads``: intra-op threads, None for ONNX Runtime's choice); ModelError when it cannot load."""
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
    """The model's validated metadata, after checking that its graph takes and gives what the metadata says."""
    raw = session.get_modelmeta().custom_metadata_map.get(META_PROPERTY)
    if raw is None:
        raise ModelError(f"{where} has no '{META_PROPERTY}' metadata: it was not written by ferkit export "
                         "(the metadata holds its classes and normalisation)")
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise ModelError(f"{where}: the '{META_PROPERTY}' metadata is not valid JSON ({e})") from e
    meta = check_meta(meta, where)
    check_graph(session, meta, where)
    return meta


def check_graph(session: ort.InferenceSession, meta: dict, where: str) -> None:
    """ModelError unless the graph takes float (N, channels, S, S) and gives (N, classes), as the metadata says."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    want = (meta["channels"], meta["input_size"], meta["input_size"])
    shape = inputs[0].shape
    if len(inputs) != 1 or inputs[0].type != ONNX_FLOAT or len(shape) != 4 or any(
            isinstance(d, int) and d != w for d, w in zip(shape[1:], want)):
        got = f"{len(inputs)} inputs" if len(inputs) != 1 else f"{inputs[0].type} of shape {shape}"
        raise ModelError(f"{where}: the model takes {got} but its metadata says float (N, {want[0]}, {want[1]}, "
                         f"{want[2]}) ({meta['channels']} channel, {meta['input_size']} px); re-export it")
    out_shape = outputs[0].shape
    if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != len(meta["classes"])):
        raise ModelError(f"{where}: the model outputs shape {out_shape} but its metadata lists "
                         f"{len(meta['classes'])} classes")


# --- the pipeline -----------------------------------------------------------------------------------


class Recognizer:
    """Detect faces, crop them like FER2013, classify them in batches; see ``load()``.

    ``meta`` is the model's metadata as a plain dict (``model_meta`` as a ModelMeta); ``detector`` is
    the face detector itself (``detector_name`` its name); ``sha256`` the model file's checksum and
    ``pinned_by`` what it was checked against (None: nothing pinned it).
    """

    def __init__(self, session: ort.InferenceSession, meta: dict | ModelMeta, *, detector: str = "auto",
                 unsure_threshold: float | None = None, batch_size: int = BATCH_SIZE,
                 min_score: float = YUNET_MIN_SCORE, source: str = "", sha256: str | None = None,
                 pinned_by: str | None = None):
        if unsure_threshold is not None and not 0.0 <= unsure_threshold <= 1.0:
            raise ValueError(f"unsure_threshold must be in [0, 1], got {unsure_threshold}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_meta = meta if isinstance(meta, ModelMeta) else ModelMeta.from_dict(meta, source or "model metadata")
        self.meta = self.model_meta.to_dict()
        self.name: str = self.model_meta.name
        self.classes: tuple[str, ...] = self.model_meta.classes
        self.input_size: int = self.model_meta.input_size
        self.temperature: float = float(self.model_meta.temperature)
        self.unsure_threshold: float = float(self.model_meta.unsure_threshold if unsure_threshold is None
                                             else unsure_threshold)
        self.detector = get_detector(detector, min_score)  # built now: a missing or corrupt detector fails at load
        self.detector_name: str = self.detector.name
        self.batch_size = batch_size
        self.source = source
        self.sha256 = sha256
        self.pinned_by = pinned_by  # what the file's checksum was checked against (weights.ModelFile)
        self.min_score = min_score
        self._session = session
        self._input = session.get_inputs()[0].name
        self._work_side = work_side(self.input_size)

    def __repr__(self) -> str:
        return (f"Recognizer(name={self.name!r}, classes={len(self.classes)}, detector={self.detector_name!r}, "
                f"source={self.source!r})")

    # faces -> numbers

    def _run(self, x: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) float32 -> (N, C) logits, ``batch_size`` faces per ONNX Runtime call."""
        chunks = [self._session.run(None, {self._input: x[i:i + self.batch_size]})[0]
                  for i in range(0, len(x), self.batch_size)]
        return np.concatenate(chunks).astype(np.float32)

    def _view_logits(self, faces: Sequence[np.ndarray] | np.ndarray, tta: str) -> np.ndarray:
        """(V, N, C) logits, one row of faces per TTA view; faces may be gray or BGR, of any size and pixel type."""
        if tta not in TTA_MODES:
            raise ValueError(f"unknown TTA mode {tta!r}; choose one of {', '.join(TTA_MODES)}")
        if len(faces) == 0:
            return np.zeros((1, 0, len(self.classes)), np.float32)
        is_gray_stack = isinstance(faces, np.ndarray) and faces.dtype == np.uint8 and faces.ndim == 3
        gray = faces if is_gray_stack else [as_gray(np.asarray(f), f"face {i}") for i, f in enumerate(faces)]
        views = tta_views(face_stack(gray, self.input_size), tta)  # (V, N, S, S)
        v, n, s, _ = views.shape
        return self._run(to_model_input(views.reshape(v * n, s, s), self.meta)).reshape(v, n, -1)

    def logits_faces(self, faces: Sequence[np.ndarray] | np.ndarray, tta: str = "none") -> np.ndarray:
        """Uncalibrated (N, C) logits of pre-cropped faces, averaged over TTA views (for evaluation)."""
        return self._view_logits(faces, tta).mean(axis=0)

    def predict_faces(self, faces: Sequence[np.ndarray] | np.ndarray, tta: str = "none") -> np.ndarray:
        """Calibrated (N, C) probabilities of pre-cropped faces: softmax(logits / T), averaged over TTA views."""
        logits = self._view_logits(faces, tta)  # (V, N, C)
        v, n, c = logits.shape
        return softmax(logits.reshape(v * n, c), self.temperature).reshape(v, n, c).mean(axis=0)

    # images -> faces

    def faces_in(self, image: np.ndarray, detect: bool | None = None) -> tuple[list[np.ndarray], list[Detection]]:
        """Face crops (S x S gray) of a BGR image and where they are, left to right.

        ``detect=None``: an image of at most 64 px a side is one pre-cropped face, larger ones are searched.
        """
        h, w = image.shape[:2]
        gray = to_gray(image)
        if detect is False or (detect is None and max(h, w) <= FACE_IMAGE_MAX):
            return [gray], [Detection((0, 0, w, h))]
        found = detect_faces(image, self.detector)
        margin = float(self.meta["face_margin"])
        return [crop_face(gray, d, self.input_size, margin) for d in found], found

    def _read(self, source: Any, color: str, name: str | None) -> tuple[np.ndarray, tuple[int, int]]:
        """The BGR image to analyse and the input's (width, height): larger for a huge array (see ``read_image``)."""
        image = read_image(source, color=color, name=name, max_side=self._work_side)
        shape = source.shape if isinstance(source, np.ndarray) else image.shape
        return image, (shape[1], shape[0])

    def predict_batch(self, images: Sequence[Any], *, detect: bool | None = None, tta: str = "none",
                      color: str = "bgr", names: Sequence[str | None] | None = None) -> list[ImageResult]:
        """One ImageResult per image, every face classified together; ``names`` name the images in results."""
        names = list(names) if names is not None else [None] * len(images)
        read = [self._read(image, color, name) for image, name in zip(images, names)]
        found = [self.faces_in(image, detect) for image, _ in read]
        probs = self.predict_faces([crop for crops, _ in found for crop in crops], tta)
        results, start = [], 0
        for source, name, (image, size), (_, detections) in zip(images, names, read, found):
            scale = size[0] / image.shape[1], size[1] / image.shape[0]
            faces = [self._face(p, d, scale) for p, d in zip(probs[start:start + len(detections)], detections)]
            results.append(ImageResult(source_name(source, name), image, faces, size))
            start += len(detections)
        return results

    def _face(self, probabilities: np.ndarray, detection: Detection, scale: tuple[float, float]) -> FaceResult:
        box = scaled_box(detection.box, *scale) if scale != (1.0, 1.0) else detection.box
        return face_result(probabilities, box, self.classes, self.unsure_threshold, detection.score)

    def predict(self, image: Any, *, detect: bool | None = None, tta: str = "none", color: str = "bgr",
                name: str | None = None) -> ImageResult:
        """The faces of one image (path, bytes, PIL image or array), left to right; empty when there is none."""
        return self.predict_batch([image], detect=detect, tta=tta, color=color, names=[name])[0]

    def annotate(self, image: np.ndarray, results: Sequence[FaceResult]) -> np.ndarray:
        """A BGR copy of ``image`` with each face's box and "label 87%" ("label? 41%" when unsure)."""
        return annotate(image, results)


def load(model: str | os.PathLike | None = None, *, detector: str = "auto", unsure_threshold: float | None = None,
         threads: int | None = None, batch_size: int = BATCH_SIZE, sha256: str | None = None) -> Recognizer:
    """A ready Recognizer. ``model``: None or "default" (bundled FER2013 model), another bundled name
    (the manifest's; ``ferkit predict --help`` lists them), or a .onnx path.

    The file's SHA-256 is checked first (against the manifest for bundled models, against
    ``<file>.sha256`` for others when it exists, and against ``sha256`` when given); ModelError
    says what is wrong and where.
    """
    found = model_file(model, sha256)
    session = open_session(found.path, threads)
    meta = session_meta(session, str(found.path))
    return Recognizer(session, meta, detector=detector, unsure_threshold=unsure_threshold, batch_size=batch_size,
                      source=str(found.path), sha256=found.sha256, pinned_by=found.pinned_by)
