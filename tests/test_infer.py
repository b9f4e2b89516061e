"""The inference API: every kind of image input, model loading and its failures, the pipeline on real photos."""

import io
import json
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ferkit import infer
from ferkit.data import load_split
from ferkit.errors import ImageError, ModelError
from ferkit.export import default_meta, export_onnx
from ferkit.images import read_image
from ferkit.infer import load
from ferkit.models import create_model
from ferkit.results import FaceResult

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"
ASTRONAUT = PHOTOS / "single_happy_astronaut.jpg"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A randomly initialised fastnet, exported the ferkit way: the pipeline tests do not depend on trained weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "random.onnx"
    return export_onnx(create_model("fastnet"), path, default_meta("fastnet", temperature=0.8, unsure_threshold=0.3))


@pytest.fixture(scope="module")
def recognizer(model_path):
    return load(model_path)


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


# --- read_image ------------------------------------------------------------------------------------


def test_every_input_type_gives_the_same_pixels(tmp_path):
    bgr = cv2.imread(str(ASTRONAUT))
    rgb = bgr[:, :, ::-1]
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), bgr)
    for source in (str(png), png, png.read_bytes(), bytearray(png.read_bytes()), Image.fromarray(rgb), bgr):
        out = read_image(source)
        assert out.dtype == np.uint8 and out.shape == bgr.shape
        assert np.array_equal(out, bgr), type(source)
    assert np.array_equal(read_image(np.ascontiguousarray(rgb), color="rgb"), bgr)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(read_image(gray), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    assert np.array_equal(read_image(np.dstack([bgr, np.full(gray.shape, 7, np.uint8)])), bgr)  # BGRA: alpha dropped
    assert np.array_equal(read_image(bgr.astype(np.uint16) * 257), bgr)  # 16-bit scaled to 8-bit


def test_jpeg_exif_orientation_is_honoured():
    image = Image.new("RGB", (120, 60), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 60, 60))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = read_image(encoded(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.shape == (120, 60, 3)  # shown upright: portrait
    top, bottom = out[:30].mean(axis=(0, 1)), out[-30:].mean(axis=(0, 1))
    assert top[2] > 200 and top[0] < 60  # red (BGR) on top after the rotation
    assert bottom[0] > 200 and bottom[2] < 60


def test_file_formats_and_modes(tmp_path):
    rgb = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    pil = Image.fromarray(rgb)
    rgba = pil.copy()
    rgba.putalpha(128)
    cases = {
        "rgba.png": encoded(rgba, "PNG"),
        "palette.png": encoded(pil.quantize(256), "PNG"),
        "palette.gif": encoded(pil.quantize(256), "GIF"),
        "cmyk.jpg": encoded(pil.convert("CMYK"), "JPEG", quality=95),
        "gray.webp": encoded(pil.convert("L"), "WEBP", lossless=True),
    }
    for name, data in cases.items():
        out = read_image(data, name=name)
        assert out.shape == (512, 512, 3) and out.dtype == np.uint8, name
        expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY if "gray" in name else cv2.COLOR_RGB2BGR)
        got = out[:, :, 0] if "gray" in name else out
        assert np.abs(got.astype(float) - expected).mean() < 8, name  # the same picture, in BGR order
    sixteen = tmp_path / "gray16.png"
    cv2.imwrite(str(sixteen), (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257))
    assert np.array_equal(read_image(sixteen)[:, :, 0], cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with a few rows of zeros: cheap to make, huge if decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(b"\0" * (width + 1) * 16)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width,height", [(20000, 20000), (8000, 7000)])
def test_huge_image_is_refused_from_its_header(tmp_path, width, height):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(width, height))
    start = time.perf_counter()
    with pytest.raises(ImageError, match=r"huge.png is .*more than the 50 MP ferkit reads.*downscale it first"):
        read_image(path)
    assert time.perf_counter() - start < 1.0


def test_bad_inputs_give_clear_errors(tmp_path):
    truncated = ASTRONAUT.read_bytes()[:20000]
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("this is not an image\n")
    cases = [
        (b"", "image bytes: empty"),
        (tmp_path / "empty.jpg", "empty.jpg: empty file"),
        (tmp_path / "notes.jpg", "notes.jpg is not an image"),
        (truncated, "cannot decode image bytes: the file is truncated"),
        (tmp_path / "missing.jpg", "image not found: .*missing.jpg"),
        (tmp_path, "not a file"),
        (np.zeros((1, 1, 3), np.uint8), "1x1 px: too small"),
        (encoded(Image.new("RGB", (1, 1)), "PNG"), "1x1 px: too small"),
        (np.zeros((0, 5), np.uint8), "empty"),
        (np.zeros((20, 20, 2), np.uint8), "shape"),
        (12345, "cannot read an image from a int"),
    ]
    for source, message in cases:
        with pytest.raises(ImageError, match=message):
            read_image(source)
    with pytest.raises(ImageError, match="upload.png is 1x1"):
        read_image(encoded(Image.new("RGB", (1, 1)), "PNG"), name="upload.png")


# --- the model ---------------------------------------------------------------------------------------


def test_model_failures_are_model_errors(model_path, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(ModelError, match="ONNX Runtime cannot load the model .*garbage.onnx"):
        load(garbage)
    with pytest.raises(ModelError, match="model file not found"):
        load(tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="no bundled model named 'nope'"):
        load("nope")
    (tmp_path / "best.pt").write_bytes(b"x")
    with pytest.raises(ModelError, match="export it first"):
        load(tmp_path / "best.pt")
    # a copy whose bytes no longer match its sidecar
    corrupt = tmp_path / "corrupt.onnx"
    data = bytearray(model_path.read_bytes())
    data[-10] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    corrupt.with_name("corrupt.onnx.sha256").write_text(model_path.with_name("random.onnx.sha256").read_text())
    with pytest.raises(ModelError, match=r"checksum mismatch for model corrupt.onnx \(.*\): expected [0-9a-f]{64}, "
                                         "got [0-9a-f]{64}; the file is corrupt, reinstall ferkit or re-export"):
        load(corrupt)


def test_model_without_ferkit_metadata(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(create_model("fastnet").eval(), (torch.zeros(1, 1, 48, 48),), str(path), dynamo=False,
                      input_names=["input"], output_names=["logits"])
    with pytest.raises(ModelError, match="no 'ferkit' metadata"):
        load(path)


def with_metadata(source: Path, target: Path, **changes) -> Path:
    """A copy of a ferkit ONNX file whose metadata says something else (no sidecar)."""
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(source))
    meta = json.loads(next(p.value for p in proto.metadata_props if p.key == infer.META_PROPERTY))
    onnx.helper.set_model_props(proto, {infer.META_PROPERTY: json.dumps({**meta, **changes})})
    onnx.save(proto, str(target))
    return target


def three_channel_model(path: Path) -> Path:
    """An ONNX graph that takes colour (N, 3, 48, 48) input, with ferkit's (grayscale) metadata."""
    onnx = pytest.importorskip("onnx")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 7)).eval()
    torch.onnx.export(net, (torch.zeros(2, 3, 48, 48),), str(path), dynamo=False, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {infer.META_PROPERTY: json.dumps(default_meta("fastnet"))})
    onnx.save(proto, str(path))
    return path


