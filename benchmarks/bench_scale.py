"""Faces per second: the local path against Ray Data with 1 and 2 actors, on the same 500 photos, in one run.

    python -m benchmarks.bench_scale [--photos 500] [--actors 1 --actors 2]

The folder is built in a temporary directory from the 12 real photos: copies, resized (100 %, 80 %,
60 %) and mirrored, re-encoded as JPEG, so no two files are the same bytes. Measured, each on the
whole folder with the bundled default model:

* ``local``: what ``ferkit predict`` does, in this process: each file decoded, then classified
  16 images at a time (``Recognizer.predict_batch``), with 1 ONNX Runtime thread and with ONNX
  Runtime's own choice (one per core);
* ``ray``: ``ray_predict.predict_dataset`` with a fixed pool of N actors of 1 thread each, rows
  streamed to the driver (``iter_batches``). The wall time includes starting the pool and loading
  the model in each actor; the first block's arrival marks the end of that start-up, and the
  faces per second after it are the pool's steady throughput.

Ray starts once, before the measurements (its start-up is reported apart), with its workers at
niceness 0 like this process (Ray's default, 15, hands the CPU to anything else running on a
shared machine: set RAY_worker_niceness to keep another value). The paths run
interleaved, ``--repeats`` times, and the fastest run of each counts (the VM's load drifts). The
faces found are checked to be the same number on every path. Last, where the time goes: each
photo of the folder, and 12 MP versions of 6 of them, timed stage by stage on one thread.
Prints a markdown table; writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow.compute as pc

from benchmarks.bench_infer import machine_info
from ferkit import ray_predict
from ferkit.fileio import write_text
from ferkit.images import read_image
from ferkit.infer import load

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
OUT = ROOT / "benchmarks" / "results" / "scale.json"
SCALES = (1.0, 0.8, 0.6)
JPEG_QUALITY = 90
CAMERA_SIZE = (4000, 3000)
STAGE_PHOTOS = 6  # 12 MP photos timed stage by stage
WORKER_NICENESS = "RAY_worker_niceness"  # Ray's own setting, read from the environment when Ray starts


def build_folder(folder: Path, count: int) -> list[Path]:
    """``count`` JPEGs made from the real photos: photo i % 12, scaled and mirrored by i // 12."""
    sources = [cv2.imread(str(p)) for p in sorted(PHOTOS.glob("*.jpg"))]
    if not sources:
        raise SystemExit(f"bench_scale: no photos in {PHOTOS}")
    files = []
    for i in range(count):
        variant = i // len(sources)
        image = sources[i % len(sources)]
        scale = SCALES[variant % len(SCALES)]
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale != 1.0 else image
        image = cv2.flip(image, 1) if (variant // len(SCALES)) % 2 else image
        path = folder / f"photo_{i:04d}.jpg"
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY - variant % 7])
        assert ok
        path.write_bytes(data.tobytes())
        files.append(path)
    return files


def local_run(files: list[Path], threads: int | None) -> dict:
    """The local path: decode, then ``predict_batch`` on groups of IMAGES_PER_BATCH, in this process."""
    recognizer = load(threads=threads)
    start = time.perf_counter()
    faces = 0
    for first in range(0, len(files), ray_predict.IMAGES_PER_BATCH):
        group = files[first:first + ray_predict.IMAGES_PER_BATCH]
        faces += sum(len(r) for r in recognizer.predict_batch([read_image(p) for p in group]))
    return {"faces": faces, "wall_s": time.perf_counter() - start}


def ray_run(files: list[Path], actors: int) -> dict:
    """A fixed pool of ``actors`` actors of 1 thread; the first block's arrival ends the pool's start-up."""
    start = time.perf_counter()
    arrivals = []  # (seconds since start, faces in the block)
    rows = ray_predict.predict_dataset(files, actors=actors, threads=1)
    for block in rows.iter_batches(batch_size=None, batch_format="pyarrow"):
        arrivals.append((time.perf_counter() - start, pc.sum(pc.greater(block["face"], 0)).as_py() or 0))
    faces = sum(n for _, n in arrivals)
    first_s, first_faces = arrivals[0]
    steady = (faces - first_faces) / (arrivals[-1][0] - first_s) if arrivals[-1][0] > first_s else None
    return {"faces": faces, "wall_s": arrivals[-1][0], "first_block_s": first_s, "faces_per_s_after_start": steady}


def stage_ms(files: list[Path]) -> dict:
    """Per photo, one thread: milliseconds to decode, to find and crop the faces, to classify them (median)."""
    recognizer = load(threads=1)
    times: dict[str, list[float]] = {"decode": [], "detect": [], "classify": []}
    for path in files:
        t0 = time.perf_counter()
        image = read_image(path)
        t1 = time.perf_counter()
        crops, _ = recognizer.faces_in(image)
        t2 = time.perf_counter()
        recognizer.predict_faces(crops)
        t3 = time.perf_counter()
        for stage, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[stage].append(seconds * 1000)
    medians = {stage: round(float(np.median(ms)), 2) for stage, ms in times.items()}
    return {**medians, "kb_per_photo": round(sum(p.stat().st_size for p in files) / len(files) / 1000, 1)}


