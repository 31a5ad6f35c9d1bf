"""Geometry: alignment (spec §1), partial faces (spec §2) and occluders (``occlude``, issue #16). Template numbers
live in ``template``."""

from partialface.geometry.align import align_face, similarity_transform
from partialface.geometry.occlude import KINDS as OCCLUDERS
from partialface.geometry.occlude import occlude
from partialface.geometry.partial import (
    PartialFaceBatcher,
    Variant,
    all_variants,
    partial_face,
    partial_faces_batch,
)
from partialface.geometry.template import FACTORS, IMAGE_SIZE, PARTS, part_centre, part_rect

__all__ = [
    "FACTORS",
    "IMAGE_SIZE",
    "OCCLUDERS",
    "PARTS",
    "PartialFaceBatcher",
    "Variant",
    "align_face",
    "all_variants",
    "occlude",
    "part_centre",
    "part_rect",
    "partial_face",
    "partial_faces_batch",
    "similarity_transform",
]
