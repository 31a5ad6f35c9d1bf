"""partialface — partial face recognition (Hörmann et al., ICIP 2021) and the PartialLFW benchmark.

    import partialface
    partialface.verify("a.jpg", "b.jpg")   # same person? (partialface.api)
    partialface.embed("photo.jpg")         # every face, embedded
    partialface.Gallery("people.db")       # enrol identities, identify faces (open-set)

Importing the package does nothing but define names: no process group, no downloads, no weights; the facade
(and torch behind it) loads on first use.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Face", "Gallery", "Identification", "Verification", "__version__", "embed", "verify", "version"]


def version() -> str:
    """The installed distribution's version (``importlib.metadata``); where the package runs without being
    installed (a source tree on ``PYTHONPATH``), :data:`__version__`."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("partialface")
    except PackageNotFoundError:
        return __version__


def __getattr__(name: str) -> Any:
    if name in ("Face", "Gallery", "Identification", "Verification", "embed", "verify"):
        from partialface import api

        return getattr(api, name)
    raise AttributeError(name)
