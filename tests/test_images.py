"""ferkit.images: every accepted file type, arrays checked (never clipped), huge arrays converted once, small."""

from __future__ import annotations

import io
import time
import tracemalloc

import cv2
import numpy as np
import pytest
from PIL import Image

from ferkit import images
from ferkit.errors import ImageError
from ferkit.images import IMAGE_SUFFIXES, as_uint8_image, read_image


def encoded(image: Image.Image, suffix: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, Image.registered_extensions()[suffix])
    return buffer.getvalue()


@pytest.mark.parametrize("suffix", IMAGE_SUFFIXES)
def test_every_accepted_suffix_is_readable_here(photos_dir, suffix):
    """The one list the CLI, the app and image folders accept: each suffix must decode on this machine."""
    rgb = Image.open(photos_dir / "single_happy_astronaut.jpg").convert("RGB").resize((64, 64))
    out = read_image(encoded(rgb, suffix), name=f"x{suffix}")
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.abs(out[:, :, ::-1].astype(float) - np.asarray(rgb)).mean() < 12, suffix  # same picture, BGR


@pytest.mark.parametrize("array, fragment", [
    (np.full((32, 32), 300, np.int32), "int32 values from 300 to 300: pixels of this type must be 0-255"),
    (np.arange(-5, 32 * 32 - 5).reshape(32, 32).astype(np.int16), "from -5 to"),
    (np.full((32, 32, 3), 256, np.int64), "must be 0-255 (use uint16 for 16-bit images)"),
    (np.full((32, 32), -0.25), "float64 values from -0.25 to -0.25: pixels of this type must be 0-1 or 0-255"),
    (np.full((32, 32), 300.0, np.float32), "from 300.0 to 300.0"),
])
def test_out_of_range_arrays_are_refused_not_clipped(array, fragment):
    with pytest.raises(ImageError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        read_image(array)


def test_in_range_arrays_of_any_type_convert_exactly():
    values = np.array([[0, 1, 127, 255]] * 16)
    for dtype in (np.int8, np.int16, np.int32, np.int64, np.uint32):
        if np.iinfo(dtype).max >= 255:
            assert as_uint8_image(values.astype(dtype)).tolist() == values.tolist(), dtype
    assert as_uint8_image(np.array([[0.0, 0.5, 1.0]], np.float16)).tolist() == [[0, 128, 255]]
    assert as_uint8_image(np.array([[0.0, 2.0, 254.6]])).tolist() == [[0, 2, 255]]


def test_a_huge_float_array_is_converted_once_and_small(recognizer_path, photos_dir):
    """8000x6000 float64: shrunk to the size the detector can use before converting, boxes in input pixels."""
    from ferkit.infer import load

    photo = cv2.imread(str(photos_dir / "single_happy_astronaut.jpg"), cv2.IMREAD_GRAYSCALE)  # 512 x 512
    square = cv2.resize(photo, (6000, 6000), interpolation=cv2.INTER_LINEAR)
    huge = np.pad(square, ((0, 2000), (0, 0)), mode="edge").astype(np.float64) / 255.0  # 8000 x 6000, 384 MB
    recognizer = load(recognizer_path)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = recognizer.predict(huge)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    assert peak < 120e6, f"{peak / 1e6:.0f} MB allocated: a full-size copy of the 384 MB array was made"
    assert elapsed < 10, elapsed
    assert result.size == (6000, 8000) and max(result.image.shape[:2]) < 8000
    [face] = result
    small = recognizer.predict(photo)[0]  # the same face, found in the 512 px photo
    for got, want in zip(face.box, small.box):
        assert got == pytest.approx(want * 6000 / 512, rel=0.05, abs=60)


def test_uint8_arrays_are_used_as_they_are(recognizer_path, photos_dir):
    from ferkit.infer import load

    image = cv2.imread(str(photos_dir / "group4_family.jpg"))
    result = load(recognizer_path).predict(image)
    assert result.image is image and result.size == (image.shape[1], image.shape[0])  # no copy, no rescale


def test_source_names():
    assert images.source_name("a/b.jpg") == "a/b.jpg" and images.source_name(b"..", "up.png") == "up.png"
    assert images.source_name(np.zeros((3, 4, 3))) == "array (3, 4, 3)" and images.source_name(b"x") == "image bytes"


@pytest.fixture(scope="module")
def recognizer_path(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from ferkit.export import default_meta, export_onnx
    from ferkit.models import create_model

    torch.manual_seed(0)
    return export_onnx(create_model("fastnet"), tmp_path_factory.mktemp("model") / "random.onnx",
                       default_meta("fastnet"))
