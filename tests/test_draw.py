"""ferkit.draw: boxes and tags; in a tight group no tag covers another, and every tag stays inside the image."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ferkit.draw import annotate, colour, overlaps, place_tags, plot_colour, tag_for
from ferkit.labels import EMOTIONS
from ferkit.results import face_result


def faces_at(boxes, label="happy"):
    p = np.array([0.8 if c == label else 0.2 / 6 for c in EMOTIONS])
    return [face_result(p, box, EMOTIONS, 0.5) for box in boxes]


def spots_of(faces, shape):
    tags = [tag_for(f, shape) for f in faces]
    return place_tags([f.box for f in faces], [(t.width, t.height) for t in tags], shape)


@pytest.mark.parametrize("boxes", [
    [(20 + 32 * i, 100, 30, 30) for i in range(10)],                          # a tight row of small faces
    [(40 + 34 * (i % 5), 60 + 34 * (i // 5), 32, 32) for i in range(15)],     # a tight grid: three rows
    [(0, 0, 40, 40), (38, 2, 40, 40), (560, 0, 40, 40)],                      # at the top edge and the corners
])
def test_tags_never_overlap_and_stay_inside(boxes):
    shape = (300, 600, 3)
    spots = spots_of(faces_at(boxes), shape)
    for a, b in itertools.combinations(spots, 2):
        assert not overlaps(a, b), (a, b)
    for x, y, w, h in spots:
        assert 0 <= x and x + w <= shape[1] and 0 <= y and y + h <= shape[0]


def test_a_lone_face_is_tagged_just_above_its_box():
    [face] = faces_at([(100, 100, 80, 80)])
    [(x, y, w, h)] = spots_of([face], (400, 400, 3))
    assert x == 100 and y + h == 100  # the tag's bottom edge on the box's top edge
    [top] = faces_at([(100, 0, 80, 80)])
    [(_, y_top, _, _)] = spots_of([top], (400, 400, 3))
    assert y_top == 0  # no room above: inside the box's top edge


def test_annotate_draws_on_a_copy_in_the_emotions_colour():
    image = np.zeros((200, 300, 3), np.uint8)
    [face] = faces_at([(50, 80, 60, 60)], "sad")
    drawn = annotate(image, [face])
    assert not image.any() and drawn.shape == image.shape
    assert drawn[110, 50].any()  # the box's left edge
    [(x, y, _, _)] = spots_of([face], image.shape)
    assert tuple(int(v) for v in drawn[y + 1, x + 1]) == colour("sad")  # the tag's background
    assert plot_colour("sad") == pytest.approx(tuple(v / 255 for v in colour("sad")[::-1]))
    assert annotate(np.zeros((200, 300), np.uint8), [face]).shape == (200, 300, 3)