def camera_photos(folder: Path, count: int) -> list[Path]:
    """``count`` of the real photos upscaled to 12 MP (4000 x 3000, as a phone writes them), for the stage times."""
    files = []
    for i, photo in enumerate(sorted(PHOTOS.glob("*.jpg"))[:count]):
        image = cv2.resize(cv2.imread(str(photo)), CAMERA_SIZE, interpolation=cv2.INTER_CUBIC)
        path = folder / f"camera_{i}.jpg"
        path.write_bytes(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes())
        files.append(path)
    return files


def best(runs: list[dict], label: str, photos: int) -> dict:
    """The fastest of the repeats, and every repeat's wall time."""
    top = min(runs, key=lambda r: r["wall_s"])
    summary = {"path": label, "photos": photos, "faces": top["faces"], "wall_s": round(top["wall_s"], 2),
               "photos_per_s": round(photos / top["wall_s"], 1), "faces_per_s": round(top["faces"] / top["wall_s"], 1),
               "repeats_wall_s": [round(r["wall_s"], 2) for r in runs]}
    if "first_block_s" in top:
        summary["first_block_s"] = round(top["first_block_s"], 2)
        summary["faces_per_s_after_start"] = round(top["faces_per_s_after_start"] or 0, 1)
    return summary


def measure(files: list[Path], actor_counts: list[int], repeats: int) -> list[dict]:
    """Every path, interleaved repeat by repeat (the VM's load drifts), best of ``repeats`` each."""
    paths = {"local, 1 thread": lambda: local_run(files, 1), "local, 1 thread per core": lambda: local_run(files, None)}
    paths.update({f"ray, {n} actor{'s' if n > 1 else ''} x 1 thread": (lambda n=n: ray_run(files, n))
                  for n in actor_counts})
    runs: dict[str, list[dict]] = {label: [] for label in paths}
    for _ in range(repeats):
        for label, run in paths.items():
            runs[label].append(run())
    return [best(r, label, len(files)) for label, r in runs.items()]


def markdown(report: dict) -> str:
    base = report["runs"][0]["faces_per_s"]
    title = (f"{report['photos']} photos, model `default`, {report['machine']['cpu']} "
             f"({report['machine']['usable_cpus']} CPUs), best of {report['repeats']}; Ray started in "
             f"{report['ray_start_s']} s")
    lines = [title, "",
             "| path | faces | wall s | photos/s | faces/s | vs local 1 thread | first block s | faces/s after it |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["runs"]:
        lines.append(f"| {r['path']} | {r['faces']} | {r['wall_s']} | {r['photos_per_s']} | {r['faces_per_s']} | "
                     f"{r['faces_per_s'] / base:.2f}x | {r.get('first_block_s', '')} | "
                     f"{r.get('faces_per_s_after_start', '')} |")
    stages = report["stage_ms"]
    lines += ["", "| one thread, per photo (median ms) | file kB | decode | find + crop faces | classify them |",
              "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {kind} | {s['kb_per_photo']} | {s['decode']} | {s['detect']} | {s['classify']} |"
              for kind, s in stages.items()]
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=500, help="photos in the folder (default: 500)")
    p.add_argument("--actors", type=int, action="append", help="Ray pool sizes; repeat (default: 1 and 2)")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs of every path, interleaved; the best counts (default: 2)")
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON report (default: {OUT.relative_to(ROOT)})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    report = {"what": "faces per second over one folder: local path vs Ray Data actor pools",
              "photos": args.photos,
              "machine": machine_info()}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        files = build_folder(Path(tmp), args.photos)
        os.environ.setdefault(WORKER_NICENESS, "0")  # Ray nices its workers to 15: the local path runs at 0
        report["ray_worker_niceness"] = int(os.environ[WORKER_NICENESS])
        start = time.perf_counter()
        ray_predict.start_ray()
        report["ray_start_s"] = round(time.perf_counter() - start, 2)
        report["stage_ms"] = {"folder": stage_ms(files), "12 MP": stage_ms(camera_photos(Path(tmp), STAGE_PHOTOS))}
        report["repeats"] = args.repeats
        report["runs"] = runs = measure(files, args.actors or [1, 2], args.repeats)
    report["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    report["same_faces_everywhere"] = len({r["faces"] for r in runs}) == 1
    report["markdown"] = markdown(report)
    print(report["markdown"])
    write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if report["same_faces_everywhere"] else 1


if __name__ == "__main__":
    sys.exit(main())
