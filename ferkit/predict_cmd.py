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
import csv
import difflib
import glob
import json
import os
import sys
from pathlib import Path
from typing import Iterator

import cv2
from tqdm import tqdm

from .errors import FerkitError, ImageError
from .faces import DETECTORS
from .fileio import atomic_open, write_bytes
from .images import IMAGE_SUFFIXES, read_image
from .infer import BATCH_SIZE, Recognizer, load
from .results import ImageResult, row_fields
from .tta import TTA_MODES
from .video import VIDEO_SUFFIXES, analyse_video, is_video
from .weights import SHA256_PATTERN, sidecar_path

IMAGES_PER_BATCH = 16  # images whose faces are classified in one go


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("ferkit predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image files, folders, globs (quoted) or video files")
    p.add_argument("--model", default="default",
                   help="'default' (FER2013, 7 emotions), 'ferplus' (FER+, 8) or the path of an .onnx file "
                        "(default: default)")
    p.add_argument("--sha256", metavar="HEX", default=None,
                   help="the SHA-256 the model file must have; a mismatch stops the run (default: the manifest's "
                        "for bundled models, <model>.sha256 beside a user's model when there is one)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per input instead of a table (default: a table)")
    p.add_argument("--csv", metavar="FILE", default=None,
                   help="write one row per face (source, face, box, label, confidence, unsure, class probabilities); "
                        "a video's timeline goes to FILE_<video name>.csv (default: no CSV)")
    p.add_argument("--annotate", metavar="OUT", default=None,
                   help="write images with boxes and labels: OUT is a file for one input, else a folder "
                        "(default: none written); never one of the inputs")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"faces per ONNX Runtime call (default: {BATCH_SIZE})")
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
                        "written to --out (needs ferkit[scale]; --threads is then per actor, default 1) (default: local)")
    p.add_argument("--address", default=None,
                   help="with --engine ray: the Ray cluster to join, e.g. ray://head:10001 (default: start Ray here)")
    p.add_argument("--out", metavar="FOLDER", default=None,
                   help="with --engine ray: a .parquet or .csv folder, one file per block (required with --engine ray)")
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


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --- outputs ---------------------------------------------------------------------------------------


def annotate_targets(inputs: list[Path], out: Path | None) -> dict[Path, Path]:
    """Where each input's annotated copy goes: ``out`` itself for one input (unless it is a folder), else out/<name>."""
    if out is None:
        return {}
    if len(inputs) == 1 and not out.is_dir() and out.suffix:
        return {inputs[0]: out}
    targets: dict[Path, Path] = {}
    taken: set[Path] = set()
    for path in inputs:
        suffix = ".mp4" if is_video(path) else (path.suffix.lower() if cv2.haveImageWriter(f"x{path.suffix}") else ".png")
        target = out / f"{path.stem}_annotated{suffix}"
        n = 2
        while target in taken:
            target = out / f"{path.stem}_annotated-{n}{suffix}"
            n += 1
        taken.add(target)
        targets[path] = target
    return targets


def video_csv_path(table: Path, video: Path) -> Path:
    """Where a video's timeline goes when ``--csv table`` is given: ``<table stem>_<video stem>.csv``."""
    return table.with_name(f"{table.stem}_{video.stem}.csv")


def output_paths(args: argparse.Namespace, inputs: list[Path], targets: dict[Path, Path]) -> dict[Path, str]:
    """Every file this run may write, and the option that names it."""
    outputs = {target: "--annotate" for target in targets.values()}
    if args.csv:
        table = Path(args.csv)
        outputs[table] = "--csv"
        outputs.update({video_csv_path(table, p): "--csv" for p in inputs if is_video(p)})
    return outputs


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
    """The ``--csv`` table: ``ImageResult.to_rows()`` of every image, written atomically."""
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


def unpinned_note(recognizer: Recognizer) -> str | None:
    """A note with the model's SHA-256 when nothing pinned it (a user's .onnx without a sidecar)."""
    if recognizer.pinned_by is not None:
        return None
    return (f"ferkit: note: {recognizer.source} has no {sidecar_path(recognizer.source).name} beside it, so it was not "
            f"checked; its SHA-256 is {recognizer.sha256}: pass --sha256 {recognizer.sha256} to pin it")


