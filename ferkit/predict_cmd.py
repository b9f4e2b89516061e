"""Find faces and their emotions in images, folders, globs and videos.

    ferkit predict photo.jpg                          # a table on the terminal
    ferkit predict photos/ --recursive --csv faces.csv --annotate annotated/
    ferkit predict "shots/*.png" --json > faces.jsonl # one JSON object per image
    ferkit predict clip.mp4 --annotate clip_out.mp4 --csv timeline.csv

Unreadable files are reported on stderr (one line each) and skipped. An output never replaces an
input (the same path, or the same file through a link): such a run is refused. Exit status: 0
when at least one input was processed, 1 when none could be (or the model cannot be loaded), 2 on
a usage error or a refused output.
"""

from __future__ import annotations

import argparse
import difflib
import glob
import json
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from .errors import FerkitError, ImageError
from .faces import DETECTORS
from .images import IMAGE_SUFFIXES, header_pixels, read_image
from .infer import BATCH_SIZE, Recognizer, load
from .predict_outputs import Outputs, RefusedOutput, plan_outputs, write_annotated, write_csv
from .results import ImageResult
from .tta import TTA_MODES
from .video import VIDEO_SUFFIXES, analyse_video, is_video
from .weights import SHA256_PATTERN, model_choices, sidecar_path

IMAGES_PER_BATCH = 16  # images whose faces are classified in one go
# Decoded pixels held at once (~300 MB as BGR): two of the largest images ferkit reads. A folder of
# 49 MP photos is read two by two, not sixteen at a time (once a 2.8 GB peak).
PIXELS_IN_FLIGHT = 100_000_000


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("ferkit predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image files, folders, globs (quoted) or video files")
    p.add_argument("--model", default="default",
                   help=f"a bundled model ({model_choices()}), an .onnx file, or a ferkit train run folder or its "
                        "best.pt (exported to <run>/<name>.onnx on first use, needs torch) (default: default)")
    p.add_argument("--sha256", metavar="HEX", default=None,
                   help="the SHA-256 the model file must have; a mismatch stops the run (default: the manifest's "
                        "for bundled models, <model>.sha256 beside a user's model when there is one)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per input instead of a table (default: a table)")
    p.add_argument("--csv", metavar="PATH", default=None,
                   help="write one row per face (source, face, box, label, confidence, unsure, class probabilities), "
                        "or a video's timeline (a row per face per frame). PATH is the file when it holds one table: "
                        "any number of images, or one video alone; a video with other inputs needs a folder, which "
                        "gets faces.csv and <video name>.csv (default: no CSV)")
    p.add_argument("--annotate", metavar="PATH", default=None,
                   help="write copies with boxes and labels (videos as H.264 .mp4): PATH is the file for one input, "
                        "else a folder of <name>_annotated.<suffix> (default: none written); never one of the inputs")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                   help=f"faces per ONNX Runtime call (default: {BATCH_SIZE})")
    p.add_argument("--detector", default="auto", choices=DETECTORS,
                   help="face detector: yunet (one or two passes chosen by image size), haar (OpenCV's cascade) "
                        "or auto (yunet) (default: auto)")
    p.add_argument("--threshold", type=float, default=None, metavar="P",
                   help="mark a face unsure when its top probability is below P (default: the model's own)")
    p.add_argument("--tta", default="none", choices=TTA_MODES,
                   help="test-time augmentation: none, flip (2 views) or crops (10 views) (default: none)")
    p.add_argument("--recursive", action="store_true",
                   help="look into sub-folders, and let ** in globs match folders (default: off)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: one per core)")
    p.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local: in this process; ray: Ray Data actors on this machine or a cluster, one row per face "
                        "written to --out (needs ferkit[scale]; --threads is then per actor, default 1) "
                        "(default: local)")
    p.add_argument("--address", default=None,
                   help="with --engine ray: the Ray cluster to join, e.g. ray://head:10001 (default: start Ray here)")
    p.add_argument("--out", metavar="FOLDER", default=None,
                   help="with --engine ray: a .parquet or .csv folder, one file per block "
                        "(default: none; required with --engine ray)")
    return p


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """argparse, plus a "did you mean" for mistyped options."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        known = [o for action in parser._actions for o in action.option_strings]
        hints = [f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u.split("=")[0], known, n=1)) else u
                 for u in unknown]
        parser.error(f"unrecognized arguments: {' '.join(hints)}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.sha256 is not None and not SHA256_PATTERN.fullmatch(args.sha256):
        parser.error(f"--sha256 {args.sha256}: expected 64 hex digits (the output of sha256sum)")
    return args


# --- inputs ---------------------------------------------------------------------------------------


def folder_files(folder: Path, recursive: bool) -> list[Path]:
    """Images and videos in a folder (sorted; hidden files skipped)."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)


