"""Video analysis on short clips made from the real photos: tracking, smoothing, CSV, annotated video, plot."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import NO_TORCH, REPO
from ferkit.errors import VideoError
from ferkit.infer import load
from ferkit.video import (CSV_FIELDS, MAX_MISSED, Tracker, analyse_video, check_decoded, iou_matrix, match_boxes,
                          video_writer)

CLIP_FPS = 10.0
CLIP_FRAMES = 24
CLIP_WIDTH = 320   # px; the family's faces are about 30 px wide at this size
CLIP_STEP = 3      # px the photo moves per frame: slow enough for IoU tracking, enough to matter


def make_clip(photo: Path, out: Path, frames: int = CLIP_FRAMES, step: int = CLIP_STEP) -> Path:
    """An mp4v clip of ``photo`` at 320 px wide, translated ``step`` px to the right per frame."""
    image = cv2.imread(str(photo))
    height = round(image.shape[0] * CLIP_WIDTH / image.shape[1])
    image = cv2.resize(image, (CLIP_WIDTH, height), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), CLIP_FPS, (CLIP_WIDTH, height))
    assert writer.isOpened()
    for i in range(frames):
        shift = np.float32([[1, 0, step * (i - frames // 2)], [0, 1, 0]])
        writer.write(cv2.warpAffine(image, shift, (CLIP_WIDTH, height), borderMode=cv2.BORDER_REPLICATE))
    writer.release()
    return out


def export_random_fastnet(path: Path) -> Path:
    """A randomly initialised fastnet as a ferkit ONNX file: the tracking tests do not depend on trained weights."""
    torch = pytest.importorskip("torch")
    from ferkit.export import default_meta, export_onnx
    from ferkit.models import create_model

    torch.manual_seed(0)
    return export_onnx(create_model("fastnet"), path, default_meta("fastnet", name="random_fastnet"))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return export_random_fastnet(tmp_path_factory.mktemp("model") / "random_fastnet.onnx")


@pytest.fixture(scope="module")
def recognizer(model_path):
    return load(model_path, detector="yunet", threads=1)


@pytest.fixture(scope="module")
def family_clip(photos_dir, tmp_path_factory) -> Path:
    return make_clip(photos_dir / "group4_family.jpg", tmp_path_factory.mktemp("clips") / "family.mp4")


@pytest.fixture(scope="module")
def family_result(recognizer, family_clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("family_out")
    calls = []
    result = analyse_video(recognizer, family_clip, csv_path=out / "timeline.csv", annotate_path=out / "annotated.mp4",
                           progress=lambda done, total: calls.append((done, total)))
    return result, out, calls


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_each_face_keeps_one_track(family_result):
    result, _, _ = family_result
    assert result.frames == result.processed_frames == CLIP_FRAMES
    assert [t.track for t in result.tracks] == [1, 2, 3, 4]
    assert all(t.frames == CLIP_FRAMES for t in result.tracks)
    # Faces are detected left to right; the same face must carry the same id in every frame.
    by_frame: dict[int, list] = {}
    for row in result.rows:
        by_frame.setdefault(row.frame, []).append(row)
    ids_left_to_right = {tuple(r.track for r in sorted(rows, key=lambda r: r.box[0])) for rows in by_frame.values()}
    assert ids_left_to_right == {(1, 2, 3, 4)}
    first, last = result.tracks[0], result.tracks[-1]
    assert first.first_s == 0.0 and last.last_s == pytest.approx((CLIP_FRAMES - 1) / CLIP_FPS)


def test_boxes_follow_the_moving_faces(family_result):
    result, _, _ = family_result
    track1 = [r for r in result.rows if r.track == 1]
    moved = track1[-1].box[0] - track1[0].box[0]
    assert moved == pytest.approx(CLIP_STEP * (CLIP_FRAMES - 1), abs=8)


def test_csv_timeline(family_result, recognizer):
    result, out, _ = family_result
    fields, rows = read_csv(out / "timeline.csv")
    assert fields == [*CSV_FIELDS, *recognizer.classes]
    assert len(rows) == 4 * CLIP_FRAMES == len(result.rows)
    for row in rows:
        probs = np.array([float(row[c]) for c in recognizer.classes])
        assert probs.sum() == pytest.approx(1.0, abs=2e-3)
        assert row["label"] == recognizer.classes[int(np.argmax(probs))]
        assert float(row["confidence"]) == pytest.approx(probs.max(), abs=1e-4)
        assert float(row["time_s"]) == pytest.approx(int(row["frame"]) / CLIP_FPS, abs=1e-4)
    assert sorted({int(r["frame"]) for r in rows}) == list(range(CLIP_FRAMES))


def test_annotated_video_has_every_frame(family_result, family_clip):
    _, out, _ = family_result
    source, annotated = cv2.VideoCapture(str(family_clip)), cv2.VideoCapture(str(out / "annotated.mp4"))
    assert annotated.isOpened()
    frames = 0
    while True:
        ok, frame = annotated.read()
        if not ok:
            break
        frames += 1
        ok, original = source.read()
        assert frame.shape == original.shape
    assert frames == CLIP_FRAMES
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_progress_counts_every_frame(family_result):
    _, _, calls = family_result
    assert calls == [(i, CLIP_FRAMES) for i in range(1, CLIP_FRAMES + 1)]


def test_timeline_plot_and_summary(family_result, tmp_path, recognizer):
    result, _, _ = family_result
    png = result.plot_timeline(tmp_path / "timeline.png")
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > image.shape[1]  # four subplots stacked
    table = result.summary_table()
    assert [row["track"] for row in table] == [1, 2, 3, 4]
    assert all(row["dominant"] in recognizer.classes and row["frames"] == CLIP_FRAMES for row in table)
    for summary in result.tracks:
        assert sum(summary.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert summary.dominant == max(summary.probabilities, key=summary.probabilities.get)
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert len(as_dict["tracks"]) == 4 and len(as_dict["rows"]) == len(result.rows)


def test_smoothing_is_an_exponential_moving_average(recognizer, family_clip):
    raw = analyse_video(recognizer, family_clip, smoothing=0.0, max_frames=6)
    smooth = analyse_video(recognizer, family_clip, smoothing=0.6, max_frames=6)
    for track in (1, 4):
        p = [r.probabilities for r in raw.rows if r.track == track]
        s = [r.probabilities for r in smooth.rows if r.track == track]
        expected = p[0]
        np.testing.assert_allclose(s[0], expected, atol=1e-6)
        for k in range(1, len(p)):
            expected = 0.6 * expected + 0.4 * p[k]
            np.testing.assert_allclose(s[k], expected, atol=1e-6)


def test_sampling_keeps_every_frame_in_the_video(recognizer, family_clip, tmp_path):
    result = analyse_video(recognizer, family_clip, sample_every=5, max_frames=12, annotate_path=tmp_path / "a.mp4",
                           csv_path=tmp_path / "t.csv")
    assert (result.frames, result.processed_frames) == (12, 3)
    assert sorted({r.frame for r in result.rows}) == [0, 5, 10]
    assert int(cv2.VideoCapture(str(tmp_path / "a.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 12


def test_video_without_faces_gives_no_tracks(recognizer, photos_dir, tmp_path):
    clip = make_clip(photos_dir / "noface_rocket.jpg", tmp_path / "rocket.mp4", frames=6)
    result = analyse_video(recognizer, clip, csv_path=tmp_path / "t.csv")
    assert result.tracks == [] and result.rows == [] and result.frames == 6
    fields, rows = read_csv(tmp_path / "t.csv")
    assert fields == [*CSV_FIELDS, *recognizer.classes] and rows == []
    assert cv2.imread(str(result.plot_timeline(tmp_path / "t.png"))) is not None


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 50, None], ids=["empty", "text", "truncated"])
def test_unreadable_video_names_the_path(recognizer, family_clip, tmp_path, content):
    bad = tmp_path / "bad clip.mp4"
    data = family_clip.read_bytes()
    bad.write_bytes(content if content is not None else data[: len(data) // 2])
    with pytest.raises(VideoError, match="bad clip.mp4"):
        analyse_video(recognizer, bad, csv_path=tmp_path / "t.csv", annotate_path=tmp_path / "a.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad clip.mp4"]  # nothing half-written


def test_missing_video_and_bad_options(recognizer, tmp_path):
    with pytest.raises(VideoError, match="not found.*nowhere.mp4"):
        analyse_video(recognizer, tmp_path / "nowhere.mp4")
    with pytest.raises(VideoError, match="not a video file"):
        analyse_video(recognizer, tmp_path)
    with pytest.raises(ValueError, match="smoothing"):
        Tracker(smoothing=1.0)


def test_iou_and_matching():
    a = np.array([[0, 0, 10, 10], [100, 100, 10, 10]])
    b = np.array([[101, 100, 10, 10], [5, 0, 10, 10], [500, 500, 4, 4]])
    iou = iou_matrix(a, b)
    assert iou[0, 1] == pytest.approx(50 / 150) and iou[1, 0] == pytest.approx(90 / 110) and iou[:, 2].max() == 0
    assert sorted(match_boxes(a, b)) == [(0, 1), (1, 0)]
    assert match_boxes(a, b, min_iou=0.5) == [(1, 0)]
    assert match_boxes(a, np.zeros((0, 4))) == []


def test_tracks_expire_after_missed_frames():
    tracker = Tracker(smoothing=0.5)
    probs = np.array([[0.9, 0.1]])
    first = tracker.update([(10, 10, 20, 20)], probs)[0].id
    for _ in range(MAX_MISSED):
        tracker.update([], np.zeros((0, 2)))
    assert tracker.update([(11, 10, 20, 20)], probs)[0].id == first  # back within MAX_MISSED frames
    for _ in range(MAX_MISSED + 1):
        tracker.update([], np.zeros((0, 2)))
    assert tracker.update([(11, 10, 20, 20)], probs)[0].id != first


def run_cli(*args: str, without_torch: bool = False) -> subprocess.CompletedProcess:
    """``ferkit predict ARGS``; ``without_torch``: as if torch and onnx were not installed (tests/no_torch)."""
    env = os.environ | {"PYTHONPATH": str(NO_TORCH)} if without_torch else None
    return subprocess.run([sys.executable, "-m", "ferkit", "predict", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_predict_on_a_video(model_path, family_clip, tmp_path):
    done = run_cli(str(family_clip), "--model", str(model_path), "--csv", str(tmp_path / "out.csv"),
                   "--annotate", str(tmp_path / "out.mp4"))
    assert done.returncode == 0, done.stderr
    assert "4 face track(s)" in done.stdout
    fields, rows = read_csv(tmp_path / "out.csv")  # one video: its timeline is the file named (once out_family.csv)
    assert fields[: len(CSV_FIELDS)] == list(CSV_FIELDS) and len(rows) == 4 * CLIP_FRAMES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.mp4"]
    assert f"ferkit: wrote {tmp_path / 'out.csv'} (the timeline of {family_clip}: {4 * CLIP_FRAMES} rows)" in done.stderr
    assert f"ferkit: wrote {tmp_path / 'out.mp4'} ({family_clip} annotated, {CLIP_FRAMES} frames)" in done.stderr
    assert int(cv2.VideoCapture(str(tmp_path / "out.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == CLIP_FRAMES


def test_cli_names_a_corrupt_video(model_path, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    done = run_cli(str(bad), "--model", str(model_path), "--csv", str(tmp_path / "out.csv"))
    assert done.returncode == 1
    assert "broken.mp4" in done.stderr and "Traceback" not in done.stderr
    assert all(line.startswith("ferkit:") for line in done.stderr.strip().splitlines())


def test_bundled_model_sees_a_happy_astronaut(photos_dir, tmp_path):
    clip = make_clip(photos_dir / "single_happy_astronaut.jpg", tmp_path / "astronaut.mp4", frames=12)
    result = analyse_video(load(), clip)
    assert len(result.tracks) == 1
    assert result.tracks[0].dominant == "happy" and result.tracks[0].probabilities["happy"] > 0.5


def test_cli_needs_no_torch_for_photos_and_videos(photos_dir, tmp_path):
    """The inference issue's 'done when': without torch, predict a photo as JSON and a video to CSV + mp4."""
    photo = photos_dir / "single_happy_astronaut.jpg"
    clip = make_clip(photo, tmp_path / "astronaut.mp4", frames=12)
    as_json = run_cli(str(photo), "--json", without_torch=True)
    assert as_json.returncode == 0, as_json.stderr
    [record] = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [face["label"] for face in record["faces"]] == ["happy"]
    video = run_cli(str(clip), "--csv", str(tmp_path / "out.csv"), "--annotate", str(tmp_path / "out.mp4"),
                    without_torch=True)
    assert video.returncode == 0, video.stderr
    assert "1 face track(s)" in video.stdout
    _, rows = read_csv(tmp_path / "out.csv")
    assert len(rows) == 12 and {row["track"] for row in rows} == {"1"}
    assert int(cv2.VideoCapture(str(tmp_path / "out.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 12


def test_truncated_decoding_is_an_error():
    check_decoded(24, 24, None, "clip.mp4")
    check_decoded(5, 24, 5, "clip.mp4")  # stopped by max_frames, not by the file
    check_decoded(3, None, None, "webcam 0")  # no declared length to compare with
    with pytest.raises(VideoError, match="clip.mp4: decoding stopped at frame 5 of 24"):
        check_decoded(5, 24, None, "clip.mp4")


def test_missing_webcam(recognizer):
    with pytest.raises(VideoError, match="cannot open webcam 97"):
        analyse_video(recognizer, 97)


def truncated_avi(photo: Path, out: Path, frames: int = CLIP_FRAMES) -> Path:
    """An MJPG AVI whose second half is cut off: its header still declares every frame."""
    whole = out.with_name("whole.avi")
    image = cv2.resize(cv2.imread(str(photo)), (CLIP_WIDTH, 240))
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), CLIP_FPS, (CLIP_WIDTH, 240))
    for i in range(frames):
        writer.write(np.roll(image, CLIP_STEP * i, axis=1))
    writer.release()
    data = whole.read_bytes()
    whole.unlink()
    out.write_bytes(data[: len(data) // 2])
    return out


def test_a_truncated_video_keeps_the_frames_before_the_cut(recognizer, photos_dir, tmp_path):
    clip = truncated_avi(photos_dir / "single_happy_astronaut.jpg", tmp_path / "cut.avi")
    result = analyse_video(recognizer, clip, csv_path=tmp_path / "t.csv", annotate_path=tmp_path / "a.mp4")
    assert 0 < result.frames < CLIP_FRAMES and len(result.tracks) == 1
    assert result.warning == (f"cannot decode {clip}: decoding stopped at frame {result.frames} of {CLIP_FRAMES}; "
                              "the file is truncated or corrupt; kept the "
                              f"{result.frames} frames before it (to {result.frames / CLIP_FPS:.2f} s)")
    _, rows = read_csv(tmp_path / "t.csv")
    assert len(rows) == result.frames
    assert int(cv2.VideoCapture(str(tmp_path / "a.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == result.frames


def test_cli_says_where_a_truncated_video_stopped(model_path, photos_dir, tmp_path):
    clip = truncated_avi(photos_dir / "single_happy_astronaut.jpg", tmp_path / "cut.avi")
    done = run_cli(str(clip), "--model", str(model_path), "--csv", str(tmp_path / "out.csv"))
    assert done.returncode == 0, done.stderr
    [warning] = [line for line in done.stderr.splitlines() if "warning" in line]
    assert warning.startswith(f"ferkit: warning: cannot decode {clip}: decoding stopped at frame ")
    _, rows = read_csv(tmp_path / "out.csv")
    assert 0 < len(rows) < CLIP_FRAMES and "Traceback" not in done.stderr


def test_cli_refuses_to_annotate_a_video_over_itself(model_path, family_clip, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(family_clip.read_bytes())
    done = run_cli(str(clip), "--model", str(model_path), "--annotate", str(clip))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"ferkit: error: --annotate {clip} would overwrite an input: ferkit "
                                                "never writes over its inputs; choose another name"]
    assert clip.read_bytes() == family_clip.read_bytes()


def test_cli_csv_of_a_video_with_other_inputs_is_a_folder(model_path, family_clip, photos_dir, tmp_path, capsys):
    from ferkit.cli import main

    photo = photos_dir / "single_happy_astronaut.jpg"
    named = tmp_path / "timeline.csv"
    assert main(["predict", str(family_clip), str(photo), "--model", str(model_path), "--csv", str(named)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"ferkit: error: --csv {named} names a file, but this run writes 2 tables (the images' faces, a timeline per "
        f"video): name a folder, e.g. --csv {tmp_path / 'timeline'}/"]
    assert not named.exists()
    tables = tmp_path / "tables"
    assert main(["predict", str(family_clip), str(photo), "--model", str(model_path), "--csv", str(tables)]) == 0
    err = capsys.readouterr().err
    assert sorted(p.name for p in tables.iterdir()) == ["faces.csv", "family.csv"]
    assert len(read_csv(tables / "family.csv")[1]) == 4 * CLIP_FRAMES and len(read_csv(tables / "faces.csv")[1]) == 1
    assert f"ferkit: wrote {tables / 'family.csv'} (the timeline of {family_clip}" in err
    assert f"ferkit: wrote {tables / 'faces.csv'} (1 row(s), one per face)" in err


def test_odd_sizes_are_padded_and_other_suffixes_refused(tmp_path):
    with video_writer(tmp_path / "odd.mp4", CLIP_FPS, (33, 17)) as writer:
        for i in range(3):
            writer.write(np.full((17, 33, 3), 60 * i, np.uint8))
    capture = cv2.VideoCapture(str(tmp_path / "odd.mp4"))
    size = (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    assert size == (34, 18) and capture.get(cv2.CAP_PROP_FRAME_COUNT) == 3  # 4:2:0 needs even sides
    with pytest.raises(VideoError, match=r"x.avi: videos are written as .mp4, .m4v, .mov, .mkv, .webm"), \
            video_writer(tmp_path / "x.avi", CLIP_FPS, (32, 32)):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]  # no temp file left


def test_cli_refuses_an_image_name_for_an_annotated_video(model_path, family_clip, tmp_path, capsys):
    from ferkit.cli import main

    out = tmp_path / "frame.png"
    assert main(["predict", str(family_clip), "--model", str(model_path), "--annotate", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"ferkit: error: --annotate {out}: an annotated video is written as .mp4, .m4v, .mov, .mkv, .webm; choose one "
        "of those suffixes"]
