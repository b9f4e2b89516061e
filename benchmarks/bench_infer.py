"""Inference speed on the CPU: ONNX Runtime vs PyTorch per face, batched throughput, and a photo end to end.

    python -m benchmarks.bench_infer                          # every bundled model and every architecture
    python -m benchmarks.bench_infer --model default --model fast --model fastnet
    python -m benchmarks.bench_infer --quick --out /tmp/infer.json   # a few repetitions (the smoke test)

In one run, for each model:
  (a) latency of one face, batch 1, 1 thread: ONNX Runtime ``session.run`` vs the same architecture
      in PyTorch (eval mode, ``torch.set_num_threads(1)``), and ``Recognizer.predict_faces``
      (preprocessing + ONNX Runtime + calibrated softmax); median and p90 after a warm-up;
  (b) throughput at batch 64 and 256 with 2 threads, ONNX Runtime vs PyTorch, in faces/s;
  (c) a 640x480 photo with one face, read -> detect -> crop -> classify through ``Recognizer.predict``,
      with each detector, 1 thread (ONNX Runtime and OpenCV).

A bundled name (``default``, ``fast``, ...) is the shipped ONNX file; an architecture name is exported
with random weights on the fly. The tiers' cost bounds (issues 12 and 17) are ratios to the ``fastnet``
architecture timed in the same run: ``default`` and ``ferplus`` at most 20x, ``fast`` and ``ferplus_fast``
at most 1x; an ensemble's cost (one graph of several members, ferkit.merge) is stated as the same ratio,
without a bound. Timings do not depend
on weight values, so PyTorch runs the architecture named in the model's metadata with random weights (an
ensemble: its members' architectures, merged the same way).
Prints markdown tables and writes benchmarks/results/infer.json with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import onnxruntime as ort
import torch

from ferkit.export import default_meta, export_onnx
from ferkit.fileio import write_text
from ferkit.images import read_image
from ferkit.infer import Recognizer, load, open_session, session_meta
from ferkit.merge import EnsembleNet
from ferkit.models import count_params, create_model, list_models
from ferkit.preprocess import to_model_input
from ferkit.weights import read_manifest, resolve_model

ROOT = Path(__file__).resolve().parent
PHOTO = ROOT.parent.parent / "shared" / "data" / "photos" / "single_happy_astronaut.jpg"
PHOTO_SIZE = (640, 480)  # width, height of the end-to-end photo
BATCHES = (64, 256)
THROUGHPUT_THREADS = 2
E2E_DETECTORS = ("yunet", "haar")
# The tiers' cost per face relative to the fastnet architecture, timed in the same run (issues 12 and 17).
TIER_COST_BOUND = {"default": 20.0, "fast": 1.0, "ferplus": 20.0, "ferplus_fast": 1.0}


@dataclass(frozen=True)
class Repeats:
    """Timed runs per measurement: ``runs`` after ``warmup``, fewer when ``budget_s`` runs out (at least 3)."""

    warmup: int
    runs: int
    budget_s: float


FULL = {"latency": Repeats(30, 1000, 3.0), "throughput": Repeats(1, 20, 4.0), "e2e": Repeats(3, 60, 4.0)}
QUICK = {"latency": Repeats(3, 20, 0.5), "throughput": Repeats(1, 2, 0.5), "e2e": Repeats(1, 3, 0.5)}


def timings_ms(fn: Callable[[], object], reps: Repeats) -> np.ndarray:
    """Milliseconds of each timed call of ``fn``."""
    for _ in range(reps.warmup):
        fn()
    times = []
    deadline = time.perf_counter() + reps.budget_s
    while len(times) < reps.runs and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * np.array(times)


def stats(ms: np.ndarray) -> dict:
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "runs": int(len(ms))}


# --- the machine and the models -----------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_vnni() -> bool | None:
    """Whether this CPU has VNNI (int8 dot products without saturation); None where /proc/cpuinfo is not there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "avx512_vnni" in flags or "avx_vnni" in flags


