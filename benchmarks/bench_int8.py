"""int8 post-training quantization of a bundled model with ONNX Runtime: accuracy lost and time saved, in one run.

    python -m benchmarks.bench_int8                      # the bundled default (a few minutes on 2 cores)
    python -m benchmarks.bench_int8 --model fast --calibration-faces 256
    ferkit export default --out /tmp/default_fp32.onnx && python -m benchmarks.bench_int8 --model /tmp/default_fp32.onnx

Static QDQ quantization (per-channel weights, activations calibrated on faces of the *Training* split, so no
evaluation split is looked at to build it); the decision to ship is taken on PublicTest (at most 0.3 points
lost and measurably faster), PrivateTest is reported. Timings: ONNX Runtime, one thread, batch 1 (median) and
batch 64 (faces/s), fp32 and int8 interleaved in the same run. Writes benchmarks/results/int8_<model>.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_infer import cpu_has_vnni, machine_info
from ferkit.data import load_split
from ferkit.fileio import write_text
from ferkit.infer import open_session, session_meta
from ferkit.quantize import MAX_LOSS_POINTS, calibration_faces, quantize
from ferkit.weights import resolve_model
from ferkit.preprocess import to_model_input

ROOT = Path(__file__).resolve().parent
BATCH = 64


def accuracy(session, meta: dict, faces: np.ndarray, labels: np.ndarray) -> float:
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: to_model_input(faces[i:i + 256], meta)})[0]
                             for i in range(0, len(faces), 256)])
    return float((logits.argmax(1) == labels).mean())


def timings(sessions: dict, meta: dict, faces: np.ndarray, rounds: int) -> dict:
    """Per model: median ms of one face (batch 1) and faces/s at batch 64, the models interleaved round by round."""
    one = to_model_input(faces[:1], meta)
    many = to_model_input(faces[:BATCH], meta)
    ms = {k: [] for k in sessions}
    rate = {k: [] for k in sessions}
    for s in sessions.values():
        for _ in range(20):
            s.run(None, {s.get_inputs()[0].name: one})
    for _ in range(rounds):
        for key, s in sessions.items():
            name = s.get_inputs()[0].name
            for _ in range(50):
                t = time.perf_counter()
                s.run(None, {name: one})
                ms[key].append(1000 * (time.perf_counter() - t))
            t = time.perf_counter()
            s.run(None, {name: many})
            rate[key].append(BATCH / (time.perf_counter() - t))
    return {k: {"one_face_ms": float(np.median(ms[k])), "faces_per_s_batch64": float(np.median(rate[k]))}
            for k in sessions}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="bundled model name or .onnx path (default: default)")
    p.add_argument("--calibration-faces", type=int, default=512, help="training faces to calibrate on (default: 512)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds (default: 10)")
    p.add_argument("--reduce-range", action="store_true",
                   help="7-bit weights, safe on CPUs without VNNI (default: off, full 8-bit range)")
    p.add_argument("--out", default=None,
                   help="JSON file (default: benchmarks/results/int8_<model>[_reduce_range].json)")
    args = p.parse_args(argv)

    fp32_path = resolve_model(args.model)
    meta = session_meta(open_session(fp32_path, 1), str(fp32_path))
    if "int8" in meta.get("provenance", {}):
        p.error(f"{fp32_path} is already int8; quantize its float graph: ferkit export {args.model} --out fp32.onnx, "
                "then --model fp32.onnx")
    train = load_split("Training")
    calib = calibration_faces(args.calibration_faces)
    with tempfile.TemporaryDirectory() as tmp:
        int8_path = quantize(fp32_path, meta, calib, Path(tmp) / "int8.onnx", args.reduce_range)
        sessions = {"fp32": open_session(fp32_path, 1), "int8": open_session(int8_path, 1)}
        size = {"fp32": fp32_path.stat().st_size, "int8": int8_path.stat().st_size}
        acc = {}
        for split in ("PublicTest", "PrivateTest"):
            faces = load_split(split)
            acc[split] = {k: accuracy(s, meta, faces.images, faces.labels) for k, s in sessions.items()}
        speed = timings(sessions, meta, train.images, args.rounds)
    loss = 100 * (acc["PublicTest"]["fp32"] - acc["PublicTest"]["int8"])
    faster = speed["int8"]["one_face_ms"] < 0.9 * speed["fp32"]["one_face_ms"]
    verdict = "ship" if loss <= MAX_LOSS_POINTS and faster else "do not ship"
    result = {"model": args.model, "arch": meta["arch"], "reduce_range": args.reduce_range,
              "cpu_has_vnni": cpu_has_vnni(), "accuracy": acc, "timing": speed, "bytes": size,
              "publictest_loss_points": loss, "verdict": verdict, "rule": f"loss <= {MAX_LOSS_POINTS} points on "
              "PublicTest and >= 10 % faster per face", "machine": machine_info(),
              "date": time.strftime("%Y-%m-%d")}
    print(f"| {args.model} ({meta['arch']}) | PublicTest | PrivateTest | ms / face (1 thread) "
          "| faces/s (batch 64) | MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for k in sessions:
        print(f"| {k} | {100 * acc['PublicTest'][k]:.2f} % | {100 * acc['PrivateTest'][k]:.2f} % | "
              f"{speed[k]['one_face_ms']:.2f} | {speed[k]['faces_per_s_batch64']:.0f} | {size[k] / 1e6:.1f} |")
    ratio = speed["int8"]["one_face_ms"] / speed["fp32"]["one_face_ms"]
    print(f"PublicTest loss {loss:.2f} points, int8/fp32 time {ratio:.2f}: "
          f"{verdict}")
    suffix = "_reduce_range" if args.reduce_range else ""
    out = Path(args.out) if args.out else ROOT / "results" / f"int8_{args.model}{suffix}.json"
    write_text(out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
