"""ferkit.data: the real splits, the Kaggle CSV and image folders, FER+ rules, errors and the cache."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from conftest import TINY_PER_CLASS, tiny_face
from ferkit import data
from ferkit.data import FaceSet, class_table, ferplus_majority, load_ferplus_split, load_split, read_ferplus_votes
from ferkit.errors import DataError
from ferkit.labels import EMOTIONS, FERPLUS_EMOTIONS, SPLITS
from ferkit.userdata import list_image_folder, read_image_folder, read_kaggle_csv

CSV_SAMPLE_STEP = 37  # every 37th row of the materialised CSV also goes through read_kaggle_csv (970 rows)


def readme_counts(readme: str) -> dict[str, list[int]]:
    """The 'Counts per class' table of the data README: {split: [7 class counts..., total]}."""
    counts = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in SPLITS and len(cells) == len(EMOTIONS) + 2:
            counts[cells[0]] = [int(c) for c in cells[1:]]
    return counts


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch, request):
    """Tests that build their own data get their own cache; the real-data tests keep the shared one."""
    if "fer_data" not in request.fixturenames:
        monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))


# --- the real data ------------------------------------------------------------------------------


def test_counts_per_split_and_class_match_readme(fer_data):
    expected = readme_counts((fer_data / "README.md").read_text())
    assert list(expected) == list(SPLITS), "the README's counts table was not found"
    for split in SPLITS:
        faces = load_split(split, fer_data)
        assert faces.images.shape == (expected[split][-1], 48, 48) and faces.images.dtype == np.uint8
        assert faces.counts().tolist() == expected[split][:-1], split
        assert np.all(np.diff(faces.rows) > 0)
    assert expected["Training"][-1] == 28709


def test_class_table_gives_the_reports_percentages(fer_data):
    table = {name: (n, round(pct, 2)) for name, n, pct in class_table(load_split("Training", fer_data))}
    assert table["sad"] == (4830, 16.82)
    assert table["disgust"] == (436, 1.52)
    assert table["happy"] == (7215, 25.13)


@pytest.fixture(scope="module")
def kaggle_csv(fer_data, tmp_path_factory):
    """The Kaggle fer2013.csv written by the data folder's own materialize.py (~11 s, 300 MB, removed after)."""
    out = tmp_path_factory.mktemp("kaggle") / "fer2013.csv"
    subprocess.run([sys.executable, str(fer_data / "materialize.py"), "csv", str(out)], check=True,
                   capture_output=True, timeout=300)
    yield out
    out.unlink()


@pytest.mark.slow
def test_tar_and_materialized_csv_agree(fer_data, kaggle_csv, tmp_path):
    splits = {split: load_split(split, fer_data) for split in SPLITS}
    n = sum(len(s) for s in splits.values())
    pixels = np.empty((n, 48 * 48), np.uint8)
    usage, emotion, sample = [], [], []
    with open(kaggle_csv) as f:
        header = f.readline()
        for row, line in enumerate(f):
            label, values, split = line.split(",")
            pixels[row] = np.fromstring(values, dtype=np.uint8, sep=" ")  # text mode: every row, in ~2 s
            usage.append(split.strip())
            emotion.append(int(label))
            if row % CSV_SAMPLE_STEP == 0:
                sample.append(line)
    assert header.strip() == "emotion,pixels,Usage"
    assert row + 1 == n == 35887
    for split, faces in splits.items():  # every row: same split, label and pixels
        rows = faces.rows
        assert {usage[r] for r in rows.tolist()} == {split}
        assert np.array_equal(np.asarray(emotion)[rows], faces.labels), split
        assert np.array_equal(pixels[rows], faces.images.reshape(len(faces), -1)), split

    # read_kaggle_csv on a sample of the same lines (it numbers rows within the file it reads).
    small = tmp_path / "sample.csv"
    small.write_text(header + "".join(sample))
    sampled_rows = np.arange(0, n, CSV_SAMPLE_STEP)
    for split, sampled in read_kaggle_csv(small).items():
        faces, rows = splits[split], sampled_rows[sampled.rows]
        index = np.searchsorted(faces.rows, rows)
        assert np.array_equal(faces.rows[index], rows)
        assert np.array_equal(faces.images[index], sampled.images), split
        assert np.array_equal(faces.labels[index], sampled.labels), split