def machine_info() -> dict:
    return {
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()], "platform": platform.platform(),
        "python": platform.python_version(), "onnxruntime": ort.__version__, "torch": torch.__version__,
        "opencv": cv2.__version__, "numpy": np.__version__, "cpu_has_vnni": cpu_has_vnni(),
    }


@dataclass
class Candidate:
    """A model to time: its ONNX file, its metadata, and the same architecture in PyTorch."""

    label: str
    path: Path
    meta: dict
    torch_model: torch.nn.Module
    note: str = ""


def bundled_names() -> list[str]:
    return sorted(read_manifest().get("models", {}))


def torch_model(meta: dict) -> torch.nn.Module:
    """The metadata's architecture with random weights; an ensemble's members merged as in its graph."""
    classes = len(meta["classes"])
    if not meta["members"]:
        return create_model(meta["arch"], num_classes=classes).eval()
    members = [create_model(m["arch"], num_classes=classes) for m in meta["members"]]
    return EnsembleNet(members, [m["weight"] for m in meta["members"]], [m["temperature"] for m in meta["members"]],
                       flip=meta["graph_tta"] == "flip").eval()


def candidate(name: str, workdir: Path) -> Candidate:
    """A bundled model (``default``, ``fast``, ...): the shipped file; else an architecture with random weights."""
    if name in bundled_names():
        shipped = resolve_model(name)
        meta = session_meta(open_session(shipped, 1), str(shipped))
        return Candidate(f"{name} ({meta['arch']})", shipped, meta, torch_model(meta), "shipped weights")
    torch.manual_seed(0)
    model = create_model(name).eval()
    meta = default_meta(name)
    path = export_onnx(model, workdir / f"{name}.onnx", meta)
    return Candidate(name, path, meta, model, "random weights")


