"""Batch inference on Ray Data: ``ferkit predict SOURCE --engine ray --out results.parquet`` (ferkit[scale]).

    start_ray()                                        # this machine; start_ray("ray://head:10001") joins a cluster
    rows = predict_dataset(sorted(Path("photos").glob("*.jpg")) + ["clip.mp4"])   # lazy, one row per face
    write_rows(rows, "faces.parquet")                  # or rows.to_pandas(), rows.iter_batches(), ...

Images are read by Ray Data (``read_binary_files``) and decoded by ferkit on the actors, with the
same decoder as every other door; a video is cut into chunks of frames so several actors share a
long one. Each actor of the pool holds one ``Recognizer`` (one ONNX Runtime session, ``threads``
intra-op threads, as many OpenCV threads) and turns a batch of inputs into rows: the columns of
``ImageResult.to_rows()`` plus ``frame`` (None for an image) and ``error``. An image without faces
gives one row with face 0; an input that cannot be read gives one row with its error, so a bad file
never fails the job. Video frames are classified one by one, without the tracking and smoothing of
the local video path (tracks need the frames in order).

On a cluster every node needs ferkit[scale] installed, and the inputs and ``--out`` must be on
storage every node sees (a shared file system, or a cloud URI for ``--out``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from .errors import FerkitError, ImageError, VideoError

try:
    import ray
    import ray.data
except ImportError as e:  # FerkitError: `ferkit predict --engine ray` prints it as one line
    raise FerkitError(f"--engine ray needs Ray Data ({e}): pip install 'ferkit[scale]'") from e

from .images import read_image
from .infer import BATCH_SIZE, Recognizer, load
from .results import row_fields
from .video import MIN_DECODED, declared_frames, is_video, open_capture, read_frames
from .weights import model_file

OBJECT_STORE_BYTES = 256 * 1024**2  # a local session's object store: small enough for a 2-core CI box
IMAGES_PER_BATCH = 16               # images per actor call, as the local path groups them (a video chunk is one call)
FRAMES_PER_CHUNK = 300              # video frames per work item (10 s at 30 fps)
IO_CPUS = 0                         # reading files and writing results are I/O: they must not wait for the actors' CPUs
WRITE_TASKS = 2                     # at once; with no CPU request, Ray would start a process for each I/O task at once
OUT_FORMATS = (".parquet", ".csv")
INPUT_SCHEMA = pa.schema([("path", pa.string()), ("bytes", pa.binary()), ("start", pa.int64()), ("stop", pa.int64())])


def start_ray(address: str | None = None) -> bool:
    """Join the cluster at ``address``, or start Ray on this machine; whether this call started the session.

    A session already open in this process is used as it is.
    """
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False)
    return True


def row_schema(classes: tuple[str, ...]) -> pa.Schema:
    """Every output row's columns: source, frame, then ``row_fields`` after the source, then error."""
    types = {"source": pa.string(), "frame": pa.int64(), "face": pa.int64(), "x": pa.int64(), "y": pa.int64(),
             "w": pa.int64(), "h": pa.int64(), "label": pa.string(), "confidence": pa.float64(),
             "unsure": pa.bool_(), "detection_score": pa.float64()}
    fields = ["source", "frame", *row_fields(classes)[1:], "error"]
    return pa.schema([(name, types.get(name, pa.string() if name == "error" else pa.float64())) for name in fields])


class FaceRows:
    """The actors' callable: one Recognizer per actor; a batch of inputs (INPUT_SCHEMA) in, a table of rows out."""

    def __init__(self, model: str, sha256: str, threads: int, load_options: dict[str, Any], tta: str):
        cv2.setNumThreads(threads)
        self.recognizer: Recognizer = load(model, sha256=sha256, threads=threads, **load_options)
        self.tta = tta
        self.schema = row_schema(self.recognizer.classes)

    def __call__(self, batch: pa.Table) -> pa.Table:
        items = batch.to_pylist()
        rows = self.image_rows([item for item in items if item["start"] is None])
        for item in (item for item in items if item["start"] is not None):
            rows += self.chunk_rows(item["path"], item["start"], item["stop"])
        return pa.Table.from_pylist(rows, schema=self.schema)

    def image_rows(self, items: list[dict]) -> list[dict]:
        """Each image decoded, then all of them classified together (``predict_batch``)."""
        rows, decoded = [], []
        for item in items:
            try:
                decoded.append((item["path"], read_image(item["bytes"], name=item["path"])))
            except ImageError as e:
                rows.append(error_row(item["path"], None, str(e)))
        results = self.recognizer.predict_batch([image for _, image in decoded], tta=self.tta,
                                                names=[path for path, _ in decoded])
        for result in results:
            rows += [{"frame": None, **row} for row in result.to_rows()] or [no_face_row(result.source, None)]
        return rows

    def chunk_rows(self, path: str, start: int, stop: int | None) -> list[dict]:
        """The faces of frames ``start`` to ``stop`` (None: the end) of a video, classified ``IMAGES_PER_BATCH`` at a time."""
        rows, done = [], start
        try:
            for first, frames in frame_groups(path, start, stop):
                results = self.recognizer.predict_batch(frames, detect=True, tta=self.tta, names=[path] * len(frames))
                rows += [{"frame": first + i, **row} for i, result in enumerate(results) for row in result.to_rows()]
                done = first + len(frames)
        except VideoError as e:
            return rows + [error_row(path, done, str(e))]
        if stop is not None and done - start < MIN_DECODED * (stop - start):  # containers miscount by a frame or two
            rows.append(error_row(path, done, f"cannot decode {path}: decoding stopped at frame {done} of {stop}; "
                                              "the file is truncated or corrupt"))
        return rows


