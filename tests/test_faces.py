"""Face detection and FER2013-style crops on real photos (shared/data/photos, see its README)."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferkit import faces, weights
from ferkit.errors import ModelError
from ferkit.faces import Detection, crop_face, detect_faces, eye_angle

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"
SINGLES = sorted(p.name for p in PHOTOS.glob("single_*.jpg"))

pytestmark = pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"test photos not found at {PHOTOS}")


def photo(name: str) -> np.ndarray:
    return cv2.imread(str(PHOTOS / name))


@pytest.mark.parametrize("name", SINGLES)
def test_single_face_photos(name):
    found = detect_faces(photo(name))
    assert len(found) == 1, [d.box for d in found]
    x, y, w, h = found[0].box
    assert w > 50 and h > 50 and found[0].landmarks.shape == (5, 2)


def test_group_photos():
    family = detect_faces(photo("group4_family.jpg"))
    assert len(family) == 4
    assert [d.box[0] for d in family] == sorted(d.box[0] for d in family)  # left to right
    assert len(detect_faces(photo("group2_laos.jpg"))) == 2
    classroom = detect_faces(photo("group_classroom.jpg"))
    assert 8 <= len(classroom) <= 23  # 17 clearly visible faces, 23 people


@pytest.mark.parametrize("name", ["noface_rocket.jpg", "noface_coffee.jpg"])
def test_photos_without_faces(name):
    assert detect_faces(photo(name)) == []


def test_haar_floor():
    assert len(detect_faces(photo("single_happy_astronaut.jpg"), detector="haar")) == 1
    assert detect_faces(photo("noface_coffee.jpg"), detector="haar") == []
    with pytest.raises(ValueError, match="choose one of"):
        detect_faces(photo("noface_coffee.jpg"), detector="mtcnn")


def test_boxes_are_clipped_to_the_image():
    image = photo("single_sad_baby.jpg")  # the face runs off the top and bottom of the frame
    for d in detect_faces(image):
        x, y, w, h = d.box
        assert x >= 0 and y >= 0 and x + w <= image.shape[1] and y + h <= image.shape[0]


def test_crop_face_size_dtype_and_padding():
    image = photo("single_sad_baby.jpg")
    det = detect_faces(image)[0]
    crop = crop_face(image, det)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    assert crop_face(image, det, size=64, margin=0.4).shape == (64, 64)
    # a box at the corner: the square leaves the image and is filled by edge replication, not black
    corner = crop_face(np.full((100, 100, 3), 200, np.uint8), Detection((0, 0, 40, 60)), margin=0.5)
    assert corner.min() == 200


def test_crop_levels_the_eyes():
    # a bright bar tilted by 20 degrees through the middle; with "eyes" along it, the crop makes it level
    image = np.zeros((200, 200), np.uint8)
    centre, angle = np.array([100.0, 100.0]), np.radians(20)
    direction = np.array([np.cos(angle), np.sin(angle)])
    cv2.line(image, tuple((centre - 60 * direction).astype(int)), tuple((centre + 60 * direction).astype(int)), 255, 5)
    eyes = np.array([centre - 30 * direction, centre + 30 * direction], np.float32)
    det = Detection((40, 40, 120, 120), 0.9, np.vstack([eyes, np.zeros((3, 2), np.float32)]))
    assert eye_angle(det.landmarks) == pytest.approx(20, abs=0.01)
    bright_rows = lambda crop: np.count_nonzero((crop > 128).any(axis=1))  # noqa: E731
    assert bright_rows(crop_face(image, det, size=120, margin=0.0)) <= 8  # one level band
    assert bright_rows(crop_face(image, det, size=120, margin=0.0, align=False)) > 30  # 120 px at 20 degrees


def test_detector_checksum_mismatch(tmp_path, monkeypatch):
    copy = tmp_path / "weights"
    shutil.copytree(weights.WEIGHTS_DIR, copy)
    data = bytearray((copy / "yunet.onnx").read_bytes())
    data[1000] ^= 0xFF
    (copy / "yunet.onnx").write_bytes(bytes(data))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", copy)
    monkeypatch.setattr(weights, "MANIFEST", copy / "manifest.json")
    faces.get_detector.cache_clear()
    try:
        with pytest.raises(ModelError, match="checksum mismatch for detector 'yunet'.*reinstall ferkit"):
            faces.get_detector("yunet")
    finally:
        faces.get_detector.cache_clear()


def test_pass_sides_follow_the_image_size():
    from ferkit.faces import pass_sides

    assert pass_sides(640) == (374,)           # one pass sees 48-px faces and the whole image
    assert pass_sides(800) == (467, 320)       # a coarse pass is added for faces too large for the fine one
    assert pass_sides(200) == (200,)           # never upscaled
    assert pass_sides(10000)[0] == 1280        # the fine pass is capped
