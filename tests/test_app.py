"""The Streamlit app through streamlit.testing.v1.AppTest: every page, real photos, bad uploads.

Most tests drive the pages with a randomly initialised fastnet exported to ONNX (its labels are
arbitrary but valid), so they do not depend on trained weights; the `bundled` tests check what the
shipped default model says and shows.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from ferkit.app import MAX_UPLOAD_MB, MODEL_ENV, launch, uploads
from ferkit.app.common import PREVIEW_SIDE, emotion_colours, face_rows, results_json
from ferkit.labels import EMOTIONS
from ferkit.settings import DATA_ENV

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "ferkit" / "app" / "main.py"
SAMPLES = ROOT / "ferkit" / "app" / "samples"
ASTRONAUT = SAMPLES / "single_happy_astronaut.jpg"
FAMILY = SAMPLES / "group4_family.jpg"
TIMEOUT_S = 60
LABELS = (*EMOTIONS, "contempt", "unsure")


def export_random_model(path: Path, classes: tuple[str, ...] = EMOTIONS) -> Path:
    """A randomly initialised fastnet as an ONNX file carrying ferkit's metadata."""
    torch = pytest.importorskip("torch")
    from ferkit.export import default_meta, export_onnx
    from ferkit.models import create_model

    torch.manual_seed(0)
    meta = default_meta("fastnet", classes=classes, name="random", unsure_threshold=0.3)
    return export_onnx(create_model("fastnet", num_classes=len(classes)), path, meta)


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
    """``Face 1: 😄 happy (87%)``, ... of every image's details, in page order."""
    return [m.value.strip("*") for m in at.markdown if m.value.startswith("**Face ")]


def details(at: AppTest) -> list:
    """The expanders holding each image's details."""
    return [e for e in at.expander if e.label.startswith("Details")]


def chart_specs(at: AppTest) -> list[str]:
    """The Vega-Lite specs of the page's charts (altair and st.line_chart alike)."""
    return [c.proto.spec for c in at.get("vega_lite_chart")]


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
    assert "5 faces found in 2 images; 1 could not be read" in app.warning[0].value and not app.success
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
    assert app.warning[0].value == "0 faces found in 1 image" and not app.success  # not good news in green
    assert not app.dataframe


def test_one_upload_limit_set_by_the_launch_and_stated_by_the_uploader(app, onnx_model):
    flags = launch.streamlit_command(launch.get_args_parser().parse_args(["--model", str(onnx_model)]))
    assert flags[flags.index("--server.maxUploadSize") + 1] == str(MAX_UPLOAD_MB)
    assert app.file_uploader(key="uploads").proto.max_upload_size_mb == MAX_UPLOAD_MB == uploads.upload_limit_mb()
    padded = ASTRONAUT.read_bytes() + b"\0" * (26 * 2**20)  # 26 MB: once refused as "over the 20 MB limit"
    upload(app, ("padded.jpg", padded))
    assert not app.main.error and app.success[0].value == "1 face found in 1 image"


def test_an_upload_over_the_limit_is_refused_in_one_line(app, monkeypatch):
    monkeypatch.setattr(uploads, "upload_limit_mb", lambda: 1)  # as `--server.maxUploadSize 1` would
    upload(app, ("big.jpg", b"\0" * (2 * 2**20)))
    assert app.main.error[0].value == "big.jpg: 2 MB is over the 1 MB upload limit"


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
    assert analysis.annotated.shape == analysis.image.shape == cv2.imread(str(FAMILY)).shape  # small: kept as is