def frame_groups(path: str, start: int, stop: int | None) -> Iterator[tuple[int, list]]:
    """(index of the first frame, up to IMAGES_PER_BATCH BGR frames) from ``start`` until ``stop`` or the end."""
    capture = open_capture(path)
    try:
        if start:
            capture.set(cv2.CAP_PROP_POS_FRAMES, start)
        group, first = [], start
        for frame in read_frames(capture, None if stop is None else stop - start):
            group.append(frame)
            if len(group) == IMAGES_PER_BATCH:
                yield first, group
                group, first = [], first + len(group)
        if group:
            yield first, group
    finally:
        capture.release()


def error_row(source: str, frame: int | None, error: str) -> dict:
    return {"source": source, "frame": frame, "error": error}


def no_face_row(source: str, frame: int | None) -> dict:
    return {"source": source, "frame": frame, "face": 0}


# --- the dataset -----------------------------------------------------------------------------------


def video_chunks(path: Path, frames_per_chunk: int) -> list[dict]:
    """A video's work items: frame ranges of ``frames_per_chunk``; one item to the end when its length is unknown."""
    try:
        capture = open_capture(path)
    except VideoError:
        return [{"path": str(path), "start": 0, "stop": None}]  # the actor reports the error as a row
    try:
        total = declared_frames(capture)
    finally:
        capture.release()
    if total is None:
        return [{"path": str(path), "start": 0, "stop": None}]
    return [{"path": str(path), "start": s, "stop": min(s + frames_per_chunk, total)}
            for s in range(0, total, frames_per_chunk)]


def input_dataset(files: list[Path], images_per_batch: int, frames_per_chunk: int, reads: int) -> ray.data.Dataset:
    """Images as Ray Data reads them (path, bytes) and video chunks (path, start, stop), in one INPUT_SCHEMA dataset.

    A block is one actor call: about ``images_per_batch`` images, or one video chunk. ``reads``:
    read tasks at once (they request no CPU, so this is what bounds them).
    """
    images = [str(p) for p in files if not is_video(p)]
    chunks = [item for p in files if is_video(p) for item in video_chunks(p, frames_per_chunk)]
    parts = []
    if images:
        read = ray.data.read_binary_files(images, include_paths=True, num_cpus=IO_CPUS,
                                          concurrency=reads,
                                          override_num_blocks=math.ceil(len(images) / images_per_batch))
        parts.append(read.map_batches(as_input_table, batch_format="pyarrow", num_cpus=IO_CPUS))
    if chunks:
        parts.append(ray.data.from_arrow([pa.Table.from_pylist([chunk], schema=INPUT_SCHEMA) for chunk in chunks]))
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def as_input_table(batch: pa.Table) -> pa.Table:
    """Ray's (bytes, path) block in INPUT_SCHEMA (no frame range: a whole image)."""
    nulls = pa.nulls(len(batch), pa.int64())
    return pa.Table.from_arrays([batch["path"], batch["bytes"], nulls, nulls], schema=INPUT_SCHEMA)


