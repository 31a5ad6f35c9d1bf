"""User-facing errors: one clear line that names the file or option and what to do."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


class PartialFaceError(Exception):
    """An error a user can cause and fix (bad path, corrupt image, malformed pairs line, wrong option).

    The CLI prints ``partialface: error: <message>`` and exits with status 2; nothing else is shown.
    """


class ImageReadError(PartialFaceError):
    """An image file cannot be read (missing, empty, truncated, not an image)."""


class PairsFormatError(PartialFaceError):
    """A pairs file is malformed or refers to missing images."""


def script_exit(main: Callable[[], int | None]) -> NoReturn:
    """Run a script's ``main`` and exit with its status; a :class:`PartialFaceError` prints one line,
    ``<script>: error: <message>``, and exits with status 2, as the CLI does (``benchmarks/``)."""
    try:
        status = int(main() or 0)
    except PartialFaceError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        status = 2
    raise SystemExit(status)
