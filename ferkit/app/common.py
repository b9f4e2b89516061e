"""What the app's pages share: the model picker, the cached model, upload checks and result tables.

The analysis functions here are plain Python on bytes and arrays, so tests can call them without a
browser; the ``render_*`` functions draw Streamlit elements.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import altair as alt
import cv2
import numpy as np
import pandas as pd
import streamlit as st
from matplotlib.colors import to_hex

from ..draw import plot_colour
from ..errors import FerkitError
from ..images import IMAGE_SUFFIXES
from ..settings import WEIGHTS_DIR
from . import MODEL_ENV
from .tiers import bundled_tiers
from .uploads import too_large

if TYPE_CHECKING:
    from ..infer import Recognizer
    from ..results import FaceResult, ImageResult

APP_DIR = Path(__file__).resolve().parent
SAMPLES_DIR = APP_DIR / "samples"
REPORTS_DIR = WEIGHTS_DIR / "reports"
IMAGE_TYPES = [s.lstrip(".") for s in IMAGE_SUFFIXES]  # the uploaders accept what the CLI reads
PREVIEW_SIDE = 1280   # px: the longest side of the annotated image a cached analysis keeps
THUMBNAIL_SIDE = 240  # px: the per-image summary's picture
CROP_SIDE = 160       # px: a face's thumbnail
MAX_CACHE_MB = 256    # analyses kept for reruns (downloads, widgets), least recently used dropped first
SETTINGS_KEY = "ferkit_settings"
EMOJI = {
    "angry": "😠", "disgust": "🤢", "fear": "😨", "happy": "😄", "sad": "😢",
    "surprise": "😲", "neutral": "😐", "contempt": "😒", "unsure": "🤔",
}
TTA_HELP = {"none": "off (fastest)", "flip": "mirror: 2 views", "crops": "5 crops x mirror: 10 views"}


# --- models --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    label: str   # what the picker shows
    source: str  # what ferkit.load takes: a bundled name or an .onnx path


def bundled_models() -> dict[str, dict]:
    """The manifest's model entries (``{name: {"file", "sha256", ...}}``) whose file is present."""
    from ..weights import read_manifest

    models = read_manifest().get("models", {})
    return {name: entry for name, entry in models.items() if (WEIGHTS_DIR / entry.get("file", "")).is_file()}


def model_choices() -> tuple[list[ModelChoice], int]:
    """The picker's models (bundled ones, ``default`` first, plus $FERKIT_MODEL) and the index to start on."""
    tiers = bundled_tiers(bundled_models())
    names = [t.name for t in tiers]
    choices = [ModelChoice(t.label(), t.name) for t in tiers]
    override = os.environ.get(MODEL_ENV)
    if not override:
        return choices, 0
    if override in names:
        return choices, names.index(override)
    return [ModelChoice(f"{Path(override).name} (${MODEL_ENV})", override), *choices], 0


def shipped_report_dir(source: str) -> Path | None:
    """The folder of a bundled model's evaluation report (the manifest's ``report``); None for other models."""
    entry = bundled_models().get(source)
    if entry is None:
        return None
    return WEIGHTS_DIR / entry["report"] if "report" in entry else REPORTS_DIR / source


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def load_recognizer(source: str) -> Recognizer:
    """One Recognizer per model and server process, shared by every session and rerun."""
    from .. import infer

    return infer.load(source)


@dataclass
class Settings:
    """The sidebar's choices, read by every page."""

    choice: ModelChoice | None
    recognizer: Recognizer | None
    problem: str | None  # one line: why no model is loaded
    tta: str = "none"
    unsure_threshold: float = 0.0


