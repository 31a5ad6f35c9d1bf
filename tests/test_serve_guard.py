"""The service's pieces that need no model or data (issue #40): the guard around the app (problem+json for anything
unexpected, no traceback; the body cap; security headers), CORS off by default and on for listed origins, names,
options and keys."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("httpx", reason="the serve extra is not installed (pip install -e '.[serve]')")
with warnings.catch_warnings():  # Starlette's note that its test client will move to another package
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from partialface.errors import PartialFaceError
from partialface.serve.app import Guard, create_app
from partialface.serve.config import ServeConfig, check_exposure, is_loopback
from partialface.serve.keys import KeyRing, new_key
from partialface.serve.problems import Problem
from partialface.serve.uploads import Inputs, check_name, integer, number

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette")


async def _broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
    raise RuntimeError("secret /path/and embedding 0.123")


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def test_guard_hides_errors_caps_the_body_and_adds_headers() -> None:
    r = TestClient(Guard(_broken, 1000), raise_server_exceptions=False).get("/x")
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == f"internal error (request id {r.headers['x-request-id']})"
    assert "secret" not in r.text and "Traceback" not in r.text
    c = TestClient(Guard(_echo, 1000))
    ok = c.post("/x", content=b"a" * 1000)
    assert ok.text == "1000" and ok.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in ok.headers["content-security-policy"]
    big = c.post("/x", content=b"a" * 1001)
    assert big.status_code == 413 and big.json()["detail"].startswith("body:")
    chunked = c.post("/x", content=iter([b"a" * 600, b"a" * 600]))  # no Content-Length: counted as it comes
    assert chunked.status_code == 413


def test_cors_is_off_by_default_and_lists_origins(tmp_path: Path) -> None:
    pre = {"Origin": "https://a.example", "Access-Control-Request-Method": "POST"}
    off = TestClient(create_app(ServeConfig(gallery=str(tmp_path / "g.db"))))  # no lifespan: nothing loads
    assert "access-control-allow-origin" not in off.options("/v1/verify", headers=pre).headers
    assert off.get("/readyz").status_code == 503  # not started: not ready, said as a problem
    on = TestClient(create_app(ServeConfig(gallery=str(tmp_path / "g.db"), cors_origins=("https://a.example",))))
    assert on.options("/v1/verify", headers=pre).headers["access-control-allow-origin"] == "https://a.example"
    other = on.options("/v1/verify", headers={**pre, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_names_options_exposure_and_keys(tmp_path: Path) -> None:
    for name in ("Ada", "O'Brien", "Robert'); DROP TABLE identities;--", "黄", "x" * 200):
        assert check_name(name) == name
    for bad in ("", " ", "a/b", "a\\b", "x" * 201, "a\nb", "a\x00", " a", "..", "."):
        with pytest.raises(Problem) as e:
            check_name(bad)
        assert e.value.status == 422 and e.value.detail.startswith("name:")
    got = Inputs(fields={"top_k": "abc", "far": "2", "fpir": "inf"})
    for call in (lambda: integer(got, "top_k", 5, 1, 100), lambda: number(got, "far", None, 0, 1, "a rate"),
                 lambda: number(got, "fpir", None, 0, 1, "a rate")):
        with pytest.raises(Problem):
            call()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")
    cfg = ServeConfig(gallery="g.db")
    assert "open to local clients" in check_exposure("127.0.0.1", cfg)
    with pytest.raises(PartialFaceError, match="not a loopback"):
        check_exposure("0.0.0.0", cfg)
    assert "--no-auth" in check_exposure("0.0.0.0", ServeConfig(gallery="g.db", no_auth=True))
    keys = tmp_path / "keys.txt"
    assert "need an API key" in check_exposure("0.0.0.0", ServeConfig(gallery="g.db", api_key_file=str(keys)))
    key = new_key(keys)
    ring = KeyRing(keys)
    assert ring.check(key) and not ring.check(key[:-1])
    later = new_key(keys)  # a key added while the server runs works at once
    assert ring.check(later) and ring.check(key)
    keys.write_text("not a hash\n")  # a broken file lets nobody in
    assert not ring.check(key)


def test_which_routes_need_a_key(tmp_path: Path) -> None:
    """Writes need a key with a key file; reads too with --protect-reads (checked before anything else: an app that
    has not started answers 401 before its 503)."""
    keys = tmp_path / "keys.txt"
    key = new_key(keys)
    for protect in (False, True):
        c = TestClient(create_app(ServeConfig(gallery=str(tmp_path / "g.db"), api_key_file=str(keys),
                                              protect_reads=protect)))
        for method, path in (("POST", "/v1/subjects/Ada/faces"), ("DELETE", "/v1/subjects/Ada")):
            assert c.request(method, path).status_code == 401
            assert c.request(method, path, headers={"X-API-Key": key}).status_code == 503
        for method, path in (("GET", "/v1/info"), ("GET", "/v1/subjects"), ("POST", "/v1/verify")):
            assert c.request(method, path).status_code == (401 if protect else 503)
            assert c.request(method, path, headers={"X-API-Key": key}).status_code == 503
        assert c.get("/healthz").status_code == 200


def test_a_slow_upload_times_out() -> None:
    import asyncio

    sent: list[dict[str, Any]] = []

    async def slow() -> dict[str, Any]:
        await asyncio.sleep(5)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/verify", "headers": []}
    asyncio.run(Guard(_echo, 1000, read_timeout=0.1)(scope, slow, send))
    assert sent[0]["status"] == 408 and b"body:" in sent[1]["body"]
