"""Face detectors on the real test photos: faces found vs expected, and time per photo.

    python -m benchmarks.bench_faces [--photos DIR] [--repeats 5] [--threads 1]

Also measures what the detector settings rest on: which face sizes (px at YuNet's input) YuNet
finds (``faces.YUNET_FACE_PX``), how FER2013 frames its faces (``faces.DEFAULT_MARGIN``), and
whether the pass a box comes from changes the bundled model's accuracy. Prints tables; writes
benchmarks/results/faces.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from ferkit.faces import MIN_FACE_PX, YUNET_FACE_PX, YUNET_MIN_SCORE, HaarDetector, YuNetDetector, crop_face, pass_sides
from ferkit.fileio import write_text
from ferkit.weights import bundled_file

ROOT = Path(__file__).resolve().parent
DEFAULT_PHOTOS = ROOT.parent.parent / "shared" / "data" / "photos"
# Faces a decent detector should find, from the photos' README (the classroom: 17 clearly visible).
EXPECTED = {
    "single_happy_astronaut.jpg": 1, "single_neutral_hopper.jpg": 1, "single_neutral_woman.jpg": 1,
    "single_turned_woman.jpg": 1, "single_surprised_santa.jpg": 1, "single_sad_baby.jpg": 1,
    "single_angry_gray.jpg": 1, "group2_laos.jpg": 2, "group4_family.jpg": 4, "group_classroom.jpg": 17,
    "noface_rocket.jpg": 0, "noface_coffee.jpg": 0,
}
# People in each photo, partly hidden ones included: finding more than this is a false detection.
PEOPLE = {**EXPECTED, "group_classroom.jpg": 23}


FACE_SIDES = (10, 12, 14, 16, 18, 20, 24, 28, 32, 40, 60, 100, 200, 260, 300, 360, 420)  # px at YuNet's input
MAX_RESCALED_SIDE = 3000  # the face-size sweep skips rescaled photos larger than this
PASS_SIDES = (384, 320, 256, 192)  # passes compared for crop accuracy (the FER2013 face is half the image)


def shared_net(detector: YuNetDetector) -> YuNetDetector:
    """ferkit's former YuNet: one cv2.FaceDetectorYN for every pass, re-sized on each."""
    detector._nets = [detector._nets[0]] * len(detector._nets)
    return detector


def detectors() -> dict:
    """Haar; YuNet at fixed scales, score >= 0.9 like OpenCV's sample; the former default (1280 + 320,
    score >= 0.7) with one network re-sized per pass and with one per pass; YuNet at 320 alone,
    score >= 0.7; and ferkit's default (pass_sides, score >= YUNET_MIN_SCORE)."""
    yunet = bundled_file("detectors", "yunet")
    return {
        "haar": HaarDetector(),
        "yunet native": YuNetDetector(yunet, min_score=0.9, scales=(100_000,)),
        "yunet <=320": YuNetDetector(yunet, min_score=0.9, scales=(320,)),
        "1280+320, one net": shared_net(YuNetDetector(yunet, scales=(1280, 320))),
        "1280+320, net/pass": YuNetDetector(yunet, scales=(1280, 320)),
        "320 alone, >=0.7": YuNetDetector(yunet, scales=(320,)),
        "ferkit default": YuNetDetector(yunet),
    }


