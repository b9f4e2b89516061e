"""Analyse photos: upload images (or take a snapshot, or pick a sample) and see every face's emotion.

Each image gets a compact summary (thumbnail, number of faces, dominant emotions) with its details
(the annotated image, each face's probabilities) one click away; a chart sums up the whole batch.
"""

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from ferkit.app.common import (
    EMOJI,
    IMAGE_TYPES,
    SAMPLES_DIR,
    ImageAnalysis,
    analyse_all,
    emotion_scale,
    face_rows,
    face_title,
    render_probabilities,
    render_table,
    require_recognizer,
    results_json,
    rgb,
    sample_title,
    shown_label,
)

SOURCES = ("📁 Upload images", "📷 Take a photo", "🖼️ Try a sample photo")
THUMBNAIL_PX = (160, 110)  # the per-image thumbnail fits this box (width, height), so a row stays short
BAR_PX = 24         # height of one image's bar in the batch chart
AXES_PX = 110       # ... plus the legend and the x axis
LABEL_PX = 260      # an image name in the batch chart is cut beyond this width


def chosen_inputs(source: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of the images the user gave through ``source``."""
    if source == SOURCES[0]:
        uploads = st.file_uploader("Photos with faces", type=IMAGE_TYPES, accept_multiple_files=True,
                                   key="uploads", help="Several at once is fine.")
        return [(u.name, u.getvalue()) for u in uploads or []]
    if source == SOURCES[1]:
        shot = st.camera_input("Take a photo", key="camera",
                               help="A snapshot; the 🎥 Live camera page shows the emotions as you move.")
        return [("camera.jpg", shot.getvalue())] if shot else []
    samples = sorted(SAMPLES_DIR.glob("*.jpg"))
    picked = st.selectbox("Sample photo", samples, index=None, format_func=sample_title,
                          placeholder="Choose a photo…", key="sample")
    return [(picked.name, Path(picked).read_bytes())] if picked else []


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def dominant_emotions(analysis: ImageAnalysis) -> str:
    """``4 faces · 😄 happy ×3 · 😐 neutral ×1``: how many faces, and their labels, most frequent first."""
    counts = Counter(shown_label(face) for face in analysis.faces).most_common()
    return " · ".join([plural(len(analysis.faces), "face"),
                       *(f"{EMOJI.get(label, '')} {label} ×{n}" for label, n in counts)])


def batch_summary(analyses: Sequence[ImageAnalysis]) -> tuple[str, bool]:
    """The line above the results, and whether it is good news (faces found, every image read)."""
    faces, failed = sum(len(a.faces) for a in analyses), sum(a.problem is not None for a in analyses)
    read = len(analyses) - failed
    text = f"{plural(faces, 'face')} found in {plural(read, 'image')}" + (f"; {failed} could not be read" if failed else "")
    return text, faces > 0 and not failed


def batch_chart(analyses: Sequence[ImageAnalysis], classes: Sequence[str]) -> alt.Chart | None:
    """One stacked bar per image: its faces by shown emotion, in the colours of their boxes; None without faces."""
    rows = [(a.name, shown_label(f)) for a in analyses for f in a.faces]
    if not rows:
        return None
    table = pd.DataFrame(rows, columns=["image", "emotion"]).value_counts().reset_index(name="faces")
    names = [c for c in (*classes, "unsure") if c in set(table["emotion"])]
    images = list(dict.fromkeys(a.name for a in analyses if a.faces))
    return alt.Chart(table).mark_bar().encode(
        x=alt.X("faces:Q", title="faces", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("image:N", sort=images, title=None, axis=alt.Axis(labelOverlap=False, labelLimit=LABEL_PX)),
        color=alt.Color("emotion:N", scale=emotion_scale(names), sort=names,
                        legend=alt.Legend(orient="top", title=None)),
        order=alt.Order("emotion:N"),
        tooltip=["image", "emotion", "faces"],
    ).properties(height=BAR_PX * len(images) + AXES_PX)


def render_details(analysis: ImageAnalysis) -> None:
    """The annotated image, and each face's crop and probabilities (no nested expanders: Streamlit forbids them)."""
    left, right = st.columns([3, 2])
    left.image(rgb(analysis.annotated), width="stretch")
    with right:
        for index, (face, crop) in enumerate(zip(analysis.faces, analysis.crops), start=1):
            st.markdown(f"**{face_title(index, face)}**")
            picture, bars = st.columns([1, 3])
            picture.image(crop, width="stretch")
            with bars:
                render_probabilities(face)


def render_analysis(analysis: ImageAnalysis, expanded: bool) -> None:
    """One image: thumbnail, name, faces and dominant emotions; the details in an expander."""
    with st.container(border=True):
        if analysis.problem:
            st.error(analysis.problem)
            return
        thumbnail, text = st.columns([1, 5])
        height, width = analysis.thumbnail.shape[:2]
        thumbnail.image(rgb(analysis.thumbnail), width=max(1, min(THUMBNAIL_PX[0], THUMBNAIL_PX[1] * width // height)))
        if not analysis.faces:
            text.markdown(f"**{analysis.name}**")
            text.warning(f"{analysis.name}: no face found. Try a photo where faces are larger, frontal and well lit.")
            return
        text.markdown(f"**{analysis.name}** · {dominant_emotions(analysis)}")
        with text.expander("Details: the faces and their probabilities", expanded=expanded):
            render_details(analysis)


recognizer, settings = require_recognizer()
classes = ", ".join(f"{EMOJI.get(c, '')} {c}" for c in recognizer.classes)
st.title("🔍 What do these faces feel?")
st.markdown(
    "Upload photos, take one with your camera, or try a sample. Every face is found, boxed and given one of "
    f"**{len(recognizer.classes)} emotions** ({classes}). "
    f"When the model's best guess is below {settings.unsure_threshold:.0%}, the face is shown as {EMOJI['unsure']} "
    "**unsure** (adjust in the sidebar)."
)
source = st.radio("Source", SOURCES, horizontal=True, label_visibility="collapsed", key="source")
inputs = chosen_inputs(source)
if inputs:
    bar = st.progress(0.0, text="Analysing…") if len(inputs) > 1 else None

    def show_progress(done: int, name: str) -> None:
        if bar:
            bar.progress(done / len(inputs), text=f"Analysing {name} ({done + 1}/{len(inputs)})")

    with st.spinner("Finding faces…"):
        analyses = analyse_all(recognizer, settings.choice.source, inputs, tta=settings.tta,
                               threshold=settings.unsure_threshold, progress=show_progress)
    if bar:
        bar.empty()
    summary, good = batch_summary(analyses)
    (st.success if good else st.warning)(summary)
    chart = batch_chart(analyses, recognizer.classes) if len(analyses) > 1 else None
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    for analysis in analyses:
        render_analysis(analysis, expanded=len(analyses) == 1)
    rows = face_rows(analyses)
    if rows:
        st.subheader("📋 All faces", divider="gray")
        render_table(rows, "ferkit_faces", results_json(analyses, settings.choice.source))
