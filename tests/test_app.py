"""The Streamlit app through streamlit.testing.v1.AppTest: every page, real photos, bad uploads.

Most tests drive the pages with a randomly initialised fastnet exported to ONNX (its labels are
arbitrary but valid), so they do not depend on trained weights; the `bundled` tests check what the
shipped default model says and shows.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from ferkit.app import MODEL_ENV, launch
from ferkit.app.common import MAX_IMAGE_MB, face_rows, results_json
from ferkit.labels import EMOTIONS
from ferkit.settings import DATA_ENV

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "ferkit" / "app" / "main.py"
SAMPLES = ROOT / "ferkit" / "app" / "samples"
ASTRONAUT = SAMPLES / "single_happy_astronaut.jpg"
FAMILY = SAMPLES / "group4_family.jpg"
TIMEOUT_S = 60
LABELS = (*EMOTIONS, "contempt", "unsure")


def export_random_model(path: Path) -> Path:
    """A randomly initialised fastnet as an ONNX file carrying ferkit's metadata."""
    torch = pytest.importorskip("torch")
    from ferkit.export import default_meta, export_onnx
    from ferkit.models import create_model

    torch.manual_seed(0)
    return export_onnx(create_model("fastnet"), path, default_meta("fastnet", name="random", unsure_threshold=0.3))


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    return export_random_model(tmp_path_factory.mktemp("model") / "random.onnx")


@pytest.fixture
def app(onnx_model, monkeypatch) -> AppTest:
    """The app, started on the Analyse page with the random model."""
    monkeypatch.setenv(MODEL_ENV, str(onnx_model))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.run()
    assert not at.exception
    return at


def upload(at: AppTest, *files: tuple[str, bytes]) -> AppTest:
    at.file_uploader(key="uploads").set_value([(name, data, "image/jpeg") for name, data in files]).run()
    assert not at.exception, at.exception
    return at


def face_titles(at: AppTest) -> list[str]:
    return [e.label for e in at.expander if e.label.startswith("Face ")]


def shown_label(title: str) -> str:
    """The label of ``Face 1: 😄 happy (87%)`` or ``Face 1: 🤔 unsure (best guess ...)``."""
    return title.split(":", 1)[1].split()[1]


# --- Analyse -----------------------------------------------------------------------------------


def test_analyse_page_starts_with_the_model(app):
    assert app.title[0].value.startswith("🔍")
    assert app.sidebar.selectbox(key="model").value.source.endswith("random.onnx")
    assert app.sidebar.slider[0].value == pytest.approx(0.3)  # the model's own unsure_threshold
    assert not app.error


def test_upload_one_photo(app):
    upload(app, ("astronaut.jpg", ASTRONAUT.read_bytes()))
    assert "1 face found in 1 image" in app.success[0].value
    titles = face_titles(app)
    assert len(titles) == 1 and shown_label(titles[0]) in LABELS
    table = app.dataframe[0].value
    assert len(table) == 1 and table["image"][0] == "astronaut.jpg"
    assert {f"p_{c}" for c in EMOTIONS} <= set(table.columns)
    assert len(app.get("progress")) == len(EMOTIONS)  # one bar per class
    assert [b.proto.label for b in app.get("download_button")] == ["⬇️ Download CSV", "⬇️ Download JSON"]


def test_upload_several_photos_and_a_corrupt_one(app):
    upload(app, ("family.jpg", FAMILY.read_bytes()), ("astronaut.jpg", ASTRONAUT.read_bytes()),
           ("broken.jpg", b"\xff\xd8\xff\xe0 this is not a jpeg"))
    assert "5 faces found in 2 images; 1 could not be read" in app.success[0].value
    assert len(app.dataframe[0].value) == 5
    assert list(app.dataframe[0].value["image"]).count("family.jpg") == 4
    errors = [e.value for e in app.main.error]
    assert len(errors) == 1 and "broken.jpg" in errors[0] and "\n" not in errors[0]