def median_ms(fn, repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def bench_detectors(photos: Path, repeats: int) -> dict:
    """Per detector: faces found per photo, recall, and two times: each photo repeated (a video's
    frames: the input size never changes) and the photos in turn (every call a new size)."""
    results = {}
    images = {name: cv2.imread(str(photos / name)) for name in EXPECTED}
    for label, detect in detectors().items():
        per_photo = {}
        for name, image in images.items():
            found = detect(image)
            per_photo[name] = {"found": len(found), "scores": sorted(round(d.score, 3) for d in found if d.score),
                               "ms": median_ms(lambda: detect(image), repeats)}
        found = sum(min(p["found"], EXPECTED[n]) for n, p in per_photo.items())
        in_turn = median_ms(lambda: [detect(image) for image in images.values()], repeats) / len(images)
        results[label] = {
            "per_photo": per_photo,
            "recall": found / sum(EXPECTED.values()),
            "false_positives_at_least": sum(max(0, p["found"] - PEOPLE[n]) for n, p in per_photo.items()),
            "single_face_photos_found": sum(p["found"] >= 1 for n, p in per_photo.items() if n.startswith("single")),
            "mean_ms": float(np.mean([p["ms"] for p in per_photo.values()])),
            "mean_ms_in_turn": in_turn,
        }
    return results


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter = max(0.0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return inter / (aw * ah + bw * bh - inter)


def recall_by_face_side(photos: Path) -> dict:
    """Share of the photos' faces YuNet finds (score >= YUNET_MIN_SCORE, IoU > 0.3 with the default's box)
    when the photo is rescaled so that face is ``side`` px at YuNet's input, for each of FACE_SIDES."""
    default = YuNetDetector(bundled_file("detectors", "yunet"))
    one_pass = YuNetDetector(bundled_file("detectors", "yunet"), scales=(100_000,))
    faces = [(image, d.box) for image in (cv2.imread(str(photos / name)) for name in EXPECTED)
             for d in default(image)]
    results = {}
    for side in FACE_SIDES:
        hits = tried = 0
        for image, box in faces:
            k = side / max(box[2], box[3])
            h, w = image.shape[:2]
            size = (max(1, round(w * k)), max(1, round(h * k)))
            if max(size) > MAX_RESCALED_SIDE:
                continue
            rescaled = cv2.resize(image, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
            target = tuple(v * k for v in box)
            tried += 1
            hits += any(iou(target, d.box) > 0.3 for d in one_pass(rescaled))
        results[str(side)] = {"found": hits, "faces": tried, "recall": hits / tried}
    return results


def fer_framing(count: int) -> dict:
    """YuNet on PublicTest faces upscaled to 192 px and padded: how much of the face box the image holds.

    ``margin`` = image side / max(box w, h) - 1: what crop_face's margin must be to frame a
    detected face the way FER2013 does.
    """
    from ferkit.data import load_split

    faces = load_split("PublicTest").images[:count]
    detect = YuNetDetector(bundled_file("detectors", "yunet"), min_score=0.7, scales=(100_000,))
    side, pad = 192, 96
    margins, offsets = [], []
    for face in faces:
        big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=128)
        found = detect(cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))
        if len(found) != 1:
            continue
        x, y, w, h = found[0].box
        margins.append(side / max(w, h) - 1)
        offsets.append(((x + w / 2 - pad) / side - 0.5, (y + h / 2 - pad) / side - 0.5))
    margins_a, offsets_a = np.array(margins), np.array(offsets)
    return {
        "faces": count, "detected": len(margins),
        "margin_median": float(np.median(margins_a)),
        "margin_quartiles": [float(q) for q in np.percentile(margins_a, [25, 75])],
        "centre_offset_median": [float(v) for v in np.median(offsets_a, axis=0)],
    }


def crop_accuracy_by_pass(count: int) -> dict:
    """The bundled model's accuracy on PublicTest faces (upscaled to 192 px, padded to 384) cropped from
    YuNet's box at each of PASS_SIDES: does a box from a coarser pass cost accuracy?"""
    from ferkit.data import load_split
    from ferkit.infer import load

    split = load_split("PublicTest")
    faces, labels = split.images[:count], np.asarray(split.labels[:count])
    yunet = bundled_file("detectors", "yunet")
    passes = {side: YuNetDetector(yunet, scales=(side,)) for side in PASS_SIDES}
    side, pad = 192, 96
    crops: dict[int, list] = {s: [] for s in PASS_SIDES}
    kept = []
    for i, face in enumerate(faces):
        big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        big = cv2.cvtColor(cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=128),
                           cv2.COLOR_GRAY2BGR)
        found = {s: detect(big) for s, detect in passes.items()}
        if all(len(f) == 1 for f in found.values()):
            kept.append(i)
            for s, f in found.items():
                crops[s].append(crop_face(big, f[0]))
    recognizer = load()
    truth = labels[kept]
    accuracy = {str(s): float((recognizer.predict_faces(crops[s]).argmax(1) == truth).mean()) for s in PASS_SIDES}
    return {"faces": count, "found_by_every_pass": len(kept), "model": recognizer.name,
            "accuracy_48px_originals": float((recognizer.predict_faces(faces[kept]).argmax(1) == truth).mean()),
            "accuracy_by_pass_side": accuracy}


