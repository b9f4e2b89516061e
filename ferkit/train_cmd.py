"""``ferkit train``: the options are parsed first (``--help`` needs no torch), then ferkit.train runs them."""

from __future__ import annotations

from .errors import require_training_extra
from .train_config import get_args_parser


def main(argv: list[str] | None = None) -> int:
    get_args_parser().parse_args(argv)
    try:
        from . import train
    except ImportError as e:
        require_training_extra("train", e)
    return train.main(argv)