def test_text_file_renamed_jpg_is_a_one_line_error(app):
    upload(app, ("notes.jpg", b"hello, I am a text file\n" * 10))
    errors = [e.value for e in app.main.error]
    assert len(errors) == 1 and "notes.jpg" in errors[0] and "\n" not in errors[0]
    assert not app.dataframe


def test_photo_without_faces_warns(app, photos_dir):
    upload(app, ("coffee.jpg", (photos_dir / "noface_coffee.jpg").read_bytes()))
    assert any("no face found" in w.value for w in app.warning)
    assert not app.dataframe


def test_huge_upload_is_refused(app):
    upload(app, ("huge.jpg", b"\0" * (MAX_IMAGE_MB * 2**20 + 1)))
    assert f"over the {MAX_IMAGE_MB} MB limit" in app.main.error[0].value


def test_unsure_threshold_slider(app):
    app.sidebar.slider[0].set_value(1.0).run()
    upload(app, ("astronaut.jpg", ASTRONAUT.read_bytes()))
    assert shown_label(face_titles(app)[0]) == "unsure"
    assert app.dataframe[0].value["label"][0] == "unsure"


def test_sample_photo_and_tta(app):
    app.sidebar.selectbox(key="tta").set_value("crops").run()
    app.radio(key="source").set_value("🖼️ Try a sample photo").run()
    app.selectbox(key="sample").set_value(FAMILY).run()
    assert not app.exception
    assert len(app.dataframe[0].value) == 4


def test_camera_snapshot(app):
    app.radio(key="source").set_value("📷 Take a photo").run()
    app.camera_input(key="camera").set_value(("shot.jpg", ASTRONAUT.read_bytes(), "image/jpeg")).run()
    assert not app.exception
    assert app.dataframe[0].value["image"][0] == "camera.jpg"


def test_corrupt_model_is_a_clear_message(tmp_path, monkeypatch):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    monkeypatch.setenv(MODEL_ENV, str(broken))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    assert not at.exception
    assert at.main.error[0].value.startswith("No model is loaded: ")
    assert "broken.onnx" in at.sidebar.error[0].value


def test_no_model_at_all_is_a_clear_message(monkeypatch):
    from ferkit.app import common

    monkeypatch.delenv(MODEL_ENV, raising=False)
    monkeypatch.setattr(common, "bundled_models", dict)  # as before the bundled models are installed
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    assert not at.exception
    message = at.main.error[0].value
    assert message.startswith("No model is loaded: no model found") and MODEL_ENV in message
    at.switch_page("views/preprocessing.py").run()  # pages that need no model still work
    assert not at.exception and not at.main.error


def test_results_json_and_rows():
    from ferkit.app.common import ImageAnalysis
    from ferkit.results import ImageResult, face_result

    probabilities = np.array([0.9 if c == "happy" else 0.1 / 6 for c in EMOTIONS])
    faces = [face_result(probabilities, (1, 2, 3, 4), EMOTIONS, 0.5) for _ in range(2)]
    analyses = [ImageAnalysis("a.jpg", ImageResult("a.jpg", np.zeros((8, 8, 3), np.uint8), faces)),
                ImageAnalysis("b.jpg", problem="b.jpg: bad")]
    rows = face_rows(analyses)
    assert [(r["image"], r["face"], r["label"], r["w"]) for r in rows] == [
        ("a.jpg", 1, "happy", 3), ("a.jpg", 2, "happy", 3)]
    data = json.loads(results_json(analyses, "m"))
    assert data["images"][1] == {"image": "b.jpg", "problem": "b.jpg: bad", "faces": []}


def test_the_app_accepts_what_the_cli_reads(app):
    from ferkit.app.common import IMAGE_TYPES
    from ferkit.images import IMAGE_SUFFIXES

    assert [f".{t}" for t in IMAGE_TYPES] == list(IMAGE_SUFFIXES) and {"gif", "avif"} <= set(IMAGE_TYPES)
    assert app.file_uploader(key="uploads").proto.type == [f".{t}" for t in IMAGE_TYPES]
    buffer = io.BytesIO()
    Image.open(FAMILY).save(buffer, "GIF")
    upload(app, ("family.gif", buffer.getvalue()))
    assert "4 faces found in 1 image" in app.success[0].value