def render_sidebar() -> Settings:
    """Model picker, TTA and unsure threshold in the sidebar; the result is also kept for the pages."""
    st.sidebar.header("🧠 Model")
    try:
        choices, start = model_choices()
    except FerkitError as e:
        choices, start, settings = [], 0, Settings(None, None, str(e))
    else:
        settings = Settings(None, None, f"no model found: the bundled models are missing from {WEIGHTS_DIR} "
                                        f"and ${MODEL_ENV} is not set (set it to an .onnx file)")
    if choices:
        choice = st.sidebar.selectbox("Model", choices, index=start, format_func=lambda c: c.label, key="model")
        settings = Settings(choice, None, None)
        try:
            settings.recognizer = load_recognizer(choice.source)
        except FerkitError as e:
            settings.problem = str(e)
    if settings.recognizer is None:
        st.sidebar.error(settings.problem)
    else:
        recognizer = settings.recognizer
        emojis = " ".join(EMOJI.get(c, "") for c in recognizer.classes)
        st.sidebar.caption(f"{settings.choice.label} · {len(recognizer.classes)} classes: {emojis}")
        settings.tta = st.sidebar.selectbox("Test-time augmentation", list(TTA_HELP), format_func=TTA_HELP.get,
                                            key="tta", help="Average the prediction over flipped/shifted views: "
                                                            "a little more accurate, slower.")
        settings.unsure_threshold = st.sidebar.slider(
            "Unsure below", 0.0, 1.0, float(recognizer.unsure_threshold), 0.01, key=f"unsure_{settings.choice.source}",
            help="A face whose top (calibrated) probability is below this is shown as unsure.")
    st.session_state[SETTINGS_KEY] = settings
    return settings


def current_settings() -> Settings:
    return st.session_state.get(SETTINGS_KEY) or Settings(None, None, "the sidebar has not run yet")


def require_recognizer() -> tuple[Recognizer, Settings]:
    """The loaded model, or a clear message and the end of the page when there is none."""
    settings = current_settings()
    if settings.recognizer is None:
        st.error(f"No model is loaded: {settings.problem}")
        st.stop()
    return settings.recognizer, settings


# --- images --------------------------------------------------------------------------------------


@dataclass
class ImageAnalysis:
    """One analysed input, as the page shows it; ``problem`` is a one-line message when it could not be analysed.

    Only downscaled pictures are kept (``result.image`` at most PREVIEW_SIDE px, boxes still in the
    input's pixels), so that a remembered analysis of a 50 MP photo costs megabytes, not hundreds.
    """

    name: str
    result: ImageResult | None = None    # the faces; its image downscaled to PREVIEW_SIDE
    annotated: np.ndarray | None = None  # BGR, the preview with boxes and labels
    thumbnail: np.ndarray | None = None  # BGR, the annotated preview at THUMBNAIL_SIDE
    crops: list[np.ndarray] = field(default_factory=list)  # RGB, each face at CROP_SIDE
    problem: str | None = None

    @property
    def image(self) -> np.ndarray | None:
        return None if self.result is None else self.result.image

    @property
    def faces(self) -> list[FaceResult]:
        return [] if self.result is None else list(self.result)

    @property
    def nbytes(self) -> int:
        arrays = [self.image, self.annotated, self.thumbnail, *self.crops]
        return sum(a.nbytes for a in arrays if a is not None)