# --- a user's own data ----------------------------------------------------------------------


def _kaggle_line(emotion: int, pixels: np.ndarray, usage: str) -> str:
    return f"{emotion},{' '.join(map(str, pixels.ravel().tolist()))},{usage}"


def test_read_kaggle_csv_small(tmp_path):
    faces = [tiny_face(i) for i in range(3)]
    path = tmp_path / "fer2013.csv"
    path.write_text("\n".join(["emotion,pixels,Usage", _kaggle_line(3, faces[0], "Training"),
                               _kaggle_line(6, faces[1], "PublicTest"), _kaggle_line(0, faces[2], "Training")]) + "\n")
    sets = read_kaggle_csv(path)
    assert sorted(sets) == ["PublicTest", "Training"]
    assert sets["Training"].labels.tolist() == [3, 0] and sets["Training"].rows.tolist() == [0, 2]
    assert np.array_equal(sets["Training"].images, np.stack([faces[0], faces[2]]))
    assert np.array_equal(sets["PublicTest"].images[0], faces[1]) and sets["PublicTest"].labels.tolist() == [6]


@pytest.mark.parametrize("text, fragment", [
    ("label,pixels\n1,0 0\n", "needs the columns emotion,pixels"),
    ("emotion,pixels,Usage\n1,1 2 3,Training\n", ":2: expected 2304 pixels"),
    ("emotion,pixels,Usage\n9," + " ".join(["0"] * 2304) + ",Training\n", ":2: expected 2304 pixels and emotion 0-6"),
    ("emotion,pixels,Usage\nx," + " ".join(["0"] * 2304) + ",Training\n", ":2: bad emotion or pixels"),
])
def test_read_kaggle_csv_rejects_bad_files(tmp_path, text, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=re.escape(fragment)) as e:
        read_kaggle_csv(path)
    assert str(path) in str(e.value)


def test_read_kaggle_csv_missing(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "none.csv"))):
        read_kaggle_csv(tmp_path / "none.csv")


def test_image_folder(tmp_path):
    root = tmp_path / "faces"
    images = {
        "zebra/a.png": np.full((30, 30), 10, np.uint8),           # an extra class name sorts after ours
        "happy/x.jpg": np.full((96, 64, 3), 200, np.uint8),       # colour, not square
        "happy/sub/y.png": tiny_face(1),                           # nested folders are searched
        "angry/z.webp": tiny_face(2),
    }
    for name, image in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / name), image, [cv2.IMWRITE_WEBP_QUALITY, 101])
    (root / "angry" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()

    paths, labels, classes = list_image_folder(root)
    assert classes == ("angry", "happy", "zebra")
    assert [p.relative_to(root).as_posix() for p in paths] == ["angry/z.webp", "happy/sub/y.png", "happy/x.jpg", "zebra/a.png"]
    assert labels == [0, 1, 1, 2]

    faces = read_image_folder(root)
    assert faces.images.shape == (4, 48, 48) and faces.images.dtype == np.uint8
    assert np.array_equal(faces.images[0], tiny_face(2)) and np.array_equal(faces.images[1], tiny_face(1))
    assert abs(int(faces.images[2].mean()) - 200) <= 1 and int(faces.images[3].mean()) == 10
    assert faces.sources[0].endswith("z.webp")


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="image folder not found"):
        list_image_folder(tmp_path / "nowhere")
    (tmp_path / "empty" / "happy").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):
        list_image_folder(tmp_path / "empty")
    broken = tmp_path / "broken" / "sad" / "face.png"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=re.escape(str(broken))):
        read_image_folder(tmp_path / "broken")


# --- FER+ -------------------------------------------------------------------------------------


def _votes(**kw) -> np.ndarray:
    row = np.zeros(len(FERPLUS_EMOTIONS), np.float32)
    for name, n in kw.items():
        row[FERPLUS_EMOTIONS.index(name)] = n
    return row


