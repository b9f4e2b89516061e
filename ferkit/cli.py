"""The ``ferkit`` command: one sub-command per pipeline step.

Each sub-command's options live beside its code (``get_args_parser()`` + ``main(argv)`` in the
module, torchvision style), so ``ferkit train`` and ``python -m ferkit.train`` are the same
program. This module only dispatches, and turns ferkit's errors into one-line messages.
"""

from __future__ import annotations

import difflib
import importlib
import sys

from .errors import FerkitError

COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("ferkit.predict_cmd", "find faces and their emotions in images, folders and videos"),
    "app": ("ferkit.app.launch", "start the Streamlit web app"),
    "data": ("ferkit.datastats", "dataset statistics, sample grids and augmentation previews"),
    "preprocess": ("ferkit.preprocess", "the report's preprocessing steps on one image, as a figure"),
    "train": ("ferkit.train_cmd", "train or fine-tune a model (needs ferkit[train])"),
    "evaluate": ("ferkit.evaluate", "accuracy, per-class metrics, confusion matrix, ROC and calibration"),
    "export": ("ferkit.export", "export a trained checkpoint to ONNX, verified against PyTorch"),
    "ensemble": ("ferkit.ensemble", "average trained models' probabilities: the teacher file of distillation "
                                    "(needs ferkit[train])"),
    "serve": ("ferkit.service", "a REST service for predictions, FastAPI + uvicorn (needs ferkit[serve])"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: ferkit COMMAND [options]   (ferkit COMMAND --help for its options)\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from . import __version__

        print(f"ferkit {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"ferkit: error: unknown command {command!r}{hint}\n{usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[command][0])
    except ImportError as e:
        extra = " (install the training extra: pip install 'ferkit[train]')" if command in ("train", "export", "ensemble") else ""
        print(f"ferkit: error: {command} cannot start: {e}{extra}", file=sys.stderr)
        return 1
    try:
        return int(module.main(rest) or 0)
    except FerkitError as e:
        print(f"ferkit: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ferkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
