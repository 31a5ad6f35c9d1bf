"""Errors as ``application/problem+json`` (RFC 9457): ``type``, ``title``, ``status``, ``detail`` (one line that
names the field and what to do), and the request id. Which status a user error gets is decided here, once."""

from __future__ import annotations

import json
from typing import Any

from partialface.errors import ImageReadError, PartialFaceError

MEDIA_TYPE = "application/problem+json"

TITLES = {400: "Bad request", 401: "Unauthorized", 404: "Not found", 405: "Method not allowed", 408: "Request timeout",
          409: "Conflict", 413: "Content too large", 415: "Unsupported media type", 422: "Unprocessable content",
          500: "Internal error", 503: "Service unavailable"}


class Problem(Exception):
    """A request the service refuses: ``status``, ``detail`` (one line), ``slug`` (the problem type),
    ``headers`` to add (e.g. WWW-Authenticate, Retry-After)."""

    def __init__(self, status: int, detail: str, slug: str | None = None, headers: dict[str, str] | None = None
                 ) -> None:
        super().__init__(detail)
        self.status, self.detail = status, " ".join(str(detail).split())
        self.slug = slug or TITLES.get(status, "error").lower().replace(" ", "-")
        self.headers = headers or {}


def body(status: int, detail: str, slug: str, request_id: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": f"urn:partialface:problem:{slug}", "title": TITLES.get(status, "Error"),
                           "status": status, "detail": detail}
    if request_id:
        out["request_id"] = request_id
    return out


def encode(status: int, detail: str, slug: str, request_id: str | None) -> bytes:
    return json.dumps(body(status, detail, slug, request_id)).encode("utf-8")


def from_user_error(err: PartialFaceError) -> Problem:
    """The status of a facade or gallery error: an image over the pixel cap 413, a format not accepted 415, an
    unreadable image 422 (its bytes arrived, they are no image), nobody enrolled 409, anything else 422."""
    from partialface.data.images import ImageFormatError, ImageTooLargeError

    text = str(err)
    if isinstance(err, ImageTooLargeError):
        return Problem(413, text, "image-too-large")
    if isinstance(err, ImageFormatError):
        return Problem(415, text + " (send JPEG, PNG, WebP or BMP)", "unsupported-image-format")
    if isinstance(err, ImageReadError):
        return Problem(422, text, "unreadable-image")
    if "nobody is enrolled" in text:
        return Problem(409, "the gallery is empty: enrol someone first (POST /v1/subjects/{name}/faces)",
                       "empty-gallery")
    if "no face found" in text:
        return Problem(422, text, "no-face")
    return Problem(422, text, "invalid-request")
