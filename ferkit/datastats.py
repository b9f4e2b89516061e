"""Look at the data: class counts per split (FER2013 and FER+), sample faces, augmentation previews.

    ferkit data stats [--data DIR] [--out DIR]          # tables on stdout; counts.json + PNGs in DIR
    ferkit data augment-preview [--out FILE] [--n 8]    # faces and augmented versions (needs torch)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .data import FaceSet, class_table, load_ferplus_split, load_split
from .errors import FerkitError
from .fileio import atomic_path, write_text
from .labels import SPLITS
from .settings import data_dir

DEFAULT_STATS_DIR = Path("runs") / "data-stats"
DEFAULT_PREVIEW = Path("runs") / "augment-preview.png"
_SPLIT_COLOURS = {"Training": "#4c72b0", "PublicTest": "#dd8452", "PrivateTest": "#55a868"}
_GUTTER = 2  # pixels between faces in a grid
_DPI = 100
_FACE_INCHES = 0.96  # how wide one face is drawn in a grid: 2 screen pixels per face pixel at 100 dpi


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=_DPI, bbox_inches="tight", pad_inches=0.05, format="png")
    plt.close(fig)
    return path


# --- counts ----------------------------------------------------------------------------------


def split_counts(sets: dict[str, FaceSet]) -> dict[str, dict]:
    """``{split: {"total": n, "classes": {name: {"count": c, "percent": p}}}}`` in class order."""
    return {
        split: {
            "total": len(faces),
            "classes": {name: {"count": n, "percent": round(pct, 4)} for name, n, pct in class_table(faces)},
        }
        for split, faces in sets.items()
    }


def _cell(count: int, percent: float) -> str:
    return f"{count:>7,} {percent:6.2f} %"


def format_table(counts: dict[str, dict], title: str, dropped: dict[str, int] | None = None) -> str:
    """A plain-text table: one row per class, ``count  percent`` per split."""
    splits = list(counts)
    classes = list(counts[splits[0]]["classes"])
    name_w = max(len("dropped"), *(len(c) for c in classes))
    col_w = max(len(_cell(0, 0.0)), *(len(s) for s in splits))

    def row(name: str, cells: list[str]) -> str:
        return (f"{name:<{name_w}}" + "".join(f"  {c:>{col_w}}" for c in cells)).rstrip()

    rule = "-" * len(row("", splits))
    lines = [title, rule, row("class", splits), rule]
    for name in classes:
        lines.append(row(name, [_cell(**counts[s]["classes"][name]) for s in splits]))
    lines += [rule, row("total", [_cell(counts[s]["total"], 100.0) for s in splits])]
    if dropped is not None:
        lines.append(row("dropped", [f"{dropped[s]:>7,}".ljust(col_w) for s in splits]))
    return "\n".join(lines)


# --- figures ---------------------------------------------------------------------------------


def class_distribution_figure(tables: dict[str, dict[str, dict]], path: str | Path) -> Path:
    """Grouped bars of the class share per split, one panel per label set (FER2013, FER+)."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(tables), 1, figsize=(9, 3.3 * len(tables)), squeeze=False)
    for ax, (title, counts) in zip(axes[:, 0], tables.items()):
        splits = list(counts)
        classes = list(counts[splits[0]]["classes"])
        x = np.arange(len(classes))
        width = 0.8 / len(splits)
        for i, split in enumerate(splits):
            pct = [counts[split]["classes"][c]["percent"] for c in classes]
            n = [counts[split]["classes"][c]["count"] for c in classes]
            offset = (i - (len(splits) - 1) / 2) * width
            bars = ax.bar(x + offset, pct, width, label=f"{split} (n={counts[split]['total']:,})",
                          color=_SPLIT_COLOURS.get(split))
            if i == 0:
                ax.bar_label(bars, labels=[f"{v:,}" for v in n], fontsize=7, padding=1)
        ax.set_xticks(x, classes)
        ax.set_ylabel("% of split")
        ax.set_title(f"{title}: class distribution (bar labels: {splits[0]} counts)", fontsize=10)
        ax.legend(fontsize=8, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
        ax.margins(y=0.12)
    fig.tight_layout()
    return _save(fig, Path(path))


def face_grid(rows: list[np.ndarray], gutter: int = _GUTTER) -> np.ndarray:
    """Rows of equal-sized uint8 faces (each row (k, H, W)) tiled into one image with white gutters."""
    k = max(len(r) for r in rows)
    h, w = rows[0].shape[1:]
    grid = np.full((len(rows) * (h + gutter) - gutter, k * (w + gutter) - gutter), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, face in enumerate(row):
            grid[i * (h + gutter): i * (h + gutter) + h, j * (w + gutter): j * (w + gutter) + w] = face
    return grid


def _grid_figure(rows: list[np.ndarray], row_labels: list[str], title: str, path: Path,
                 column_labels: list[str] | None = None) -> Path:
    plt = _pyplot()
    grid = face_grid(rows)
    h = rows[0].shape[1] + _GUTTER
    scale = _FACE_INCHES / rows[0].shape[1]  # inches per image pixel
    fig, ax = plt.subplots(figsize=(grid.shape[1] * scale + 1.2, grid.shape[0] * scale + 0.6))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_yticks([i * h + (h - _GUTTER) / 2 for i in range(len(rows))], row_labels)
    if column_labels:
        w = rows[0].shape[2] + _GUTTER
        ax.set_xticks([j * w + (w - _GUTTER) / 2 for j in range(len(column_labels))], column_labels, fontsize=8)
        ax.xaxis.tick_top()
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def pick_per_class(faces: FaceSet, per_class: int, seed: int) -> list[np.ndarray]:
    """Up to ``per_class`` random faces of every class, one array per class (classes in order)."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(len(faces.classes)):
        index = np.flatnonzero(faces.labels == c)
        chosen = rng.choice(index, size=min(per_class, len(index)), replace=False) if len(index) else index
        picks.append(faces.images[np.sort(chosen)])
    return picks


def sample_grid_figure(faces: FaceSet, path: str | Path, per_class: int = 8, seed: int = 0,
                       title: str = "Training") -> Path:
    """A grid of random faces, one row per class."""
    rows = pick_per_class(faces, per_class, seed)
    present = [(r, c) for r, c in zip(rows, faces.classes) if len(r)]
    return _grid_figure([r for r, _ in present], [c for _, c in present],
                        f"{title}: {per_class} random faces per class (seed {seed})", Path(path))


# --- commands -------------------------------------------------------------------------------


def load_tables(root: Path, ferplus: bool = True) -> tuple[dict[str, FaceSet], dict[str, FaceSet]]:
    fer = {split: load_split(split, root) for split in SPLITS}
    plus = {split: load_ferplus_split(split, root) for split in SPLITS} if ferplus else {}
    return fer, plus


def run_stats(args: argparse.Namespace) -> int:
    root = data_dir(args.data)
    fer, plus = load_tables(root, ferplus=not args.no_ferplus)
    report: dict = {"data": str(root), "fer2013": split_counts(fer)}
    print(format_table(report["fer2013"], f"FER2013 ({root})"))
    tables = {"FER2013": report["fer2013"]}
    if plus:
        report["ferplus"] = split_counts(plus)
        dropped = {s: len(fer[s]) - len(plus[s]) for s in SPLITS}
        for split in SPLITS:
            report["ferplus"][split]["dropped"] = dropped[split]
        print()
        print(format_table(report["ferplus"], "FER+ majority labels (no name, NF/unknown majority and ties dropped)",
                           dropped))
        tables["FER+"] = report["ferplus"]
    out = Path(args.out)
    written = [
        class_distribution_figure(tables, out / "class_distribution.png"),
        sample_grid_figure(fer["Training"], out / "samples_per_class.png", args.per_class, args.seed),
    ]
    if plus:
        written.append(sample_grid_figure(plus["Training"], out / "samples_per_class_ferplus.png", args.per_class,
                                          args.seed, title="FER+ Training"))
    write_text(out / "counts.json", json.dumps(report, indent=2) + "\n")
    written.append(out / "counts.json")
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


def augmented_views(faces: np.ndarray, views: int, aug: str, seed: int) -> np.ndarray:
    """(N, H, W) uint8 -> (N, views, H, W) uint8 augmented with ferkit.augment on the CPU."""
    try:
        import torch
    except ImportError as e:
        raise FerkitError(f"augment-preview needs torch ({e}); install it with: pip install 'ferkit[train]'") from e
    from .augment import AUGMENTS, augment_batch
    n, h, w = faces.shape
    x = torch.from_numpy(np.repeat(faces, views, axis=0)).float().div_(255).unsqueeze(1)  # (N*views, 1, H, W)
    generator = torch.Generator().manual_seed(seed)
    out = augment_batch(x, AUGMENTS[aug], generator)
    return (out.squeeze(1).mul_(255).round_().to(torch.uint8).numpy()).reshape(n, views, h, w)


def round_robin(per_class: list[np.ndarray], n: int) -> list[tuple[np.ndarray, int]]:
    """Up to ``n`` (face, class index) pairs taking one face of each class in turn."""
    depth = max(map(len, per_class))
    pairs = [(row[i], c) for i in range(depth) for c, row in enumerate(per_class) if i < len(row)]
    return pairs[:n]


def run_augment_preview(args: argparse.Namespace) -> int:
    root = data_dir(args.data)
    faces = load_ferplus_split("Training", root) if args.ferplus else load_split("Training", root)
    per_class = pick_per_class(faces, -(-args.n // len(faces.classes)), args.seed)
    pairs = round_robin(per_class, args.n)
    chosen = np.stack([face for face, _ in pairs])
    views = augmented_views(chosen, args.views, args.aug, args.seed)
    rows = [np.concatenate([face[None], v]) for face, v in zip(chosen, views)]
    labels = [faces.classes[c] for _, c in pairs]
    name = "FER+" if args.ferplus else "FER2013"
    title = f"{name} Training: original + {args.views} augmentations ('{args.aug}' recipe, seed {args.seed})"
    columns = ["original"] + [f"aug {i + 1}" for i in range(args.views)]
    print(f"wrote {_grid_figure(rows, labels, title, Path(args.out), columns)}")
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ferkit data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{stats,augment-preview}")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", default=None, help="FER2013 folder (default: $FERKIT_DATA or ../shared/data/fer2013)")
    common.add_argument("--seed", type=int, default=0, help="which random faces are shown (default 0)")

    s = sub.add_parser("stats", parents=[common], help="class counts per split, bar chart, sample grid, JSON")
    s.add_argument("--out", default=str(DEFAULT_STATS_DIR), help=f"output folder (default {DEFAULT_STATS_DIR})")
    s.add_argument("--per-class", type=int, default=8, help="faces per class in the sample grid (default 8)")
    s.add_argument("--no-ferplus", action="store_true", help="skip the FER+ table and grid (default: off)")
    s.set_defaults(run=run_stats)

    a = sub.add_parser("augment-preview", parents=[common], help="faces next to augmented versions (needs torch)")
    a.add_argument("--out", default=str(DEFAULT_PREVIEW), help=f"PNG to write (default {DEFAULT_PREVIEW})")
    a.add_argument("--n", type=int, default=8, help="number of faces, one per class in turn (default 8)")
    a.add_argument("--views", type=int, default=7, help="augmented versions per face (default 7)")
    a.add_argument("--aug", default="default", choices=["default", "report"],
                   help="augmentation recipe of ferkit train (default: default)")
    a.add_argument("--ferplus", action="store_true", help="pick faces by their FER+ label (8 classes) (default: off)")
    a.set_defaults(run=run_augment_preview)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    for name in ("per_class", "n", "views"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        return args.run(args)
    except OSError as e:  # the output folder is read-only, the disk is full...
        raise FerkitError(f"cannot write {e.filename or args.out}: {e.strerror or e}") from e


if __name__ == "__main__":
    raise SystemExit(main())