def test_a_large_photo_is_remembered_as_a_preview(onnx_model):
    from ferkit.app.common import analyse_image
    from ferkit.infer import load

    large = cv2.resize(cv2.imread(str(FAMILY)), (4000, 2668))  # 10.7 MP: 32 MB decoded
    analysis = analyse_image(load(onnx_model), "large.jpg", cv2.imencode(".jpg", large)[1].tobytes())
    assert len(analysis.faces) == 4 and analysis.result.size == (4000, 2668)  # boxes in the input's pixels
    assert max(analysis.image.shape[:2]) == max(analysis.annotated.shape[:2]) == PREVIEW_SIDE
    assert all(max(c.shape[:2]) <= 160 for c in analysis.crops)
    assert analysis.nbytes < 8 * 2**20  # the full image and its annotated copy would be 64 MB


def test_the_analysis_cache_is_bounded_in_bytes():
    from ferkit.app.common import AnalysisCache, ImageAnalysis
    from ferkit.results import ImageResult

    def analysis(name: str, side: int) -> ImageAnalysis:
        return ImageAnalysis(name, ImageResult(name, np.zeros((side, side, 3), np.uint8)))

    cache = AnalysisCache(max_bytes=3 * 100 * 100 * 3)
    for i in range(5):
        cache.put((i,), analysis(str(i), 100))
    assert len(cache) == 3 and cache.bytes <= cache.max_bytes
    assert cache.get((0,)) is None and cache.get((4,)).name == "4"  # the oldest went first
    cache.get((2,))  # used: kept over 3
    cache.put((5,), analysis("5", 100))
    assert cache.get((2,)) is not None and cache.get((3,)) is None
    cache.put((6,), analysis("huge", 1000))  # alone over the bound: not kept, nothing evicted for it
    assert cache.get((6,)) is None and len(cache) == 3


def test_twelve_photos_make_a_compact_page_with_a_batch_chart(app, photos_dir):
    photos = sorted(photos_dir.glob("*.jpg"))
    assert len(photos) == 12
    upload(app, *[(p.name, p.read_bytes()) for p in photos])
    with_faces = [p.name for p in photos if not p.name.startswith("noface")]
    assert len(details(app)) == len(with_faces) and not any(e.proto.expanded for e in details(app))
    summaries = [m.value for m in app.markdown if m.value.startswith("**") and " · " in m.value]
    assert len(summaries) == len(with_faces)  # "**group4_family.jpg** · 4 faces · 😄 happy ×3 · ..."
    assert all(" face" in line and "×" in line for line in summaries)
    [spec] = chart_specs(app)  # one bar per image, coloured like the boxes
    encoding = json.loads(spec)["encoding"]
    assert encoding["y"]["sort"] == with_faces
    scale = encoding["color"]["scale"]
    assert set(scale["domain"]) <= set(LABELS) and scale["range"] == emotion_colours(scale["domain"])


def test_bundled_model_sees_the_astronaut_smile(monkeypatch):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    assert at.sidebar.selectbox(key="model").value.source == "default"
    upload(at, ("astronaut.jpg", ASTRONAUT.read_bytes()))
    assert shown_label(face_titles(at)[0]) == "happy"


# --- the other pages ----------------------------------------------------------------------------


def short_video(path: Path, frames: int = 12, photo: Path = ASTRONAUT) -> Path:
    """A few frames of a photo drifting sideways, as mp4v."""
    image = cv2.resize(cv2.imread(str(photo)), (320, 320) if photo == ASTRONAUT else (480, 320))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, image.shape[1::-1])
    for i in range(frames):
        writer.write(np.roll(image, 2 * i, axis=1))
    writer.release()
    return path


@pytest.fixture
def upload_root(tmp_path, monkeypatch) -> Path:
    """Where the app writes uploaded videos, for this test only."""
    root = tmp_path / "uploads"
    monkeypatch.setattr(uploads, "UPLOAD_ROOT", root)
    return root


def upload_video(at: AppTest, name: str, data: bytes) -> AppTest:
    at.switch_page("views/video.py").run()
    at.slider(key="video_sample_every").set_value(1)
    at.file_uploader(key="video_upload").set_value((name, data, "video/mp4")).run()
    assert not at.exception, at.exception
    return at