def print_tables(det: dict, framing: dict, by_side: dict, by_pass: dict) -> None:
    labels = list(det)
    print("faces found per photo (expected from the photos' README)")
    print(f"{'photo':<28}{'expected':>9}" + "".join(f"{label:>22}" for label in labels))
    for name, expected in EXPECTED.items():
        cells = "".join(f"{det[label]['per_photo'][name]['found']:>22}" for label in labels)
        print(f"{name:<28}{expected:>9}{cells}")
    print(f"{'recall (capped at expected)':<37}" + "".join(f"{det[label]['recall']:>22.2f}" for label in labels))
    print(f"{'single-face photos found /7':<37}" + "".join(f"{det[label]['single_face_photos_found']:>22}" for label in labels))
    print(f"{'false detections (> people)':<37}" + "".join(f"{det[label]['false_positives_at_least']:>22}" for label in labels))
    print(f"{'mean ms, each photo repeated':<37}" + "".join(f"{det[label]['mean_ms']:>22.1f}" for label in labels))
    print(f"{'mean ms, photos in turn':<37}" + "".join(f"{det[label]['mean_ms_in_turn']:>22.1f}" for label in labels))
    print("\nYuNet recall by face side at its input (px): "
          + ", ".join(f"{s}: {r['found']}/{r['faces']}" for s, r in by_side.items()))
    print(f"\n{by_pass['model']} accuracy on {by_pass['found_by_every_pass']}/{by_pass['faces']} PublicTest faces, "
          f"crops from a pass at long side (the face is half of it): "
          + ", ".join(f"{s}: {a:.4f}" for s, a in by_pass["accuracy_by_pass_side"].items())
          + f"; the 48x48 originals: {by_pass['accuracy_48px_originals']:.4f}")
    print(f"\nFER2013 framing: YuNet found one face in {framing['detected']}/{framing['faces']} PublicTest faces; "
          f"margin median {framing['margin_median']:+.3f} (quartiles {framing['margin_quartiles'][0]:+.3f}, "
          f"{framing['margin_quartiles'][1]:+.3f}); box centre offset {framing['centre_offset_median']} of the side")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of the test photos")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per photo (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (default 1, like a busy server)")
    parser.add_argument("--fer-faces", type=int, default=800,
                        help="PublicTest faces for the framing and crop-accuracy measures (default 800)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "faces.json")
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.threads)
    load_at_start = [round(v, 2) for v in os.getloadavg()]
    det = bench_detectors(args.photos, args.repeats)
    framing = fer_framing(args.fer_faces)
    by_side = recall_by_face_side(args.photos)
    by_pass = crop_accuracy_by_pass(args.fer_faces)
    print_tables(det, framing, by_side, by_pass)
    report = {
        "detectors": det, "fer_framing": framing, "recall_by_face_side": by_side, "crop_accuracy_by_pass": by_pass,
        "threads": args.threads, "repeats": args.repeats, "load_average_1_5_15_at_start": load_at_start,
        "load_average_1_5_15_at_end": [round(v, 2) for v in os.getloadavg()],
        "default_passes": {str(side): list(pass_sides(side)) for side in (512, 640, 685, 686, 800, 1280, 1920, 4000)},
        "default_min_face_px": MIN_FACE_PX, "yunet_face_px": list(YUNET_FACE_PX), "default_min_score": YUNET_MIN_SCORE,
        "opencv": cv2.__version__, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
    }
    write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
