"""Video: faces tracked through a short clip, their emotions over time, an annotated preview."""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import pandas as pd
import streamlit as st

from ferkit.app.common import EMOJI, render_table, require_recognizer
from ferkit.errors import FerkitError
from ferkit.infer import Recognizer
from ferkit.video import VIDEO_SUFFIXES, analyse_video, frame_rate

MAX_FRAMES = 900  # 30 s at 30 fps: a page is no place for a film; `ferkit predict` has no limit
PREVIEW_FOURCC = "VP80"  # browsers play VP8 WebM; OpenCV's mp4v (MPEG-4 part 2) they do not


@dataclass
class VideoAnalysis:
    """What the page shows, kept in the session so that reruns (downloads, widgets) do not redo the work."""

    name: str
    timeline: pd.DataFrame   # one row per face per processed frame
    summary: list[dict]      # one row per track
    csv: bytes
    preview: bytes | None    # VP8 WebM of the annotated video, None when it could not be encoded
    frames: int
    fps: float
    truncated: bool          # stopped at MAX_FRAMES
    warning: str | None      # where decoding stopped, when the file ended early


def webm_copy(source: Path, target: Path) -> bytes | None:
    """Re-encode ``source`` as VP8 WebM for the browser; None when this OpenCV cannot."""
    capture = cv2.VideoCapture(str(source))
    fps = frame_rate(capture)
    size = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*PREVIEW_FOURCC), fps, size)
    try:
        if not writer.isOpened():
            return None
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            writer.write(frame)
    finally:
        writer.release()
        capture.release()
    return target.read_bytes() if target.stat().st_size else None


def process_video(recognizer: Recognizer, name: str, data: bytes, sample_every: int, smoothing: float) -> VideoAnalysis:
    """Analyse an uploaded video in a temporary folder that is removed afterwards."""
    suffix = Path(name).suffix.lower() if Path(name).suffix.lower() in VIDEO_SUFFIXES else ".mp4"
    bar = st.progress(0.0, text="Reading the video…")

    def show_progress(done: int, total: int | None) -> None:
        if total:
            bar.progress(min(done / total, 1.0), text=f"Frame {done} of {total}")

    with tempfile.TemporaryDirectory(prefix="ferkit-app-") as tmp:
        tmp = Path(tmp)
        source = tmp / f"upload{suffix}"
        source.write_bytes(data)
        result = analyse_video(recognizer, source, csv_path=tmp / "timeline.csv", annotate_path=tmp / "annotated.mp4",
                               sample_every=sample_every, smoothing=smoothing, max_frames=MAX_FRAMES,
                               progress=show_progress)
        bar.progress(1.0, text="Preparing the preview…")
        preview = webm_copy(tmp / "annotated.mp4", tmp / "annotated.webm")
        csv = (tmp / "timeline.csv").read_bytes()
    bar.empty()
    timeline = pd.DataFrame([r.to_dict() for r in result.rows])
    warning = result.warning.replace(str(source), name) if result.warning else None  # the upload's name, not the temp file's
    return VideoAnalysis(name, timeline, result.summary_table(), csv, preview, result.frames, result.fps,
                         result.frames >= MAX_FRAMES, warning)


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
    with left:
        if analysis.preview:
            st.video(analysis.preview, format="video/webm")
        else:
            st.info("This OpenCV build cannot encode a browser-playable preview; the tables below have everything.")
    with right:
        st.markdown("**Faces (tracks)**")
        for row in analysis.summary:
            st.markdown(f"Track {row['track']}: {EMOJI.get(row['dominant'], '')} mostly **{row['dominant']}** "
                        f"({row['first_s']:.1f}–{row['last_s']:.1f} s, {row['frames']} frames)")
    if not tracks:
        return
    st.subheader("📈 Emotions over time", divider="gray")
    track_ids = [row["track"] for row in analysis.summary]
    track = st.selectbox("Track", track_ids, key="video_track") if len(track_ids) > 1 else track_ids[0]
    mine = analysis.timeline[analysis.timeline["track"] == track]
    st.line_chart(mine.set_index("time_s")[list(classes)], x_label="time (s)", y_label="probability", height=300)
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
if upload:
    key = (upload.file_id, settings.choice.source, sample_every, smoothing)
    stored = st.session_state.get("video_analysis")
    if stored is None or stored[0] != key:
        try:
            stored = key, process_video(recognizer, upload.name, upload.getvalue(), sample_every, smoothing)
        except FerkitError as e:
            st.error(f"{upload.name}: {e}")
            st.stop()
        st.session_state["video_analysis"] = stored
    render_results(stored[1], tuple(recognizer.classes))