def test_an_upload_is_decoded_once(onnx_model, monkeypatch):
    from ferkit import images
    from ferkit.app.common import analyse_image
    from ferkit.infer import load

    decoded = []
    decode = images._decode
    monkeypatch.setattr(images, "_decode", lambda fp, where: decoded.append(where) or decode(fp, where))
    analysis = analyse_image(load(onnx_model), "family.jpg", FAMILY.read_bytes(), threshold=1.0)
    assert decoded == ["family.jpg"] and analysis.problem is None
    assert len(analysis.faces) == 4 and all(f.unsure for f in analysis.faces)
    assert analysis.annotated.shape == analysis.image.shape == cv2.imread(str(FAMILY)).shape


def test_bundled_model_sees_the_astronaut_smile(monkeypatch):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    assert at.sidebar.selectbox(key="model").value.source == "default"
    upload(at, ("astronaut.jpg", ASTRONAUT.read_bytes()))
    assert shown_label(face_titles(at)[0]) == "happy"


# --- the other pages ----------------------------------------------------------------------------


def short_video(path: Path, frames: int = 12) -> Path:
    """A few frames of the astronaut photo drifting sideways, as mp4v."""
    image = cv2.resize(cv2.imread(str(ASTRONAUT)), (320, 320))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 320))
    for i in range(frames):
        writer.write(np.roll(image, 2 * i, axis=1))
    writer.release()
    return path


def test_video_page(app, tmp_path):
    app.switch_page("views/video.py").run()
    assert app.title[0].value.startswith("🎬")
    clip = short_video(tmp_path / "clip.mp4").read_bytes()
    app.slider(key="video_sample_every").set_value(1)
    app.file_uploader(key="video_upload").set_value(("clip.mp4", clip, "video/mp4")).run()
    assert not app.exception, app.exception
    assert "12 frames" in app.success[0].value and "1 tracked face" in app.success[0].value
    summary = app.dataframe[0].value
    assert len(summary) == 1 and summary["frames"][0] == 12 and summary["dominant"][0] in EMOTIONS
    assert len(app.get("video")) == 1  # the WebM preview
    assert len(app.get("arrow_line_chart")) + len(app.get("vega_lite_chart")) >= 1
    labels = [b.proto.label for b in app.get("download_button")]
    assert "⬇️ Download the per-frame timeline (CSV)" in labels


