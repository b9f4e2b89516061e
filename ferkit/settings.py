"""Where ferkit finds its data and keeps its cache."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "FERKIT_DATA"
CACHE_ENV = "FERKIT_CACHE"
PACKAGE_DIR = Path(__file__).resolve().parent
WEIGHTS_DIR = PACKAGE_DIR / "weights"
# The project keeps the data beside its root: <root>/../shared/data/fer2013.
_DEFAULT_DATA_CANDIDATES = (
    Path.cwd().parent / "shared" / "data" / "fer2013",
    PACKAGE_DIR.parent.parent / "shared" / "data" / "fer2013",
)


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """The FER2013 folder: ``override`` (a --data option), else $FERKIT_DATA, else ../shared/data/fer2013."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    for candidate in _DEFAULT_DATA_CANDIDATES:
        if candidate.is_dir():
            return candidate
    return _DEFAULT_DATA_CANDIDATES[0]


def cache_dir() -> Path:
    """Where decoded datasets are cached: $FERKIT_CACHE, else $XDG_CACHE_HOME/ferkit, else ~/.cache/ferkit."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ferkit"


def cache_dir_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot hold the cache (a file stands where it or a parent folder should be), or None."""
    for path in (folder, *folder.parents):
        if path.exists():
            if path.is_dir():
                return None
            return (f"the cache folder {folder} cannot be made: {path} is a file (set {CACHE_ENV} to a folder, "
                    "or unset it)")
    return None
