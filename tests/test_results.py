"""ferkit.results: one ImageResult per image (a sequence of FaceResults), its dict, rows, plot and summary."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ferkit.labels import EMOTIONS
from ferkit.results import FACE_ROW_FIELDS, FaceResult, ImageResult, face_result, row_fields


def probabilities(top: str, p: float = 0.8) -> np.ndarray:
    return np.array([p if c == top else (1 - p) / (len(EMOTIONS) - 1) for c in EMOTIONS])


@pytest.fixture
def result() -> ImageResult:
    image = np.full((120, 200, 3), 90, np.uint8)
    faces = [face_result(probabilities("happy"), (10, 20, 40, 50), EMOTIONS, 0.5, 0.93),
             face_result(probabilities("sad", 0.3), (120, 30, 44, 44), EMOTIONS, 0.5, 0.81)]
    return ImageResult("photo.jpg", image, faces)


def test_face_result_is_built_from_probabilities():
    face = face_result(probabilities("fear", 0.45), np.array([1.0, 2.0, 3.0, 4.0]), EMOTIONS, 0.5)
    assert face.box == (1, 2, 3, 4) and all(isinstance(v, int) for v in face.box)
    assert face.label == face.dominant_emotion == "fear" and face.confidence == pytest.approx(0.45)
    assert face.unsure and face.detection_score is None
    assert list(face.probabilities) == list(EMOTIONS)


def test_image_result_is_a_sequence_of_its_faces(result):
    assert len(result) == 2 and bool(result) and result[0].label == "happy"
    assert [f.label for f in result] == ["happy", "sad"]
    [first, second] = result
    assert isinstance(first, FaceResult) and second is result.faces[1]
    assert result[-1] is second and result[:1] == [first]
    assert result == [first, second] and result != []
    empty = ImageResult("coffee.jpg", result.image, [])
    assert not empty and len(empty) == 0 and empty == [] and list(empty) == []


def test_to_dict_has_the_named_box_and_the_emotions(result):
    d = json.loads(json.dumps(result.to_dict()))
    assert (d["source"], d["width"], d["height"]) == ("photo.jpg", 200, 120)
    face = d["faces"][0]
    assert face["box"] == {"x": 10, "y": 20, "w": 40, "h": 50}
    assert face["dominant_emotion"] == "happy" and face["confidence"] == pytest.approx(0.8)
    assert list(face["emotions"]) == list(EMOTIONS) and sum(face["emotions"].values()) == pytest.approx(1.0)
    assert face["unsure"] is False and face["detection_score"] == pytest.approx(0.93)
    assert d["faces"][1]["unsure"] is True
    compact = result[0].to_dict()  # what `ferkit predict --json` prints per face
    assert compact["box"] == [10, 20, 40, 50] and set(compact) == {"box", "label", "confidence", "probabilities",
                                                                   "unsure", "detection_score"}


def test_to_rows_are_flat_and_follow_row_fields(result):
    rows = result.to_rows()
    assert [list(r) for r in rows] == [row_fields(EMOTIONS)] * 2
    assert row_fields(EMOTIONS)[2:2 + len(FACE_ROW_FIELDS)] == list(FACE_ROW_FIELDS)
    first = rows[0]
    assert (first["source"], first["face"], first["x"], first["w"], first["label"]) == ("photo.jpg", 1, 10, 40, "happy")
    assert first["happy"] == 0.8 and first["confidence"] == 0.8 and first["detection_score"] == 0.93
    assert rows[1]["face"] == 2 and rows[1]["unsure"] is True


def test_plot_is_an_annotated_copy(result):
    before = result.image.copy()
    drawn = result.plot()
    assert drawn.shape == result.image.shape and drawn.dtype == np.uint8
    assert np.array_equal(result.image, before)  # the image itself is untouched
    x, y, w, h = result[0].box
    assert not np.array_equal(drawn[y:y + h, x], before[y:y + h, x])  # the box's left edge
    assert np.array_equal(ImageResult("x", before, []).plot(), before)


def test_plot_of_an_image_analysed_smaller_draws_at_its_scale():
    small = np.full((50, 100, 3), 90, np.uint8)  # a 200 x 100 input analysed at half its size
    face = face_result(probabilities("happy"), (100, 40, 40, 40), EMOTIONS, 0.5)
    result = ImageResult("big", small, [face], input_size=(200, 100))
    assert result.size == (200, 100) and result.to_dict()["faces"][0]["box"]["x"] == 100
    drawn = result.plot()
    assert drawn.shape == small.shape
    assert not np.array_equal(drawn[20:40, 50], small[20:40, 50])  # the box at x = 100 / 2


def test_summary_names_the_source_and_every_face(result):
    lines = result.summary().splitlines()
    assert lines[0] == "photo.jpg: 2 faces"
    assert "happy" in lines[1] and "80.0%" in lines[1] and "box 10,20,40,50" in lines[1] and "next:" in lines[1]
    assert lines[2].endswith("(unsure)")
    assert ImageResult("coffee.jpg", result.image, []).summary() == "coffee.jpg: no face found"
    assert ImageResult("one.jpg", result.image, result.faces[:1]).summary().startswith("one.jpg: 1 face\n")


def test_with_unsure_threshold_redecides_without_the_model(result):
    strict = result.with_unsure_threshold(0.9)
    assert [f.unsure for f in strict] == [True, True] and [f.unsure for f in result] == [False, True]
    assert strict.image is result.image and strict.source == result.source
    assert [f.unsure for f in result.with_unsure_threshold(0.0)] == [False, False]


def test_plot_reads_on_a_gray_image():
    gray = np.full((60, 60), 128, np.uint8)
    face = face_result(probabilities("angry"), (5, 5, 30, 30), EMOTIONS, 0.5)
    drawn = ImageResult("g", cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), [face]).plot()
    assert drawn.shape == (60, 60, 3)