def test_a_truncated_video_keeps_its_first_frames_and_says_where_it_stopped(app, tmp_path):
    image = cv2.resize(cv2.imread(str(ASTRONAUT)), (320, 320))
    whole = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 320))
    for i in range(12):
        writer.write(np.roll(image, 2 * i, axis=1))
    writer.release()
    cut = whole.read_bytes()[: whole.stat().st_size // 2]
    app.switch_page("views/video.py").run()
    app.slider(key="video_sample_every").set_value(1)
    app.file_uploader(key="video_upload").set_value(("cut.avi", cut, "video/x-msvideo")).run()
    assert not app.exception, app.exception
    [warning] = [w.value for w in app.warning]
    assert warning.startswith("cannot decode cut.avi: decoding stopped at frame ") and "kept the" in warning
    assert "1 tracked face" in app.success[0].value


def test_corrupt_video_is_a_clear_message(app):
    app.switch_page("views/video.py").run()
    app.file_uploader(key="video_upload").set_value(("clip.mp4", b"\0\1\2 not a video" * 100, "video/mp4")).run()
    assert not app.exception
    assert app.main.error[0].value.startswith("clip.mp4: ")


def test_preprocessing_page(app):
    app.switch_page("views/preprocessing.py").run()
    assert not app.exception, app.exception
    assert len(app.main.image) == 6  # 4 stages + 2 edge maps
    app.sidebar.slider(key="pp_blur_ksize").set_value(9).run()
    app.sidebar.slider(key="pp_nlm_h").set_value(3.0).run()
    assert not app.exception
    assert any("blurred (9×9)" in c for c in captions(app))
    upload_pp = app.file_uploader(key="pp_upload")
    upload_pp.set_value(("broken.png", b"garbage", "image/png")).run()
    assert app.main.error[0].value.startswith("broken.png: ")


def captions(at: AppTest) -> list[str]:
    return [caption for image in at.main.image for caption in image.captions]


def test_data_page(app):
    app.switch_page("views/data.py").run()
    assert not app.exception, app.exception
    if app.main.info:
        pytest.skip(f"FER2013 is not here: {app.main.info[0].value}")
    table = app.dataframe[0].value
    assert list(table.index) == list(EMOTIONS)
    assert int(table["total"].sum()) == 35887
    assert [len(image.value) for image in app.main.image] == [10] * len(EMOTIONS)  # 10 faces per class


def test_data_page_without_data(app, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    app.switch_page("views/data.py").run()
    assert not app.exception
    assert "FER2013 is not on this computer" in app.main.info[0].value


def test_model_page(app, onnx_model):
    app.switch_page("views/model.py").run()
    assert not app.exception, app.exception
    assert "random" in app.title[0].value
    assert {m.label: m.value for m in app.metric}["Classes"] == "7"
    assert any(onnx_model.name in m.value for m in app.markdown)
    assert "is not a bundled model" in app.main.info[0].value


def test_model_page_renders_an_evaluation_report(app, tmp_path, monkeypatch):
    from ferkit.app import common
    from ferkit.evaluate import evaluation_report

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(EMOTIONS)), 6)
    logits = rng.normal(size=(len(labels), len(EMOTIONS))) + 2 * np.eye(len(EMOTIONS))[labels]
    metrics = evaluation_report(None, labels, EMOTIONS, tmp_path / "report", title="random", logits=logits,
                                extra={"model": "random", "split": "PrivateTest"})
    monkeypatch.setattr(common, "shipped_report_dir", lambda source: tmp_path / "report")
    app.switch_page("views/model.py").run()
    assert not app.exception, app.exception
    assert {m.label: m.value for m in app.metric}["Accuracy"] == f"{metrics['accuracy']:.1%}"
    table = app.dataframe[1].value  # [0]: the metadata
    assert len(table) == len(EMOTIONS) + 2  # the classes, then the macro and weighted averages
    assert table["support"].iloc[0] == 6
    assert sorted(c for image in app.main.image for c in image.captions) == sorted(
        ["Confusion matrix", "ROC curves, one class vs the rest", "Reliability diagram (calibration)"])


def test_model_page_shows_the_bundled_report(monkeypatch):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    at.switch_page("views/model.py").run()
    assert not at.exception, at.exception
    assert "Accuracy" in [m.label for m in at.metric]
    assert len(at.dataframe[1].value) == len(EMOTIONS) + 2  # classes + macro and weighted averages


# --- `ferkit app` --------------------------------------------------------------------------------


def test_launch_command_line(onnx_model):
    args = launch.get_args_parser().parse_args(["--port", "8765", "--headless", "--model", str(onnx_model)])
    command = launch.streamlit_command(args)
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4] == str(launch.APP_FILE)
    flags = dict(zip(command[5::2], command[6::2]))
    assert flags["--server.port"] == "8765" and flags["--server.headless"] == "true"
    assert flags["--browser.gatherUsageStats"] == "false"
    env = launch.streamlit_env(args)
    assert env[MODEL_ENV] == str(onnx_model) and str(ROOT) in env["PYTHONPATH"].split(":")
    assert launch.streamlit_env(launch.get_args_parser().parse_args(["--model", "ferplus"]))[MODEL_ENV] == "ferplus"


@pytest.mark.parametrize("argv", [["--port", "70000"], ["--model", "missing.onnx"]])
def test_launch_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit) as e:
        launch.main(argv)
    assert e.value.code == 2
    assert "ferkit app: error:" in capsys.readouterr().err
