"""The user facade: photos in, decisions out (``partialface.verify / embed / Gallery``, issue #14).

This layer sits above ``evaluation`` (it will use its embedders) and below ``jobs`` and the CLI, which are to
stay thin shells over it. It holds nothing yet.
"""