def test_video_page(app, tmp_path, upload_root):
    upload_video(app, "clip.mp4", short_video(tmp_path / "clip.mp4").read_bytes())
    assert app.title[0].value.startswith("🎬")
    assert "12 frames" in app.success[0].value and "1 tracked face" in app.success[0].value
    summary = app.dataframe[0].value
    assert len(summary) == 1 and summary["frames"][0] == 12 and summary["dominant"][0] in EMOTIONS
    assert len(app.get("video")) == 1  # the WebM preview
    assert len(chart_specs(app)) == 1
    labels = [b.proto.label for b in app.get("download_button")]
    assert "⬇️ Download the per-frame timeline (CSV)" in labels
    assert not app.get("progress")
    assert [p for p in upload_root.rglob("*") if p.is_file()] == []  # the upload is gone once analysed


def test_every_track_is_charted_at_once_in_the_colours_of_its_boxes(app, tmp_path, upload_root):
    upload_video(app, "family.mp4", short_video(tmp_path / "family.mp4", 6, FAMILY).read_bytes())
    tracks = len(app.dataframe[0].value)
    assert tracks == 4 and "4 tracked faces" in app.success[0].value
    specs = [json.loads(spec) for spec in chart_specs(app)]
    assert len(specs) == tracks  # one chart per track, no track picker
    assert not [s for s in app.selectbox if s.key == "video_track"]
    for spec in specs:
        scale = spec["layer"][0]["encoding"]["color"]["scale"]
        assert scale["domain"] == list(EMOTIONS) and scale["range"] == emotion_colours(EMOTIONS)
    assert [m.value.split(":")[0] for m in app.markdown if m.value.startswith("**Track #")] == \
        [f"**Track #{i}**" for i in range(1, 5)]