# --- the run -----------------------------------------------------------------------------------------


class Run:
    """Counts and outputs of one ``ferkit predict`` call."""

    def __init__(self, args: argparse.Namespace, recognizer: Recognizer, targets: dict[Path, Path]):
        self.args = args
        self.recognizer = recognizer
        self.targets = targets
        self.rows: list[dict] = []
        self.done = 0
        self.failed = 0

    def fail(self, message: str) -> None:
        self.failed += 1
        tqdm.write(f"ferkit: skipped {message}", file=sys.stderr)

    def emit(self, source: Path, payload: dict, text: str) -> None:
        self.done += 1
        record = {"source": str(source), "model_sha256": self.recognizer.sha256, **payload}
        tqdm.write(json.dumps(record) if self.args.json else text, file=sys.stdout)

    def images(self, paths: list[Path]) -> None:
        """Each image decoded once, then classified with the others of its group."""
        with tqdm(total=len(paths), unit="image", file=sys.stderr, disable=True if len(paths) < 2 else None) as bar:
            for group in chunks(paths, IMAGES_PER_BATCH):
                decoded = []
                for path in group:
                    try:
                        decoded.append((path, read_image(path)))
                    except ImageError as e:
                        self.fail(str(e))
                results = self.recognizer.predict_batch([image for _, image in decoded], tta=self.args.tta,
                                                        names=[str(path) for path, _ in decoded])
                for (path, _), result in zip(decoded, results):
                    self.image_done(path, result)
                bar.update(len(group))

    def image_done(self, path: Path, result: ImageResult) -> None:
        if path in self.targets:
            write_annotated(result, self.targets[path])
        self.rows += result.to_rows()
        self.emit(path, {"faces": [f.to_dict() for f in result]}, result.summary())

    def video(self, path: Path) -> None:
        csv_path = video_csv_path(Path(self.args.csv), path) if self.args.csv else None
        with tqdm(unit="frame", desc=path.name, file=sys.stderr, disable=None) as bar:
            def progress(done: int, total: int | None) -> None:
                bar.total = total
                bar.update(done - bar.n)

            try:
                result = analyse_video(self.recognizer, path, csv_path=csv_path, annotate_path=self.targets.get(path),
                                       progress=progress)
            except FerkitError as e:
                self.fail(str(e))
                return
        if result.warning:
            tqdm.write(f"ferkit: warning: {result.warning}", file=sys.stderr)
        tracks = [t.to_dict() for t in result.tracks]
        lines = [f"{path}: video, {result.frames} frames ({result.duration_s:.1f} s), {len(tracks)} face track(s)"]
        lines += [f"  track {t['track']:>3}  {t['first_s']:7.2f}-{t['last_s']:.2f} s  mostly {t['dominant']}"
                  for t in tracks]
        if csv_path:
            lines.append(f"  timeline: {csv_path}")
        summary = {k: v for k, v in result.to_dict().items() if k != "rows"}
        self.emit(path, {"video": summary}, "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parse_args(parser, argv)
    inputs, problems = expand_sources(args.sources, args.recursive)
    out = Path(args.annotate) if args.annotate else None
    targets = annotate_targets(inputs, out)
    if out is not None and len(targets) == 1 and out.suffix and not (is_video(out) or cv2.haveImageWriter(str(out))):
        parser.error(f"--annotate {out}: OpenCV cannot write {out.suffix} images; use .jpg or .png")
    refusal = overwritten_input(output_paths(args, inputs, targets), inputs)
    if refusal:
        print(f"ferkit: error: {refusal}", file=sys.stderr)
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
    run = Run(args, recognizer, targets)
    run.failed += len(problems)
    run.images([p for p in inputs if not is_video(p)])
    for video in (p for p in inputs if is_video(p)):
        run.video(video)
    if args.csv:
        write_csv(Path(args.csv), recognizer.classes, run.rows)
    if run.failed:
        print(f"ferkit: {run.done} input(s) processed, {run.failed} skipped", file=sys.stderr)
    return 0 if run.done else 1


if __name__ == "__main__":
    from .cli import main as cli_main

    sys.exit(cli_main(["predict", *sys.argv[1:]]))
