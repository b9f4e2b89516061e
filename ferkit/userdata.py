"""A user's own labelled faces, in the two shapes people have: the Kaggle ``fer2013.csv`` and image folders.

    read_kaggle_csv("fer2013.csv")       # {"Training": FaceSet, "PublicTest": ..., ...}
    read_image_folder("faces/")          # faces/<class>/*: already-cropped faces
    load_face_folder("photos/")          # photos/<class>/*: photos; the largest face of each is cropped

Every one gives a ``ferkit.data.FaceSet``, as the FER2013 splits do, so training takes either.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np

from .data import IMAGE_SIZE, FaceSet
from .errors import DataError, ImageError
from .faces import FACE_IMAGE_MAX, FACE_SIZE, Detection, crop_face, detect_faces
from .images import IMAGE_SUFFIXES, decode_image, read_image, to_gray
from .labels import EMOTIONS, FERPLUS_EMOTIONS
from .meta import DEFAULT_MARGIN


def read_kaggle_csv(path: str | Path) -> dict[str, FaceSet]:
    """Read the Kaggle ``fer2013.csv`` (emotion,pixels,Usage) into its splits."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV not found: {path}")
    by_split: dict[str, tuple[list, list, list]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"emotion", "pixels"} <= set(reader.fieldnames):
            raise DataError(f"{path} is not a FER2013 CSV: it needs the columns emotion,pixels[,Usage]")
        for row_no, rec in enumerate(reader):
            try:
                pixels = np.array(rec["pixels"].split(), np.uint8)
                label = int(rec["emotion"])
            except (ValueError, AttributeError) as e:
                raise DataError(f"{path}:{row_no + 2}: bad emotion or pixels ({e})") from e
            if pixels.size != IMAGE_SIZE * IMAGE_SIZE or not 0 <= label < len(EMOTIONS):
                raise DataError(f"{path}:{row_no + 2}: expected 2304 pixels and emotion 0-6")
            images, labels, rows = by_split.setdefault(rec.get("Usage") or "Training", ([], [], []))
            images.append(pixels.reshape(IMAGE_SIZE, IMAGE_SIZE))
            labels.append(label)
            rows.append(row_no)
    return {
        split: FaceSet(np.stack(images), np.array(labels, np.int64), EMOTIONS, np.array(rows, np.int64))
        for split, (images, labels, rows) in by_split.items()
    }


def list_image_folder(root: str | Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """Image paths and class indices under ``root/<class>/``; classes are the sub-folder names.

    Folders named like our emotions keep the canonical order; other names follow, sorted.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    known = [c for c in FERPLUS_EMOTIONS if c in names]
    classes = tuple(known + [n for n in names if n not in known])
    paths, labels = [], []
    for index, name in enumerate(classes):
        for p in sorted((root / name).rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                paths.append(p)
                labels.append(index)
    if not paths:
        raise DataError(f"no images found under {root}/<class>/ (looked for {', '.join(IMAGE_SUFFIXES)})")
    return paths, labels, classes


def read_image_folder(root: str | Path, size: int = IMAGE_SIZE) -> FaceSet:
    """Already-cropped faces in ``root/<class>/*``, resized to ``size`` grayscale. Bad files raise DataError."""
    paths, labels, classes = list_image_folder(root)
    images = []
    for p in paths:
        try:
            gray = to_gray(decode_image(p))
        except ImageError as e:
            raise DataError(f"cannot use {p}: {e}") from e
        images.append(cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA))
    return FaceSet(np.stack(images), np.array(labels, np.int64), classes, np.full(len(paths), -1), None,
                   [str(p) for p in paths])


def largest_face(image_bgr: np.ndarray, detector: str = "auto") -> Detection | None:
    """The detection with the largest box (a labelled photo shows the face it is labelled for), None without one."""
    found = detect_faces(image_bgr, detector)
    return max(found, key=lambda d: d.box[2] * d.box[3]) if found else None


def folder_face(path: Path, size: int, margin: float, detector: str) -> np.ndarray | None:
    """The face of one image of a folder, cropped as at inference; None when it shows none."""
    image = read_image(path)
    if max(image.shape[:2]) <= FACE_IMAGE_MAX:
        return cv2.resize(to_gray(image), (size, size), interpolation=cv2.INTER_AREA)
    detection = largest_face(image, detector)
    return None if detection is None else crop_face(image, detection, size, margin)


def load_face_folder(root: str | Path, size: int = FACE_SIZE, margin: float = DEFAULT_MARGIN,
                     detector: str = "auto") -> FaceSet:
    """Faces of ``root/<class>/*`` images, cropped as at inference; classes are the sub-folder names.

    An image of at most 64 px a side is taken as an already-cropped face; in larger ones the
    largest detected face is cropped. Unreadable and face-less images are skipped with one
    warning line each on stderr; DataError when a class is left with no face.
    """
    from tqdm import tqdm

    paths, labels, classes = list_image_folder(root)
    faces, kept_labels, kept_paths = [], [], []
    for path, label in zip(tqdm(paths, desc="reading faces", unit="image", file=sys.stderr, leave=False,
                                disable=None), labels):
        try:
            face = folder_face(path, size, margin, detector)
        except ImageError as e:
            tqdm.write(f"ferkit: skipped {e}", file=sys.stderr)
            continue
        if face is None:
            tqdm.write(f"ferkit: skipped {path}: no face found", file=sys.stderr)
            continue
        faces.append(face)
        kept_labels.append(label)
        kept_paths.append(str(path))
    found = np.bincount(np.array(kept_labels, np.int64), minlength=len(classes))
    empty = [f"{Path(root) / c}/" for c, n in zip(classes, found) if n == 0]
    if empty:
        raise DataError(f"no usable face image in {', '.join(empty)} ({len(paths) - len(kept_paths)} of "
                        f"{len(paths)} images skipped): add face photos there or remove the folder")
    return FaceSet(np.stack(faces), np.array(kept_labels, np.int64), classes, np.full(len(faces), -1), None,
                   kept_paths)
