"""Emotions over time in a video file or a webcam: faces tracked across frames, probabilities smoothed.

    result = analyse_video(ferkit.load(), "clip.mp4", csv_path="timeline.csv", annotate_path="out.mp4")
    result.summary_table()              # one row per tracked face
    result.plot_timeline("timeline.png")

Each processed frame goes through the recognizer (detect, crop, one batched classification).
Detections are tied to tracks by box overlap (IoU, Hungarian assignment), so a face keeps its id
while it moves; each track's probabilities are an exponential moving average, so a label does not
flicker from frame to frame.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from .draw import draw_faces, plot_colour
from .errors import VideoError
from .fileio import atomic_open, atomic_path
from .infer import Recognizer
from .results import FACE_ROW_FIELDS, FaceResult, face_result

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
MIN_IOU = 0.3            # a detection continues a track only when their boxes overlap at least this much
MAX_MISSED = 10          # processed frames a track survives without a matching detection
FALLBACK_FPS = 30.0      # when the container (or a webcam) reports no usable frame rate
MIN_DECODED = 0.9        # a file that decodes fewer than this share of its declared frames is corrupt
MAX_PLOTTED_TRACKS = 12  # the timeline shows the longest tracks, one subplot each
AV_LOG_QUIET = "-8"      # FFmpeg's log level that prints nothing
# Suffix -> ffmpeg encoder settings of the annotated video: H.264 plays in browsers and QuickTime, VP9 in WebM.
H264 = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "23")
ENCODERS = {".mp4": (*H264, "-movflags", "+faststart"), ".m4v": (*H264, "-movflags", "+faststart"),
            ".mov": (*H264, "-movflags", "+faststart"), ".mkv": H264,
            ".webm": ("-c:v", "libvpx-vp9", "-crf", "34", "-b:v", "0", "-row-mt", "1", "-deadline", "realtime")}
EVEN_SIDES = "pad=ceil(iw/2)*2:ceil(ih/2)*2"  # 4:2:0 chroma needs an even width and height
CSV_FIELDS = ("frame", "time_s", "track", *FACE_ROW_FIELDS)  # then one column per class

Box = tuple[int, int, int, int]
Progress = Callable[[int, int | None], None]


def is_video(path: str | os.PathLike) -> bool:
    """Whether a path names a video, by its suffix (how the CLI tells videos from images)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class FrameRow:
    """One face in one processed frame: its track, and the track's state as a FaceResult (smoothed probabilities)."""

    frame: int
    time_s: float
    track: int
    face: FaceResult

    @property
    def box(self) -> Box:
        return self.face.box

    @property
    def label(self) -> str:
        return self.face.label

    @property
    def confidence(self) -> float:
        return self.face.confidence

    @property
    def probabilities(self) -> np.ndarray:
        """(C,) smoothed probabilities, in the model's class order."""
        return np.fromiter(self.face.probabilities.values(), np.float64, len(self.face.probabilities))

    def to_dict(self) -> dict:
        """One timeline row: frame, time_s, track, then the face's row (``FaceResult.to_row``)."""
        return {"frame": self.frame, "time_s": round(self.time_s, 4), "track": self.track, **self.face.to_row()}


@dataclass
class TrackSummary:
    """One tracked face over the whole video; ``probabilities``: the mean of its smoothed per-frame ones."""

    track: int
    first_s: float
    last_s: float
    frames: int
    dominant: str
    probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return {"track": self.track, "first_s": round(self.first_s, 3), "last_s": round(self.last_s, 3),
                "frames": self.frames, "dominant": self.dominant,
                "probabilities": {c: round(p, 4) for c, p in self.probabilities.items()}}

    def to_row(self) -> dict:
        """``to_dict`` flat: one column per class instead of the nested probabilities (a table row)."""
        record = self.to_dict()
        return {**{k: v for k, v in record.items() if k != "probabilities"}, **record["probabilities"]}


