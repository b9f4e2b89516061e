"""Analyse photos: upload images (or take a snapshot, or pick a sample) and see every face's emotion."""

from pathlib import Path

import streamlit as st

from ferkit.app.common import (
    EMOJI,
    IMAGE_TYPES,
    SAMPLES_DIR,
    ImageAnalysis,
    analyse_all,
    face_crop,
    face_rows,
    face_title,
    render_probabilities,
    render_table,
    require_recognizer,
    results_json,
    rgb,
    sample_title,
)

SOURCES = ("📁 Upload images", "📷 Take a photo", "🖼️ Try a sample photo")


def chosen_inputs(source: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of the images the user gave through ``source``."""
    if source == SOURCES[0]:
        uploads = st.file_uploader("Photos with faces", type=IMAGE_TYPES, accept_multiple_files=True,
                                   key="uploads", help=f"{', '.join(t.upper() for t in IMAGE_TYPES)}; several at once is fine.")
        return [(u.name, u.getvalue()) for u in uploads or []]
    if source == SOURCES[1]:
        shot = st.camera_input("Take a photo", key="camera")
        return [("camera.jpg", shot.getvalue())] if shot else []
    samples = sorted(SAMPLES_DIR.glob("*.jpg"))
    picked = st.selectbox("Sample photo", samples, index=None, format_func=sample_title,
                          placeholder="Choose a photo…", key="sample")
    return [(picked.name, Path(picked).read_bytes())] if picked else []


def render_analysis(analysis: ImageAnalysis) -> None:
    st.subheader(analysis.name, divider="gray")
    if analysis.problem:
        st.error(analysis.problem)
        return
    if not analysis.faces:
        st.warning(f"{analysis.name}: no face found. Try a photo where faces are larger, frontal and well lit.")
        st.image(rgb(analysis.image), width="content")
        return
    left, right = st.columns([3, 2])
    left.image(rgb(analysis.annotated), width="stretch")
    with right:
        for index, face in enumerate(analysis.faces, start=1):
            with st.expander(face_title(index, face), expanded=index <= 3):
                crop, bars = st.columns([1, 3])
                crop.image(face_crop(analysis.image, face.box), width="stretch")
                with bars:
                    render_probabilities(face)


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
    rows = face_rows(analyses)
    faces, failed = len(rows), sum(a.problem is not None for a in analyses)
    read = len(analyses) - failed
    st.success(f"{faces} face{'s' * (faces != 1)} found in {read} image{'s' * (read != 1)}"
               + (f"; {failed} could not be read" if failed else ""))
    for analysis in analyses:
        render_analysis(analysis)
    if rows:
        st.subheader("📋 All faces", divider="gray")
        render_table(rows, "ferkit_faces", results_json(analyses, settings.choice.source))
