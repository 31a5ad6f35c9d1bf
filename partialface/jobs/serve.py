"""``partialface serve [--host H] [--port P] [--gallery FILE|URL] [--api-key-file FILE] ...``: the facade and a
gallery as an HTTP service (FastAPI + uvicorn; the extra ``partialface[serve]``). Routes, limits and rules:
:mod:`partialface.serve`; README "Serve"."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from partialface.errors import PartialFaceError
from partialface.jobs.options import add_detector_argument, add_photo_infer_argument


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: give a positive number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: give a positive number")
        return value

    return parse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only); another address needs "
                        "--api-key-file (or --no-auth)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--gallery", default="gallery.db",
                        help="the gallery: a .db file (default gallery.db) or a postgresql:// URL (several replicas "
                        "may share one database); created empty at start when missing")
    parser.add_argument("--model", default=None,
                        help="a new gallery's model (default: the shipped default); an existing gallery keeps its own")
    parser.add_argument("--api-key-file", default=None, metavar="FILE",
                        help="hashes of the API keys (partialface keys new FILE); with it, enrol and delete need the "
                        "X-API-Key header")
    parser.add_argument("--protect-reads", action="store_true", help="read routes need a key too")
    parser.add_argument("--no-auth", action="store_true",
                        help="allow a non-loopback --host without a key file (writes open to every client)")
    parser.add_argument("--workers", type=_positive(int), default=1,
                        help="processes (default 1), each with its own model, sharing the gallery file")
    parser.add_argument("--max-body-mb", type=_positive(float), default=10.0,
                        help="the most a request may send, in MB (default 10): the one upload limit")
    parser.add_argument("--max-pixels", type=_positive(int), default=40_000_000,
                        help="the most pixels an image may declare (default 40 Mpx; checked before decoding)")
    parser.add_argument("--max-faces", type=_positive(int), default=20, help="faces answered per image (default 20)")
    parser.add_argument("--timeout", type=_positive(float), default=60.0,
                        help="seconds a request may run (default 60; then 503)")
    parser.add_argument("--batch", type=_positive(int), default=32,
                        help="the most faces embedded at once across concurrent requests (default 32)")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0,
                        help="how long a batch waits for more faces (default 5 ms)")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="an origin allowed to call the API from a browser (repeatable; default none: CORS off)")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    add_photo_infer_argument(parser)
    add_detector_argument(parser)
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise PartialFaceError("serve needs the extra: pip install -e '.[serve]' (FastAPI, uvicorn)") from None
    from pathlib import Path

    from partialface.api.stores import describe, is_url, open_store
    from partialface.serve.config import ENV, ServeConfig, check_exposure
    from partialface.serve.keys import read_hashes

    gallery = args.gallery if is_url(args.gallery) else str(Path(args.gallery).resolve())
    config = ServeConfig(gallery=gallery, model=args.model, api_key_file=(
        str(Path(args.api_key_file).resolve()) if args.api_key_file else None), protect_reads=args.protect_reads,
        no_auth=args.no_auth, max_body_mb=args.max_body_mb, max_pixels=args.max_pixels, max_faces=args.max_faces,
        timeout_s=args.timeout, batch=args.batch, batch_wait_ms=max(0.0, args.batch_wait_ms), device=args.device,
        infer=args.infer, detector=args.detector, cors_origins=tuple(args.cors_origin))
    exposure = check_exposure(args.host, config)
    if config.api_key_file:
        n = len(read_hashes(config.api_key_file))
        if n == 0:
            print(f"note: {config.api_key_file} holds no key yet: every write will be refused", file=sys.stderr)
    if is_url(config.gallery):
        store = open_store(config.gallery)  # a database that cannot be reached: one line, before any worker starts
        missing = store is None
        if store is not None:
            store.close()
    else:
        missing = not Path(config.gallery).exists()
    if missing or args.workers == 1:
        # a missing gallery is made here, once, before any worker starts (workers only ever open it: two creating it
        # at once would race); with one worker (this process) an existing one is checked here too, so a corrupt
        # file or another model fails at once, and its model is loaded once (the facade caches it)
        from partialface.api import Gallery

        Gallery(config.gallery, config.model, device=config.device, infer=config.infer,
                detector=config.detector).close()
        if missing:
            print(f"created an empty gallery {describe(config.gallery)}", file=sys.stderr)
    print(f"partialface serve: {exposure}", file=sys.stderr)
    os.environ[ENV] = config.to_env()
    uvicorn.run("partialface.serve.app:create_app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, access_log=False, log_level=args.log_level, server_header=False,
                timeout_graceful_shutdown=10)
    return 0
