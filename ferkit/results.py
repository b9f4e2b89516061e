"""What a prediction returns: one ``ImageResult`` per image, holding one ``FaceResult`` per face.

    result = recognizer.predict("photo.jpg")   # an ImageResult: iterate, index, len() it like a list of faces
    result.plot()                              # an annotated BGR copy of the image
    result.to_dict()                           # {"source", "width", "height", "faces": [{"box": {"x", "y", "w", "h"},
                                               #   "dominant_emotion", "emotions": {name: probability}, ...}]}
    result.to_rows()                           # one flat dict per face: a CSV row or a table row
    print(result.summary())                    # a few lines for a terminal

Boxes are (x, y, w, h) in pixels of the input image. The CLI, the app and video build their rows
and texts from these, so a face reads the same through every door.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .draw import annotate

ROW_DIGITS = 4  # decimals of probabilities in rows (CSV and tables)
FACE_ROW_FIELDS = ("x", "y", "w", "h", "label", "confidence", "unsure", "detection_score")  # then one per class


@dataclass
class FaceResult:
    """One face: where it is, what it shows, and how sure the model is (calibrated probabilities)."""

    box: tuple[int, int, int, int]   # x, y, w, h in pixels of the input image
    label: str                       # the top class
    confidence: float                # its calibrated probability
    probabilities: dict[str, float]  # every class, in the model's class order
    unsure: bool                     # confidence below the unsure threshold
    detection_score: float | None    # the detector's score; None for a face given pre-cropped

    @property
    def dominant_emotion(self) -> str:
        return self.label

    def to_dict(self) -> dict:
        """The compact record ``ferkit predict --json`` prints per face (box as [x, y, w, h])."""
        return {"box": list(self.box), "label": self.label, "confidence": self.confidence,
                "probabilities": dict(self.probabilities), "unsure": self.unsure,
                "detection_score": self.detection_score}

    def to_record(self) -> dict:
        """The face as ``ImageResult.to_dict`` lists it: box {x, y, w, h}, dominant_emotion, emotions."""
        x, y, w, h = self.box
        return {"box": {"x": x, "y": y, "w": w, "h": h}, "dominant_emotion": self.label,
                "confidence": self.confidence, "emotions": dict(self.probabilities), "unsure": self.unsure,
                "detection_score": self.detection_score}

    def to_row(self) -> dict:
        """One flat row: the FACE_ROW_FIELDS, then one column per class (probabilities rounded to ROW_DIGITS)."""
        score = None if self.detection_score is None else round(self.detection_score, ROW_DIGITS)
        values = (*self.box, self.label, round(self.confidence, ROW_DIGITS), self.unsure, score)
        return {**dict(zip(FACE_ROW_FIELDS, values)), **{c: round(p, ROW_DIGITS) for c, p in self.probabilities.items()}}

    def describe(self) -> str:
        """``happy   87.0%   next: sad 6.1%`` (and ``(unsure)``): one line for a terminal."""
        ranked = sorted(self.probabilities.items(), key=lambda kv: -kv[1])
        runner_up = f"   next: {ranked[1][0]} {ranked[1][1]:.1%}" if len(ranked) > 1 else ""
        return f"{self.label:<9} {self.confidence:6.1%}{runner_up}{'  (unsure)' if self.unsure else ''}"


def face_result(probabilities: np.ndarray, box: Sequence[int], classes: Sequence[str], unsure_threshold: float,
                detection_score: float | None = None) -> FaceResult:
    """The one place a FaceResult is made: (C,) calibrated probabilities of a face at ``box``."""
    top = int(np.argmax(probabilities))
    confidence = float(probabilities[top])
    return FaceResult(tuple(int(v) for v in box), classes[top], confidence,
                      {c: float(p) for c, p in zip(classes, probabilities)}, bool(confidence < unsure_threshold),
                      detection_score)


@dataclass(eq=False)
class ImageResult(Sequence):
    """The faces of one image, left to right; it is a sequence of its ``FaceResult``s ([] when there is none).

    ``image`` is the BGR uint8 image the faces were found in. It is the input's size, except for a
    huge non-uint8 array, converted at a smaller size: ``input_size`` (width, height) is then the
    input's, in whose pixels the boxes are.
    """

    source: str
    image: np.ndarray
    faces: list[FaceResult] = field(default_factory=list)
    input_size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index):
        return self.faces[index]

    def __iter__(self) -> Iterator[FaceResult]:
        return iter(self.faces)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ImageResult):
            return self.source == other.source and self.faces == other.faces
        if isinstance(other, (list, tuple)):
            return self.faces == list(other)
        return NotImplemented

    __hash__ = None  # mutable, like the list it stands for

    def __repr__(self) -> str:
        return f"ImageResult(source={self.source!r}, faces={len(self.faces)}, image={self.image.shape})"

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the input image, in pixels."""
        return self.input_size or (self.image.shape[1], self.image.shape[0])

    def with_unsure_threshold(self, threshold: float) -> "ImageResult":
        """The same faces with ``unsure`` decided at ``threshold`` (the app's slider), without running the model."""
        faces = [dataclasses.replace(f, unsure=f.confidence < threshold) for f in self.faces]
        return dataclasses.replace(self, faces=faces)

    def plot(self) -> np.ndarray:
        """A BGR copy of the image with each face's box and "label 87%" tag ("label? 41%" when unsure)."""
        (width, height), (h, w) = self.size, self.image.shape[:2]
        if (width, height) == (w, h):
            return annotate(self.image, self.faces)
        shown = [dataclasses.replace(f, box=scaled_box(f.box, w / width, h / height)) for f in self.faces]
        return annotate(self.image, shown)

    def to_dict(self) -> dict:
        """``{"source", "width", "height", "faces": [FaceResult.to_record(), ...]}`` (JSON-ready)."""
        width, height = self.size
        return {"source": self.source, "width": width, "height": height, "faces": [f.to_record() for f in self.faces]}

    def to_rows(self) -> list[dict]:
        """One flat row per face: source, face (1, 2, ...), then ``FaceResult.to_row()``."""
        return [{"source": self.source, "face": i, **f.to_row()} for i, f in enumerate(self.faces, start=1)]

    def summary(self) -> str:
        """``photo.jpg: 2 faces`` and one line per face (box, label, confidence, runner-up); or "no face found"."""
        if not self.faces:
            return f"{self.source}: no face found"
        lines = [f"{self.source}: {len(self.faces)} face{'s' if len(self.faces) > 1 else ''}"]
        lines += [f"  {i:>3}  box {','.join(map(str, f.box)):<19} {f.describe()}"
                  for i, f in enumerate(self.faces, start=1)]
        return "\n".join(lines)


def scaled_box(box: Sequence[int], sx: float, sy: float) -> tuple[int, int, int, int]:
    """An (x, y, w, h) box in pixels of an image ``sx`` x ``sy`` times as large."""
    x, y, w, h = box
    return round(x * sx), round(y * sy), round(w * sx), round(h * sy)


def row_fields(classes: Sequence[str]) -> list[str]:
    """The columns of ``ImageResult.to_rows()`` for a model with these classes, in order."""
    return ["source", "face", *FACE_ROW_FIELDS, *classes]
