"""The web app under load (issue 13.10): concurrent headless-chromium sessions uploading photos to one server.

    python -m benchmarks.bench_app_load [--sessions 8] [--uploads 5] [--model NAME|PATH]

One `ferkit app` on 127.0.0.1 (the bundled default model unless ``--model``), warmed by one upload;
then ``--sessions`` chromium browsers at once, each uploading ``--uploads`` different 640x480 photos
(one face) in turn, each on a fresh page (a new session), timed from ``send_keys`` until "Face 1: ..."
is on the page. Bounded: every wait gives up after 60 s (an error, counted), and the run after
``--deadline-s``. Reports the median, p95 and max, the errors, and the server's resident memory
(psutil) before and after. Writes benchmarks/results/app_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.bench_app import photo_640x480, timed_upload
from benchmarks.bench_infer import cpu_model
from ferkit.app import harness
from ferkit.fileio import write_text

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "app_load.json"
DEADLINE_S = 480.0


def one_session(index: int, uploads: int, url: str, tmp: Path, stop_at: float) -> dict:
    """One browser's uploads: their times (s) and the errors (one line each)."""
    times, errors = [], []
    driver = harness.chromium(tmp / f"profile_{index}", window=(1200, 900))
    try:
        for k in range(uploads):
            if time.monotonic() > stop_at:
                errors.append(f"session {index}: upload {k} not started, the run's deadline passed")
                continue
            photo = tmp / f"photo_{index}_{k}.jpg"
            photo.write_bytes(photo_640x480(1000 + index * uploads + k))  # every upload new: no cache answers
            try:
                times.append(timed_upload(driver, url, photo)[0])
            except Exception as e:  # noqa: BLE001 - a timeout or a crash is a result here, not a reason to stop
                errors.append(f"session {index}: upload {k}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    finally:
        driver.quit()
    return {"times_s": times, "errors": errors}


def percentiles(times: list[float]) -> dict:
    if not times:
        return {"uploads": 0}
    return {"uploads": len(times), "median_s": round(float(np.median(times)), 3),
            "p95_s": round(float(np.percentile(times, 95)), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3)}


def run_load(model: str, sessions: int, uploads: int, deadline_s: float, tmp: Path) -> dict:
    with harness.serve(tmp, model=model) as served:
        warm = harness.chromium(tmp / "profile_warm")
        try:
            (tmp / "warm.jpg").write_bytes(photo_640x480(0))
            timed_upload(warm, served.url, tmp / "warm.jpg")  # loads the model once, as in real use
        finally:
            warm.quit()
        rss_before = served.rss()
        stop_at = time.monotonic() + deadline_s
        start = time.monotonic()
        with ThreadPoolExecutor(sessions) as pool:
            results = list(pool.map(lambda i: one_session(i, uploads, served.url, tmp, stop_at), range(sessions)))
        wall_s = time.monotonic() - start
        rss_after = served.rss()
    times = [t for r in results for t in r["times_s"]]
    errors = [e for r in results for e in r["errors"]]
    return {"sessions": sessions, "uploads_per_session": uploads, "wall_s": round(wall_s, 1),
            **percentiles(times), "errors": len(errors), "error_lines": errors,
            "server_rss_mb": {"before": round(rss_before / 2**20), "after": round(rss_after / 2**20)},
            "per_session_s": [[round(t, 3) for t in r["times_s"]] for r in results]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8, help="concurrent browsers (default: %(default)s)")
    parser.add_argument("--uploads", type=int, default=5, help="uploads per browser (default: %(default)s)")
    parser.add_argument("--model", default="default", help="bundled name or .onnx path (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT, help="report file (default: %(default)s)")
    parser.add_argument("--deadline-s", type=float, default=DEADLINE_S,
                        help="no upload starts after this many seconds (default: %(default)s)")
    args = parser.parse_args(argv)
    if not harness.has_chromium():
        raise SystemExit(f"bench_app_load: needs {harness.CHROMIUM} and {harness.CHROMEDRIVER} "
                         "(bash scripts/install_browser.sh)")
    if not 1 <= args.sessions <= 16 or not 1 <= args.uploads <= 20:
        parser.error("--sessions must be 1-16 and --uploads 1-20 (a bounded load)")
    with tempfile.TemporaryDirectory(prefix="bench-app-load-") as tmp:
        report = {
            "what": "seconds from uploading one 640x480 JPEG (1 face) to its prediction on the page, "
                    "with every session uploading at once, warm server on 127.0.0.1",
            "command": " ".join(["python -m benchmarks.bench_app_load", *(sys.argv[1:] if argv is None else argv)]),
            "model": args.model, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
            **run_load(args.model, args.sessions, args.uploads, args.deadline_s, Path(tmp)),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        }
    print(f"{report['sessions']} sessions x {report['uploads_per_session']} uploads: median "
          f"{report.get('median_s', float('nan')):.2f} s, p95 {report.get('p95_s', float('nan')):.2f} s, "
          f"max {report.get('max_s', float('nan')):.2f} s, {report['errors']} errors; server "
          f"{report['server_rss_mb']['before']} -> {report['server_rss_mb']['after']} MB")
    write_text(args.out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
