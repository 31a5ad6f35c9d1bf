"""User-facing errors: one clear line that names the file or option and what to do."""

from __future__ import annotations


class PartialFaceError(Exception):
    """An error a user can cause and fix (bad path, corrupt image, malformed pairs line, wrong option).

    The CLI prints ``partialface: error: <message>`` and exits with status 2; nothing else is shown.
    """


class ImageReadError(PartialFaceError):
    """An image file cannot be read (missing, empty, truncated, not an image)."""


class PairsFormatError(PartialFaceError):
    """A pairs file is malformed or refers to missing images."""