def input_files(files: Sequence[str | os.PathLike]) -> list[Path]:
    """The files as absolute paths (Ray's workers do not run in this process's working directory); FerkitError
    naming those that are not files."""
    paths = [Path(f).resolve() for f in files]
    missing = [str(f) for f, p in zip(files, paths) if not p.is_file()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise FerkitError(f"not a file: {', '.join(missing[:3])}{more}")
    if not paths:
        raise FerkitError("no input to process")
    return paths


def max_actors(threads: int) -> int:
    """How many actors of ``threads`` CPUs the cluster holds now (at least one)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1) // threads))


def predict_dataset(files: Sequence[str | os.PathLike], *, model: str = "default", sha256: str | None = None,
                    actors: int | None = None, threads: int = 1, tta: str = "none", detector: str = "auto",
                    unsure_threshold: float | None = None, batch_size: int = BATCH_SIZE,
                    images_per_batch: int = IMAGES_PER_BATCH,
                    frames_per_chunk: int = FRAMES_PER_CHUNK) -> ray.data.Dataset:
    """One row per face of image and video ``files`` (``ferkit predict`` expands folders and globs), as a lazy Dataset.

    ``actors``: a fixed pool of that many actors, each holding one model with ``threads`` threads
    (default: a pool that grows from 1 to as many as the cluster's CPUs hold). The other options are
    those of ``ferkit.load`` and ``Recognizer.predict``. Starts Ray on this machine when no session
    is open (``start_ray``). Rows come in no particular order.
    """
    if threads < 1 or (actors is not None and actors < 1):
        raise ValueError(f"threads and actors must be >= 1, got {threads} and {actors}")
    paths = input_files(files)
    checked = model_file(model, sha256)  # fails here, once, rather than in every actor
    start_ray()
    load_options = {"detector": detector, "unsure_threshold": unsure_threshold, "batch_size": batch_size}
    most = actors or max_actors(threads)
    pool = ray.data.ActorPoolStrategy(size=actors) if actors else ray.data.ActorPoolStrategy(min_size=1, max_size=most)
    return input_dataset(paths, images_per_batch, frames_per_chunk, reads=most).map_batches(
        FaceRows, fn_constructor_args=(str(checked.path), checked.sha256, threads, load_options, tta),
        batch_size=None, batch_format="pyarrow", num_cpus=threads, compute=pool)


# --- outputs -----------------------------------------------------------------------------------------


def out_format(out: str) -> str:
    """"parquet" or "csv", from the suffix of ``--out``; FerkitError for any other."""
    suffix = Path(out).suffix.lower()
    if suffix not in OUT_FORMATS:
        raise FerkitError(f"--out {out}: name a .parquet or .csv folder (Ray writes one file per block into it)")
    return suffix[1:]


def is_uri(out: str) -> bool:
    return "://" in out


def checked_out(out: str) -> str:
    """``out`` ready for Ray's writers: absolute when local, and refused when it exists (nothing is ever overwritten)."""
    out_format(out)
    if is_uri(out):
        return out
    path = Path(out).resolve()
    if path.exists():
        raise FerkitError(f"--out {out} already exists: ferkit does not add to or replace earlier results; "
                          "choose another name or remove it")
    return str(path)


def write_rows(rows: ray.data.Dataset, out: str) -> str:
    """Write the rows into the folder ``out`` (.parquet or .csv, one file per block); the folder written."""
    target = checked_out(out)
    write = rows.write_parquet if out_format(out) == "parquet" else rows.write_csv
    write(target, mode="error", ray_remote_args={"num_cpus": IO_CPUS}, concurrency=WRITE_TASKS)
    return target


def read_counts(out: str) -> tuple[int, int, int]:
    """(inputs, faces, inputs or chunks that could not be read) in a written local result folder."""
    counted = pa.schema([("source", pa.string()), ("face", pa.int64()), ("error", pa.string())])
    fmt = out_format(out)
    if fmt == "csv":  # Arrow writes a null as an empty field; read it back as null
        fmt = pads.CsvFileFormat(convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    table = pads.dataset(out, format=fmt, schema=counted).to_table()
    faces = pc.sum(pc.greater(table["face"], 0)).as_py() or 0
    return len(pc.unique(table["source"])), faces, len(table) - table["error"].null_count


# --- the command ----------------------------------------------------------------------------------------


def run(args: argparse.Namespace, files: list[Path]) -> int:
    """``ferkit predict --engine ray``: the parsed options of ``ferkit predict`` and its expanded inputs."""
    if args.engine != "ray":
        raise FerkitError("--out and --address are options of --engine ray (the local engine writes --csv)")
    local_only = [option for option, value in (("--json", args.json), ("--csv", args.csv), ("--annotate", args.annotate))
                  if value]
    if local_only:
        raise FerkitError(f"{', '.join(local_only)}: options of the local engine; --engine ray writes --out")
    if not args.out:
        raise FerkitError("--engine ray writes its rows to a folder: add --out results.parquet (or .csv)")
    checked_out(args.out)
    started = start_ray(args.address)
    try:
        rows = predict_dataset(files, model=args.model, sha256=args.sha256, threads=args.threads or 1, tta=args.tta,
                               detector=args.detector, unsure_threshold=args.threshold, batch_size=args.batch_size)
        target = write_rows(rows, args.out)
        if not is_uri(target):
            inputs, faces, errors = read_counts(target)
            print(f"ferkit: {faces} face(s) in {inputs} input(s), {errors} could not be read: {target}",
                  file=sys.stderr)
    finally:
        if started:
            ray.shutdown()
    return 0