def test_ferplus_majority_and_drop_rules():
    table = [  # (votes over the 8 emotions, unknown, NF, has image name, expected label)
        (_votes(happy=7, neutral=3), 0, 0, True, FERPLUS_EMOTIONS.index("happy")),
        (_votes(contempt=4, neutral=3), 3, 0, True, FERPLUS_EMOTIONS.index("contempt")),
        (_votes(sad=2), 1, 7, True, -1),                      # NF majority: not a face
        (_votes(fear=3), 5, 2, True, -1),                     # unknown majority
        (_votes(angry=4, disgust=4, neutral=2), 0, 0, True, -1),  # tie
        (_votes(surprise=9), 1, 0, False, -1),                # no image name
        (_votes(), 0, 0, True, -1),                           # no votes at all
    ]
    votes = np.stack([t[0] for t in table])
    extra = np.array([[t[1], t[2]] for t in table], np.float32)
    named = np.array([t[3] for t in table])
    assert ferplus_majority(votes, extra, named).tolist() == [t[4] for t in table]


def test_read_ferplus_votes_maps_columns(tmp_path):
    path = tmp_path / "fer2013new.csv"
    path.write_text("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
                    "Training,fer0000000.png,1,2,3,4,5,6,7,8,9,10\n"
                    "Training,,0,0,0,0,0,0,0,0,0,10\n")
    votes, extra, named = read_ferplus_votes(path)
    row = dict(zip(FERPLUS_EMOTIONS, votes[0].tolist()))
    assert row == {"neutral": 1, "happy": 2, "surprise": 3, "sad": 4, "angry": 5, "disgust": 6, "fear": 7, "contempt": 8}
    assert extra.tolist() == [[9, 10], [0, 10]] and named.tolist() == [True, False]
    path.write_text("Usage,Image name,neutral\nTraining,x,1\n")
    with pytest.raises(DataError, match="not a FER\\+ votes file"):
        read_ferplus_votes(path)


def test_load_ferplus_split_drops_rows(tiny_fer_dir):
    csv_path = tiny_fer_dir / "fer2013new.csv"
    lines = [line.split(",") for line in csv_path.read_text().splitlines()]
    first = len(EMOTIONS) * TINY_PER_CLASS  # PublicTest's first row
    edits = {  # row -> (image name, 8 emotion votes, unknown, NF); columns as in fer2013new.csv
        first: ("fer.png", [0] * 8, 0, 10),                    # NF majority
        first + 1: ("", [10] + [0] * 7, 0, 0),                 # no image name
        first + 2: ("fer.png", [2] + [0] * 7, 8, 0),           # unknown majority
        first + 3: ("fer.png", [5, 5] + [0] * 6, 0, 0),        # tie neutral / happiness
    }
    for row, (name, votes, unknown, nf) in edits.items():
        lines[1 + row][1:] = [name, *map(str, votes), str(unknown), str(nf)]
    csv_path.write_text("\n".join(",".join(line) for line in lines) + "\n")

    faces = load_ferplus_split("PublicTest", tiny_fer_dir)
    fer = load_split("PublicTest", tiny_fer_dir)
    kept = ~np.isin(fer.rows, list(edits))
    assert faces.classes == FERPLUS_EMOTIONS
    assert faces.rows.tolist() == fer.rows[kept].tolist()
    assert faces.labels.tolist() == fer.labels[kept].tolist()  # all 10 votes on the FER2013 class
    assert np.array_equal(faces.images, fer.images[kept])
    assert faces.votes.shape == (len(faces), 8) and faces.votes.sum(axis=1).tolist() == [10] * len(faces)


# --- errors and the cache ---------------------------------------------------------------------


def test_tiny_split_round_trips(tiny_fer_dir):
    faces = load_split("PrivateTest", tiny_fer_dir)
    n = len(EMOTIONS) * TINY_PER_CLASS
    assert faces.rows.tolist() == list(range(2 * n, 3 * n))
    assert faces.labels.tolist() == [c for c in range(len(EMOTIONS)) for _ in range(TINY_PER_CLASS)]
    assert all(np.array_equal(img, tiny_face(r)) for img, r in zip(faces.images, faces.rows))


def test_missing_data_folder_names_the_path(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DataError, match=re.escape(str(missing / "Training.tar.gz"))):
        load_split("Training", missing)
    with pytest.raises(DataError, match="unknown split 'Train'.*Training"):
        load_split("Train", tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_tar_names_the_path(tiny_fer_dir, damage):
    tar = tiny_fer_dir / "Training.tar.gz"
    blob = tar.read_bytes()
    tar.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else b"not a tar at all" * 100)
    with pytest.raises(DataError, match=re.escape(str(tar))):
        load_split("Training", tiny_fer_dir, cache=False)


