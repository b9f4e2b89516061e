"""Annotation: each face's box and a "label 87%" tag ("label? 41%" when unsure), on a BGR image.

Tags are about as wide as their face, within bounds that follow the image size, and placed so they
stay readable in a crowd: above the box, else inside its top edge, else below it, else stacked
further away: the first spot that covers no other tag (nor, if it can, another face).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from .images import as_uint8_image

# Box colours (BGR) by emotion, from matplotlib's tab10; other class names get OTHER_COLOUR.
EMOTION_COLOURS = {
    "angry": (40, 39, 214), "disgust": (44, 160, 44), "fear": (189, 103, 148), "happy": (14, 201, 255),
    "sad": (180, 119, 31), "surprise": (14, 127, 255), "neutral": (160, 160, 160), "contempt": (75, 86, 140),
}
OTHER_COLOUR = (34, 189, 188)
FONT = cv2.FONT_HERSHEY_SIMPLEX
LABEL_SCALES = (0.4, 3.0)   # font scale bounds of a tag
LABEL_BOX_WIDTHS = 1.3      # a tag is at most this many box widths wide (down to the smallest scale)
LABEL_IMAGE_PX = 900        # ... and its scale at most (image long side / this)
STACK_LEVELS = 8            # how far (in tag heights) a tag may move away from its box to find room
DARK_INK_FROM = 140         # tags on colours brighter than this (0-255 luma) get black text

Rect = tuple[int, int, int, int]  # x, y, w, h


class Labelled(Protocol):
    """What drawing needs of a face (a FaceResult has it)."""

    box: tuple[int, int, int, int]
    label: str
    confidence: float
    unsure: bool


@dataclass(frozen=True)
class Tag:
    """A face's tag: its text, font scale and weight, and its size with padding (px)."""

    text: str
    scale: float
    weight: int
    width: int
    height: int
    pad: int
    baseline: int


def colour(label: str) -> tuple[int, int, int]:
    """The BGR colour of an emotion's boxes and tags."""
    return EMOTION_COLOURS.get(label, OTHER_COLOUR)


def plot_colour(label: str) -> tuple[float, float, float]:
    """The emotion's colour as a matplotlib RGB colour, so plots match annotated images."""
    b, g, r = colour(label)
    return r / 255, g / 255, b / 255


def tag_for(face: Labelled, image_shape: tuple[int, ...], prefix: str = "") -> Tag:
    """The tag of one face: "label 87%" ("label? 41%" when unsure), ``prefix`` first (a track's "#3")."""
    text = f"{prefix + ' ' if prefix else ''}{face.label}{'?' if face.unsure else ''} {face.confidence:.0%}"
    unit_width = cv2.getTextSize(text, FONT, 1.0, 2)[0][0]
    scale = float(np.clip(min(LABEL_BOX_WIDTHS * face.box[2] / unit_width, max(image_shape[:2]) / LABEL_IMAGE_PX),
                          *LABEL_SCALES))
    weight = max(1, round(scale * 1.5))
    (tw, th), baseline = cv2.getTextSize(text, FONT, scale, weight)
    pad = max(2, round(th * 0.3))
    return Tag(text, scale, weight, tw + 2 * pad, th + baseline + 2 * pad, pad, baseline)


def overlaps(a: Rect, b: Rect) -> bool:
    """Whether two (x, y, w, h) rectangles share pixels (touching edges do not count)."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _candidates(box: Rect, width: int, height: int, image_shape: tuple[int, ...]) -> list[Rect]:
    """Spots for a tag of this size, best first: above, inside the top edge, below, then further out."""
    h_img, w_img = image_shape[:2]
    x, y, w, h = box
    lefts = dict.fromkeys(int(np.clip(v, 0, max(0, w_img - width))) for v in (x, x + w - width))
    tops = [y - height, y, y + h] + [y - height * (k + 1) for k in range(1, STACK_LEVELS)] \
        + [y + h + height * k for k in range(1, STACK_LEVELS)]
    return [(left, top, width, height) for top in tops if 0 <= top <= h_img - height for left in lefts]


def place_tags(boxes: Sequence[Rect], sizes: Sequence[tuple[int, int]], image_shape: tuple[int, ...]) -> list[Rect]:
    """Where each tag goes (x, y, w, h), in the order of ``boxes``; the larger faces choose first."""
    placed: dict[int, Rect] = {}
    for i in sorted(range(len(boxes)), key=lambda i: -boxes[i][2] * boxes[i][3]):
        spots = _candidates(boxes[i], *sizes[i], image_shape)
        others = [b for j, b in enumerate(boxes) if j != i]
        free = [s for s in spots if not any(overlaps(s, p) for p in placed.values())]
        clear = [s for s in free if not any(overlaps(s, b) for b in others)]
        placed[i] = (clear or free or [_fallback(boxes[i], *sizes[i], image_shape)])[0]
    return [placed[i] for i in range(len(boxes))]


def _fallback(box: Rect, width: int, height: int, image_shape: tuple[int, ...]) -> Rect:
    """Above the box, pushed inside the image: where a tag goes when every spot is taken."""
    h_img, w_img = image_shape[:2]
    left = int(np.clip(box[0], 0, max(0, w_img - width)))
    return left, int(np.clip(box[1] - height, 0, max(0, h_img - height))), width, height


def draw_box(canvas: np.ndarray, face: Labelled) -> None:
    """One face's box on a BGR image, in place; the line width follows the image size."""
    x, y, w, h = face.box
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour(face.label), thickness, cv2.LINE_AA)


def draw_tag(canvas: np.ndarray, tag: Tag, spot: Rect, label: str) -> None:
    """A tag at ``spot``: the emotion's colour behind black or white text, whichever reads better."""
    x, y, w, h = spot
    fill = colour(label)
    cv2.rectangle(canvas, (x, y), (x + w, y + h), fill, cv2.FILLED)
    ink = (0, 0, 0) if 0.114 * fill[0] + 0.587 * fill[1] + 0.299 * fill[2] > DARK_INK_FROM else (255, 255, 255)
    cv2.putText(canvas, tag.text, (x + tag.pad, y + h - tag.pad - tag.baseline), FONT, tag.scale, ink, tag.weight,
                cv2.LINE_AA)


def draw_faces(canvas: np.ndarray, faces: Sequence[Labelled], prefixes: Sequence[str] | None = None) -> None:
    """Every face's box, then every tag, on a BGR image in place (``prefixes``: text before each label)."""
    tags = [tag_for(f, canvas.shape, p) for f, p in zip(faces, prefixes or [""] * len(faces))]
    spots = place_tags([f.box for f in faces], [(t.width, t.height) for t in tags], canvas.shape)
    for face in faces:
        draw_box(canvas, face)
    for face, tag, spot in zip(faces, tags, spots):
        draw_tag(canvas, tag, spot, face.label)


def annotate(image: np.ndarray, faces: Sequence[Labelled]) -> np.ndarray:
    """A BGR copy of ``image`` (gray or BGR) with each face's box and tag; the input is untouched."""
    canvas = as_uint8_image(np.asarray(image), "image to annotate")
    canvas = cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR) if canvas.ndim == 2 else canvas.copy()
    draw_faces(canvas, faces)
    return canvas