def test_a_truncated_video_keeps_its_first_frames_and_says_where_it_stopped(app, tmp_path, upload_root):
    image = cv2.resize(cv2.imread(str(ASTRONAUT)), (320, 320))
    whole = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 320))
    for i in range(12):
        writer.write(np.roll(image, 2 * i, axis=1))
    writer.release()
    upload_video(app, "cut.avi", whole.read_bytes()[: whole.stat().st_size // 2])
    [warning] = [w.value for w in app.warning]
    assert warning.startswith("cannot decode cut.avi: decoding stopped at frame ") and "kept the" in warning
    assert "1 tracked face" in app.success[0].value


def test_a_bad_video_is_one_line_naming_the_upload_and_no_bar_stays(app, upload_root):
    upload_video(app, "clip.mp4", b"\0\1\2 not a video" * 100)
    [error] = [e.value for e in app.main.error]
    assert error == "cannot open video clip.mp4: the file is corrupt or not a video format OpenCV can decode"
    assert "upload" not in error and str(upload_root) not in error and "/tmp" not in error
    assert not app.get("progress")  # "Reading the video…" does not stay above the error
    assert [p for p in upload_root.rglob("*") if p.is_file()] == []


def test_uploads_left_by_a_crashed_server_are_removed_at_start(upload_root, onnx_model, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid now names no running process
    stale = upload_root / str(dead.pid) / "session-x" / "upload.mp4"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"a video a crashed server was analysing")
    alive = upload_root / str(os.getpid()) / "session-y" / "upload.mp4"  # a running server's: kept
    alive.parent.mkdir(parents=True)
    alive.write_bytes(b"in use")
    monkeypatch.setenv(MODEL_ENV, str(onnx_model))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    assert not at.exception
    assert not stale.parent.parent.exists() and alive.exists()


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
    [info] = [i.value for i in app.main.info]
    assert "is not a bundled model" in info and f"ferkit evaluate {onnx_model} --split PrivateTest" in info


def test_model_page_suggests_a_data_folder_for_a_model_with_other_classes(tmp_path, monkeypatch):
    three = export_random_model(tmp_path / "three.onnx", classes=("happy", "sad", "neutral"))
    monkeypatch.setenv(MODEL_ENV, str(three))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    at.switch_page("views/model.py").run()
    assert not at.exception, at.exception
    [info] = [i.value for i in at.main.info]
    assert f"ferkit evaluate {three} --data-folder DIR" in info and "--split" not in info  # a split would fail


def table_with_index(at: AppTest, label: str):
    """The page's table whose index holds ``label``."""
    return next(t.value for t in at.dataframe if label in list(t.value.index))


def images_outside_columns(node, inside: bool = False) -> dict[str, bool]:
    """Each image's caption -> whether it sits in a column (half or less of the page's width)."""
    found = {}
    for child in getattr(node, "children", {}).values():
        if getattr(child, "type", "") == "image":
            found |= {caption: inside for caption in child.captions}
        found |= images_outside_columns(child, inside or getattr(child, "type", "") == "column")
    return found


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
    table = table_with_index(app, "macro average")
    assert len(table) == len(EMOTIONS) + 2  # the classes, then the macro and weighted averages
    assert table["support"].iloc[0] == 6
    placed = images_outside_columns(app.main)
    assert sorted(placed) == sorted(
        ["Confusion matrix", "ROC curves, one class vs the rest", "Reliability diagram (calibration)"])
    assert placed["Reliability diagram (calibration)"] is False  # full width: once squeezed into half


def test_model_page_shows_the_bundled_report(monkeypatch):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    at.switch_page("views/model.py").run()
    assert not at.exception, at.exception
    assert "Accuracy" in [m.label for m in at.metric]
    assert len(table_with_index(at, "macro average")) == len(EMOTIONS) + 2  # classes + macro and weighted averages


@pytest.fixture
def infer_results(tmp_path, monkeypatch) -> Path:
    """A benchmarks/results/infer.json that times `default` (11.2 ms, as bundled) and lists `fast` with another
    architecture."""
    from ferkit.app import tiers
    from ferkit.weights import read_manifest

    default = read_manifest()["models"]["default"]
    timed = {"name": "default", "arch": default["arch"], "members": len(default.get("members", [])),
             "latency": {"onnxruntime": {"median_ms": 11.2}}}
    path = tmp_path / "infer.json"
    path.write_text(json.dumps({"machine": {"cpu": "Test CPU", "usable_cpus": 2}, "models": [
        timed,
        {"name": "fast", "arch": "an older architecture", "latency": {"onnxruntime": {"median_ms": 1.0}}}]}))
    monkeypatch.setattr(tiers, "INFER_RESULTS", path)
    return path


def test_the_picker_shows_every_tier_with_its_accuracy_and_time(infer_results, monkeypatch):
    from ferkit.app import tiers
    from ferkit.weights import read_manifest

    monkeypatch.delenv(MODEL_ENV, raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    options = at.sidebar.selectbox(key="model").options
    models = read_manifest()["models"]
    assert len(options) == len(models) and options[0].startswith("default — ")
    default = models["default"]["accuracy"]["value"]
    architecture = tiers.tier("default", models["default"], {}).architecture()  # e.g. "VGG int8", "ensemble of 2 int8"
    assert options[0] == f"default — {architecture}, {100 * default:.1f} % FER2013, 11 ms/face"
    fast = next(o for o in options if o.startswith("fast — "))
    assert fast.endswith(", – ms/face")  # listed, but for another architecture: not this model's time
    assert any(o.startswith("ferplus — ") and " % FER+, " in o for o in options)


def test_an_ensemble_tier_is_picked_like_any_other(tmp_path, monkeypatch):
    """A merged graph (ferkit.merge) listed in the manifest: in the picker with its members, accuracy and time."""
    torch = pytest.importorskip("torch")
    import ferkit.weights as weights
    from ferkit.app import tiers
    from ferkit.export import default_meta, export_onnx
    from ferkit.fileio import sha256_of
    from ferkit.merge import Member, ensemble_of
    from ferkit.models import create_model

    torch.manual_seed(0)
    members = [Member(f"run{i}", create_model("fastnet").eval(), default_meta("fastnet")) for i in range(2)]
    model, meta = ensemble_of(members, flip=True, name="best")
    best = export_onnx(model, tmp_path / "best.onnx", meta)
    manifest = weights.read_manifest()
    manifest["models"]["best"] = {"file": str(best), "sha256": sha256_of(best), "arch": "ensemble",  # absolute path
                                  "classes": list(EMOTIONS), "members": [{"run": "run0"}, {"run": "run1"}],
                                  "accuracy": {"split": "PrivateTest", "tta": "flip", "value": 0.5}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(weights, "MANIFEST", tmp_path / "manifest.json")
    timed = {"name": "best", "arch": "ensemble", "members": 2, "latency": {"onnxruntime": {"median_ms": 3.0}}}
    (tmp_path / "infer.json").write_text(json.dumps({"models": [timed]}))
    monkeypatch.setattr(tiers, "INFER_RESULTS", tmp_path / "infer.json")
    monkeypatch.delenv(MODEL_ENV, raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    assert "best — ensemble of 2, 50.0 % FER2013, 3.0 ms/face" in at.sidebar.selectbox(key="model").options
    picker = at.sidebar.selectbox(key="model")
    picker.select_index(next(i for i, o in enumerate(picker.options) if o.startswith("best — "))).run()
    assert not at.exception and not at.sidebar.error, at.exception
    assert at.sidebar.selectbox(key="model").value.source == "best"
    assert tiers.tier("best", manifest["models"]["best"], tiers.measured()).split == "PrivateTest (flip TTA)"
    two_more = {**manifest["models"]["best"], "members": [{}] * 4}  # re-shipped with 4 members: not the timed one
    assert tiers.tier("best", two_more, tiers.measured()).ms_text() == "–"


def test_an_ensemble_tier_names_its_members_architectures():
    from ferkit.app.tiers import tier

    entry = {"arch": "ensemble", "classes": list(EMOTIONS), "quantized": "static QDQ",
             "members": [{"run": "a", "arch": "vgg"}, {"run": "b", "arch": "resnet18"}, {"run": "c", "arch": "vgg"}]}
    assert tier("best", entry, {}).architecture() == "VGG ×2 + ResNet-18 int8"
    unlisted = {"arch": "ensemble", "classes": list(EMOTIONS), "members": [{"run": "a"}, {"run": "b", "arch": "vgg"}]}
    assert tier("best", unlisted, {}).architecture() == "ensemble of 2"  # not every member's architecture known


def test_the_model_page_lists_the_tiers_and_where_their_numbers_come_from(infer_results, monkeypatch):
    from ferkit.weights import read_manifest

    monkeypatch.delenv(MODEL_ENV, raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    at.switch_page("views/model.py").run()
    assert not at.exception, at.exception
    table = table_with_index(at, "default (loaded)")
    assert len(table) == len(read_manifest()["models"])
    assert table.loc["default (loaded)", "ms per face"] == "11.20" and table.loc["fast", "ms per face"] == "–"
    assert table.loc["default (loaded)", "accuracy"].endswith(" %")
    caption = " ".join(c.value for c in at.caption)
    assert "benchmarks/results/infer.json" in caption and "Test CPU" in caption and "manifest" in caption


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
    assert env["MALLOC_ARENA_MAX"] == str(launch.MALLOC_ARENAS)  # see tests/test_app_memory.py
    assert launch.streamlit_env(launch.get_args_parser().parse_args(["--model", "ferplus"]))[MODEL_ENV] == "ferplus"


@pytest.mark.parametrize("argv", [["--port", "70000"], ["--model", "missing.onnx"]])
def test_launch_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit) as e:
        launch.main(argv)
    assert e.value.code == 2
    assert "ferkit app: error:" in capsys.readouterr().err
