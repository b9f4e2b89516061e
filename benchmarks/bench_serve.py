"""Load test of ``ferkit serve`` on 127.0.0.1: concurrent clients posting the real photos.

    python -m benchmarks.bench_serve [--clients 16] [--requests 50] [--workers 1 --workers 2]

For each worker count: the server starts as a subprocess on a free local port, then ``--clients``
threads each send ``--requests`` multipart POSTs to /v1/predict, the 12 real photos in turn. It
records latency percentiles, throughput, errors (any status but 200, or a transport failure) and
the server's resident memory (the process and its worker processes, from /proc) at start, after
a warm-up (every photo once per client and worker, at the same concurrency: the models load, and
arenas and caches fill up to their level for that load) and after the load. Bounded:
``--deadline-s`` for the whole load, ``--timeout-s`` per request; only 127.0.0.1 is contacted.
Prints a markdown table; writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from benchmarks.bench_infer import machine_info
from ferkit.app.harness import start_service, stop
from ferkit.fileio import write_text

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
OUT = ROOT / "benchmarks" / "results" / "serve.json"


def photos() -> list[tuple[str, bytes]]:
    found = sorted(PHOTOS.glob("*.jpg"))
    if not found:
        raise SystemExit(f"bench_serve: no photos in {PHOTOS}")
    return [(p.name, p.read_bytes()) for p in found]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants (uvicorn's workers), in MB, from /proc."""
    total_kb, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:  # exited meanwhile
            continue
        total_kb += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        pending += [int(c) for c in children]
    return round(total_kb / 1024, 1)


def start_server(workers: int, model: str, log: Path) -> tuple[str, subprocess.Popen]:
    served = start_service(log, "--workers", str(workers), "--model", model, cwd=ROOT)
    return served.url, served.process


def client_run(url: str, images: list[tuple[str, bytes]], first: int, count: int, timeout_s: float,
               deadline: float) -> list[tuple[float, int, int]]:
    """One client's (seconds, status, faces) per request; status 0 for a transport failure, -1 when out of time."""
    out = []
    with httpx.Client(base_url=url, timeout=timeout_s) as client:
        for i in range(count):
            if time.monotonic() > deadline:
                out += [(0.0, -1, 0)] * (count - i)
                break
            name, data = images[(first + i) % len(images)]
            start = time.perf_counter()
            try:
                response = client.post("/v1/predict", files={"file": (name, data, "image/jpeg")})
                faces = len(response.json()["faces"]) if response.status_code == 200 else 0
                out.append((time.perf_counter() - start, response.status_code, faces))
            except (httpx.TransportError, ValueError):
                out.append((time.perf_counter() - start, 0, 0))
    return out


def load(url: str, images: list[tuple[str, bytes]], clients: int, requests: int,
         args: argparse.Namespace) -> list[tuple[float, int, int]]:
    """``clients`` concurrent clients of ``requests`` requests each, within ``--deadline-s``."""
    deadline = time.monotonic() + args.deadline_s
    with ThreadPoolExecutor(clients) as pool:
        runs = pool.map(lambda c: client_run(url, images, c, requests, args.timeout_s, deadline), range(clients))
        return [r for run in runs for r in run]


def load_test(workers: int, args: argparse.Namespace, images: list[tuple[str, bytes]], tmp: Path) -> dict:
    url, server = start_server(workers, args.model, tmp / f"server_{workers}.log")
    try:
        rss_started = tree_rss_mb(server.pid)
        load(url, images, args.clients, len(images) * workers, args)  # warm-up: each worker sees every photo
        rss_before = tree_rss_mb(server.pid)
        start = time.perf_counter()
        results = load(url, images, args.clients, args.requests, args)
        wall = time.perf_counter() - start
        rss_after = tree_rss_mb(server.pid)
        healthy = httpx.get(f"{url}/healthz", timeout=args.timeout_s).status_code == 200
    finally:
        stop(server)
    ok = [r for r in results if r[1] == 200]
    latencies = np.array([r[0] for r in ok]) * 1000
    return {
        "workers": workers, "requests": len(results), "ok": len(ok),
        "errors": sum(1 for r in results if r[1] not in (200, -1)),
        "not_sent_deadline": sum(r[1] == -1 for r in results),
        "wall_s": round(wall, 2), "requests_per_s": round(len(ok) / wall, 1),
        "faces_per_s": round(sum(r[2] for r in ok) / wall, 1),
        **{f"p{q}_ms": round(float(np.percentile(latencies, q)), 1) if len(ok) else None for q in (50, 95, 99)},
        "max_ms": round(float(latencies.max()), 1) if len(ok) else None,
        "rss_mb": {"started": rss_started, "before_load": rss_before, "after_load": rss_after,
                   "growth": round(rss_after - rss_before, 1)},
        "healthy_after": healthy,
    }


def markdown(report: dict) -> str:
    title = (f"{report['clients']} clients x {report['requests_per_client']} requests, model `{report['model']}`, "
             f"{report['machine']['cpu']} ({report['machine']['usable_cpus']} CPUs)")
    lines = [title, "",
             "| workers | requests ok | errors | p50 ms | p95 ms | p99 ms | requests/s | faces/s | RSS before → after load (MB) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in report["runs"]:
        rss = r["rss_mb"]
        lines.append(f"| {r['workers']} | {r['ok']}/{r['requests']} | {r['errors']} | {r['p50_ms']} | {r['p95_ms']} | "
                     f"{r['p99_ms']} | {r['requests_per_s']} | {r['faces_per_s']} | {rss['before_load']} → "
                     f"{rss['after_load']} ({rss['growth']:+.1f}) |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default: 16)")
    p.add_argument("--requests", type=int, default=50, help="requests per client (default: 50)")
    p.add_argument("--workers", type=int, action="append", help="uvicorn workers; repeat for several runs "
                                                                "(default: 1 and 2)")
    p.add_argument("--model", default="default", help="bundled model the server uses (default: default)")
    p.add_argument("--deadline-s", type=float, default=300.0,
                   help="the load of one run stops sending after this long (default: 300)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per request (default: 30)")
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON report (default: {OUT.relative_to(ROOT)})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    images = photos()
    report = {"what": "POST /v1/predict (multipart, one real photo each) against ferkit serve on 127.0.0.1",
              "clients": args.clients, "requests_per_client": args.requests, "model": args.model,
              "photos": len(images),
              "machine": machine_info()}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        report["runs"] = [load_test(w, args, images, Path(tmp)) for w in args.workers or [1, 2]]
    report["markdown"] = markdown(report)
    print(report["markdown"])
    write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(r["errors"] == 0 and r["healthy_after"] for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
