"""The ASGI app: :func:`create_app` (FastAPI routes over :class:`partialface.serve.engine.Engine`) wrapped in
:class:`Guard`, which gives every request an id, caps its body while it is read, adds the security headers,
logs one line (request id, route, status, milliseconds: never images, embeddings, names or keys) and turns any
unexpected exception into a 500 problem that says only "internal error" and the request id."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from partialface.api.stores import GalleryUnavailable
from partialface.errors import PartialFaceError
from partialface.serve import problems
from partialface.serve.config import ServeConfig
from partialface.serve.engine import Engine
from partialface.serve.keys import HEADER, KeyRing
from partialface.serve.problems import Problem
from partialface.serve.uploads import Inputs, boolean, check_name, choice, integer, number, read_inputs

T = TypeVar("T")
log = logging.getLogger("partialface.serve")

#: the page's policy: nothing from elsewhere, no inline script, no framing
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
#: FastAPI's /docs page loads Swagger UI from its CDN (in the browser; the server fetches nothing)
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; style-src 'self' "
            "https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; object-src 'none'; "
            "frame-ancestors 'none'")
#: the page (item 3 of issue #40): plain HTML, CSS and JS in the package, served at / and /static
STATIC = Path(__file__).resolve().parent / "static"
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class Guard:
    """The outermost ASGI layer (module docstring)."""

    def __init__(self, app: Any, max_body: int, read_timeout: float = 60.0) -> None:
        self.app, self.max_body, self.read_timeout = app, max_body, read_timeout

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = secrets.token_hex(6)
        scope["partialface.request_id"] = rid
        start, state = time.perf_counter(), {"status": 0}
        docs = scope.get("path", "") in ("/docs", "/docs/oauth2-redirect", "/redoc")

        async def guarded_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                headers += [(b"x-request-id", rid.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
                            (b"content-security-policy", (DOCS_CSP if docs else CSP).encode()),
                            (b"cache-control", b"no-store")]
                message = {**message, "headers": headers}
            await send(message)

        try:
            try:
                body = await asyncio.wait_for(self._read(scope, receive), self.read_timeout)
            except TimeoutError:  # a client that sends too slowly holds nothing for long
                body = Problem(408, f"body: not received within {self.read_timeout:g} s; send it again",
                               "body-timeout", {"Connection": "close"})
            if body is None:  # the client went away mid-upload: nothing to answer, nothing was done
                state["status"] = 499
                return
            if isinstance(body, Problem):
                await _send_problem(guarded_send, body, rid)
                return
            await self.app(scope, _replay(body, receive), guarded_send)
        except Exception as e:  # the catch-all: no traceback to the client, none in the log
            log.error("rid=%s internal error %s", rid, type(e).__name__)
            if not state["status"]:
                await _send_problem(guarded_send, Problem(500, f"internal error (request id {rid})", "internal"),
                                    rid)
        finally:
            route = scope.get("route")
            log.info("rid=%s %s %s %d %.1fms", rid, scope.get("method", "-"), getattr(route, "path", "-"),
                     state["status"], (time.perf_counter() - start) * 1e3)

    async def _read(self, scope: dict[str, Any], receive: Receive) -> bytes | Problem | None:
        """The whole body (at most ``max_body`` bytes), a 413 problem, or None when the client disconnected. A
        declared Content-Length over the cap is refused before reading; a chunked body is counted as it comes."""
        cap = self.max_body
        declared = next((v for k, v in scope.get("headers", []) if k.lower() == b"content-length"), None)
        too_big = Problem(413, f"body: over the cap of {cap / 2**20:g} MB (--max-body-mb); send smaller or fewer "
                          "images", "body-too-large")
        if declared is not None:
            try:
                if int(declared) > cap:
                    await self._drain(receive, min(int(declared), 4 * cap))
                    return too_big
            except ValueError:
                return Problem(400, "Content-Length: not a number", "bad-request")
        chunks, n = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            n += len(chunk)
            if n > cap:
                return too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _drain(receive: Receive, most: int) -> None:
        """Read (and drop) up to ``most`` bytes, so that a client still sending sees the 413 rather than a reset."""
        n = 0
        while n < most:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            n += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def again() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def _send_problem(send: Send, p: Problem, rid: str | None) -> None:
    data = problems.encode(p.status, p.detail, p.slug, rid)
    headers = [(b"content-type", problems.MEDIA_TYPE.encode()), (b"content-length", str(len(data)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in p.headers.items()]
    await send({"type": "http.response.start", "status": p.status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _register_subject_convertor() -> None:
    """``{name:subject}``: any text, "/" and line breaks included, so that every name reaches :func:`check_name`
    (and gets its one-line 422) instead of missing the route (Starlette's ``path`` stops at a line break)."""
    from starlette.convertors import CONVERTOR_TYPES, Convertor, register_url_convertor

    class Subject(Convertor[str]):
        regex = "(?s:.*)"

        def convert(self, value: str) -> str:
            return value

        def to_string(self, value: str) -> str:
            return value

    if "subject" not in CONVERTOR_TYPES:
        register_url_convertor("subject", Subject())


# ------------------------------------------------------------------------------------------------------ the routes
IMAGE_BODY = {"requestBody": {"content": {"multipart/form-data": {"schema": {"type": "object"}},
                                          "application/json": {"schema": {"type": "object"}}}}}


class _Service:
    """What every route needs: the settings, the engine, the key ring and the worker threads."""

    def __init__(self, config: ServeConfig) -> None:
        self.config, self.engine = config, Engine(config)
        self.keys = KeyRing(config.api_key_file) if config.api_key_file else None
        self.pool = ThreadPoolExecutor(16, thread_name_prefix="partialface-request")

    def allow(self, request: Request, write: bool) -> None:
        """401 unless the request carries a valid key, where one is needed; then 503 until the engine is ready."""
        if self.keys is not None and (write or self.config.protect_reads) and \
                not self.keys.check(request.headers.get(HEADER)):
            given = HEADER.lower() in request.headers
            raise Problem(401, f"{HEADER}: {'not a valid key' if given else 'missing'}; this route needs an API "
                          "key (partialface keys new FILE makes one)", "unauthorized",
                          {"WWW-Authenticate": f'ApiKey header="{HEADER}"'})
        self.ready()

    def ready(self) -> None:
        if not self.engine.ready:
            why = self.engine.error or "the model is loading and warming up"
            raise Problem(503, f"not ready: {why}; try again shortly", "not-ready", {"Retry-After": "5"})

    async def work(self, fn: Callable[[], T]) -> T:
        """``fn`` on a worker thread, within the per-request time limit; user errors become problems."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self.pool, fn), self.config.timeout_s)
        except TimeoutError:
            raise Problem(503, f"the request ran past its time limit ({self.config.timeout_s:g} s); try again or "
                          "send smaller images", "timeout", {"Retry-After": "5"}) from None
        except GalleryUnavailable as e:  # the gallery's database is down or restarting: nothing was written
            raise Problem(503, f"the gallery is unavailable: {e}", "gallery-unavailable", {"Retry-After": "5"}) \
                from None
        except PartialFaceError as e:
            raise problems.from_user_error(e) from None

    @staticmethod
    async def inputs(request: Request, images: tuple[str, ...]) -> Inputs:
        from starlette.requests import ClientDisconnect

        try:
            return await read_inputs(request, images)
        except ClientDisconnect:
            raise Problem(400, "body: the client disconnected mid-upload", "disconnected") from None
        except HTTPException as e:  # a malformed multipart body
            raise Problem(400, f"body: {' '.join(str(e.detail).split())}", "bad-body") from None

    def decode(self, data: bytes, label: str) -> Any:
        from partialface.data.images import decode_image

        return decode_image(data, label=label, max_pixels=self.config.max_pixels)


def _problem_response(request: Request, p: Problem) -> JSONResponse:
    rid = request.scope.get("partialface.request_id")
    return JSONResponse(problems.body(p.status, p.detail, p.slug, rid), status_code=p.status,
                        media_type=problems.MEDIA_TYPE, headers=p.headers)


def _add_handlers(app: Any) -> None:
    """Every error a route raises as problem+json: :class:`Problem`, Starlette's 404 / 405, validation."""
    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return _problem_response(request, exc)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        detail = {404: "path: no such route (see /docs)", 405: "method: not allowed on this route (see /docs)"}
        text = detail.get(exc.status_code) or " ".join(str(exc.detail).split()) or "bad request"
        return _problem_response(request, Problem(exc.status_code, text))

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:  # the Guard logs it (its type only)
        rid = request.scope.get("partialface.request_id")
        return _problem_response(request, Problem(500, f"internal error (request id {rid})", "internal"))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path")) or "request"
        return _problem_response(request, Problem(422, f"{where}: {first.get('msg', 'invalid')}", "bad-field"))


def _add_face_routes(app: Any, svc: _Service) -> None:
    """/healthz, /readyz, /, /v1/info, /v1/verify, /v1/embed, /v1/identify."""
    engine = svc.engine

    @app.get("/healthz", summary="alive")
    async def healthz() -> dict[str, Any]:
        return {"status": "alive"}

    @app.get("/readyz", summary="the model is warm and the gallery open")
    async def readyz() -> dict[str, Any]:
        svc.ready()
        return {"status": "ready"}

    page = (STATIC / "index.html").read_bytes()

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> HTMLResponse:
        """The web page: a thin layer over the /v1 routes (its script and style under /static)."""
        return HTMLResponse(page)

    @app.get("/v1/info", summary="version, model, embedding size, operating points, gallery size")
    async def info(request: Request) -> dict[str, Any]:
        svc.allow(request, write=False)
        return await svc.work(engine.info)

    @app.post("/v1/verify", openapi_extra=IMAGE_BODY,
              summary="same person? fields a, b (images); far (1e-3), kind (auto), explain (false)")
    async def verify(request: Request) -> dict[str, Any]:
        svc.allow(request, write=False)
        got = await svc.inputs(request, ("a", "b"))
        a, b = got.image("a"), got.image("b")
        far = number(got, "far", 1e-3, 0.0, 1.0, "a rate in (0, 1), e.g. 0.001")
        kind = choice(got, "kind", "auto", ("auto", "holistic", "partial"))
        explain = boolean(got, "explain", False)
        assert far is not None
        return await svc.work(lambda: engine.verify(svc.decode(a, "a"), svc.decode(b, "b"), far, kind, explain))

    @app.post("/v1/embed", openapi_extra=IMAGE_BODY,
              summary="every face: box, detector score, regions, visibility; field image; embeddings (false)")
    async def embed(request: Request) -> dict[str, Any]:
        svc.allow(request, write=False)
        got = await svc.inputs(request, ("image",))
        data = got.image("image")
        regions, vectors = boolean(got, "regions", True), boolean(got, "embeddings", False)
        return await svc.work(lambda: engine.embed(svc.decode(data, "image"), regions, vectors))

    @app.post("/v1/identify", openapi_extra=IMAGE_BODY,
              summary="who is it? field image; top_k (5), fpir (0.01) or far, kind (auto), all_faces (false)")
    async def identify(request: Request) -> dict[str, Any]:
        svc.allow(request, write=False)
        got = await svc.inputs(request, ("image",))
        data = got.image("image")
        top_k = integer(got, "top_k", 5, 1, 100)
        far = number(got, "far", None, 0.0, 1.0, "a rate in (0, 1), e.g. 0.001")
        fpir = number(got, "fpir", None, 0.0, 1.0, "a rate in (0, 1), e.g. 0.01")
        if far is not None and fpir is not None:
            raise Problem(422, "fpir: give fpir (over the gallery) or far (per comparison), not both", "bad-field")
        kind = choice(got, "kind", "auto", ("auto", "holistic", "partial"))
        all_faces = boolean(got, "all_faces", False)
        return await svc.work(lambda: engine.identify(svc.decode(data, "image"), top_k, far, fpir, kind, all_faces))


def _add_subject_routes(app: Any, svc: _Service) -> None:
    """/v1/subjects: list, one, enrol (write), remove (write)."""
    engine = svc.engine

    @app.get("/v1/subjects", summary="the enrolled people and their number of templates")
    async def subjects(request: Request) -> dict[str, Any]:
        svc.allow(request, write=False)
        return await svc.work(engine.subjects)

    @app.get("/v1/subjects/{name:subject}", summary="one enrolled person")
    async def subject(request: Request, name: str) -> dict[str, Any]:
        svc.allow(request, write=False)
        check_name(name)
        return await svc.work(lambda: engine.subject(name))

    @app.post("/v1/subjects/{name:subject}/faces", status_code=201, openapi_extra=IMAGE_BODY,
              summary="enrol: file fields images (one or more), one transaction; needs a key with --api-key-file")
    async def enroll(request: Request, name: str) -> dict[str, Any]:
        svc.allow(request, write=True)
        check_name(name)
        got = await svc.inputs(request, ("images",))
        photos = got.images("images")
        # nothing is written after this (a margin before the time limit, so no late commit follows a 503)
        deadline = time.monotonic() + svc.config.timeout_s - min(1.0, svc.config.timeout_s / 10)
        return await svc.work(lambda: engine.enroll(name, [(svc.decode(d, label), label) for label, d in photos],
                                                    deadline))

    @app.delete("/v1/subjects/{name:subject}", summary="remove a person (their templates are erased from the file)")
    async def remove(request: Request, name: str) -> dict[str, Any]:
        svc.allow(request, write=True)
        check_name(name)
        return await svc.work(lambda: engine.remove(name))


def create_app(config: ServeConfig) -> Any:
    """The service's ASGI app for ``config`` (the model loads and warms up in the background after start; until
    then /readyz and every /v1 route answer 503)."""
    from fastapi import FastAPI

    from partialface.serve.engine import version

    _register_subject_convertor()
    svc = _Service(config)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        threading.Thread(target=svc.engine.start, name="partialface-start", daemon=True).start()
        yield
        svc.engine.close()
        svc.pool.shutdown(wait=False)

    app = FastAPI(title="partialface", version=version(), lifespan=lifespan,
                  description="Partial face recognition as a service: verify, embed, identify (open-set) and a "
                  "gallery of people. Images as multipart file fields, or base64 strings in a JSON object.")
    app.state.engine = svc.engine
    _add_handlers(app)
    _add_face_routes(app, svc)
    _add_subject_routes(app, svc)
    from starlette.staticfiles import StaticFiles

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Content-Type", HEADER])
    return Guard(app, config.max_body, config.timeout_s)


def create_app_from_env() -> Any:
    """The app factory uvicorn calls in each worker process (settings from :data:`partialface.serve.config.ENV`)."""
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return create_app(ServeConfig.from_env())
