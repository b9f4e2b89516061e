"""Uploads: the one size limit, and the per-session temporary folders a video is written to.

OpenCV reads videos from files, so an uploaded video goes to ``<tmp>/ferkit-app/<server pid>/<session>-*/``
for as long as it is analysed. A server that crashed leaves its folder behind: the next server
removes the folders of every process that is no longer running when it starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import streamlit as st

from . import MAX_UPLOAD_MB

UPLOAD_ROOT = Path(tempfile.gettempdir()) / "ferkit-app"


def upload_limit_mb() -> int:
    """What the uploaders refuse above (MB): Streamlit's server.maxUploadSize, which `ferkit app` sets."""
    return int(st.get_option("server.maxUploadSize") or MAX_UPLOAD_MB)


def too_large(name: str, size: int) -> str | None:
    """A one-line refusal when an upload is over the limit, else None."""
    limit = upload_limit_mb()
    if size <= limit * 2**20:
        return None
    return f"{name}: {size / 2**20:.0f} MB is over the {limit} MB upload limit"


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(root: Path) -> list[Path]:
    """Remove the upload folders under ``root`` of servers that are no longer running; the removed ones."""
    stale = [p for p in root.glob("*") if p.is_dir() and p.name.isdigit() and not pid_running(int(p.name))]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


@st.cache_resource(show_spinner=False)
def removed_at_start(root: str) -> list[Path]:
    """``remove_stale(root)``, once per server process (main.py calls it on every page)."""
    return remove_stale(Path(root))


def server_upload_dir() -> Path:
    """This server's upload folder, stale ones removed first."""
    removed_at_start(str(UPLOAD_ROOT))
    folder = UPLOAD_ROOT / str(os.getpid())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx else "no-session"


@contextlib.contextmanager
def session_upload_dir() -> Iterator[Path]:
    """A fresh folder for this session's upload, removed when the block ends (even on an error)."""
    with tempfile.TemporaryDirectory(prefix=f"{session_id()}-", dir=server_upload_dir()) as tmp:
        yield Path(tmp)