@dataclass
class VideoResult:
    """What ``analyse_video`` found: per-frame rows (the CSV timeline) and one summary per track."""

    source: str
    classes: tuple[str, ...]
    fps: float
    frames: int             # frames read
    processed_frames: int   # frames run through the recognizer (every ``sample_every``-th)
    rows: list[FrameRow] = field(default_factory=list)
    tracks: list[TrackSummary] = field(default_factory=list)
    csv_path: Path | None = None
    annotate_path: Path | None = None
    warning: str | None = None  # where decoding stopped, when the file ended before its declared length

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps

    def to_dict(self) -> dict:
        return {
            "source": self.source, "classes": list(self.classes), "fps": self.fps, "frames": self.frames,
            "processed_frames": self.processed_frames, "duration_s": round(self.duration_s, 3),
            "tracks": [t.to_dict() for t in self.tracks],
            "rows": [r.to_dict() for r in self.rows],
            "csv_path": str(self.csv_path) if self.csv_path else None,
            "annotate_path": str(self.annotate_path) if self.annotate_path else None,
            "warning": self.warning,
        }

    def summary_table(self) -> list[dict]:
        """One flat dict per track (a table row for the app or a terminal)."""
        return [t.to_row() for t in self.tracks]

    def write_csv(self, path: str | os.PathLike) -> Path:
        """The timeline: one row per face per processed frame, smoothed probabilities, one column per class."""
        path = Path(path)
        with atomic_open(path, "w") as f:
            writer = csv.DictWriter(f, fieldnames=[*CSV_FIELDS, *self.classes], lineterminator="\n")
            writer.writeheader()
            writer.writerows(r.to_dict() for r in self.rows)
        return path

    def plot_timeline(self, path: str | os.PathLike) -> Path:
        """A PNG of each class's smoothed probability over time, one subplot per track (the longest few)."""
        from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state

        path = Path(path)
        shown = sorted(self.tracks, key=lambda t: -t.frames)[:MAX_PLOTTED_TRACKS]
        shown.sort(key=lambda t: t.track)
        fig = Figure(figsize=(9, 1.0 + 2.2 * max(1, len(shown))), layout="constrained")
        if not shown:
            ax = fig.add_subplot()
            ax.text(0.5, 0.5, f"no faces found in {Path(self.source).name}", ha="center", va="center")
            ax.set_axis_off()
        axes = [fig.add_subplot(len(shown), 1, i + 1) for i in range(len(shown))]
        grouped = rows_by_track(self.rows)
        for ax, track in zip(axes, shown):
            rows = grouped[track.track]
            times = [r.time_s for r in rows]
            probs = np.stack([r.probabilities for r in rows])  # (T, C)
            for c, name in enumerate(self.classes):
                ax.plot(times, probs[:, c], marker="." if len(rows) < 3 else None, label=name,
                        color=plot_colour(name))
            ax.set_xlim(0, max(self.duration_s, 1e-3))
            ax.set_ylim(0, 1)
            ax.set_ylabel("probability")
            ax.set_title(f"track {track.track}: mostly {track.dominant} ({track.frames} frames)", fontsize=10)
        if axes:
            axes[-1].set_xlabel("time (s)")
            axes[0].legend(ncol=len(self.classes), fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.15))
        title = f"{Path(self.source).name}: {len(self.tracks)} tracked face(s)"
        if len(shown) < len(self.tracks):
            title += f", the {len(shown)} longest shown"
        fig.suptitle(title)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        return path


# --- tracking -----------------------------------------------------------------------------------


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), boxes as x, y, w, h -> (N, M)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    a0, a1, b0, b1 = a[:, None, :2], a[:, None, :2] + a[:, None, 2:], b[None, :, :2], b[None, :, :2] + b[None, :, 2:]
    inter = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None).prod(axis=-1)  # (N, M)
    union = a[:, 2:].prod(axis=1)[:, None] + b[:, 2:].prod(axis=1)[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def match_boxes(previous: np.ndarray, current: np.ndarray, min_iou: float = MIN_IOU) -> list[tuple[int, int]]:
    """(previous, current) index pairs of the assignment with the largest total IoU; pairs below ``min_iou`` dropped."""
    if len(previous) == 0 or len(current) == 0:
        return []
    iou = iou_matrix(previous, current)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]


@dataclass
class Track:
    id: int
    box: Box
    probabilities: np.ndarray  # (C,) smoothed
    missed: int = 0


