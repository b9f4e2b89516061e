"""``ferkit serve`` through a real uvicorn on a free local port: the happy path and every hostile input.

The server runs as a subprocess, as a user starts it; every hostile request is followed by a
/healthz call, so a worker that hung or died fails the test that broke it.
"""

from __future__ import annotations

import io
import socket
import subprocess
from pathlib import Path

import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from conftest import REPO

from ferkit.app.harness import start_service, stop
from ferkit.infer import load
from ferkit.service import MAX_BATCH_FILES, get_args_parser
from ferkit.weights import read_manifest

MAX_BYTES = 400_000   # the test server's body limit: above every real photo (<= 113 kB), below the hostile bodies
REQUEST_S = 30
BOMB_SIDE = 20_000    # px: a 20k x 20k PNG, 400 MP, compressed to about 50 kB


def start_server(log: Path, *options: str) -> tuple[str, subprocess.Popen]:
    served = start_service(log, "--max-bytes", str(MAX_BYTES), *options, cwd=REPO)
    return served.url, served.process


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    base, server = start_server(tmp_path_factory.mktemp("serve") / "server.log")
    yield base
    stop(server)


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, timeout=REQUEST_S) as c:
        yield c


@pytest.fixture
def still_healthy(client):
    """After the test: the worker still answers."""
    yield
    assert client.get("/healthz").json()["status"] == "ok"


def bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (BOMB_SIDE, BOMB_SIDE)).save(buffer, "PNG")
    return buffer.getvalue()


# --- the happy path ------------------------------------------------------------------------------


def test_family_photo_as_multipart_and_raw_body(client, photos_dir):
    photo = photos_dir / "group4_family.jpg"
    multipart = client.post("/v1/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert multipart.status_code == 200, multipart.text
    body = multipart.json()
    local = load().predict(photo)
    assert body["model"] == "default" and body["model_sha256"] == read_manifest()["models"]["default"]["sha256"]
    assert (body["source"], body["width"], body["height"]) == (photo.name, 640, 427)
    assert [f["box"] for f in body["faces"]] == [f.to_record()["box"] for f in local]
    assert [f["dominant_emotion"] for f in body["faces"]] == [f.label for f in local] == ["happy"] * 4
    assert all(f["emotions"]["happy"] == pytest.approx(g.probabilities["happy"], abs=1e-5)
               for f, g in zip(body["faces"], local))
    raw = client.post("/v1/predict", content=photo.read_bytes(), headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200 and raw.json()["faces"] == body["faces"] and raw.json()["source"] == "request body"


def test_model_tta_and_threshold_options(client, photos_dir):
    photo = (photos_dir / "single_happy_astronaut.jpg").read_bytes()
    body = client.post("/v1/predict", params={"model": "ferplus", "tta": "flip", "threshold": 1.0}, content=photo).json()
    assert body["model"] == "ferplus" and body["tta"] == "flip"
    [face] = body["faces"]
    assert face["dominant_emotion"] == "happy" and len(face["emotions"]) == 8 and face["unsure"]
    assert not client.post("/v1/predict", params={"threshold": 0.0}, content=photo).json()["faces"][0]["unsure"]
    assert "ferplus" in client.get("/healthz").json()["loaded"]  # loaded once, kept


def test_batch_reports_a_bad_file_among_good_ones(client, photos_dir):
    names = ("single_sad_baby.jpg", "noface_coffee.jpg")
    files = [("files", (n, (photos_dir / n).read_bytes(), "image/jpeg")) for n in names]
    files.append(("files", ("notes.txt", b"not an image", "text/plain")))
    body = client.post("/v1/predict/batch", files=files).json()
    sad, coffee, notes = body["results"]
    assert sad["faces"][0]["dominant_emotion"] == "sad" and coffee["faces"] == []
    assert notes["source"] == "notes.txt" and "not an image" in notes["error"]


def test_models_docs_and_help(client):
    listed = client.get("/v1/models").json()
    manifest = read_manifest()["models"]
    assert listed["default"] == "default" and set(listed["models"]) == set(manifest)
    assert listed["models"]["ferplus"]["classes"] == manifest["ferplus"]["classes"]
    assert client.get("/docs").status_code == 200
    assert {"/v1/predict", "/v1/predict/batch", "/v1/models", "/healthz"} <= set(client.get("/openapi.json").json()["paths"])
    flags = [action for action in get_args_parser()._actions if action.dest != "help"]
    assert len(flags) == 8 and all("default: " in action.help for action in flags)


def test_two_workers_answer(tmp_path, photos_dir):
    url, server = start_server(tmp_path / "server.log", "--workers", "2")
    try:
        photo = (photos_dir / "single_happy_astronaut.jpg").read_bytes()
        with httpx.Client(base_url=url, timeout=REQUEST_S) as c:
            labels = [c.post("/v1/predict", content=photo).json()["faces"][0]["dominant_emotion"] for _ in range(4)]
        assert labels == ["happy"] * 4
    finally:
        stop(server)


# --- hostile input: a 4xx with a one-line reason, and the worker still answers ------------------------


def hostile_cases(photo: bytes) -> dict[str, tuple[dict, int, str]]:
    """name: (httpx.post keyword arguments, expected status, a phrase of the reason)."""
    def chunks():  # a body without Content-Length, 1 MB in 64 kB chunks
        yield from (b"\0" * 65_536 for _ in range(16))

    many = [("files", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(MAX_BATCH_FILES + 1)]
    return {
        "not an image": ({"content": b"hello, this is text"}, 422, "not an image"),
        "truncated": ({"content": photo[:len(photo) // 2]}, 422, "truncated"),
        "empty": ({"content": b""}, 400, "no image"),
        "bomb": ({"content": bomb_png()}, 422, "MP"),
        "too large, streamed": ({"content": chunks()}, 413, "larger than"),
        "too large, multipart": ({"files": {"file": ("big.jpg", photo * 8, "image/jpeg")}}, 413, "larger than"),
        "multipart without file": ({"files": {"image": ("a.jpg", photo, "image/jpeg")}}, 400, "field 'file'"),
        "two files": ({"files": [("file", ("a.jpg", photo, "image/jpeg"))] * 2}, 400, "files"),
        "unknown tta": ({"content": photo, "params": {"tta": "sideways"}}, 422, "tta"),
        "model path": ({"content": photo, "params": {"model": "../../etc/passwd"}}, 422, "model"),
        "threshold above 1": ({"content": photo, "params": {"threshold": 2}}, 422, "threshold"),
        "batch of too many": ({"files": many, "url": "/v1/predict/batch"}, 422, f"at most {MAX_BATCH_FILES}"),
    }


HOSTILE = list(hostile_cases(b"").keys())


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_input_gets_a_4xx_with_one_line(client, still_healthy, photos_dir, case):
    kwargs, status, phrase = hostile_cases((photos_dir / "group2_laos.jpg").read_bytes())[case]
    response = client.post(kwargs.pop("url", "/v1/predict"), **kwargs)
    assert response.status_code == status, response.text
    reason = response.json()["detail"]
    assert isinstance(reason, str) and "\n" not in reason and phrase in reason


def test_declared_oversize_body_is_refused_unread(url, still_healthy):
    """A Content-Length of 10 GB with no body sent: the 413 comes at once, the server waits for no byte of it."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_S) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                  b"Content-Length: 10000000000\r\n\r\n")
        reply = b""
        while not reply.endswith(b"}") and (chunk := s.recv(4096)):  # the JSON reason ends the reply
            reply += chunk
    reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "larger than the 400,000 bytes" in reply, reply