def expand_sources(sources: list[str], recursive: bool) -> tuple[list[Path], list[str]]:
    """The input files named by SOURCE arguments, in order and without repeats, and one problem per bad argument."""
    files: list[Path] = []
    problems: list[str] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = folder_files(path, recursive)
            if not found:
                problems.append(f"{source}: no images or videos in this folder"
                                + ("" if recursive else " (--recursive looks into sub-folders)"))
        elif path.exists():
            found = [path]
        elif glob.has_magic(source):
            found = [Path(p) for p in sorted(glob.glob(source, recursive=recursive)) if Path(p).is_file()]
            if not found:
                problems.append(f"{source}: no file matches this pattern")
        else:
            found = []
            problems.append(f"{source}: not found")
        files += found
    return list(dict.fromkeys(files)), problems


def image_groups(paths: list[Path]) -> Iterator[list[Path]]:
    """The paths in order, in groups of at most IMAGES_PER_BATCH images and PIXELS_IN_FLIGHT pixels by their
    headers (read without decoding); an image larger than the budget makes a group alone."""
    group: list[Path] = []
    pixels = 0
    for path in paths:
        size = header_pixels(path)
        if group and (len(group) == IMAGES_PER_BATCH or pixels + size > PIXELS_IN_FLIGHT):
            yield group
            group, pixels = [], 0
        group.append(path)
        pixels += size
    if group:
        yield group


# --- messages --------------------------------------------------------------------------------------


def unpinned_note(recognizer: Recognizer) -> str | None:
    """A note with the model's SHA-256 when nothing pinned it (a user's .onnx without a sidecar)."""
    if recognizer.pinned_by is not None:
        return None
    return (f"ferkit: note: {recognizer.source} has no {sidecar_path(recognizer.source).name} beside it, so it was not "
            f"checked; its SHA-256 is {recognizer.sha256}: pass --sha256 {recognizer.sha256} to pin it")


def named_first(name: str, message: str) -> str:
    """``message`` as "name: reason". The readers' messages name the file anywhere ("cannot decode X: ...",
    "X is not an image"); a skip line names it first, then why."""
    before, found, after = message.partition(name)
    if not found:
        return f"{name}: {message}"
    reason = after.lstrip(" :") if after.strip(" :") else before.rstrip(" :")
    return f"{name}: {reason.removeprefix('is ')}"


# --- the run -----------------------------------------------------------------------------------------


