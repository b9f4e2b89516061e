"""Live camera: the webcam's picture with every face boxed and labelled as it moves (streamlit-webrtc).

The browser sends its camera to this server over WebRTC; each frame goes through the one
Recognizer, faces are tied to tracks and smoothed as on the Video page (``ferkit.video.Tracker``),
and the drawn frame goes back. No ICE server is configured: on this computer the browser and the
server connect directly, so nothing is contacted outside it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque

import streamlit as st

from ferkit.app.common import EMOJI, require_recognizer, shown_label
from ferkit.draw import draw_faces
from ferkit.errors import FerkitError
from ferkit.infer import Recognizer
from ferkit.video import FrameRow, Tracker, classify_frame

RTC_CONFIGURATION = {"iceServers": []}  # host candidates only: localhost needs no STUN/TURN server
FPS_WINDOW_S = 3.0  # frames per second are counted over this much recent time
POLL_S = 0.5        # how often the text under the picture is refreshed


class LiveFaces:
    """One camera connection: every frame it is given is classified, tracked and drawn on.

    streamlit-webrtc calls ``recv`` from its own thread (with ``async_processing`` it hands over
    only the latest frame, so the picture keeps up and slow processing just lowers the rate);
    the page reads ``status`` from the script thread.
    """

    def __init__(self, recognizer: Recognizer, threshold: float, smoothing: float):
        self.recognizer, self.threshold = recognizer, threshold
        self.tracker = Tracker(smoothing)
        self.start = time.perf_counter()
        self.frames = 0
        self.busy_s = 0.0  # time spent processing frames, in all
        self.done_at: deque[float] = deque()
        self.latest: list[FrameRow] = []
        self.problem: str | None = None
        self._lock = threading.Lock()

    def recv(self, frame):
        image = frame.to_ndarray(format="bgr24")
        now = time.perf_counter()
        try:
            rows = classify_frame(self.recognizer, self.tracker, image, self.frames, now - self.start)
        except FerkitError as e:
            rows, self.problem = [], str(e)
        faces = [dataclasses.replace(r.face, unsure=r.confidence < self.threshold) for r in rows]
        draw_faces(image, faces, [f"#{r.track}" for r in rows])
        with self._lock:
            self.frames += 1
            self.latest = rows
            self.done_at.append(time.perf_counter())
            self.busy_s += self.done_at[-1] - now
            while self.done_at and self.done_at[0] < self.done_at[-1] - FPS_WINDOW_S:
                self.done_at.popleft()
        return type(frame).from_ndarray(image, format="bgr24")  # an av.VideoFrame, as streamlit-webrtc gave

    def fps(self) -> float:
        """Frames processed per second over the last FPS_WINDOW_S."""
        with self._lock:
            times = list(self.done_at)
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

    def status(self) -> str:
        """``Processing 21.3 frames/s (340 so far, 18 ms each) · #1 😄 happy 95%``."""
        with self._lock:
            rows, frames, busy_s = list(self.latest), self.frames, self.busy_s
        faces = " · ".join(f"#{r.track} {EMOJI.get(shown_label(r.face), '')} {shown_label(r.face)} "
                           f"{r.confidence:.0%}" for r in rows) or "no face in view"
        problem = f" · {self.problem}" if self.problem else ""
        each = f", {1000 * busy_s / frames:.0f} ms each" if frames else ""
        return f"Processing **{self.fps():.1f} frames/s** ({frames} so far{each}) · {faces}{problem}"


def live_view(recognizer: Recognizer, source: str, threshold: float, smoothing: float):
    """The WebRTC component; its processor follows the sidebar's threshold and the smoothing slider."""
    from streamlit_webrtc import WebRtcMode, webrtc_streamer

    context = webrtc_streamer(
        key=f"live_camera_{source}", mode=WebRtcMode.SENDRECV, rtc_configuration=RTC_CONFIGURATION,
        video_processor_factory=lambda: LiveFaces(recognizer, threshold, smoothing),
        media_stream_constraints={"video": True, "audio": False}, async_processing=True)
    if context.video_processor is not None:
        context.video_processor.threshold = threshold
        context.video_processor.tracker.smoothing = smoothing
    return context


def webrtc_missing() -> str | None:
    """Why the live view cannot run here (one line), or None."""
    try:
        import streamlit_webrtc  # noqa: F401
    except ImportError as e:
        return f"the live camera needs streamlit-webrtc ({e}): pip install streamlit-webrtc"
    return None


recognizer, settings = require_recognizer()
st.title("🎥 Live camera")
st.markdown(
    "Press **Start** and allow the camera: every face is boxed and labelled as you move, by the model of the "
    "sidebar. The picture goes from your browser to this computer's ferkit server and back, nowhere else. "
    "If it does not start (a browser without WebRTC, or a page opened from another machine over plain http), "
    "take a snapshot with 📷 **Take a photo** on the Analyse page."
)
missing = webrtc_missing()
if missing:
    st.error(missing)
    st.stop()
picture, side = st.columns([3, 2])
smoothing = side.slider("Smoothing", 0.0, 0.95, 0.6, 0.05, key="live_smoothing",
                        help="Weight of the past in each face's running average: higher means steadier labels.")
status = side.empty()
with picture:
    context = live_view(recognizer, settings.choice.source, settings.unsure_threshold, smoothing)
while context.state.playing:
    if context.video_processor is not None:
        status.markdown(context.video_processor.status())
    time.sleep(POLL_S)
