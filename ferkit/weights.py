"""Model files: the shipped weights and their manifest, checksums, and resolving a model name or path.

``weights/manifest.json`` lists every shipped file with its SHA-256 (docs/design.md); a file is
used only after its checksum matches the manifest (bundled files), the ``<file>.sha256`` sidecar
beside it, or a checksum the caller gives (``ferkit predict --sha256``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .fileio import sha256_of
from .settings import WEIGHTS_DIR

MANIFEST = WEIGHTS_DIR / "manifest.json"
MANIFEST_KINDS = ("models", "detectors")
BUNDLED_DEFAULT = "default"
SIDECAR_SUFFIX = ".sha256"
SHA256_PATTERN = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class ModelFile:
    """A model file ready to load: its path, its SHA-256, and what that checksum was checked against.

    ``pinned_by`` is "manifest", the sidecar's name, "--sha256", or None when nothing pinned the
    file (a user's .onnx without a sidecar): print ``sha256`` so the user can pin it.
    """

    path: Path
    sha256: str
    pinned_by: str | None


def read_manifest() -> dict:
    """``weights/manifest.json``: ``{"models": {name: entry}, "detectors": {name: entry}}``, each entry checked."""
    try:
        manifest = json.loads(MANIFEST.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read the weights manifest {MANIFEST}: {e}; reinstall ferkit") from e
    problem = manifest_problem(manifest)
    if problem:
        raise ModelError(f"the weights manifest {MANIFEST} is damaged: {problem}; reinstall ferkit")
    return manifest


def manifest_problem(manifest: object) -> str | None:
    """What is wrong with a parsed manifest, in one phrase, or None."""
    if not isinstance(manifest, dict):
        return f"it holds a JSON {type(manifest).__name__}, not an object"
    for kind in MANIFEST_KINDS:
        entries = manifest.get(kind, {})
        if not isinstance(entries, dict):
            return f"{kind!r} is not an object"
        for name, entry in entries.items():
            if not isinstance(entry, dict):
                return f"{kind}.{name} is not an object"
            if not isinstance(entry.get("file"), str):
                return f"{kind}.{name} has no file name"
            if not (isinstance(entry.get("sha256"), str) and SHA256_PATTERN.fullmatch(entry["sha256"])):
                return f"{kind}.{name} has no sha256 (64 hex digits)"
    return None


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """``<file>.sha256`` beside a model: its checksum in ``sha256sum`` format (written by ``ferkit export``)."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + SIDECAR_SUFFIX)


def check_sha256(path: Path, expected: str, what: str) -> str:
    """The file's SHA-256; ModelError unless it is ``expected``."""
    actual = sha256_of(path)
    if actual != expected.lower():
        raise ModelError(
            f"checksum mismatch for {what} ({path}): expected {expected}, got {actual}; "
            "the file is corrupt, reinstall ferkit or re-export"
        )
    return actual


def bundled_file(kind: str, name: str) -> Path:
    """Path of a shipped file listed in the manifest under ``kind`` ("models" / "detectors"), checksum verified."""
    return _bundled(kind, name).path


def _bundled(kind: str, name: str) -> ModelFile:
    entries = read_manifest().get(kind, {})
    if name not in entries:
        raise ModelError(f"no bundled {kind[:-1]} named {name!r} in {MANIFEST} (known: {', '.join(entries) or 'none'})")
    entry = entries[name]
    path = WEIGHTS_DIR / entry["file"]
    if not path.is_file():
        raise ModelError(f"bundled {kind[:-1]} {name!r} is missing: {path} not found; reinstall ferkit")
    return ModelFile(path, check_sha256(path, entry["sha256"], f"{kind[:-1]} {name!r}"), "manifest")


def model_file(model: str | os.PathLike | None, sha256: str | None = None) -> ModelFile:
    """The checked file of a bundled model name or of a user's .onnx (``sha256``: the checksum it must have)."""
    if sha256 is not None and not SHA256_PATTERN.fullmatch(sha256):
        raise ModelError(f"--sha256 {sha256!r} is not a SHA-256 (64 hex digits)")
    model = BUNDLED_DEFAULT if model is None else model
    bundled = read_manifest().get("models", {})
    if isinstance(model, str) and model in bundled:
        found = _bundled("models", model)
    else:
        found = _user_model(_existing_model(model, bundled))
    if sha256 is not None and found.sha256 != sha256.lower():
        raise ModelError(f"checksum mismatch for model {found.path.name} ({found.path}): expected {sha256.lower()} "
                         f"(--sha256), got {found.sha256}")
    return ModelFile(found.path, found.sha256, "--sha256") if sha256 is not None else found


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The checked path of a bundled model name or of a user's .onnx file."""
    return model_file(model).path


def _existing_model(model: str | os.PathLike, bundled: dict) -> Path:
    path = Path(model)
    if not path.exists():
        if isinstance(model, str) and os.sep not in model and not path.suffix:
            known = ", ".join(bundled) or "none installed"
            raise ModelError(f"no bundled model named {model!r} (bundled: {known}); pass the path of an .onnx file "
                             "written by ferkit export")
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"model path is not a file: {path}")
    if path.suffix in (".pt", ".pth"):
        raise ModelError(f"{path} is a PyTorch checkpoint; export it first: ferkit export {path} --out model.onnx")
    return path


def _user_model(path: Path) -> ModelFile:
    """A user's model, checked against its sidecar when there is one."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return ModelFile(path, sha256_of(path), None)
    expected = sidecar.read_text().split()
    if not expected:
        raise ModelError(f"checksum file {sidecar} is empty; re-export the model or delete it")
    return ModelFile(path, check_sha256(path, expected[0], f"model {path.name}"), sidecar.name)
