"""The service's settings: one frozen object, passed to worker processes through an environment variable (uvicorn
starts ``--workers N`` processes from an app factory, which takes no arguments)."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass, field

from partialface.errors import PartialFaceError

#: the environment variable that carries the settings to the app factory
ENV = "PARTIALFACE_SERVE_CONFIG"


@dataclass(frozen=True)
class ServeConfig:
    """``gallery``: the gallery file or ``postgresql://`` URL (created at start when missing); ``model``: None = the
    default model (a new gallery) or the gallery's own; ``api_key_file``: hashes of the keys that may write (and
    read, with ``protect_reads``); ``max_body_mb``: the whole request's cap, the only upload limit in bytes;
    ``max_pixels``: an image's declared pixels; ``max_faces``: faces answered per image; ``timeout_s``: per
    request; ``batch`` / ``batch_wait_ms``: the micro-batcher's most faces and longest wait;
    ``cors_origins``: allowed origins (none: CORS off)."""

    gallery: str
    model: str | None = None
    api_key_file: str | None = None
    protect_reads: bool = False
    no_auth: bool = False
    max_body_mb: float = 10.0
    max_pixels: int = 40_000_000
    max_faces: int = 20
    timeout_s: float = 60.0
    batch: int = 32
    batch_wait_ms: float = 5.0
    device: str = "cpu"
    infer: str = "auto"
    detector: str = "auto"
    cors_origins: tuple[str, ...] = field(default_factory=tuple)

    @property
    def max_body(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        text = os.environ.get(ENV)
        if not text:
            raise PartialFaceError(f"{ENV} is not set: start the service with `partialface serve`")
        d = json.loads(text)
        d["cors_origins"] = tuple(d.get("cors_origins") or ())
        return cls(**d)


def is_loopback(host: str) -> bool:
    """Whether ``host`` listens on the loopback interface only (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, config: ServeConfig) -> str:
    """The start-up line about who may write; PartialFaceError for a non-loopback ``host`` without a key file
    (unless ``no_auth``) and for ``protect_reads`` without one."""
    if config.protect_reads and config.api_key_file is None:
        raise PartialFaceError("--protect-reads needs --api-key-file FILE (make a key: partialface keys new FILE)")
    if config.api_key_file is not None:
        return (f"write routes need an API key (X-API-Key) from {config.api_key_file}"
                + ("; read routes too" if config.protect_reads else ""))
    if not is_loopback(host):
        if not config.no_auth:
            raise PartialFaceError(f"--host {host}: not a loopback address, and no --api-key-file: anyone who reaches "
                                   "it could enrol and delete people. Make a key (partialface keys new FILE) and pass "
                                   "--api-key-file FILE, or say --no-auth explicitly")
        return f"no API key (--no-auth): writes are open to every client that reaches {host}"
    return "no API key file: writes (enrol, delete) are open to local clients"
