"""scripts/mix_teachers.py: the weighted mean of two rungs' teacher files, readable by --teacher-probs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from ferkit.ensemble import write_ensemble_file
from ferkit.errors import FerkitError
from ferkit.labels import EMOTIONS

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("Training", "PublicTest", "PrivateTest")


def mix_script():
    spec = importlib.util.spec_from_file_location("mix_teachers", ROOT / "scripts" / "mix_teachers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def teacher_file(path: Path, seed: int, rows: int = 20) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {"classes": np.array(EMOTIONS), "members": np.array(json.dumps([f"run{seed}"])),
              "tta": np.array("flip"), "temperatures": np.array(json.dumps({f"run{seed}": 1.0}))}
    for s in SPLITS:
        probs = rng.dirichlet(np.ones(len(EMOTIONS)), rows).astype(np.float32)
        arrays |= {f"{s}_probs": probs, f"{s}_rows": np.arange(rows), f"{s}_labels": np.arange(rows) % 7}
    return write_ensemble_file(path, arrays)


def test_the_mix_is_the_weighted_mean_and_records_its_parts(tmp_path):
    mix = mix_script()
    a, b = teacher_file(tmp_path / "a.npz", 1), teacher_file(tmp_path / "b.npz", 2)
    ta, tb = mix.read_teacher(str(a)), mix.read_teacher(str(b))
    out = write_ensemble_file(tmp_path / "ab.npz", mix.mixed([ta, tb], [0.25, 0.75], [str(a), str(b)]))
    got = mix.read_teacher(str(out))
    for s in SPLITS:
        np.testing.assert_allclose(got[f"{s}_probs"], 0.25 * ta[f"{s}_probs"] + 0.75 * tb[f"{s}_probs"], atol=1e-6)
        np.testing.assert_array_equal(got[f"{s}_rows"], ta[f"{s}_rows"])
    parts = json.loads(str(got["members"]))
    assert [p["weight"] for p in parts] == [0.25, 0.75] and parts[1]["members"] == ["run2"]


def test_teachers_of_other_faces_are_refused(tmp_path):
    mix = mix_script()
    a, b = teacher_file(tmp_path / "a.npz", 1), teacher_file(tmp_path / "b.npz", 2, rows=21)
    with pytest.raises(FerkitError, match="Training_rows differ"):
        mix.mixed([mix.read_teacher(str(a)), mix.read_teacher(str(b))], [1, 1], [str(a), str(b)])
