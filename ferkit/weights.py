"""Model files: the shipped weights and their manifest, checksums, and resolving a model name or path.

``weights/manifest.json`` lists every shipped file with its SHA-256 (docs/design.md); a file is
used only after its checksum matches the manifest (bundled files), the ``<file>.sha256`` sidecar
beside it, or a checksum the caller gives (``ferkit predict --sha256``).

A ``ferkit train`` run folder or a ``.pt`` checkpoint is a model too: it is exported once to
``<run>/<name>.onnx`` (verified, with its sidecar) and that file is used while it is newer than the
checkpoint. The export runs as ``ferkit export`` in a child process: the training side (torch) sits
above this module and is never imported here; without torch the error names the command to run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import TRAIN_EXTRA, ModelError
from .fileio import sha256_of
from .settings import WEIGHTS_DIR

MANIFEST = WEIGHTS_DIR / "manifest.json"
MANIFEST_KINDS = ("models", "detectors")
BUNDLED_DEFAULT = "default"
SIDECAR_SUFFIX = ".sha256"
MAX_BUNDLED_BYTES = 20_000 * 1024  # a bundled file committed to the repository is at most this (`du -k` 20,000)
SHA256_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
RUN_CHECKPOINTS = ("best.pt", "weights.pt")  # what a run folder holds (trained, packed), in order of preference
CHECKPOINT_SUFFIXES = (".pt", ".pth")
RUN_SETTINGS = "args.json"  # ferkit train's settings, beside best.pt: the model's name
TRAIN_MODULES = ("torch", "onnx")  # what `ferkit export` needs (the training extra)


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


def model_choices() -> str:
    """The bundled models for a --model help: "default (vgg, 7 classes), ..." from the manifest."""
    try:
        models = read_manifest().get("models", {})
    except ModelError:
        return f"listed in {MANIFEST}"  # a damaged manifest: loading says what is wrong, in one line
    return ", ".join(f"{name} ({entry.get('arch', '?')}, {len(entry.get('classes', []))} classes)"
                     for name, entry in models.items())


def bundled_checkpoints(folder: Path | None = None) -> list[str]:
    """The bundled models that ship a ``.pt`` checkpoint (a start for ``ferkit train --from``, ``ferkit export``),
    in ``folder`` (default: the package's weights)."""
    return sorted(p.stem for p in (folder or WEIGHTS_DIR).glob("*.pt"))


def model_file(model: str | os.PathLike | None, sha256: str | None = None) -> ModelFile:
    """The checked file of a bundled model name, a user's .onnx, or a run folder / .pt checkpoint (exported once).

    ``sha256``: the checksum the file must have.
    """
    if sha256 is not None and not SHA256_PATTERN.fullmatch(sha256):
        raise ModelError(f"--sha256 {sha256!r} is not a SHA-256 (64 hex digits)")
    model = BUNDLED_DEFAULT if model is None else model
    bundled = read_manifest().get("models", {})
    checkpoint = None if isinstance(model, str) and model in bundled else trained_checkpoint(Path(model))
    if isinstance(model, str) and model in bundled:
        found = _bundled("models", model)
    elif checkpoint is not None:
        found = _user_model(exported_model(checkpoint))
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
    return path


# --- training runs and checkpoints, exported on first use -----------------------------------------


def trained_checkpoint(path: Path) -> Path | None:
    """The checkpoint that a model path names (a .pt file, a run folder's best.pt), or None when it names none."""
    if path.is_dir():
        found = [path / name for name in RUN_CHECKPOINTS if (path / name).is_file()]
        if not found:
            raise ModelError(f"{path} is a folder without {' or '.join(RUN_CHECKPOINTS)}: pass a ferkit train run "
                             "folder, its best.pt, or an .onnx file")
        return found[0]
    return path if path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES else None


def export_path(checkpoint: Path) -> Path:
    """Where a checkpoint's ONNX export lives: ``<run>/<name>.onnx`` for a run's checkpoint (the name ferkit train
    gave the model, as its summary's ``next:`` line writes it), ``<stem>.onnx`` beside any other .pt."""
    if checkpoint.name not in RUN_CHECKPOINTS:
        return checkpoint.with_suffix(".onnx")
    try:
        name = json.loads((checkpoint.parent / RUN_SETTINGS).read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    if not isinstance(name, str) or not name or Path(name).name != name:
        name = checkpoint.parent.resolve().name
    return checkpoint.parent / f"{name}.onnx"


def exported_model(checkpoint: Path) -> Path:
    """The checkpoint's ONNX file: the cached export while it is newer than the checkpoint, else a fresh one."""
    onnx_path = export_path(checkpoint)
    if onnx_path.is_file() and onnx_path.stat().st_mtime_ns > checkpoint.stat().st_mtime_ns:
        print(f"ferkit: note: using {onnx_path}, exported from {checkpoint} (re-exported when the checkpoint is newer)",
              file=sys.stderr)
        return onnx_path
    command = ["ferkit", "export", str(checkpoint), "--out", str(onnx_path)]
    if not has_training_extra():
        raise ModelError(f"{checkpoint} is a PyTorch checkpoint and exporting it needs torch, not installed here: "
                         f"run `{shlex.join(command)}` where it is ({TRAIN_EXTRA}), then pass "
                         f"--model {onnx_path}")
    done = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise ModelError(f"cannot export {checkpoint}: {lines[-1].removeprefix('ferkit: error: ')}; export it first "
                         f"to see why: {shlex.join(command)}")
    print(f"ferkit: note: exported {checkpoint} to {onnx_path} (verified against PyTorch; used while it is newer "
          "than the checkpoint)", file=sys.stderr)
    return onnx_path


def has_training_extra() -> bool:
    """Whether torch and onnx can be imported here (ferkit[train]), without importing them."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in TRAIN_MODULES)
    except (ImportError, ValueError):
        return False


def _user_model(path: Path) -> ModelFile:
    """A user's model, checked against its sidecar when there is one."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return ModelFile(path, sha256_of(path), None)
    expected = sidecar.read_text().split()
    if not expected:
        raise ModelError(f"checksum file {sidecar} is empty; re-export the model or delete it")
    return ModelFile(path, check_sha256(path, expected[0], f"model {path.name}"), sidecar.name)
