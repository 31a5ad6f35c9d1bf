"""Dataset jobs behind the command line: ``align`` (faces -> 160x160), ``export-partial`` (PartialLFW tree).

Each job module provides ``configure(parser)`` and ``run(args) -> int`` for :mod:`partialface.cli`, plus a
plain Python function doing the work (``align_dataset``, ``export_partial``).
"""