class Tracker:
    """Tracks with stable ids; ``smoothing`` is the weight of the past in each track's moving average."""

    def __init__(self, smoothing: float, max_missed: int = MAX_MISSED):
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing
        self.max_missed = max_missed
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, boxes: list[Box], probabilities: np.ndarray) -> list[Track]:
        """The track of each detection, in detection order; unmatched tracks age, and expire after ``max_missed``."""
        previous = np.array([t.box for t in self.tracks], np.float64).reshape(-1, 4)
        pairs = {c: r for r, c in match_boxes(previous, np.array(boxes, np.float64).reshape(-1, 4))}
        for track in self.tracks:
            track.missed += 1
        assigned = []
        for i, (box, probs) in enumerate(zip(boxes, probabilities)):
            if i in pairs:
                track = self.tracks[pairs[i]]
                track.box, track.missed = box, 0
                track.probabilities = self.smoothing * track.probabilities + (1.0 - self.smoothing) * probs
            else:
                track = Track(self._next_id, box, np.asarray(probs, np.float64).copy())
                self._next_id += 1
                self.tracks.append(track)
            assigned.append(track)
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return assigned

    def visible(self) -> list[Track]:
        """Tracks seen in the latest update."""
        return [t for t in self.tracks if t.missed == 0]


# --- reading and writing frames -----------------------------------------------------------------


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Keep OpenCV's and FFmpeg's own log lines off stderr: a failure is reported once, as a VideoError.

    OpenCV reads OPENCV_FFMPEG_LOGLEVEL when it first uses FFmpeg, so this silences FFmpeg only when
    no video was opened before in the process; a value the user set is kept.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", AV_LOG_QUIET)
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def open_capture(source: str | os.PathLike | int) -> cv2.VideoCapture:
    """An opened capture for a file path or a webcam index, or VideoError saying what and where."""
    if isinstance(source, int):
        with quiet_opencv():
            capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            raise VideoError(f"cannot open webcam {source}: no camera at that index, or it is in use")
        return capture
    path = Path(source)
    if not path.exists():
        raise VideoError(f"video not found: {path}")
    if not path.is_file():
        raise VideoError(f"not a video file: {path}")
    with quiet_opencv():
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise VideoError(f"cannot open video {path}: the file is corrupt or not a video format OpenCV can decode")
    return capture


def frame_rate(capture: cv2.VideoCapture) -> float:
    fps = capture.get(cv2.CAP_PROP_FPS)
    return float(fps) if math.isfinite(fps) and 0 < fps <= 1000 else FALLBACK_FPS


def declared_frames(capture: cv2.VideoCapture) -> int | None:
    """Frame count from the container, None when unknown (webcams, some streams)."""
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(count) if math.isfinite(count) and count > 0 else None


def read_frames(capture: cv2.VideoCapture, limit: int | None) -> Iterator[np.ndarray]:
    """BGR frames until the end, or ``limit`` frames."""
    count = 0
    while limit is None or count < limit:
        ok, frame = capture.read()
        if not ok or frame is None:
            return
        count += 1
        yield frame


def track_face(track: Track, recognizer: Recognizer, detection_score: float | None = None) -> FaceResult:
    """A track's current state (its box, its smoothed probabilities) as a FaceResult."""
    return face_result(track.probabilities, track.box, recognizer.classes, recognizer.unsure_threshold,
                       detection_score)


def draw_tracks(frame: np.ndarray, tracks: list[Track], recognizer: Recognizer) -> np.ndarray:
    """The frame (drawn on in place): each visible track's box and "#id label 87%" tag, smoothed."""
    draw_faces(frame, [track_face(t, recognizer) for t in tracks], [f"#{t.id}" for t in tracks])
    return frame


