"""Where ``ferkit predict`` writes (the faces table, video timelines, annotated copies) and the names it refuses.

One input: what ``--csv`` and ``--annotate`` name is the file written. Several inputs: ``--annotate``
is a folder of ``<name>_annotated.<suffix>``; ``--csv`` stays one file while it holds one table (the
faces of any number of images, each row with its source, or the timeline of one video alone) and is
a folder (``faces.csv`` + ``<video name>.csv``) when a video shares the run with other inputs. A name
with a file's suffix where a folder is needed is refused, and so is an output that is one of the
inputs (the same path, or the same file through a link): ferkit never writes over its inputs.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from .errors import FerkitError, ImageError
from .fileio import atomic_open, write_bytes
from .images import IMAGE_SUFFIXES
from .results import ImageResult, row_fields
from .video import ENCODERS, VIDEO_SUFFIXES, is_video

IMAGES_TABLE = "faces"     # the images' table in a --csv folder: faces.csv
ANNOTATED_VIDEO = ".mp4"   # an annotated video in an --annotate folder (H.264)
FALLBACK_IMAGE = ".png"    # an annotated image whose own format OpenCV cannot write


class RefusedOutput(FerkitError):
    """An output name that this run cannot honour (it names an input, or a file where a folder is needed)."""


@dataclass
class Outputs:
    """Every file one run writes: the images' table, each video's timeline, each input's annotated copy."""

    table: Path | None = None
    timelines: dict[Path, Path] = field(default_factory=dict)
    annotated: dict[Path, Path] = field(default_factory=dict)
    annotate_folder: Path | None = None  # set when --annotate is a folder

    def named(self) -> dict[Path, str]:
        """Each output path and the option that named it."""
        paths = {target: "--annotate" for target in self.annotated.values()}
        paths |= {target: "--csv" for target in [*self.timelines.values(), *([self.table] if self.table else [])]}
        return paths


def plan_outputs(inputs: list[Path], table: str | None, annotate: str | None) -> Outputs:
    """Where this run writes; RefusedOutput (one line) for a name it cannot honour."""
    images_table, timelines = csv_targets(inputs, Path(table)) if table else (None, {})
    out = Path(annotate) if annotate else None
    annotated = annotate_targets(inputs, out) if out else {}
    folder = None if out is None or annotates_one_file(inputs, out) else out
    outputs = Outputs(images_table, timelines, annotated, folder)
    refusal = overwritten_input(outputs.named(), inputs)
    if refusal:
        raise RefusedOutput(refusal)
    return outputs


def numbered(folder: Path, stem: str, suffix: str, taken: set[Path]) -> Path:
    """``folder/stem+suffix``, or ``stem-2``, ``stem-3``... when an earlier input of the run took that name."""
    target, n = folder / f"{stem}{suffix}", 2
    while target in taken:
        target, n = folder / f"{stem}-{n}{suffix}", n + 1
    taken.add(target)
    return target


def annotates_one_file(inputs: list[Path], out: Path) -> bool:
    """Whether ``--annotate out`` is itself the file written: one input, and a name with a suffix that is no folder."""
    return len(inputs) == 1 and not out.is_dir() and bool(out.suffix)


def annotate_targets(inputs: list[Path], out: Path) -> dict[Path, Path]:
    """Each input's annotated copy: ``out`` itself for one input (unless it is a folder), else out/<name>_annotated."""
    if annotates_one_file(inputs, out):
        check_single_target(inputs[0], out)
        return {inputs[0]: out}
    if len(inputs) > 1 and not out.is_dir() and out.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
        raise RefusedOutput(f"--annotate {out} names a file, but {len(inputs)} inputs need an annotated copy each: "
                            f"name a folder, e.g. --annotate {out.with_suffix('')}/")
    taken: set[Path] = set()
    return {path: numbered(out, f"{path.stem}_annotated", annotated_suffix(path), taken) for path in inputs}


def annotated_suffix(path: Path) -> str:
    if is_video(path):
        return ANNOTATED_VIDEO
    return path.suffix.lower() if cv2.haveImageWriter(f"x{path.suffix}") else FALLBACK_IMAGE


def check_single_target(source: Path, target: Path) -> None:
    """RefusedOutput unless ``target``'s suffix is one the input's annotated copy can be written as."""
    if is_video(source):
        if target.suffix.lower() not in ENCODERS:
            raise RefusedOutput(f"--annotate {target}: an annotated video is written as {', '.join(ENCODERS)}; "
                                "choose one of those suffixes")
    elif is_video(target) or not cv2.haveImageWriter(str(target)):
        raise RefusedOutput(f"--annotate {target}: OpenCV cannot write {target.suffix} images; use .jpg or .png")


def csv_targets(inputs: list[Path], table: Path) -> tuple[Path | None, dict[Path, Path]]:
    """(the images' table or None, each video's timeline) for ``--csv table``."""
    videos = [p for p in inputs if is_video(p)]
    images = len(inputs) - len(videos)
    if not table.is_dir() and (not videos or (len(videos) == 1 and not images)):
        return (None, {videos[0]: table}) if videos else (table, {})
    if table.suffix and not table.is_dir():
        tables = f"{len(videos) + 1} tables (the images' faces, a timeline per video)" if images else \
            f"{len(videos)} timelines"
        raise RefusedOutput(f"--csv {table} names a file, but this run writes {tables}: name a folder, "
                            f"e.g. --csv {table.with_suffix('')}/")
    taken: set[Path] = set()
    images_table = numbered(table, IMAGES_TABLE, ".csv", taken) if images else None
    return images_table, {video: numbered(table, video.stem, ".csv", taken) for video in videos}


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (the same path, a symlink or a hard link to it)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def overwritten_input(outputs: dict[Path, str], inputs: list[Path]) -> str | None:
    """A one-line refusal when an output would replace an input, else None."""
    for output, option in outputs.items():
        for source in inputs:
            if same_file(output, source):
                named = "" if output == source else f" (the same file as the input {source})"
                return (f"{option} {output} would overwrite an input{named}: ferkit never writes over its "
                        "inputs; choose another name")
    return None


def write_csv(path: Path, classes: tuple[str, ...], rows: list[dict]) -> None:
    """The images' table: ``ImageResult.to_rows()`` of every image, written atomically."""
    with atomic_open(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=row_fields(classes), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_annotated(result: ImageResult, target: Path) -> None:
    """``result.plot()`` encoded as ``target``'s suffix says, written atomically."""
    ok, encoded = cv2.imencode(target.suffix, result.plot())
    if not ok:
        raise ImageError(f"cannot encode an annotated image as {target.suffix}")
    write_bytes(target, encoded.tobytes())
