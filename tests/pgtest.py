"""A real PostgreSQL with pgvector for the tests (issue #41): the PyPI wheel ``pgserver`` (PostgreSQL 16 and
pgvector 0.6 inside; the extra ``partialface[postgres]``) started once per test session in a temporary folder and
stopped (and its folder deleted) when the session ends. Tests skip, saying why, only where no server can start."""

from __future__ import annotations

import functools
import tempfile
import uuid
from typing import Any

import pytest


@functools.cache
def _server() -> tuple[Any, str] | str:
    """(the pgserver handle, its URL), or why none could start."""
    try:
        import pgserver
        import psycopg
    except ImportError as e:
        return f"PostgreSQL tests need the extra: pip install -e '.[postgres]' ({e})"
    try:
        # cleanup_mode "delete": pgserver stops the server and deletes the folder when the session ends (atexit)
        server = pgserver.get_server(tempfile.mkdtemp(prefix="partialface-pg-"), cleanup_mode="delete")
        url = server.get_uri()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except Exception as e:  # no server can run here (no shared memory, a read-only /tmp, ...)
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        return f"no PostgreSQL server could be started with pgserver: {first}"
    return server, url


def server_url() -> str:
    """The session server's URL (skips the test where there is none)."""
    got = _server()
    if isinstance(got, str):
        pytest.skip(got)
    return got[1]


def server() -> Any:
    got = _server()
    if isinstance(got, str):
        pytest.skip(got)
    return got[0]


def fresh_url(base: str | None = None) -> str:
    """A URL of a gallery of its own on the session server (a new schema)."""
    url = base or server_url()
    return f"{url}{'&' if '?' in url else '?'}schema=t_{uuid.uuid4().hex[:12]}"


def admin() -> Any:
    """An autocommit superuser connection to the session server."""
    import psycopg

    return psycopg.connect(server_url(), autocommit=True)