class EncodedVideo:
    """Frames piped to the ffmpeg that the imageio-ffmpeg wheel ships: H.264 (VP9 in .webm), 4:2:0.

    OpenCV's own writer only has MPEG-4 part 2 (mp4v), which browsers and QuickTime do not play.
    An odd width or height is padded by one pixel: 4:2:0 chroma needs even sides.
    """

    def __init__(self, path: Path, fps: float, size: tuple[int, int], shown: Path):
        codec = ENCODERS.get(path.suffix.lower())
        if codec is None:
            raise VideoError(f"cannot write the annotated video {shown}: videos are written as "
                             f"{', '.join(ENCODERS)}; choose one of those suffixes")
        self.shown = shown
        # ffmpeg's messages go to a file, not a pipe: a chatty ffmpeg can never block the writes
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        command = [ffmpeg_exe(shown), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
                   "-pix_fmt", "bgr24", "-s", f"{size[0]}x{size[1]}", "-r", f"{fps:.6g}", "-i", "-", "-an",
                   *codec, "-pix_fmt", "yuv420p", "-vf", EVEN_SIDES, str(path)]
        # its own session: the Ctrl+C that ends a webcam recording must not stop ffmpeg before the file is finished
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log,
                                        start_new_session=True)

    def write(self, frame: np.ndarray) -> None:
        """One BGR frame of the writer's size."""
        try:
            self.process.stdin.write(memoryview(np.ascontiguousarray(frame)))
        except OSError:  # ffmpeg exited: a full disk, a bad parameter
            self.close()
            raise VideoError(f"cannot write the annotated video {self.shown}: ffmpeg stopped reading frames") from None

    def close(self) -> None:
        """Wait for ffmpeg to finish the file; VideoError with its last message when it failed."""
        if self.log.closed:
            return
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        code = self.process.wait()
        self.log.seek(0)
        lines = self.log.read().decode(errors="replace").strip().splitlines()
        self.log.close()
        if code != 0:
            raise VideoError(f"cannot write the annotated video {self.shown}: ffmpeg failed "
                             f"({lines[-1] if lines else f'exit status {code}'})")

    def kill(self) -> None:
        """Stop ffmpeg without waiting for a complete file (the run failed or was interrupted)."""
        self.process.kill()
        with contextlib.suppress(VideoError):
            self.close()


def ffmpeg_exe(shown: Path) -> str:
    """The ffmpeg binary inside the imageio-ffmpeg wheel (never downloaded); VideoError when it is missing."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as e:
        raise VideoError(f"cannot write the annotated video {shown}: no ffmpeg ({e}); "
                         "reinstall ferkit or pip install imageio-ffmpeg") from None


@contextlib.contextmanager
def video_writer(path: Path | None, fps: float, size: tuple[int, int]) -> Iterator[EncodedVideo | None]:
    """An H.264 writer into a temp file renamed over ``path`` when the block succeeds; None when no path."""
    if path is None:
        yield None
        return
    with atomic_path(path) as tmp:
        writer = EncodedVideo(tmp, fps, size, path)
        try:
            yield writer
        except BaseException:
            writer.kill()
            raise
        writer.close()


def frame_size(capture: cv2.VideoCapture, where: str) -> tuple[int, int]:
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width <= 0 or height <= 0:
        raise VideoError(f"cannot read the frame size of {where}: the file is corrupt or not a video")
    return width, height


# --- the pipeline -------------------------------------------------------------------------------


def rows_by_track(rows: list[FrameRow]) -> dict[int, list[FrameRow]]:
    """Each track's rows in time order, tracks by id."""
    grouped: dict[int, list[FrameRow]] = {}
    for row in rows:
        grouped.setdefault(row.track, []).append(row)
    return dict(sorted(grouped.items()))


def summarise_tracks(rows: list[FrameRow], classes: tuple[str, ...]) -> list[TrackSummary]:
    summaries = []
    for track_id, mine in rows_by_track(rows).items():
        mean = np.mean([r.probabilities for r in mine], axis=0)
        summaries.append(TrackSummary(
            track_id, mine[0].time_s, mine[-1].time_s, len(mine), classes[int(np.argmax(mean))],
            {c: float(p) for c, p in zip(classes, mean)},
        ))
    return summaries