def one_face_photo(workdir: Path) -> tuple[Path, np.ndarray]:
    """A 640x480 JPEG with one face: the astronaut portrait at 480 px, centred on a mid-gray canvas."""
    face = cv2.resize(cv2.imread(str(PHOTO)), (PHOTO_SIZE[1], PHOTO_SIZE[1]), interpolation=cv2.INTER_AREA)
    canvas = np.full((PHOTO_SIZE[1], PHOTO_SIZE[0], 3), 128, np.uint8)
    left = (PHOTO_SIZE[0] - PHOTO_SIZE[1]) // 2
    canvas[:, left:left + PHOTO_SIZE[1]] = face
    path = workdir / "one_face_640x480.jpg"
    cv2.imwrite(str(path), canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path, canvas


def face_crop(recognizer: Recognizer, image: np.ndarray) -> np.ndarray:
    crops, _ = recognizer.faces_in(image, detect=True)
    if len(crops) != 1:
        raise SystemExit(f"expected one face in the test photo, the detector found {len(crops)}")
    return crops[0]


# --- the three measurements ----------------------------------------------------------------------


def bench_latency(c: Candidate, crop: np.ndarray, reps: Repeats) -> dict:
    """(a) One face, batch 1, 1 thread."""
    x = to_model_input(crop[None], c.meta)  # (1, 1, S, S)
    session = open_session(c.path, threads=1)
    name = session.get_inputs()[0].name
    onnx_ms = timings_ms(lambda: session.run(None, {name: x}), reps)
    torch.set_num_threads(1)
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        torch_ms = timings_ms(lambda: c.torch_model(xt), reps)
    recognizer = load(c.path, threads=1)
    pipeline_ms = timings_ms(lambda: recognizer.predict_faces([crop]), reps)
    return {"onnxruntime": stats(onnx_ms), "pytorch": stats(torch_ms), "predict_faces": stats(pipeline_ms),
            "pytorch_over_onnx": float(np.median(torch_ms) / np.median(onnx_ms))}


def bench_throughput(c: Candidate, crop: np.ndarray, reps: Repeats) -> dict:
    """(b) Faces/s at each batch size, ``THROUGHPUT_THREADS`` threads."""
    session = open_session(c.path, threads=THROUGHPUT_THREADS)
    name = session.get_inputs()[0].name
    torch.set_num_threads(THROUGHPUT_THREADS)
    results = {}
    for batch in BATCHES:
        x = to_model_input(np.repeat(crop[None], batch, axis=0), c.meta)
        onnx_ms = np.median(timings_ms(lambda: session.run(None, {name: x}), reps))
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            torch_ms = np.median(timings_ms(lambda: c.torch_model(xt), reps))
        results[str(batch)] = {"onnxruntime_faces_per_s": float(1000 * batch / onnx_ms),
                               "pytorch_faces_per_s": float(1000 * batch / torch_ms),
                               "onnx_over_pytorch": float(torch_ms / onnx_ms)}
    return results


def bench_end_to_end(c: Candidate, photo: Path, reps: Repeats) -> dict:
    """(c) ``Recognizer.predict(path)`` per detector, 1 thread, with the time of each stage."""
    results = {}
    for detector in E2E_DETECTORS:
        recognizer = load(c.path, detector=detector, threads=1)
        image = read_image(photo)
        crops, _ = recognizer.faces_in(image, detect=True)
        total = timings_ms(lambda: recognizer.predict(photo), reps)
        results[detector] = {
            "faces_found": len(crops), **stats(total),
            "read_ms": float(np.median(timings_ms(lambda: read_image(photo), reps))),
            "detect_crop_ms": float(np.median(timings_ms(lambda: recognizer.faces_in(image, detect=True), reps))),
            "classify_ms": float(np.median(timings_ms(lambda: recognizer.predict_faces(crops), reps)))
            if crops else None,
        }
    return results


# --- report ---------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "meets" if ok else "misses"


def spread(s: dict, digits: int = 3) -> str:
    """``median / p90`` of a ``stats`` dict."""
    return f"{s['median_ms']:.{digits}f} / {s['p90_ms']:.{digits}f}"


def latency_table(models: list[dict]) -> list[str]:
    lines = ["(a) one face, batch 1, 1 thread (ms, median / p90)", "",
             "| model | parameters | ONNX Runtime | PyTorch | PyTorch / ONNX | predict_faces (prep + ORT + softmax) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in models:
        a = r["latency"]
        lines.append(f"| {r['label']} | {r['parameters'] / 1e6:.2f} M | {spread(a['onnxruntime'])} | "
                     f"{spread(a['pytorch'])} | {a['pytorch_over_onnx']:.1f}x | {spread(a['predict_faces'])} |")
    return lines


def throughput_table(models: list[dict]) -> list[str]:
    heads = " | ".join(f"ONNX Runtime b{b} | PyTorch b{b}" for b in BATCHES)
    lines = [f"(b) throughput, {THROUGHPUT_THREADS} threads (faces/s)", "",
             f"| model | {heads} | ONNX / PyTorch at b{BATCHES[-1]} |", "| --- |" + " ---: |" * (2 * len(BATCHES) + 1)]
    for r in models:
        t = r["throughput"]
        cells = " | ".join(f"{t[str(b)]['onnxruntime_faces_per_s']:,.0f} | {t[str(b)]['pytorch_faces_per_s']:,.0f}"
                           for b in BATCHES)
        lines.append(f"| {r['label']} | {cells} | {t[str(BATCHES[-1])]['onnx_over_pytorch']:.1f}x |")
    return lines


def end_to_end_table(models: list[dict]) -> list[str]:
    width, height = PHOTO_SIZE
    lines = [f"(c) {width}x{height} photo with one face, Recognizer.predict(path), 1 thread (ms, median)", "",
             "| model | detector | faces | read | detect + crop | classify | total median / p90 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in models:
        for detector, e in r["end_to_end"].items():
            classify = "-" if e["classify_ms"] is None else f"{e['classify_ms']:.2f}"
            lines.append(f"| {r['label']} | {detector} | {e['faces_found']} | {e['read_ms']:.2f} | "
                         f"{e['detect_crop_ms']:.2f} | {classify} | {spread(e, 2)} |")
    return lines


def targets_line(r: dict, reference: dict | None) -> str:
    """The tiers' targets (TIER_COST_BOUND, as ratios to the fastnet architecture's cost per face measured in this
    run); an ensemble's cost as the same ratio, unbounded;
    plus the photo path."""
    face_ms = r["latency"]["onnxruntime"]["median_ms"]
    e2e = r["end_to_end"]["yunet"]["median_ms"]
    bound = TIER_COST_BOUND.get(r["name"])
    line = f"{'Targets for' if bound else 'Cost of'} {r['label']}: one face {face_ms:.3f} ms"
    if r.get("members"):
        line += f" ({r['members']} members, in-graph TTA {r['graph_tta']})"
    if reference is not None:
        ratio = face_ms / reference["latency"]["onnxruntime"]["median_ms"]
        line += f" = {ratio:.2f}x fastnet's" + (f" ({verdict(ratio <= bound)} <= {bound:g}x)" if bound else "")
    return line + f"; photo end to end with yunet {e2e:.1f} ms."


def markdown(report: dict) -> str:
    m, models = report["machine"], report["models"]
    lines = [f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs, 1-min load average "
             f"{m['load_average_1_5_15'][0]} at start and {m['load_average_at_end'][0]} at the end; "
             f"onnxruntime {m['onnxruntime']}, torch {m['torch']}, OpenCV {m['opencv']}; "
             f"VNNI (fast int8): {m['cpu_has_vnni']}. "
             f"Repetitions: {'--quick' if report['quick'] else 'full'}.", ""]
    lines += latency_table(models) + [""] + throughput_table(models) + [""] + end_to_end_table(models)
    fastnet = next((r for r in models if r["name"] == "fastnet"), None)
    lines += ["", *(targets_line(r, fastnet) for r in models if r["name"] in TIER_COST_BOUND or r.get("members"))]
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    choices = [*bundled_names(), *list_models()]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", choices=choices, default=None,
                   help="model to time, repeatable: a bundled model or a registered architecture (random weights) "
                        "(default: every model in the manifest, and every architecture)")
    p.add_argument("--quick", action="store_true", help="a few repetitions only: checks the script, not the speed")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "infer.json",
                   help="JSON report (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    names = list(dict.fromkeys(args.model or [*bundled_names(), *list_models()]))
    reps = QUICK if args.quick else FULL
    cv2.setNumThreads(1)  # OpenCV (decoding, detection) on one thread throughout, like ONNX Runtime in (a) and (c)
    given = argv if argv is not None else sys.argv[1:]
    report = {"command": " ".join(["python -m benchmarks.bench_infer", *given]),
              "quick": args.quick, "machine": machine_info(), "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        photo, image = one_face_photo(workdir)
        for name in names:
            c = candidate(name, workdir)
            crop = face_crop(load(c.path, detector="yunet", threads=1), image)
            print(f"timing {c.label} ...", file=sys.stderr, flush=True)
            report["models"].append({
                "name": name, "label": c.label, "arch": c.meta["arch"], "note": c.note,
                "members": len(c.meta["members"]), "graph_tta": c.meta["graph_tta"],
                "parameters": count_params(c.torch_model),
                "latency": bench_latency(c, crop, reps["latency"]),
                "throughput": bench_throughput(c, crop, reps["throughput"]),
                "end_to_end": bench_end_to_end(c, photo, reps["e2e"]),
            })
    report["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    table = markdown(report)
    report["markdown"] = table
    print(table)
    write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
