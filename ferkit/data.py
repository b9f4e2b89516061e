"""FER2013 and FER+ data: read straight from the shipped tars, cached as .npz after the first decode.

A user's own data (the Kaggle ``fer2013.csv``, image folders ``<root>/<class>/``) is read by
``ferkit.userdata`` into the same ``FaceSet``.
"""

from __future__ import annotations

import csv
import hashlib
import sys
import tarfile
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .errors import DataError
from .fileio import atomic_open, sha256_of
from .labels import EMOTIONS, FERPLUS_EMOTIONS, FERPLUS_VOTE_COLUMNS, SPLITS
from .settings import cache_dir, cache_dir_problem, data_dir

IMAGE_SIZE = 48
FERPLUS_CSV = "fer2013new.csv"
# The archives of ../shared/data/fer2013 (its README.md): sizes and SHA-256, checked when a split is first decoded.
SPLIT_SIZES = {"Training": 28709, "PublicTest": 3589, "PrivateTest": 3589}
KNOWN_TARS = {
    "Training": "93df8eef2df8675efabcf4b74c7d853d6452abc35ef47f6bff7e2f009e9c2d24",
    "PublicTest": "f29b72ee20833da5ab4a11ac4988c4c5c40d8873a36ad8ec804e573945590f81",
    "PrivateTest": "79fa7640b79f946963125879f3763a10b467ffdb2763b52525055c0baf417cc6",
}
_FIX_HINT = "set FERKIT_DATA or pass --data to the folder that holds Training.tar.gz, PublicTest.tar.gz, PrivateTest.tar.gz"


@dataclass
class FaceSet:
    """Faces of one split: ``images`` (N, 48, 48) uint8, ``labels`` (N,) int64 indices into ``classes``.

    ``rows`` are the 0-based rows of fer2013.csv (or -1 for a user's data); ``votes`` (N, C) holds
    FER+ annotator votes when known, else None.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...] = EMOTIONS
    rows: np.ndarray | None = None
    votes: np.ndarray | None = None
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "FaceSet":
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return FaceSet(
            self.images[index], self.labels[index], self.classes, pick(self.rows), pick(self.votes),
            [self.sources[i] for i in np.arange(len(self))[index]] if self.sources else [],
        )

    def counts(self) -> np.ndarray:
        """Number of faces per class, in ``classes`` order."""
        return np.bincount(self.labels, minlength=len(self.classes))


def _tar_path(split: str, root: Path) -> Path:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    path = root / f"{split}.tar.gz"
    if not path.is_file():
        raise DataError(f"FER2013 split {split} not found at {path}: {_FIX_HINT}")
    return path


def _cache_file(source: Path, tag: str) -> Path:
    problem = cache_dir_problem(cache_dir())
    if problem:
        raise DataError(problem)
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{tag}".encode()).hexdigest()[:16]
    return cache_dir() / f"{source.stem.split('.')[0]}-{key}.npz"


def decode_gray(data: bytes, where: str) -> np.ndarray:
    """Decode image bytes to a 2-D uint8 array, or raise DataError naming ``where``."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) if data else None
    if image is None:
        raise DataError(f"cannot decode image {where}: the file is corrupt or not an image")
    return image


def _read_members(path: Path) -> list[tuple[str, bytes]]:
    """Every file member of the tar, read to the archive's end so that gzip checks its CRC: a damaged copy is
    refused instead of silently giving fewer or altered faces."""
    members: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(path) as tf:
            for m in tf:
                if m.isfile():
                    members.append((m.name, tf.extractfile(m).read()))
            while tf.fileobj.read(1 << 20):  # the rest of the stream: gzip verifies its CRC and length at the end
                pass
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e} (the archive is corrupt or truncated; copy it again)") from e
    if not members:
        raise DataError(f"{path} holds no images: the archive is empty or not a FER2013 split")
    return members


def _check_known(path: Path, split: str, n: int) -> None:
    """Warn (one line) when the tar is not the FER2013 file ferkit knows: a user's own subset still loads."""
    if sha256_of(path) != KNOWN_TARS.get(split):
        print(f"ferkit: warning: {path} is not the FER2013 {split} archive ferkit knows (SHA-256 differs): read "
              f"{n} faces, the original has {SPLIT_SIZES[split]}", file=sys.stderr)


