"""The user facade: photos in, decisions out (issue #14). ``partialface.embed`` / ``partialface.verify``
(:mod:`partialface.api.facade`), ``partialface.Gallery`` (:mod:`partialface.api.gallery`); this layer sits
above ``evaluation`` and below ``jobs`` and the CLI, which stay thin shells over it."""

from partialface.api.facade import Face, Verification, embed, load, to_rgb, verify
from partialface.api.gallery import Gallery, Identification

__all__ = ["Face", "Gallery", "Identification", "Verification", "embed", "load", "to_rgb", "verify"]