class Run:
    """Counts and outputs of one ``ferkit predict`` call."""

    def __init__(self, args: argparse.Namespace, recognizer: Recognizer, outputs: Outputs):
        self.args = args
        self.recognizer = recognizer
        self.outputs = outputs
        self.rows: list[dict] = []
        self.done = 0
        self.failed = 0
        self.annotated_images = 0

    def fail(self, path: Path, message: str) -> None:
        self.failed += 1
        tqdm.write(f"ferkit: skipped {named_first(str(path), message)}", file=sys.stderr)

    def wrote(self, path: Path, what: str) -> None:
        tqdm.write(f"ferkit: wrote {path} ({what})", file=sys.stderr)

    def emit(self, source: Path, payload: dict, text: str) -> None:
        self.done += 1
        record = {"source": str(source), "model_sha256": self.recognizer.sha256, **payload}
        tqdm.write(json.dumps(record) if self.args.json else text, file=sys.stdout)

    def images(self, paths: list[Path]) -> None:
        """Each image decoded once, then classified with the others of its group (bounded by pixels)."""
        with tqdm(total=len(paths), unit="image", file=sys.stderr, disable=True if len(paths) < 2 else None) as bar:
            for group in image_groups(paths):
                self.classify(self.decoded(group))  # the group's images are freed before the next is decoded
                bar.update(len(group))

    def decoded(self, group: list[Path]) -> list[tuple[Path, np.ndarray]]:
        decoded = []
        for path in group:
            try:
                decoded.append((path, read_image(path)))
            except ImageError as e:
                self.fail(path, str(e))
        return decoded

    def classify(self, decoded: list[tuple[Path, np.ndarray]]) -> None:
        results = self.recognizer.predict_batch([image for _, image in decoded], tta=self.args.tta,
                                                names=[str(path) for path, _ in decoded])
        for (path, _), result in zip(decoded, results):
            self.image_done(path, result)

    def image_done(self, path: Path, result: ImageResult) -> None:
        target = self.outputs.annotated.get(path)
        if target is not None:
            write_annotated(result, target)
            self.annotated_images += 1
            if self.outputs.annotate_folder is None:
                self.wrote(target, f"{path} annotated")
        self.rows += result.to_rows()
        self.emit(path, {"faces": [f.to_dict() for f in result]}, result.summary())

    def video(self, path: Path) -> None:
        csv_path, annotate_path = self.outputs.timelines.get(path), self.outputs.annotated.get(path)
        with tqdm(unit="frame", desc=path.name, file=sys.stderr, disable=None) as bar:
            def progress(done: int, total: int | None) -> None:
                bar.total = total
                bar.update(done - bar.n)

            try:
                result = analyse_video(self.recognizer, path, csv_path=csv_path, annotate_path=annotate_path,
                                       progress=progress)
            except FerkitError as e:
                self.fail(path, str(e))
                return
        if result.warning:
            tqdm.write(f"ferkit: warning: {result.warning}", file=sys.stderr)
        if csv_path is not None:
            self.wrote(csv_path, f"the timeline of {path}: {len(result.rows)} rows")
        if annotate_path is not None:
            self.wrote(annotate_path, f"{path} annotated, {result.frames} frames")
        tracks = [t.to_dict() for t in result.tracks]
        lines = [f"{path}: video, {result.frames} frames ({result.duration_s:.1f} s), {len(tracks)} face track(s)"]
        lines += [f"  track {t['track']:>3}  {t['first_s']:7.2f}-{t['last_s']:.2f} s  mostly {t['dominant']}"
                  for t in tracks]
        summary = {k: v for k, v in result.to_dict().items() if k != "rows"}
        self.emit(path, {"video": summary}, "\n".join(lines))

    def finish(self) -> None:
        """The images' table, and where the annotated images went."""
        table, folder = self.outputs.table, self.outputs.annotate_folder
        if table is not None:
            write_csv(table, self.recognizer.classes, self.rows)
            self.wrote(table, f"{len(self.rows)} row(s), one per face")
        if folder is not None and self.annotated_images:
            self.wrote(folder, f"{self.annotated_images} annotated images, named <name>_annotated.<suffix>")


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parse_args(parser, argv)
    inputs, problems = expand_sources(args.sources, args.recursive)
    try:
        outputs = plan_outputs(inputs, args.csv, args.annotate)
    except RefusedOutput as e:
        print(f"ferkit: error: {e}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"ferkit: skipped {problem}", file=sys.stderr)
    if not inputs:
        print("ferkit: error: no input to process", file=sys.stderr)
        return 1
    if args.engine == "ray" or args.out or args.address:
        from .ray_predict import run as run_on_ray

        return run_on_ray(args, inputs)
    recognizer = load(args.model, detector=args.detector, unsure_threshold=args.threshold, threads=args.threads,
                      batch_size=args.batch_size, sha256=args.sha256)
    note = unpinned_note(recognizer)
    if note:
        print(note, file=sys.stderr)
    run = Run(args, recognizer, outputs)
    run.failed += len(problems)
    run.images([p for p in inputs if not is_video(p)])
    for video in (p for p in inputs if is_video(p)):
        run.video(video)
    run.finish()
    if run.failed:
        print(f"ferkit: {run.done} input(s) processed, {run.failed} skipped", file=sys.stderr)
    return 0 if run.done else 1


if __name__ == "__main__":
    from .cli import main as cli_main

    sys.exit(cli_main(["predict", *sys.argv[1:]]))