def test_a_graph_that_disagrees_with_its_metadata_is_refused_at_load(model_path, tmp_path, capsys):
    from ferkit.cli import main

    wrong_size = with_metadata(model_path, tmp_path / "size.onnx", input_size=64)
    with pytest.raises(ModelError, match=r"size.onnx: the model takes tensor\(float\) of shape \['batch', 1, 48, 48\] "
                                         r"but its metadata says float \(N, 1, 64, 64\)"):
        load(wrong_size)
    colour = three_channel_model(tmp_path / "colour.onnx")
    with pytest.raises(ModelError, match=r"colour.onnx: the model takes .* \['batch', 3, 48, 48\] but its metadata "
                                         r"says float \(N, 1, 48, 48\) \(1 channel, 48 px\); re-export it"):
        load(colour)
    assert main(["predict", str(PHOTOS / "group4_family.jpg"), "--model", str(colour)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"ferkit: error: {colour}: the model takes")


def test_invalid_metadata_is_refused():
    with pytest.raises(ModelError, match="lacks classes"):
        infer.check_meta({k: 1 for k in infer.REQUIRED_META if k != "classes"}, "m.onnx")
    with pytest.raises(ModelError, match="temperature is out of range"):
        infer.check_meta(default_meta("fastnet", temperature=-1.0), "m.onnx")


def test_recognizer_settings(model_path):
    r = load(model_path, unsure_threshold=0.9, detector="haar", threads=1, batch_size=3)
    assert r.unsure_threshold == 0.9 and r.detector == "haar" and r.classes[3] == "happy"
    with pytest.raises(ValueError, match="choose one of"):
        load(model_path, detector="nope")


def test_detector_is_the_detector_object(model_path):
    from ferkit.faces import FaceDetector, HaarDetector

    r = load(model_path, detector="haar")
    assert isinstance(r.detector, HaarDetector) and isinstance(r.detector, FaceDetector)
    assert r.detector_name == "haar" and "haar" in repr(r)
    assert load(model_path).detector_name == "yunet"  # auto: YuNet when this OpenCV has it


# --- the pipeline ------------------------------------------------------------------------------------


def test_face_image_is_classified_without_detection(recognizer):
    face = load_split("PublicTest").images[0]
    [result] = recognizer.predict(face)
    assert result.box == (0, 0, 48, 48) and result.detection_score is None
    assert result.label in recognizer.classes
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.unsure == (result.confidence < 0.3)
    assert json.loads(json.dumps(result.to_dict()))["box"] == [0, 0, 48, 48]


def test_predict_faces_batches_equal_single_faces(model_path):
    faces = load_split("PublicTest").images[:10]
    r = load(model_path, batch_size=4)  # 3 ONNX calls
    batched = r.predict_faces(faces)
    single = np.concatenate([r.predict_faces(faces[i:i + 1]) for i in range(10)])
    assert batched.shape == (10, 7) and np.allclose(batched, single, atol=1e-6)
    assert np.allclose(r.predict_faces(list(faces)), batched, atol=1e-6)  # a list works as well as a stack
    # temperature: probabilities = softmax(logits / T)
    assert np.allclose(batched, infer.softmax(r.logits_faces(faces) / 0.8), atol=1e-6)
    flipped = r.predict_faces(faces, tta="flip")
    assert flipped.shape == (10, 7) and np.allclose(flipped.sum(1), 1, atol=1e-5)
    assert np.allclose(flipped, (batched + r.predict_faces(faces[:, :, ::-1])) / 2, atol=1e-6)
    assert r.predict_faces([]).shape == (0, 7)


def test_photos(recognizer):
    family = recognizer.predict(PHOTOS / "group4_family.jpg")
    assert len(family) == 4 and [f.box[0] for f in family] == sorted(f.box[0] for f in family)
    assert all(f.detection_score > 0.7 for f in family)
    assert recognizer.predict(PHOTOS / "noface_coffee.jpg") == []
    batch = recognizer.predict_batch([PHOTOS / "noface_coffee.jpg", ASTRONAUT, PHOTOS / "group4_family.jpg"])
    assert [len(b) for b in batch] == [0, 1, 4]
    assert np.allclose([f.confidence for f in batch[2]], [f.confidence for f in family], atol=1e-6)


def test_many_faces_in_one_photo(recognizer):
    image = cv2.imread(str(ASTRONAUT))[20:240, 130:320]  # the face with some margin, 190 x 220
    tiled = np.tile(image, (4, 5, 1))  # 20 faces
    results = recognizer.predict(tiled)
    assert len(results) >= 18
    assert all(isinstance(r, FaceResult) for r in results)


def test_annotate(recognizer):
    image = cv2.imread(str(PHOTOS / "group4_family.jpg"))
    before = image.copy()
    results = recognizer.predict(image)
    results[0].unsure = True
    drawn = recognizer.annotate(image, results)
    assert drawn.shape == image.shape and np.array_equal(image, before)  # a copy; the input is untouched
    x, y, w, h = results[1].box
    assert not np.array_equal(drawn[y:y + h, x], image[y:y + h, x])  # the box's left edge is drawn
    assert recognizer.annotate(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), results).shape == image.shape
    assert recognizer.annotate(np.zeros((48, 48), np.uint8), recognizer.predict(np.zeros((48, 48), np.uint8))).shape \
        == (48, 48, 3)


# --- the bundled model ------------------------------------------------------------------------------


@pytest.mark.parametrize("name,emotion", [("single_happy_astronaut.jpg", "happy"), ("single_angry_gray.jpg", "angry"),
                                          ("single_sad_baby.jpg", "sad")])
def test_bundled_model_on_real_photos(name, emotion):
    [face] = load().predict(PHOTOS / name)
    assert face.label == emotion and face.confidence > 0.5, face.probabilities


def test_bundled_model_sees_surprise_or_fear_on_the_surprised_santa():
    """Wide eyes and an open mouth: FER2013 models confuse surprise with fear. The default says fear
    0.39, surprise 0.19 here, and surprise 0.30-0.49 for boxes a few pixels different; surprise must
    rank in the top two, and the two together hold most of the probability."""
    [face] = load().predict(PHOTOS / "single_surprised_santa.jpg")
    p = face.probabilities
    assert "surprise" in sorted(p, key=p.get, reverse=True)[:2] and p["surprise"] + p["fear"] >= 0.5, p
