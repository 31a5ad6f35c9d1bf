"""The shipped models by name: ``--model NAME`` (and ``partialface.verify(..., model=NAME)``) for the float16
files inside the package (:data:`PACKAGED`: the default) and in the repository's ``checkpoints/`` folder (each
folder's README says how they were trained).

:data:`DEFAULT_MODEL` is what the facade uses when no model is given: ``sface-real-1600``, OpenCV Zoo's SFace trained
for 1,600 steps on realistic occluders (real mask images, sunglasses, hands, crops, other faces) with a
holistic-teacher term, with operating points per level of visibility for soft and sharp pairs (issue #39). It was
chosen on the 300 held-out CelebA identities (never LFW) with realistic occluders (``benchmarks/heldout_realistic.py``,
the rule fixed before the figures): of the candidates, it gains most over the untouched SFace on occluded and cropped
faces (+9.83 points of TAR at FAR 1e-3, the mean of five occluded states at two image qualities; the same recipe at
800 steps +8.45) and is above it on whole faces too (84.21 against 83.52 %). Its weights ship inside the package
(19.4 MB), so it needs neither an extra nor the repository. The defaults before it: ``sface-real-800`` (2026-12-07,
evening), ``ours_sface-ft`` (morning) and ``sface-400``.
"""

from __future__ import annotations

from pathlib import Path

from partialface.errors import PartialFaceError

#: the repository's checkpoints folder (``$PARTIALFACE_CHECKPOINTS`` points to another copy of it)
CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
#: the files inside the package (package data: every install has them, a wheel included): the default model and
#: the visibility network; each folder with its README, as in :data:`CHECKPOINTS`
PACKAGED = Path(__file__).resolve().parent / "weights"
#: name -> file under :data:`PACKAGED` or :data:`CHECKPOINTS` (looked for in that order)
CATALOGUE: dict[str, str] = {
    "sface-400": "celeba-cpu-2026-12-02-sface/sface-400.safetensors",
    "sface-ft": "celeba-cpu-2026-12-02-sface-ft/sface-ft.safetensors",
    "sface-real-800": "sface-real-800-2026-12-07/sface-real-800.safetensors",
    "sface-real-1600": "sface-real-1600-2026-12-07/sface-real-1600.safetensors",
    "ours_sface-ft": "ours_sface-ft-2026-12-07/ours_sface-ft.safetensors",
    "sface-ftc": "celeba-cpu-2026-12-03-sface-ftc/sface-ftc.safetensors",
    "ours_sface-ftc": "celeba-cpu-2026-12-03-sface-ftc/ours_sface-ftc.safetensors",
    "dlib_resnet-chip-400": "celeba-cpu-2026-12-01/dlib_resnet-chip-400.safetensors",
    "ours-celeba": "celeba-cpu-2026-11-27/ours.safetensors",
    "resnet41-celeba": "celeba-cpu-2026-11-27/resnet41.safetensors",
    "resnet50-celeba": "celeba-cpu-2026-11-27/resnet50.safetensors",
    "resnet50-nofinetune-celeba": "celeba-cpu-2026-11-27/resnet50-nofinetune.safetensors",
    "ours_dlib-ft": "celeba-cpu-2026-12-03-wise/ours_dlib-ft.safetensors",
    "dlib_resnet-ft": "celeba-cpu-2026-12-03-wise/dlib_resnet-ft.safetensors",
    "dlib_resnet-ftc": "celeba-cpu-2026-12-03-dlib-ftc/dlib_resnet-ftc.safetensors",
    "ours_dlib-ftc": "celeba-cpu-2026-12-03-dlib-ftc/ours_dlib-ftc.safetensors",
    "dlib_resnet-ftc7k": "celeba-cpu-2026-12-03-dlib-ftc/dlib_resnet-ftc7k.safetensors",
    "ours_dlib-ftc7k": "celeba-cpu-2026-12-03-dlib-ftc/ours_dlib-ftc7k.safetensors",
    "dlib_dense-ft": "celeba-cpu-2026-12-03-dense/dlib_dense-ft.safetensors",
    "dlib_dense-ft7k": "celeba-cpu-2026-12-03-dense/dlib_dense-ft7k.safetensors",
    "ours_dlib-ft7k": "celeba-cpu-2026-12-02/ours_dlib-ft.safetensors",
    "dlib_resnet-ft7k": "celeba-cpu-2026-12-02/dlib_resnet-ft.safetensors",
    "ours_dlib-7min": "celeba-cpu-2026-11-27/ours_dlib.safetensors",
    "dlib_resnet-7min": "celeba-cpu-2026-11-27/dlib_resnet.safetensors",
}
DEFAULT_MODEL = "sface-real-1600"
#: the short list of ``partialface models`` (at most :data:`SHORT_LIST_MAX` lines, the default first): the models
#: that the current results compare (docs/results.md, its first sections), each with what it is for. The other
#: entries of :data:`CATALOGUE` are steps of the project's history (``partialface models --all``); every name
#: keeps working. ``sface`` and ``dlib-chip`` are the untouched networks (built in, from the extras; not files).
CURRENT: dict[str, str] = {
    "sface-real-1600": "SFace trained on realistic occluders: the default; best on held-out occluded faces",
    "sface": "OpenCV Zoo's SFace as shipped (sface extra): the best on whole LFW faces",
    "sface-real-800": "the same recipe at 800 steps: the default on 2026-12-07 evening",
    "sface-400": "SFace fine-tuned for 400 steps: the default until 2026-12-07 (galleries made with it)",
    "dlib-chip": "dlib's face ResNet untouched (dlib extra): the reference row of PartialLFW",
    "dlib_resnet-ft": "dlib's network fine-tuned on partial faces: the best non-centred PartialLFW",
    "ours_dlib-ft": "attention on dlib's network (the paper's method), the same budget as dlib_resnet-ft",
    "dlib_resnet-ftc": "dlib's network fine-tuned with centring: the best centred PartialLFW",
}
#: the most models ``partialface models`` lists without ``--all``
SHORT_LIST_MAX = 8
#: the shipped visibility network (issue #39), under :data:`PACKAGED`
VISIBILITY = "visibility-2026-12-07/visibility.safetensors"


