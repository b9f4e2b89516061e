"""Pack a GPU call's runs for the trip back, within what the device tool returns (8 files, 16 MiB each, 64 MiB).

    python3 scripts/gpu/pack_runs.py /tmp/runs          # weights.pt (float16, no optimiser state) beside each best.pt
    python3 scripts/gpu/pack_runs.py /tmp/runs $OUT     # ... then logs.tgz and one <run>.tgz per run into $OUT

logs.tgz holds every run's files but its checkpoints (logs, args, curves, reports, logits.npz) and the call's
teacher file; <run>.tgz holds the run's weights.pt. Six ResNet-18s (12.6 MB each) are more than 64 MiB, so the
weights go best run first, by PublicTest single view (summary.json), while they fit; the ones left out are
named (their logits still come back in logs.tgz). Unpack: ``tar xzf logs.tgz; for f in *_*.tgz; do tar xzf $f; done``.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

from ferkit.checkpoint import pack, read_checkpoint, save_checkpoint

MIB = 2 ** 20
MAX_FILES, MAX_FILE_BYTES, MAX_TOTAL_BYTES = 8, 16 * MIB, 64 * MIB  # /work/.library/device/README.md, Limits
MARGIN = MIB  # left unused under the total, for the transfer's own rounding
USAGE = "usage: pack_runs.py RUNS [OUT]"


def pack_weights(runs: Path) -> list[Path]:
    """Each run's best.pt as weights.pt beside it; the run folders, in name order."""
    folders = []
    for best in sorted(runs.glob("*/best.pt")):
        save_checkpoint(best.with_name("weights.pt"), pack(read_checkpoint(best)))
        folders.append(best.parent)
    return folders


def publictest_accuracy(run: Path) -> float:
    """The run's single-view PublicTest accuracy from its summary.json; -1 when it has none (it did not finish)."""
    try:
        return float(json.loads((run / "summary.json").read_text())["PublicTest_acc_none"])
    except (OSError, KeyError, ValueError):
        return -1.0


def write_logs(runs: Path, out: Path) -> Path:
    """logs.tgz: everything under ``runs`` but its .pt files."""
    path = out / "logs.tgz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(runs, arcname=".", filter=lambda info: None if info.name.endswith(".pt") else info)
    return path


def write_weights(runs: list[Path], out: Path) -> tuple[list[Path], list[Path]]:
    """<run>.tgz of each run's weights.pt, best on PublicTest first, while the files fit; (written, left out)."""
    used = [p for p in out.iterdir() if p.is_file()]
    files, total = len(used), sum(p.stat().st_size for p in used)
    written, left_out = [], []
    for run in sorted(runs, key=publictest_accuracy, reverse=True):
        path = out / f"{run.name}.tgz"
        with tarfile.open(path, "w:gz") as tar:
            tar.add(run / "weights.pt", arcname=f"{run.name}/weights.pt")
        size = path.stat().st_size
        if files + 1 > MAX_FILES or size > MAX_FILE_BYTES or total + size > MAX_TOTAL_BYTES - MARGIN:
            path.unlink()
            left_out.append(run)
            continue
        files, total = files + 1, total + size
        written.append(path)
    return written, left_out


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(USAGE, file=sys.stderr)
        return 2
    runs = Path(argv[0])
    folders = pack_weights(runs)
    print(f"packed weights of {len(folders)} runs: {' '.join(f.name for f in folders)}")
    if len(argv) == 2:
        out = Path(argv[1])
        write_logs(runs, out)
        written, left_out = write_weights(folders, out)
        print(f"weights back: {' '.join(p.stem for p in written) or 'none'}")
        if left_out:
            print(f"weights left out (over the device tool's return limits; logits in logs.tgz): "
                  f"{' '.join(r.name for r in left_out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
