"""ferkit.meta.ModelMeta: the model contract; every validation error names its field, and it round-trips."""

from __future__ import annotations

import json

import pytest

from ferkit.errors import ModelError
from ferkit.labels import EMOTIONS, FERPLUS_EMOTIONS
from ferkit.meta import REQUIRED, ModelMeta, check_meta, default_meta


def test_round_trip_through_a_dict_and_json():
    meta = ModelMeta(name="m", arch="fastnet", classes=FERPLUS_EMOTIONS, input_size=64, temperature=1.3,
                     unsure_threshold=0.45, face_margin=0.1, provenance={"run": "runs/x"})
    stored = json.loads(json.dumps(meta.to_dict()))
    assert stored["classes"] == list(FERPLUS_EMOTIONS)
    again = ModelMeta.from_dict(stored, "m.onnx")
    assert again == meta and again.classes == FERPLUS_EMOTIONS and isinstance(again.classes, tuple)
    assert check_meta(stored, "m.onnx") == meta.to_dict()
    assert meta.replace(temperature=2.0).temperature == 2.0 and meta.temperature == 1.3


def test_defaults_fill_the_optional_fields():
    meta = ModelMeta.from_dict(default_meta("fastnet"), "x")
    assert (meta.name, meta.classes, meta.input_size, meta.channels, meta.temperature) == (
        "fastnet", EMOTIONS, 48, 1, 1.0)
    assert set(REQUIRED) <= set(meta.to_dict())


@pytest.mark.parametrize("field, value", [
    ("classes", ["happy"]), ("classes", ["a", "a"]), ("input_size", 4), ("input_size", 48.0), ("channels", 3),
    ("preprocess", "sharpen"), ("std", 0), ("temperature", -1.0), ("temperature", float("nan")),
    ("unsure_threshold", 1.5), ("face_margin", -0.9), ("mean", "half"), ("provenance", []),
    ("graph_tta", "crops"), ("members", "vgg"), ("members", [{"name": "a"}]),
    ("members", [{"name": "a", "arch": "vgg", "weight": 0.5, "temperature": 1.0}]),  # weights sum to 0.5
    ("members", [{"name": "a", "arch": "vgg", "weight": 1.0, "temperature": 0}]),
])
def test_every_invalid_field_is_named(field, value):
    stored = default_meta("fastnet")
    stored[field] = value
    with pytest.raises(ModelError, match=rf"^m\.onnx: invalid model metadata: {field} "):
        ModelMeta.from_dict(stored, "m.onnx")


def test_missing_fields_and_non_objects_are_named():
    with pytest.raises(ModelError, match="m.onnx: model metadata lacks classes, temperature"):
        ModelMeta.from_dict({k: v for k, v in default_meta("fastnet").items() if k not in ("classes", "temperature")},
                            "m.onnx")
    with pytest.raises(ModelError, match="must be a JSON object, got list"):
        ModelMeta.from_dict([1, 2], "m.onnx")


def test_several_problems_are_listed_together():
    with pytest.raises(ModelError) as e:
        ModelMeta(name="m", arch="a", std=-1, temperature=0)
    assert "std is out of range" in str(e.value) and "temperature is out of range" in str(e.value)
    assert "\n" not in str(e.value)


def test_model_meta_is_frozen():
    meta = ModelMeta(name="m", arch="a")
    with pytest.raises(AttributeError):
        meta.temperature = 2.0


def test_metadata_from_before_ensembles_loads_as_a_single_model():
    """Files written before ``members`` and ``graph_tta`` existed (the bundled ones among them) read as before."""
    stored = {k: v for k, v in default_meta("vgg").items() if k not in ("members", "graph_tta")}
    meta = check_meta(stored, "old.onnx")
    assert (meta["members"], meta["graph_tta"]) == ([], "none")
    merged = {**stored, "arch": "ensemble", "graph_tta": "flip", "members": [
        {"source": "runs/a", "name": "a", "arch": "vgg", "weight": 0.75, "temperature": 1.2},
        {"source": "runs/b", "name": "b", "arch": "resnet18", "weight": 0.25, "temperature": 0.9}]}
    again = ModelMeta.from_dict(json.loads(json.dumps(check_meta(merged, "best.onnx"))), "best.onnx")
    assert again.members == tuple(merged["members"]) and again.to_dict()["members"] == merged["members"]