def downscaled(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` with its longest side at most ``side`` px (INTER_AREA), or itself when it is smaller."""
    scale = side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def face_crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The face region of a BGR image as RGB, clipped to the image, at most CROP_SIDE px."""
    x, y, w, h = box
    crop = image[max(y, 0):max(y + h, 0), max(x, 0):max(x + w, 0)]
    return np.ascontiguousarray(downscaled(crop, CROP_SIDE)[..., ::-1]) if crop.size else crop


def analyse_image(recognizer: Recognizer, name: str, data: bytes, *, tta: str = "none",
                  threshold: float | None = None) -> ImageAnalysis:
    """Decode ``data`` and find every face's emotion; failures become ``problem``, never exceptions.

    ``threshold``: faces below it are unsure (default: the model's own threshold).
    """
    threshold = recognizer.unsure_threshold if threshold is None else threshold
    if too_large(name, len(data)):
        return ImageAnalysis(name, problem=too_large(name, len(data)))
    try:
        result = recognizer.predict(data, name=name, tta=tta).with_unsure_threshold(threshold)  # decoded once
    except FerkitError as e:
        return ImageAnalysis(name, problem=str(e))
    crops = [face_crop(result.image, face.box) for face in result]
    preview = dataclasses.replace(result, image=downscaled(result.image, PREVIEW_SIDE), input_size=result.size)
    annotated = preview.plot()
    return ImageAnalysis(name, preview, annotated, downscaled(annotated, THUMBNAIL_SIDE), crops)


class AnalysisCache:
    """Analyses by key, bounded in bytes: the least recently used are dropped first. Thread-safe."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple, ImageAnalysis] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple) -> ImageAnalysis | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
            return self._entries.get(key)

    def put(self, key: tuple, analysis: ImageAnalysis) -> None:
        """Keep ``analysis`` (unless it alone is over the bound), dropping the oldest to stay within it."""
        if analysis.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self.bytes += analysis.nbytes - (old.nbytes if old else 0)
            self._entries[key] = analysis
            while self.bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self.bytes -= dropped.nbytes


@st.cache_resource(show_spinner=False)
def analysis_cache() -> AnalysisCache:
    """One cache per server process, shared by every session (a key holds the image bytes' hash)."""
    return AnalysisCache(MAX_CACHE_MB * 2**20)


def remembered_analysis(recognizer: Recognizer, model_source: str, name: str, data: bytes, tta: str,
                        threshold: float) -> ImageAnalysis:
    """``analyse_image`` remembered per (model, name, bytes, settings): buttons and downloads rerun the page."""
    key = (model_source, name, hashlib.sha256(data).hexdigest(), tta, threshold)
    cache = analysis_cache()
    analysis = cache.get(key)
    if analysis is None:
        analysis = analyse_image(recognizer, name, data, tta=tta, threshold=threshold)
        cache.put(key, analysis)
    return analysis


def analyse_all(recognizer: Recognizer, model_source: str, inputs: Sequence[tuple[str, bytes]], *, tta: str,
                threshold: float, progress: Callable[[int, str], None] | None = None) -> list[ImageAnalysis]:
    analyses = []
    for done, (name, data) in enumerate(inputs):
        if progress:
            progress(done, name)
        analyses.append(remembered_analysis(recognizer, model_source, name, data, tta, threshold))
    return analyses


def shown_label(face: FaceResult) -> str:
    return "unsure" if face.unsure else face.label


def emotion_scale(names: Sequence[str]) -> alt.Scale:
    """An altair colour scale giving each emotion the colour of its boxes (``draw.plot_colour``)."""
    return alt.Scale(domain=list(names), range=emotion_colours(names))


def emotion_colours(names: Sequence[str]) -> list[str]:
    """The hex colour of each emotion's boxes, for ``st.line_chart(color=...)``."""
    return [to_hex(plot_colour(name)) for name in names]


def face_title(index: int, face: FaceResult) -> str:
    """``Face 1: 😄 happy (87%)`` or ``Face 1: 🤔 unsure (best guess happy, 35%)``."""
    if face.unsure:
        return f"Face {index}: {EMOJI['unsure']} unsure (best guess {face.label}, {face.confidence:.0%})"
    return f"Face {index}: {EMOJI.get(face.label, '')} {face.label} ({face.confidence:.0%})"


def face_rows(analyses: Sequence[ImageAnalysis]) -> list[dict]:
    """One table row per face, from ``ImageResult.to_rows()``: image, face number, shown label (unsure or the
    top class), top class, confidence, box and every class's probability as ``p_<class>``."""
    rows = []
    for analysis in analyses:
        if analysis.result is None:
            continue
        for row, face in zip(analysis.result.to_rows(), analysis.result):
            rows.append({"image": row["source"], "face": row["face"], "label": shown_label(face),
                         "top_class": row["label"], "confidence": row["confidence"],
                         **{k: row[k] for k in ("x", "y", "w", "h")},
                         **{f"p_{name}": row[name] for name in face.probabilities}})
    return rows


def results_json(analyses: Sequence[ImageAnalysis], model: str) -> str:
    return json.dumps({
        "model": model,
        "images": [{"image": a.name, "problem": a.problem, "faces": [f.to_dict() for f in a.faces]} for a in analyses],
    }, indent=2)


def sample_title(path: Path) -> str:
    """``single_happy_astronaut.jpg`` -> ``single happy astronaut``."""
    return path.stem.replace("_", " ")


def rgb(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[..., ::-1]) if image.ndim == 3 else image


def render_probabilities(face: FaceResult) -> None:
    """One labelled bar per class, in the model's class order."""
    for name, p in face.probabilities.items():
        st.progress(float(min(max(p, 0.0), 1.0)), text=f"{EMOJI.get(name, '')} {name}: {p:.1%}")


def render_table(rows: list[dict], file_stem: str, json_text: str | None = None) -> None:
    """The results table with CSV (and JSON) download buttons."""
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True, width="stretch")
    left, right = st.columns(2)
    left.download_button("⬇️ Download CSV", table.to_csv(index=False), f"{file_stem}.csv", "text/csv",
                         key=f"{file_stem}_csv")
    if json_text is not None:
        right.download_button("⬇️ Download JSON", json_text, f"{file_stem}.json", "application/json",
                              key=f"{file_stem}_json")