def test_cache_is_used_on_the_second_load(tiny_fer_dir, tmp_path, monkeypatch):
    first = load_split("PublicTest", tiny_fer_dir)
    cached = list((tmp_path / "cache").glob("PublicTest-*.npz"))
    assert len(cached) == 1

    def no_decoding(path):
        raise AssertionError(f"{path} was decoded again instead of read from the cache")

    monkeypatch.setattr(data, "_read_tar", no_decoding)
    start = time.perf_counter()
    second = load_split("PublicTest", tiny_fer_dir)
    assert time.perf_counter() - start < 1.0
    for a, b in [(first.images, second.images), (first.labels, second.labels), (first.rows, second.rows)]:
        assert np.array_equal(a, b)


def test_corrupt_cache_is_rebuilt(tiny_fer_dir, tmp_path):
    first = load_split("PublicTest", tiny_fer_dir)
    (cached,) = (tmp_path / "cache").glob("PublicTest-*.npz")
    cached.write_bytes(cached.read_bytes()[:100])
    again = load_split("PublicTest", tiny_fer_dir)
    assert np.array_equal(first.images, again.images) and np.array_equal(first.labels, again.labels)
    with np.load(cached) as z:  # rewritten whole
        assert np.array_equal(z["images"], first.images)


def test_faceset_subset_and_counts():
    faces = FaceSet(np.stack([tiny_face(i) for i in range(4)]), np.array([0, 3, 3, 6]), EMOTIONS,
                    np.arange(4), None, ["a", "b", "c", "d"])
    assert faces.counts().tolist() == [1, 0, 0, 2, 0, 0, 1]
    part = faces.subset(np.array([False, True, False, True]))
    assert part.labels.tolist() == [3, 6] and part.sources == ["b", "d"] and part.rows.tolist() == [1, 3]


def flip_byte(path, offset: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x10
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_one_flipped_byte_is_refused_and_never_cached(tiny_fer_dir, tmp_path, where):
    """gzip's CRC is checked at the end of the stream: the archive is read to its end, so no short or altered split."""
    tar = tiny_fer_dir / "PublicTest.tar.gz"
    flip_byte(tar, int(tar.stat().st_size * where))
    with pytest.raises(DataError, match=re.escape(str(tar)) + r".*corrupt or truncated"):
        load_split("PublicTest", tiny_fer_dir)
    assert not list((tmp_path / "cache").glob("PublicTest-*.npz"))


def test_a_real_split_with_one_flipped_byte_is_refused(fer_data, tmp_path):
    copy = tmp_path / "fer2013"
    copy.mkdir()
    (copy / "PublicTest.tar.gz").write_bytes((fer_data / "PublicTest.tar.gz").read_bytes())
    flip_byte(copy / "PublicTest.tar.gz", 1_000_000)  # once gave the same 3589 faces, one of them altered
    with pytest.raises(DataError, match="CRC check failed"):
        load_split("PublicTest", copy, cache=False)


def test_an_archive_ferkit_does_not_know_loads_with_a_warning(tiny_fer_dir, capsys):
    faces = load_split("PublicTest", tiny_fer_dir, cache=False)
    err = capsys.readouterr().err
    assert f"read {len(faces)} faces, the original has 3589" in err and "not the FER2013 PublicTest archive" in err


def test_the_shipped_archives_load_without_a_warning(fer_data, capsys):
    assert len(load_split("PrivateTest", fer_data)) == data.SPLIT_SIZES["PrivateTest"]
    assert "warning" not in capsys.readouterr().err


def test_a_truncated_votes_file_is_one_line(tiny_fer_dir):
    csv_path = tiny_fer_dir / "fer2013new.csv"
    text = csv_path.read_text()
    csv_path.write_text(text[: len(text) - 7])  # cut mid-line
    with pytest.raises(DataError, match=r"fer2013new.csv:\d+: \d+ columns where 12 are expected"):
        read_ferplus_votes(csv_path)