def _read_tar(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    members = _read_members(path)

    def parse(item: tuple[str, bytes]) -> tuple[int, int, np.ndarray]:
        name, data = item
        parts = name.split("/")
        if len(parts) != 3 or parts[1] not in EMOTIONS:
            raise DataError(f"unexpected member {name!r} in {path}: expected <Split>/<class>/<row>.webp")
        image = decode_gray(data, f"{name} in {path}")
        if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
            image = cv2.resize(image, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
        return int(Path(parts[2]).stem), EMOTIONS.index(parts[1]), image

    with ThreadPoolExecutor() as pool:
        parsed = sorted(pool.map(parse, members), key=lambda t: t[0])
    rows = np.array([p[0] for p in parsed], np.int64)
    if len(np.unique(rows)) != len(rows):
        raise DataError(f"{path} holds the same fer2013.csv row twice: the archive is not a FER2013 split")
    labels = np.array([p[1] for p in parsed], np.int64)
    images = np.stack([p[2] for p in parsed])
    return images, labels, rows


def load_split(split: str, data: str | Path | None = None, cache: bool = True) -> FaceSet:
    """One FER2013 split, sorted by fer2013.csv row; decoded once, then loaded from the cache."""
    path = _tar_path(split, data_dir(data))
    cached = _cache_file(path, "v1")
    if cache and cached.is_file():
        try:
            with np.load(cached) as z:
                return FaceSet(z["images"], z["labels"], EMOTIONS, z["rows"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            cached.unlink(missing_ok=True)  # a broken cache is rebuilt, never trusted
    images, labels, rows = _read_tar(path)
    _check_known(path, split, len(rows))
    if cache:
        with atomic_open(cached, "wb") as f:
            np.savez(f, images=images, labels=labels, rows=rows)
    return FaceSet(images, labels, EMOTIONS, rows)


# --- FER+ -------------------------------------------------------------------------------------


def read_ferplus_votes(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse fer2013new.csv into (votes (N, 8) in FERPLUS_EMOTIONS order, unknown+NF (N, 2), has_name (N,)).

    Row i of the result describes fer2013.csv row i.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"FER+ votes not found at {path}: {_FIX_HINT} (it must also hold {FERPLUS_CSV})")
    order = [FERPLUS_EMOTIONS.index(FERPLUS_VOTE_COLUMNS[c]) for c in FERPLUS_VOTE_COLUMNS]
    votes, extra, named = [], [], []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        expected = ["Usage", "Image name", *FERPLUS_VOTE_COLUMNS, "unknown", "NF"]
        if header != expected:
            raise DataError(f"{path} is not a FER+ votes file: header {header} != {expected}")
        for line_no, rec in enumerate(reader, start=2):
            if len(rec) != len(expected):
                raise DataError(f"{path}:{line_no}: {len(rec)} columns where {len(expected)} are expected "
                                "(the file is truncated or damaged; copy it again)")
            try:
                counts = [int(x) for x in rec[2:12]]
            except (ValueError, IndexError) as e:
                raise DataError(f"{path}:{line_no}: bad vote counts {rec[2:12]}") from e
            row = np.zeros(len(FERPLUS_EMOTIONS), np.float32)
            row[order] = counts[:8]
            votes.append(row)
            extra.append(counts[8:10])
            named.append(bool(rec[1].strip()))
    return np.array(votes), np.array(extra, np.float32), np.array(named)


def ferplus_majority(votes: np.ndarray, extra: np.ndarray, named: np.ndarray) -> np.ndarray:
    """FER+ majority label per row, or -1 where the FER+ protocol drops the row.

    Dropped: no image name; NF (not a face) has the most votes; ``unknown`` has the most votes;
    a tie for the most votes among the 8 emotions.
    """
    top = votes.max(axis=1)
    tied = (votes == top[:, None]).sum(axis=1) > 1
    unknown, not_face = extra[:, 0], extra[:, 1]
    keep = named & (top > 0) & ~tied & (top > unknown) & (top > not_face)
    return np.where(keep, votes.argmax(axis=1), -1)


def load_ferplus_split(split: str, data: str | Path | None = None) -> FaceSet:
    """A FER2013 split relabelled by FER+ (8 classes), rows dropped per the FER+ rules; ``votes`` kept."""
    root = data_dir(data)
    faces = load_split(split, root)
    votes, extra, named = read_ferplus_votes(root / FERPLUS_CSV)
    if len(votes) <= faces.rows.max():
        raise DataError(f"{root / FERPLUS_CSV} has {len(votes)} rows but {split} needs row {faces.rows.max()}")
    majority = ferplus_majority(votes, extra, named)[faces.rows]
    keep = majority >= 0
    kept = faces.subset(keep)
    return FaceSet(kept.images, majority[keep], FERPLUS_EMOTIONS, kept.rows, votes[faces.rows][keep])


def ferplus_votes_as_fer2013(votes: np.ndarray) -> np.ndarray:
    """Map 8-class FER+ votes to the 7 FER2013 classes (contempt dropped), as distributions."""
    seven = votes[:, : len(EMOTIONS)]
    total = seven.sum(axis=1, keepdims=True)
    return np.divide(seven, total, out=np.full_like(seven, 1.0 / len(EMOTIONS)), where=total > 0)


def class_table(faces: FaceSet) -> list[tuple[str, int, float]]:
    """(class, count, percent) rows, in class order."""
    counts = faces.counts()
    total = max(int(counts.sum()), 1)
    return [(name, int(n), 100.0 * n / total) for name, n in zip(faces.classes, counts)]
