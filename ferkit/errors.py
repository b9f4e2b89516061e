"""Typed exceptions. The CLI and the app print ``str(error)``: one line that says what and where."""


class FerkitError(Exception):
    """Base class of every error ferkit raises on purpose."""


class DataError(FerkitError):
    """A dataset file is missing, unreadable or not what it should be."""


class ImageError(FerkitError):
    """An input image cannot be decoded or is not usable (empty, too large, truncated...)."""


class ModelError(FerkitError):
    """A model file is missing, corrupt, fails its checksum or lacks its metadata."""


class VideoError(FerkitError):
    """A video cannot be opened or decoded."""


TRAIN_EXTRA = "pip install 'ferkit[train]'"


def require_training_extra(command: str, missing: ImportError | None) -> None:
    """Raise a one-line FerkitError when ``command`` cannot run because torch/onnx (the training extra) is absent."""
    if missing is not None:
        raise FerkitError(f"ferkit {command} needs torch and onnx ({missing}): {TRAIN_EXTRA}")
