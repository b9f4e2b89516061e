"""Put this folder on PYTHONPATH to run Python as if torch and onnx were not installed.

That is the venv of the README's first command (ferkit without extras). A finder that refuses the
import is closer to a missing package than ``sys.modules["torch"] = None``, which libraries that
look into ``sys.modules`` (scipy's array-api helpers) would trip over.
"""

import sys

ABSENT = ("torch", "onnx")


class RefuseAbsent:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by tests/no_torch)", name=name)
        return None


sys.meta_path.insert(0, RefuseAbsent())