def analyse_video(recognizer: Recognizer, source: str | os.PathLike | int, *, csv_path: str | os.PathLike | None = None,
                  annotate_path: str | os.PathLike | None = None, sample_every: int = 1, smoothing: float = 0.6,
                  max_frames: int | None = None, progress: Progress | None = None) -> VideoResult:
    """Track the faces of a video file (or webcam index) and their emotions over time.

    Every ``sample_every``-th frame is run through ``recognizer``; the annotated video (optional)
    keeps every frame, drawn with the latest tracks. ``smoothing`` is the weight of the past in each
    track's exponential moving average (0: no smoothing). ``progress(done, total)`` is called after
    each frame read; total is None when unknown. From a webcam, Ctrl+C ends the recording and the
    outputs are still written. A video without faces gives a result with no tracks. A file that
    stops decoding early keeps the frames read before it: ``warning`` says where it stopped.
    """
    if sample_every < 1:
        raise ValueError(f"sample_every must be >= 1, got {sample_every}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    where = f"webcam {source}" if isinstance(source, int) else str(source)
    capture = open_capture(source)
    try:
        fps, declared = frame_rate(capture), declared_frames(capture)
        out = Path(annotate_path) if annotate_path is not None else None
        size = frame_size(capture, where)
        with video_writer(out, fps, size) as writer:
            frames = FrameLoop(recognizer, Tracker(smoothing), fps, sample_every, writer, size)
            frames.run(capture, max_frames, min(declared, max_frames) if declared and max_frames
                       else (declared or max_frames), progress, stop_on_interrupt=isinstance(source, int))
            warning = stopped_early(frames.done, declared, max_frames, fps, where)
    finally:
        capture.release()
    classes = tuple(recognizer.classes)
    result = VideoResult(where, classes, fps, frames.done, frames.processed, frames.rows,
                         summarise_tracks(frames.rows, classes), annotate_path=out, warning=warning)
    if csv_path is not None:
        result.csv_path = result.write_csv(csv_path)
    return result


class FrameLoop:
    """Frames read, sampled, classified, tied to tracks and written: the counts and rows of one video."""

    def __init__(self, recognizer: Recognizer, tracker: Tracker, fps: float, sample_every: int,
                 writer: EncodedVideo | None, size: tuple[int, int]):
        self.recognizer, self.tracker, self.fps, self.sample_every = recognizer, tracker, fps, sample_every
        self.writer, self.size = writer, size
        self.rows: list[FrameRow] = []
        self.done = self.processed = 0

    def run(self, capture: cv2.VideoCapture, limit: int | None, total: int | None, progress: Progress | None,
            stop_on_interrupt: bool) -> None:
        """Every frame until the end or ``limit``; Ctrl+C ends a webcam recording (``stop_on_interrupt``)."""
        try:
            for frame in read_frames(capture, limit):
                self.frame(frame)
                if progress is not None:
                    progress(self.done, total)
        except KeyboardInterrupt:
            if not stop_on_interrupt:
                raise

    def frame(self, frame: np.ndarray) -> None:
        """One frame: classified when it is a sampled one, drawn with the current tracks when writing."""
        if self.done % self.sample_every == 0:
            self.rows += classify_frame(self.recognizer, self.tracker, frame, self.done, self.done / self.fps)
            self.processed += 1
        if self.writer is not None:
            self.writer.write(fitted(draw_tracks(frame, self.tracker.visible(), self.recognizer), self.size))
        self.done += 1


def stopped_early(done: int, declared: int | None, max_frames: int | None, fps: float, where: str) -> str | None:
    """A one-line warning when decoding stopped well before the declared length, None when it did not.

    VideoError (nothing is kept) when not a single frame could be decoded.
    """
    try:
        check_decoded(done, declared, max_frames, where)
    except VideoError as e:
        if done == 0:
            raise
        return f"{e}; kept the {done} frames before it (to {done / fps:.2f} s)"
    return None


def classify_frame(recognizer: Recognizer, tracker: Tracker, frame: np.ndarray, index: int,
                   time_s: float) -> list[FrameRow]:
    """The frame's faces (detected, cropped, classified in one batch) tied to tracks, as timeline rows."""
    faces = recognizer.predict(frame, detect=True)
    probs = np.array([list(f.probabilities.values()) for f in faces], np.float64)
    tracks = tracker.update([f.box for f in faces], probs.reshape(len(faces), len(recognizer.classes)))
    return [FrameRow(index, time_s, track.id, track_face(track, recognizer, face.detection_score))
            for track, face in zip(tracks, faces)]


def fitted(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The frame at ``size`` (width, height): a stream may change resolution midway, a writer cannot."""
    if frame.shape[1::-1] != size:
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return frame


def check_decoded(done: int, declared: int | None, max_frames: int | None, where: str) -> None:
    """VideoError when a file stops decoding well before the frame count its container declares."""
    expected = min(declared, max_frames) if declared and max_frames else declared
    if expected and done < MIN_DECODED * expected:
        raise VideoError(f"cannot decode {where}: decoding stopped at frame {done} of {expected}; "
                         "the file is truncated or corrupt")
