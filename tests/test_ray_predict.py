"""``ferkit predict --engine ray``: the local path's faces, face for face, on real photos; bad files as rows.

One Ray session serves the module (starting Ray costs seconds); the commands run in-process
through ``predict_cmd.main`` so they join it instead of starting their own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from test_video import make_clip

from ferkit import predict_cmd, ray_predict
from ferkit.errors import FerkitError
from ferkit.infer import load
from ferkit.labels import EMOTIONS
from ferkit.video import is_video

PHOTOS_USED = ("group4_family.jpg", "group2_laos.jpg", "single_sad_baby.jpg", "single_happy_astronaut.jpg",
               "noface_coffee.jpg")
CLIP_FRAMES = 12
FACE_COLUMNS = ["face", "x", "y", "w", "h", "label", "unsure"]
PROBABILITY_COLUMNS = ["confidence", *EMOTIONS]
ROUNDING = 2e-4  # rows hold 4 decimals; thread counts differ between the paths, so the last one may round apart


@pytest.fixture(scope="module")
def ray_session():
    started = ray_predict.start_ray()
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, photos_dir) -> Path:
    """Five real photos (one without a face), a truncated JPEG and a 12-frame clip of the family photo."""
    folder = tmp_path_factory.mktemp("inputs").resolve()
    for name in PHOTOS_USED:
        shutil.copy(photos_dir / name, folder / name)
    (folder / "broken.jpg").write_bytes((photos_dir / PHOTOS_USED[0]).read_bytes()[:4000])
    make_clip(photos_dir / "group4_family.jpg", folder / "clip.mp4", frames=CLIP_FRAMES)
    return folder


@pytest.fixture(scope="module")
def ray_rows(ray_session, inputs, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("ray") / "faces.parquet"
    assert predict_cmd.main([str(inputs), "--engine", "ray", "--out", str(out)]) == 0
    return pd.read_parquet(out)


def sorted_rows(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values(["source", "frame", "face"], na_position="first").reset_index(drop=True)


def assert_same_faces(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Box, label, unsure equal; probabilities equal to the rows' rounding."""
    got, want = sorted_rows(got), sorted_rows(want)
    assert len(got) == len(want) > 0
    assert got["source"].tolist() == want["source"].tolist()
    assert got[FACE_COLUMNS].astype(object).values.tolist() == want[FACE_COLUMNS].astype(object).values.tolist()
    assert (got[PROBABILITY_COLUMNS].to_numpy(float) - want[PROBABILITY_COLUMNS].to_numpy(float)).__abs__().max() <= ROUNDING


def video_rows(clip: Path) -> pd.DataFrame:
    """The clip's faces frame by frame through the local Recognizer, as the Ray path classifies them (no tracking)."""
    recognizer, capture, rows = load(), cv2.VideoCapture(str(clip)), []
    for index in range(CLIP_FRAMES):
        ok, frame = capture.read()
        assert ok
        rows += [{"frame": index, **row} for row in recognizer.predict(frame, detect=True, name=str(clip)).to_rows()]
    capture.release()
    return pd.DataFrame(rows)


def test_images_match_the_local_path(ray_rows, inputs, tmp_path):
    local_csv = tmp_path / "local.csv"
    images = sorted(str(p) for p in inputs.iterdir() if not is_video(p))  # the clip is compared frame by frame below
    assert predict_cmd.main([*images, "--csv", str(local_csv)]) == 0
    local = pd.read_csv(local_csv)
    faces = ray_rows[ray_rows["frame"].isna() & (ray_rows["face"] > 0)]
    assert_same_faces(faces.assign(frame=0), local.assign(frame=0))
    assert set(ray_rows["source"]) == {str(p) for p in inputs.iterdir()}  # every input has its row(s)


def test_bad_file_and_faceless_photo_are_rows(ray_rows, inputs):
    broken = ray_rows[ray_rows["source"] == str(inputs / "broken.jpg")]
    assert len(broken) == 1 and "truncated" in broken["error"].iloc[0]
    coffee = ray_rows[ray_rows["source"] == str(inputs / "noface_coffee.jpg")]
    assert coffee["face"].tolist() == [0] and coffee["error"].isna().all() and coffee["label"].isna().all()
    assert ray_rows.loc[ray_rows["source"] != str(inputs / "broken.jpg"), "error"].isna().all()


def test_video_frames_in_chunks_match_frame_by_frame(ray_rows, inputs):
    clip = inputs / "clip.mp4"
    want = video_rows(clip)
    assert_same_faces(ray_rows[ray_rows["source"] == str(clip)], want)  # one chunk
    chunked = ray_predict.predict_dataset([clip], actors=2, frames_per_chunk=5).to_pandas()  # 3 chunks, 2 seeks
    assert_same_faces(chunked, want)


def test_csv_output_and_refusals(ray_session, inputs, tmp_path):
    out = tmp_path / "faces.csv"
    photo = str(inputs / "single_happy_astronaut.jpg")
    assert predict_cmd.main([photo, "--engine", "ray", "--out", str(out)]) == 0
    [part] = list(out.iterdir())
    rows = pd.read_csv(part)
    assert rows["label"].tolist() == ["happy"] and rows["source"].tolist() == [photo]
    with pytest.raises(FerkitError, match="already exists"):
        predict_cmd.main([photo, "--engine", "ray", "--out", str(out)])
    with pytest.raises(FerkitError, match=r"\.parquet or \.csv"):
        predict_cmd.main([photo, "--engine", "ray", "--out", str(tmp_path / "faces.txt")])
    with pytest.raises(FerkitError, match="--out"):
        predict_cmd.main([photo, "--engine", "ray"])
    with pytest.raises(FerkitError, match="not a file"):
        ray_predict.predict_dataset([tmp_path / "missing.jpg"])
