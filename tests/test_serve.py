"""``partialface serve`` through its HTTP API (issue #40): two real uvicorn servers on loopback ports sharing one
gallery file and one key file; every route's happy path with LFW photos; the issue's whole bad-input list (no 5xx,
no traceback, one line naming the field); the API-key rules; enrolments seen across processes; a server killed
(SIGKILL) mid-enrolment leaves the gallery as it was. Skips where the extra or LFW is absent."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install -e '.[serve]')")

from partialface.cli import main  # noqa: E402
from partialface.serve.keys import KeyRing, key_hash, new_key, read_hashes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MAX_BODY_MB = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A ``partialface serve`` subprocess and a client for it."""

    def __init__(self, gallery: Path, keys: Path, log: Path) -> None:
        self.port, self.log = _free_port(), log
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "partialface.cli", "serve", "--port", str(self.port), "--gallery", str(gallery),
             "--api-key-file", str(keys), "--max-body-mb", str(MAX_BODY_MB), "--timeout", "120"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=180)

    def wait_ready(self, limit: float = 240) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"not ready in {limit} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def lfw(lfw_root: Path) -> Path:
    return lfw_root / "lfw-deepfunneled"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, lfw: Path) -> Iterator[dict[str, Any]]:
    """Servers A and B on one gallery file, one key file holding one key."""
    tmp = tmp_path_factory.mktemp("serve")
    keys = tmp / "keys.txt"
    key = new_key(keys)
    gallery = tmp / "people.db"
    # A creates the gallery before B starts (in production: `serve --workers N` creates it before its workers)
    a = Server(gallery, keys, tmp / "a.log")
    a.wait_ready()
    b = Server(gallery, keys, tmp / "b.log")
    b.wait_ready()
    yield {"a": a, "b": b, "key": key, "gallery": gallery, "keys": keys, "tmp": tmp}
    a.stop()
    b.stop()
    for log in (a.log, b.log):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, text
        assert key not in text and "Aaron" not in text and "Robert'); DROP" not in text  # no keys, no names


def photo(lfw: Path, person: str, i: int) -> bytes:
    """The ``i``-th photo (from 1, in sorted order) of ``person``."""
    return sorted((lfw / person).glob("*.jpg"))[i - 1].read_bytes()


