"""``partialface gallery copy SRC DST``: copy a gallery between stores (a .db file and a ``postgresql://`` URL, either
way, or file to file): every identity, template and source, in enrolment order, in one transaction of DST; DST must
be new, or empty and of the same model and fusion; the counts are compared afterwards. No password is printed.
A thin shell over :func:`partialface.api.gallery.copy_gallery`."""

from __future__ import annotations

import argparse

from partialface.errors import PartialFaceError


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    copy = sub.add_parser("copy", help="copy a gallery: SQLite file <-> PostgreSQL URL (checks counts and model)",
                          description="copy a gallery: SQLite file <-> PostgreSQL URL (checks counts and model)")
    copy.add_argument("src", metavar="SRC", help="the gallery to copy: a .db file or a postgresql:// URL")
    copy.add_argument("dst", metavar="DST", help="where to: a new .db file or postgresql:// URL (or an empty gallery "
                      "of the same model)")


def run(args: argparse.Namespace) -> int:
    from partialface.api.gallery import copy_gallery
    from partialface.api.stores import describe

    if args.action != "copy":
        raise PartialFaceError(f"gallery {args.action}: unknown action (copy)")
    got = copy_gallery(args.src, args.dst)
    print(f"copied {got['identities']} identities ({got['templates']} templates; model {got['model']}, fusion "
          f"{got['fusion']}) from {describe(args.src)} to {describe(args.dst)}; counts checked")
    return 0
