"""ferkit.preprocess: the report's OpenCV steps, the figure, faces -> model input, and the CLI."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import cv2
import numpy as np
import pytest

from conftest import REPO, tiny_face
from ferkit.errors import ImageError, ModelError
from ferkit.images import as_uint8_image, read_image_file
from ferkit.preprocess import (
    REPORT, STAGES, ReportParams, apply_report_preprocessing, canny_edges, denoise, gaussian_blur, pipeline_figure,
    report_pipeline, resize, sharpen, to_model_input,
)

META = {"input_size": 48, "mean": 0.5, "std": 0.25, "preprocess": "none"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def colour(photos_dir) -> np.ndarray:
    """A real colour photo, downscaled to 120x100 so NL-means stays fast."""
    image = cv2.imread(str(photos_dir / "single_happy_astronaut.jpg"), cv2.IMREAD_COLOR)
    return cv2.resize(image, (100, 120), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def gray(colour) -> np.ndarray:
    return cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)


@pytest.mark.parametrize("kind", ["gray", "colour"])
def test_each_step_is_the_reports_opencv_call(request, kind):
    image = request.getfixturevalue(kind)
    stages = report_pipeline(image)
    assert list(stages) == list(STAGES)

    resized = cv2.resize(image, (48, 48))
    blurred = cv2.GaussianBlur(resized, (5, 5), 0)
    sharpened = cv2.addWeighted(resized, 1.5, blurred, -0.6, 0)
    if kind == "colour":
        denoised = cv2.fastNlMeansDenoisingColored(sharpened, None, 15, 15, 5, 20)
        as_gray = lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2GRAY)  # noqa: E731
    else:
        denoised = cv2.fastNlMeansDenoising(sharpened, None, 15, 5, 20)
        as_gray = lambda x: x  # noqa: E731
    expected = {
        "original": image, "resized": resized, "blurred": blurred, "sharpened": sharpened, "denoised": denoised,
        "edges_original": cv2.Canny(as_gray(resized), 30, 30), "edges_processed": cv2.Canny(as_gray(denoised), 30, 30),
    }
    for name, want in expected.items():
        assert stages[name].dtype == np.uint8, name
        assert np.array_equal(stages[name], want), name
    # The steps change the image: a pipeline that passed it through would fail here.
    assert not np.array_equal(stages["denoised"], resized)
    assert set(np.unique(stages["edges_processed"])) <= {0, 255}


def test_step_functions_follow_their_parameters(gray):
    p = ReportParams(size=32, blur_ksize=3, sharpen_alpha=2.0, sharpen_beta=-1.0, nlm_h=5, nlm_template=3,
                     nlm_search=7, canny_low=50, canny_high=120)
    stages = report_pipeline(gray, p)
    small = cv2.resize(gray, (32, 32))
    assert np.array_equal(stages["resized"], resize(gray, 32)) and stages["resized"].shape == (32, 32)
    assert np.array_equal(stages["blurred"], cv2.GaussianBlur(small, (3, 3), 0))
    assert np.array_equal(stages["sharpened"], cv2.addWeighted(small, 2.0, stages["blurred"], -1.0, 0))
    assert np.array_equal(stages["denoised"], cv2.fastNlMeansDenoising(stages["sharpened"], None, 5, 3, 7))
    assert np.array_equal(stages["edges_processed"], cv2.Canny(stages["denoised"], 50, 120))
    assert np.array_equal(gaussian_blur(small, 3), stages["blurred"])
    assert np.array_equal(sharpen(small, stages["blurred"], 2.0, -1.0), stages["sharpened"])
    assert np.array_equal(denoise(stages["sharpened"], p), stages["denoised"])
    assert np.array_equal(canny_edges(stages["denoised"], 50, 120), stages["edges_processed"])


def test_apply_report_preprocessing_is_blur_sharpen_denoise():
    face = tiny_face(7)
    blurred = cv2.GaussianBlur(face, (5, 5), 0)
    want = cv2.fastNlMeansDenoising(cv2.addWeighted(face, 1.5, blurred, -0.6, 0), None, 15, 5, 20)
    got = apply_report_preprocessing(face)
    assert got.dtype == np.uint8 and got.shape == (48, 48)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("bad", [
    dict(blur_ksize=4), dict(blur_ksize=0), dict(size=0), dict(nlm_h=-1), dict(nlm_search=0), dict(canny_low=-5),
])
def test_report_params_reject_bad_values(bad):
    with pytest.raises(ValueError):
        replace(REPORT, **bad)


# --- any input image ------------------------------------------------------------------------


def test_as_uint8_image_conversions():
    sixteen = np.array([[0, 257, 65535]], np.uint16)
    assert as_uint8_image(sixteen).tolist() == [[0, 1, 255]]
    assert as_uint8_image(np.array([[0.0, 0.5, 1.0]])).tolist() == [[0, 128, 255]]
    assert as_uint8_image(np.array([[True, False]])).tolist() == [[255, 0]]
    rgba = np.dstack([np.full((4, 5, 3), 9, np.uint8), np.zeros((4, 5), np.uint8)])
    assert as_uint8_image(rgba).shape == (4, 5, 3)
    assert as_uint8_image(np.zeros((4, 5, 1), np.uint8)).shape == (4, 5)


@pytest.mark.parametrize("bad, fragment", [
    (np.zeros((0, 5), np.uint8), "empty"),
    (np.zeros(5, np.uint8), "shape"),
    (np.zeros((4, 4, 2), np.uint8), "shape"),
    (np.full((4, 4), np.nan), "NaN"),
    (np.array([["a", "b"]]), "unsupported pixel type"),
    ([[1, 2], [3, 4]], "numpy array"),
])
def test_invalid_arrays_raise_image_error(bad, fragment):
    with pytest.raises(ImageError, match=fragment):
        report_pipeline(bad)


@pytest.mark.parametrize("kind", ["gray", "colour", "16-bit", "rgba", "odd-sized", "tiny"])
def test_figure_for_any_input(tmp_path, gray, colour, kind):
    images = {
        "gray": gray,
        "colour": colour,
        "16-bit": gray.astype(np.uint16) * 257,
        "rgba": np.dstack([colour, np.full(colour.shape[:2], 200, np.uint8)]),
        "odd-sized": cv2.resize(colour, (101, 37)),
        "tiny": gray[:3, :5],
    }
    path = tmp_path / f"{kind}.png"
    assert pipeline_figure(report_pipeline(images[kind]), path) == path
    figure = cv2.imread(str(path))
    assert figure is not None and figure.shape[1] > 3 * figure.shape[0]  # five panels side by side
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_read_image_file_formats(tmp_path, gray, colour):
    cases = {
        "gray.png": (gray, (120, 100)),
        "deep.png": (gray.astype(np.uint16) * 257, (120, 100)),
        "alpha.png": (np.dstack([colour, np.full(colour.shape[:2], 128, np.uint8)]), (120, 100, 3)),
        "colour.jpg": (colour, (120, 100, 3)),
    }
    for name, (image, shape) in cases.items():
        assert cv2.imwrite(str(tmp_path / name), image)
        read = read_image_file(tmp_path / name)
        assert read.dtype == np.uint8 and read.shape == shape, name
    assert np.array_equal(read_image_file(tmp_path / "deep.png"), gray)


def test_read_image_file_honours_exif_orientation(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    Image.fromarray(np.zeros((20, 60, 3), np.uint8)).save(tmp_path / "phone.jpg", exif=exif.tobytes())
    assert read_image_file(tmp_path / "phone.jpg").shape == (60, 20, 3)


def test_read_image_file_errors(tmp_path):
    with pytest.raises(ImageError, match="image not found: .*missing.png"):
        read_image_file(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="not a file"):
        read_image_file(tmp_path)
    for name, content in [("empty.png", b""), ("text.jpg", b"hello"), ("cut.png", PNG_MAGIC + b"\0" * 20)]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageError, match=f"cannot decode .*{name}"):
            read_image_file(tmp_path / name)


# --- faces -> model input --------------------------------------------------------------------


def test_to_model_input_normalises():
    faces = np.stack([tiny_face(i) for i in range(3)])
    x = to_model_input(faces, META)
    assert x.shape == (3, 1, 48, 48) and x.dtype == np.float32
    assert np.allclose(x[:, 0], (faces / 255.0 - 0.5) / 0.25, atol=1e-6)
    assert np.allclose(to_model_input(np.zeros((1, 48, 48), np.uint8), META), -2.0)
    assert np.allclose(to_model_input(np.full((1, 48, 48), 255, np.uint8), META), 2.0)


def test_to_model_input_resizes_a_list_with_inter_area():
    faces = [tiny_face(1)[:40, :30], np.full((48, 48), 128, np.uint8), cv2.resize(tiny_face(2), (97, 97))]
    meta = dict(META, input_size=64, mean=0.0, std=1.0)
    x = to_model_input(faces, meta)
    assert x.shape == (3, 1, 64, 64)
    for face, got in zip(faces, x[:, 0]):
        want = cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA) / 255.0
        assert np.allclose(got, want, atol=1e-6)


def test_to_model_input_report_preprocessing():
    faces = np.stack([tiny_face(i) for i in range(2)])
    x = to_model_input(faces, dict(META, preprocess="report"))
    want = np.stack([apply_report_preprocessing(f) for f in faces]) / 255.0
    assert np.allclose(x[:, 0], (want - 0.5) / 0.25, atol=1e-5)
    assert not np.allclose(x, to_model_input(faces, META))


def test_to_model_input_errors_and_empty():
    assert to_model_input([], META).shape == (0, 1, 48, 48)
    with pytest.raises(ModelError, match="preprocess='sharpen'"):
        to_model_input([tiny_face(0)], dict(META, preprocess="sharpen"))
    with pytest.raises(ModelError, match="input_size"):
        to_model_input([tiny_face(0)], {"mean": 0.5, "std": 0.25})
    with pytest.raises(ImageError, match="face 1"):
        to_model_input([tiny_face(0), np.zeros((48, 48, 3), np.uint8)], META)
    with pytest.raises(ImageError, match="face 0"):
        to_model_input([np.zeros((48, 48), np.float32)], META)


# --- command line -----------------------------------------------------------------------------


def _ferkit(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferkit", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_cli_writes_the_figure_for_a_real_photo(photos_dir, tmp_path):
    out = tmp_path / "steps.png"
    done = _ferkit("preprocess", str(photos_dir / "single_angry_gray.jpg"), "--out", str(out), "--nlm-h", "10",
                   "--canny", "40", "90")
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout
    assert out.read_bytes()[:8] == PNG_MAGIC and cv2.imread(str(out)).shape[1] > 1000


def test_cli_one_line_error_for_a_non_image(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    done = _ferkit("preprocess", str(bad), "--out", str(tmp_path / "x.png"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"ferkit: error: cannot decode {bad}: the file is empty, corrupt or not an image"]
    assert not (tmp_path / "x.png").exists()
    missing = _ferkit("preprocess", str(tmp_path / "nope.png"))
    assert missing.returncode == 1 and missing.stderr.strip() == f"ferkit: error: image not found: {tmp_path / 'nope.png'}"


def test_cli_rejects_bad_parameters(photos_dir, tmp_path):
    done = _ferkit("preprocess", str(photos_dir / "single_angry_gray.jpg"), "--blur", "4", "--out", str(tmp_path / "x.png"))
    assert done.returncode == 2 and "blur kernel size must be a positive odd number" in done.stderr
    done = _ferkit("preprocess", str(photos_dir / "single_angry_gray.jpg"), "--out", str(tmp_path / "x.doc"))
    assert done.returncode == 2 and "choose a figure suffix" in done.stderr
