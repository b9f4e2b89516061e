"""Video: faces tracked through a short clip, their emotions over time, an annotated preview."""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from ferkit.app.common import EMOJI, emotion_colours, render_table, require_recognizer
from ferkit.app.uploads import session_upload_dir, too_large
from ferkit.errors import FerkitError
from ferkit.infer import Recognizer
from ferkit.video import MAX_PLOTTED_TRACKS, VIDEO_SUFFIXES, analyse_video

MAX_FRAMES = 900  # 30 s at 30 fps: a page is no place for a film; `ferkit predict` has no limit
CHART_PX = 180  # height of one track's chart
CHARTS_PER_ROW = 2


@dataclass
class VideoAnalysis:
    """What the page shows, kept in the session so that reruns (downloads, widgets) do not redo the work."""

    name: str
    timeline: pd.DataFrame   # one row per face per processed frame
    summary: list[dict]      # one row per track
    csv: bytes
    preview: bytes           # the annotated video, H.264 mp4 (what analyse_video writes; browsers play it)
    frames: int
    fps: float
    truncated: bool          # stopped at MAX_FRAMES
    warning: str | None      # where decoding stopped, when the file ended early


def in_user_terms(message: str, source: Path, name: str) -> str:
    """``message`` with the temporary file's path replaced by the upload's name (the user never saw the former)."""
    message = message.replace(str(source), name)
    return message if name in message else f"{name}: {message}"


def process_video(recognizer: Recognizer, name: str, data: bytes, sample_every: int, smoothing: float) -> VideoAnalysis:
    """Analyse an uploaded video in this session's temporary folder, removed afterwards; the progress bar
    goes away whatever happens. VideoError messages name the upload, never the temporary file."""
    suffix = Path(name).suffix.lower() if Path(name).suffix.lower() in VIDEO_SUFFIXES else ".mp4"
    bar = st.progress(0.0, text="Reading the video…")

    def show_progress(done: int, total: int | None) -> None:
        if total:
            bar.progress(min(done / total, 1.0), text=f"Frame {done} of {total}")

    try:
        with session_upload_dir() as tmp:
            source = tmp / f"upload{suffix}"
            source.write_bytes(data)
            try:
                result = analyse_video(recognizer, source, csv_path=tmp / "timeline.csv",
                                       annotate_path=tmp / "annotated.mp4", sample_every=sample_every,
                                       smoothing=smoothing, max_frames=MAX_FRAMES, progress=show_progress)
            except FerkitError as e:
                raise type(e)(in_user_terms(str(e), source, name)) from None
            preview = (tmp / "annotated.mp4").read_bytes()
            csv = (tmp / "timeline.csv").read_bytes()
    finally:
        bar.empty()
    timeline = pd.DataFrame([r.to_dict() for r in result.rows])
    warning = in_user_terms(result.warning, source, name) if result.warning else None
    return VideoAnalysis(name, timeline, result.summary_table(), csv, preview, result.frames, result.fps,
                         result.frames >= MAX_FRAMES, warning)


def render_timelines(analysis: VideoAnalysis, classes: tuple[str, ...]) -> None:
    """Every track's emotions over time at once (the longest few), each class in the colour of its boxes."""
    shown = sorted(analysis.summary, key=lambda row: -row["frames"])[:MAX_PLOTTED_TRACKS]
    if len(shown) < len(analysis.summary):
        st.caption(f"The {len(shown)} longest of {len(analysis.summary)} tracks.")
    colours = emotion_colours(classes)
    shown.sort(key=lambda row: row["track"])
    for pair in range(0, len(shown), CHARTS_PER_ROW):
        for place, row in zip(st.columns(CHARTS_PER_ROW), shown[pair:pair + CHARTS_PER_ROW]):
            mine = analysis.timeline[analysis.timeline["track"] == row["track"]]
            place.markdown(f"**Track #{row['track']}**: {EMOJI.get(row['dominant'], '')} mostly {row['dominant']}")
            place.line_chart(mine.set_index("time_s")[list(classes)], color=colours, x_label="time (s)",
                             y_label="probability", height=CHART_PX)


def render_results(analysis: VideoAnalysis, classes: tuple[str, ...]) -> None:
    tracks = len(analysis.summary)
    st.success(f"{analysis.name}: {analysis.frames} frames ({analysis.frames / analysis.fps:.1f} s), "
               f"{tracks} tracked face{'s' * (tracks != 1)}")
    if analysis.truncated:
        st.info(f"Only the first {MAX_FRAMES} frames were analysed; `ferkit predict VIDEO` has no limit.")
    if analysis.warning:
        st.warning(analysis.warning)
    if not tracks:
        st.warning(f"{analysis.name}: no face found in the video.")
    left, right = st.columns([3, 2])
    left.video(analysis.preview, format="video/mp4")
    with right:
        st.markdown("**Faces (tracks)**")
        for row in analysis.summary:
            st.markdown(f"Track #{row['track']}: {EMOJI.get(row['dominant'], '')} mostly **{row['dominant']}** "
                        f"({row['first_s']:.1f}–{row['last_s']:.1f} s, {row['frames']} frames)")
    if not tracks:
        return
    st.subheader("📈 Emotions over time", divider="gray")
    render_timelines(analysis, classes)
    st.subheader("📋 Per-face summary", divider="gray")
    render_table(analysis.summary, "ferkit_video_tracks")
    st.download_button("⬇️ Download the per-frame timeline (CSV)", analysis.csv, "ferkit_video_timeline.csv", "text/csv",
                       key="video_timeline_csv")


recognizer, settings = require_recognizer()
st.title("🎬 Emotions in a video")
st.markdown(
    "Upload a short clip. Every face is tracked from frame to frame, its emotion smoothed over time, and the "
    f"result drawn on the video. The first {MAX_FRAMES} frames are analysed; nothing is kept once you leave."
)
upload = st.file_uploader("A short video", type=[s.lstrip(".") for s in VIDEO_SUFFIXES], key="video_upload")
left, right = st.columns(2)
sample_every = left.slider("Analyse every n-th frame", 1, 10, 2, key="video_sample_every",
                           help="Higher is faster; the preview still shows every frame.")
smoothing = right.slider("Smoothing", 0.0, 0.95, 0.6, 0.05, key="video_smoothing",
                         help="Weight of the past in each face's running average: higher means steadier labels.")
if upload and too_large(upload.name, upload.size):
    st.error(too_large(upload.name, upload.size))
elif upload:
    key = (upload.file_id, settings.choice.source, sample_every, smoothing)
    stored = st.session_state.get("video_analysis")
    if stored is None or stored[0] != key:
        try:
            stored = key, process_video(recognizer, upload.name, upload.getvalue(), sample_every, smoothing)
        except FerkitError as e:
            st.error(str(e))
            st.stop()
        st.session_state["video_analysis"] = stored
    render_results(stored[1], tuple(recognizer.classes))