def _problem(r: Any, status: int, field: str | None = None) -> dict[str, Any]:
    """``r`` is a problem+json of ``status`` with a one-line detail (naming ``field``) and no traceback."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    assert "Traceback" not in r.text and "File \"" not in r.text
    body = r.json()
    assert {"type", "title", "status", "detail"} <= set(body) and body["status"] == status
    assert "\n" not in body["detail"] and body["detail"]
    if field is not None:
        assert body["detail"].startswith(field), body["detail"]
    return body


def _count(gallery: Path) -> tuple[int, int, str]:
    conn = sqlite3.connect(str(gallery))
    try:
        return (conn.execute("SELECT COUNT(*) FROM identities").fetchone()[0],
                conn.execute("SELECT COUNT(*) FROM templates").fetchone()[0],
                conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def test_health_info_docs_and_headers(setup: dict[str, Any]) -> None:
    c = setup["a"].client
    assert c.get("/healthz").json() == {"status": "alive"}
    assert c.get("/readyz").json() == {"status": "ready"}
    info = c.get("/v1/info").json()
    from partialface.models.catalogue import DEFAULT_MODEL

    assert info["model"] == DEFAULT_MODEL and info["embedding_size"] == 128 and info["version"]
    assert info["operating_points"]["threshold"]["holistic"]["1e-03"] > 0
    assert info["gallery"]["size"] >= 0 and info["defaults"]["identify_fpir"] == 0.01
    assert c.get("/docs").status_code == 200 and "/v1/verify" in c.get("/openapi.json").json()["paths"]
    page = c.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    for r in (page, c.get("/healthz"), c.get("/nope")):
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-request-id"]
        assert "server" not in r.headers


def test_verify_embed_happy_paths(setup: dict[str, Any], lfw: Path) -> None:
    c = setup["a"].client
    a, b = photo(lfw, "Aaron_Peirsol", 1), photo(lfw, "Aaron_Peirsol", 3)
    r = c.post("/v1/verify", files={"a": a, "b": b})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["same"] is True and got["score"] >= got["threshold"] and got["far"] == 1e-3
    assert {"same", "score", "threshold", "far", "kind", "model", "notes", "regions", "shared_visibility",
            "faces"} <= set(got)
    other = c.post("/v1/verify", files={"a": a, "b": photo(lfw, "George_W_Bush", 1)}, data={"far": "1e-4"}).json()
    assert other["same"] is False and other["far"] == 1e-4
    # JSON with base64 images; explain: the picture and the per-region shares
    r = c.post("/v1/verify", json={"a": base64.b64encode(a).decode(), "b": "data:image/jpeg;base64,"
                                   + base64.b64encode(b).decode(), "explain": True})
    got = r.json()
    assert r.status_code == 200 and got["same"] is True
    assert base64.b64decode(got["explain_png"]).startswith(b"\x89PNG")
    assert got["regions"] and abs(sum(got["regions"].values()) - 1) < 1e-4
    r = c.post("/v1/embed", files={"image": a})
    faces = r.json()["faces"]
    assert r.status_code == 200 and len(faces) >= 1 and "embedding" not in faces[0]
    assert len(faces[0]["box"]) == 4 and 0 < faces[0]["score"] <= 1 and set(faces[0]["regions"]) >= {"nose"}
    assert 0 < faces[0]["detail"] < 1  # a sharp LFW photo's face: about 0.15 (calibrate_auto.face_detail)
    vec = c.post("/v1/embed", files={"image": a}, data={"embeddings": "true"}).json()["faces"][0]["embedding"]
    assert len(vec) == 128 and abs(np.linalg.norm(vec) - 1) < 1e-4


def test_gallery_routes_and_two_processes(setup: dict[str, Any], lfw: Path) -> None:
    a, b, key = setup["a"].client, setup["b"].client, {"X-API-Key": setup["key"]}
    r = a.post("/v1/subjects/Aaron Peirsol/faces", headers=key,
               files=[("images", photo(lfw, "Aaron_Peirsol", 1)), ("images", photo(lfw, "Aaron_Peirsol", 2))])
    assert r.status_code == 201 and r.json()["added"] == 2, r.text
    r = a.post("/v1/subjects/Ann Veneman/faces", headers=key, files={"images": photo(lfw, "Ann_Veneman", 1)})
    assert r.status_code == 201, r.text
    # B (another process) sees A's enrolments on its next request
    names = {s["name"]: s["templates"] for s in b.get("/v1/subjects").json()["subjects"]}
    assert names == {"Aaron Peirsol": 2, "Ann Veneman": 1}
    assert b.get("/v1/subjects/Aaron Peirsol").json() == {"name": "Aaron Peirsol", "templates": 2}
    found = b.post("/v1/identify", files={"image": photo(lfw, "Aaron_Peirsol", 3)}).json()
    face = found["faces"][0]
    assert face["name"] == "Aaron Peirsol" and face["score"] >= face["threshold"], found
    assert face["fpir"] == 0.01 and face["comparisons"] == 3 and "FPIR 0.01 over 3" in face["why"]
    stranger = b.post("/v1/identify", files={"image": photo(lfw, "George_W_Bush", 2)}, data={"top_k": "1"}).json()
    assert stranger["faces"][0]["name"] is None and len(stranger["faces"][0]["candidates"]) == 1
    fixed = a.post("/v1/identify", json={"image": base64.b64encode(photo(lfw, "Ann_Veneman", 2)).decode(),
                                         "far": 1e-3, "all_faces": True}).json()
    assert fixed["faces"][0]["far"] == 1e-3 and fixed["faces"][0]["fpir"] is None and "as asked" in \
        fixed["faces"][0]["why"]
    # B removes, A sees it gone; the removed rows' bytes are overwritten in the file (secure_delete)
    vector = np.array(a.post("/v1/embed", files={"image": photo(lfw, "Ann_Veneman", 1)},
                             data={"embeddings": "true"}).json()["faces"][0]["embedding"], np.float32)
    assert b.delete("/v1/subjects/Ann Veneman", headers=key).json()["removed"] == 1
    assert [s["name"] for s in a.get("/v1/subjects").json()["subjects"]] == ["Aaron Peirsol"]
    _problem(a.get("/v1/subjects/Ann Veneman"), 404, "name")
    stored = setup["gallery"].read_bytes()
    assert vector[:8].tobytes() not in stored  # its template (first 32 bytes of it) is gone from the file


def test_api_key_rules(setup: dict[str, Any], lfw: Path, tmp_path: Path) -> None:
    c, gallery = setup["a"].client, setup["gallery"]
    before = _count(gallery)
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": setup["key"] + "x"}):
        r = c.post("/v1/subjects/Mallory/faces", headers=headers, files={"images": photo(lfw, "Aaron_Peirsol", 1)})
        assert _problem(r, 401, "X-API-Key") and r.headers["www-authenticate"].startswith("ApiKey")
        _problem(c.delete("/v1/subjects/Aaron Peirsol", headers=headers), 401, "X-API-Key")
    assert _count(gallery) == before
    assert c.get("/v1/subjects").status_code == 200  # reads are open without --protect-reads
    # the key file holds hashes only, mode 0600; a new key works without a restart
    keys = setup["keys"]
    assert (keys.stat().st_mode & 0o777) == 0o600 and setup["key"] not in keys.read_text()
    assert read_hashes(keys) == [key_hash(setup["key"])]
    ring = KeyRing(keys)
    assert ring.check(setup["key"]) and not ring.check("") and not ring.check(None)
    assert main(["keys", "new", str(tmp_path / "k.txt")]) == 0 and len(read_hashes(tmp_path / "k.txt")) == 1
    # no key file: a non-loopback host is refused (unless --no-auth), and so is --protect-reads
    for argv in (["--host", "0.0.0.0"], ["--host", "192.168.1.5"], ["--protect-reads"]):
        assert main(["serve", "--gallery", str(tmp_path / "never.db"), *argv]) == 2
    assert not (tmp_path / "never.db").exists()


def _png_bomb(w: int = 30000, h: int = 30000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    idat = zlib.compress(b"\x00" * 1024)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG")
    return buf.getvalue()


def test_bad_input_list(setup: dict[str, Any], lfw: Path) -> None:
    """Issue #40's list: each a problem+json 4xx with one line, the server keeps serving, the gallery unchanged."""
    c, key, gallery = setup["a"].client, {"X-API-Key": setup["key"]}, setup["gallery"]
    good = photo(lfw, "Aaron_Peirsol", 1)
    before = _count(gallery)
    listing = c.get("/v1/subjects").json()
    checks = [
        (c.post("/v1/verify", files={"a": b"%PDF-1.4 not an image", "b": good}), 415, "a"),
        (c.post("/v1/verify", files={"a": b"", "b": good}), 422, "a"),
        (c.post("/v1/verify", files={"a": good[: len(good) // 3], "b": good}), 422, "a"),
        (c.post("/v1/identify", files={"image": _png_bomb()}), 413, "image"),
        (c.post("/v1/verify", files={"a": os.urandom(3 * 2**20), "b": good}), 413, "body"),
        (c.post("/v1/verify", files={"b": good}), 422, "a"),
        (c.post("/v1/verify", files={"A": good, "b": good}), 422, "a"),
        (c.post("/v1/verify", data={"a": "/etc/passwd", "b": "http://example.com/x.jpg"}), 415, "body"),
        (c.post("/v1/verify", data={"a": "/etc/passwd"}, files={"b": good}), 422, "a"),
        (c.post("/v1/verify", json={"a": "http://example.com/x.jpg", "b": "/etc/passwd"}), 422, "a"),
        (c.post("/v1/verify", content=b"{not json", headers={"content-type": "application/json"}), 400, "body"),
        (c.post("/v1/verify", content=b"a=1", headers={"content-type": "text/plain"}), 415, "body"),
        (c.post("/v1/identify", files={"image": good}, data={"top_k": "abc"}), 422, "top_k"),
        (c.post("/v1/identify", files={"image": good}, data={"far": "2"}), 422, "far"),
        (c.post("/v1/identify", files={"image": good}, data={"fpir": "nan"}), 422, "fpir"),
        (c.post("/v1/verify", files={"a": good, "b": good}, data={"far": "0.5"}), 422, None),  # no such point
        (c.post("/v1/verify", files={"a": good, "b": good}, data={"kind": "x"}), 422, "kind"),
        (c.get("/v1/subjects/Nobody Here"), 404, "name"),
        (c.delete("/v1/subjects/Nobody Here", headers=key), 404, "name"),
        (c.post("/v1/verify", files={"a": _jpeg(np.full((200, 200, 3), 127, np.uint8)), "b": good}), 422, "a"),
        (c.post("/v1/subjects/Grey/faces", headers=key,
                files=[("images", good), ("images", _jpeg(np.full((200, 200, 3), 127, np.uint8)))]), 422, "images[1]"),
        (c.post("/v1/subjects/NoKey/faces", files={"images": good}), 401, "X-API-Key"),
        (c.put("/v1/verify"), 405, "method"),
    ]
    for name in ("a/b", "..", ".", "x" * 300, "tab\there", "nul\x00", "new\nline", " padded", ""):
        path = "/v1/subjects/" + quote(name, safe="").replace(".", "%2E") + "/faces"  # dots: no URL normalising
        checks.append((c.post(path, headers=key, files={"images": good}), 422, "name"))
    for r, status, field in checks:
        _problem(r, status, field)
    # a chunked body over the cap (no Content-Length) is cut off while it is read
    r = c.post("/v1/verify", content=iter([b"x" * 2**20] * 3), headers={"content-type": "multipart/form-data"})
    _problem(r, 413, "body")
    assert _count(gallery) == before and c.get("/v1/subjects").json() == listing
    # quotes, SQL and any script: stored verbatim, never interpreted
    for name in ("O'Brien \"the\" 2nd", "Robert'); DROP TABLE identities;--", "Zoë 黄"):
        r = c.post("/v1/subjects/" + quote(name, safe="") + "/faces", headers=key, files={"images": good})
        assert r.status_code == 201 and r.json()["name"] == name, r.text
        assert c.get("/v1/subjects/" + quote(name, safe="")).json()["name"] == name
        assert c.delete("/v1/subjects/" + quote(name, safe=""), headers=key).status_code == 200
    assert _count(gallery)[:2] == before[:2]
    # a client that disconnects mid-upload: nothing answered, nothing done, the server serves on
    with socket.create_connection(("127.0.0.1", setup["a"].port)) as s:
        s.sendall(b"POST /v1/subjects/Half/faces HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                  b"boundary=B\r\nX-API-Key: " + setup["key"].encode() + b"\r\nContent-Length: 100000\r\n\r\n--B\r\n"
                  b"Content-Disposition: form-data; name=\"images\"; filename=\"x.jpg\"\r\n\r\n" + good[:5000])
    time.sleep(0.3)
    assert c.get("/healthz").status_code == 200 and "Half" not in {s["name"] for s in
                                                                    c.get("/v1/subjects").json()["subjects"]}
    assert _count(gallery) == before


def test_same_person_enrolled_by_two_clients_at_once(setup: dict[str, Any], lfw: Path) -> None:
    key = {"X-API-Key": setup["key"]}
    results: list[int] = []

    def enrol(client: Any, i: int) -> None:
        r = client.post("/v1/subjects/Twice/faces", headers=key, files={"images": photo(lfw, "Aaron_Peirsol", i)})
        results.append(r.status_code)

    threads = [threading.Thread(target=enrol, args=(setup[s].client, i)) for s, i in (("a", 1), ("b", 2), ("a", 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [201, 201, 201]
    assert setup["b"].client.get("/v1/subjects/Twice").json()["templates"] == 3  # one identity, every template
    assert setup["a"].client.delete("/v1/subjects/Twice", headers=key).json()["removed"] == 3


def test_sigkill_mid_enrolment_leaves_the_gallery_as_it_was(setup: dict[str, Any], lfw: Path) -> None:
    b, gallery = setup["b"], setup["gallery"]
    before = _count(gallery)
    listing = setup["a"].client.get("/v1/subjects").json()
    files = [("images", p.read_bytes()) for p in sorted(lfw.glob("A*/*.jpg"))[:60]]
    outcome: list[Any] = []

    def enrol() -> None:
        try:
            outcome.append(b.client.post("/v1/subjects/Killed/faces", headers={"X-API-Key": setup["key"]},
                                         files=files).status_code)
        except httpx.HTTPError as e:
            outcome.append(type(e).__name__)

    t = threading.Thread(target=enrol)
    t.start()
    time.sleep(2.0)  # uploaded; the server is finding and embedding 60 faces
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait()
    t.join(30)
    assert outcome and outcome[0] != 201, outcome  # killed before it could answer
    assert _count(gallery) == before and before[2] == "ok"
    assert setup["a"].client.get("/v1/subjects").json() == listing
