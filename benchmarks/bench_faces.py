"""Face detectors on the real test photos: faces found vs expected, and time per photo.

    python benchmarks/bench_faces.py [--photos DIR] [--repeats 5] [--threads 1]

Also measures how FER2013 frames its faces (YuNet's box on upscaled PublicTest faces), which
is where ``faces.DEFAULT_MARGIN`` comes from. Prints tables; writes
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

from ferkit.faces import YUNET_MIN_SCORE, YUNET_SCALES, HaarDetector, YuNetDetector, bundled_file
from ferkit.fileio import write_text

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


def detectors() -> dict:
    """Haar, YuNet at one scale and at two (score >= 0.9 like OpenCV's sample), and ferkit's default
    (YuNet at YUNET_SCALES, score >= YUNET_MIN_SCORE)."""
    yunet = bundled_file("detectors", "yunet")
    return {
        "haar": HaarDetector(),
        "yunet native": YuNetDetector(yunet, scales=(100_000,), min_score=0.9),
        "yunet <=320": YuNetDetector(yunet, scales=(320,), min_score=0.9),
        "yunet 640+320": YuNetDetector(yunet, scales=(640, 320), min_score=0.9),
        "ferkit default": YuNetDetector(yunet),  # YUNET_SCALES, YUNET_MIN_SCORE
    }


def time_per_photo(detect, image: np.ndarray, repeats: int) -> float:
    """Median milliseconds of ``repeats`` runs, after one warm-up."""
    detect(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        detect(image)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def bench_detectors(photos: Path, repeats: int) -> dict:
    results = {}
    images = {name: cv2.imread(str(photos / name)) for name in EXPECTED}
    for label, detect in detectors().items():
        per_photo = {}
        for name, image in images.items():
            found = detect(image)
            per_photo[name] = {"found": len(found), "scores": sorted(round(d.score, 3) for d in found if d.score),
                               "ms": time_per_photo(detect, image, repeats)}
        found = sum(min(p["found"], EXPECTED[n]) for n, p in per_photo.items())
        results[label] = {
            "per_photo": per_photo,
            "recall": found / sum(EXPECTED.values()),
            "false_positives_at_least": sum(max(0, p["found"] - PEOPLE[n]) for n, p in per_photo.items()),
            "single_face_photos_found": sum(p["found"] >= 1 for n, p in per_photo.items() if n.startswith("single")),
            "mean_ms": float(np.mean([p["ms"] for p in per_photo.values()])),
        }
    return results


def fer_framing(count: int) -> dict:
    """YuNet on PublicTest faces upscaled to 192 px and padded: how much of the face box the image holds.

    ``margin`` = image side / max(box w, h) - 1: what crop_face's margin must be to frame a
    detected face the way FER2013 does.
    """
    from ferkit.data import load_split

    faces = load_split("PublicTest").images[:count]
    detect = YuNetDetector(bundled_file("detectors", "yunet"), scales=(100_000,), min_score=0.7)
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


def print_tables(det: dict, framing: dict) -> None:
    labels = list(det)
    print("faces found per photo (expected from the photos' README)")
    print(f"{'photo':<28}{'expected':>9}" + "".join(f"{label:>22}" for label in labels))
    for name, expected in EXPECTED.items():
        cells = "".join(f"{det[label]['per_photo'][name]['found']:>22}" for label in labels)
        print(f"{name:<28}{expected:>9}{cells}")
    print(f"{'recall (capped at expected)':<37}" + "".join(f"{det[label]['recall']:>22.2f}" for label in labels))
    print(f"{'single-face photos found /7':<37}" + "".join(f"{det[label]['single_face_photos_found']:>22}" for label in labels))
    print(f"{'false detections (> people)':<37}" + "".join(f"{det[label]['false_positives_at_least']:>22}" for label in labels))
    print(f"{'mean ms per photo':<37}" + "".join(f"{det[label]['mean_ms']:>22.1f}" for label in labels))
    print(f"\nFER2013 framing: YuNet found one face in {framing['detected']}/{framing['faces']} PublicTest faces; "
          f"margin median {framing['margin_median']:+.3f} (quartiles {framing['margin_quartiles'][0]:+.3f}, "
          f"{framing['margin_quartiles'][1]:+.3f}); box centre offset {framing['centre_offset_median']} of the side")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of the test photos")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per photo (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (default 1, like a busy server)")
    parser.add_argument("--fer-faces", type=int, default=800, help="PublicTest faces for the framing measure (default 800)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "faces.json")
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.threads)
    det = bench_detectors(args.photos, args.repeats)
    framing = fer_framing(args.fer_faces)
    print_tables(det, framing)
    report = {
        "detectors": det, "fer_framing": framing, "threads": args.threads, "repeats": args.repeats,
        "default_scales": list(YUNET_SCALES), "default_min_score": YUNET_MIN_SCORE,
        "opencv": cv2.__version__, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
    }
    write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
