"""``partialface keys new FILE``: a new random API key, printed once; its hash (never the key) is appended to FILE
(created with mode 0600), which ``partialface serve --api-key-file FILE`` reads."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("new",), help="new: make a key")
    parser.add_argument("file", metavar="FILE", help="the key file (hashes, one a line)")


def run(args: argparse.Namespace) -> int:
    import sys

    from partialface.serve.keys import HEADER, new_key

    key = new_key(args.file)
    print(key)
    print(f"the key above is shown once: its hash was added to {args.file}; send it as the {HEADER} header",
          file=sys.stderr)
    return 0