def _shipped_file(rel: str) -> Path:
    """Where a shipped file is: in the package where it ships there, else under ``$PARTIALFACE_CHECKPOINTS`` or
    the repository's checkpoints folder (the path returned whether or not the file is there)."""
    import os

    inside = PACKAGED / rel
    return inside if inside.is_file() else Path(os.environ.get("PARTIALFACE_CHECKPOINTS", CHECKPOINTS)) / rel


def visibility_file() -> Path | None:
    """The shipped visibility network's file, or None where it is not here."""
    path = _shipped_file(VISIBILITY)
    return path if path.is_file() else None


def shipped_model(name: str) -> Path:
    """The file of a shipped model; PartialFaceError when the name is unknown or the file is not here."""
    if name not in CATALOGUE:
        raise PartialFaceError(f"--model {name}: not a shipped model; known: {', '.join(CATALOGUE)} "
                               "(or give a run folder, .safetensors or .onnx file)")
    path = _shipped_file(CATALOGUE[name])
    if not path.is_file():
        raise PartialFaceError(f"--model {name}: {path} is missing (the shipped models live in the repository's "
                               "checkpoints/ folder; set PARTIALFACE_CHECKPOINTS to a copy of it)")
    return path


def resolve_model(spec: str) -> str:
    """A model argument as the commands take it: a file or folder that exists is itself; else a shipped model's
    name is its file (:func:`shipped_model`; PartialFaceError where the file is missing); anything else is
    returned unchanged, for the caller to read (a built-in name such as ``dlib``, or a path that fails there)."""
    if spec in CATALOGUE and not Path(spec).exists():
        return str(shipped_model(spec))
    return spec


def short_list() -> list[tuple[str, str]]:
    """(name, what it is for) of ``partialface models``: :data:`DEFAULT_MODEL` first, then :data:`CURRENT`, at
    most :data:`SHORT_LIST_MAX`."""
    first = (DEFAULT_MODEL, CURRENT.get(DEFAULT_MODEL, "the default model"))
    return [first, *((n, w) for n, w in CURRENT.items() if n != DEFAULT_MODEL)][:SHORT_LIST_MAX]
