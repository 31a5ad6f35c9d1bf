"""Typed model configuration and its presets (``paper``, ``cpu``, ``tiny``).

Naming of the ResNet parts (the paper counts the stem as its 1st "block"):

============  ================  ============================================  =====================
config index  ResNet name       paper                                         paper-preset output
============  ================  ============================================  =====================
stem          conv1 (+maxpool)  block 1                                       64 ch, 40x40
widths[0]     conv2_x           block 2                                       256 ch, 40x40
widths[1]     conv3_x           block 3 (end of the shared trunk)             512 ch, 20x20
widths[2]     conv4_x           block 4 (two copies: feature / attention)     1024 ch, 20x20
widths[3]     conv5_x           only in the full ResNet-50 baseline            2048 ch, 5x5
============  ================  ============================================  =====================

The bottleneck width of a stage is ``widths[i] // expansion`` (ResNet-50: 64/128/256/512).
The truncated backbones ("ours", "resnet41") give 20x20 maps for a 160x160 input because conv4_x's
first bottleneck uses stride ``conv4_stride = 1`` (spec: open choice, this is the default); the full
ResNet-50 baseline always keeps the standard strides (conv4_x and conv5_x down-sample: 5x5 maps).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from partialface.errors import PartialFaceError

POOLINGS = ("sum", "mean")
#: ``framing`` values (partialface.models.framing)
FRAMINGS = ("auto", "resize", "dlib-chip", "arcface-112")
#: the framing of checkpoints written before ``framing`` existed (what they were trained and scored on)
LEGACY_FRAMING = "resize"


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model's architecture (no training settings).

    name: registered model ("ours", "resnet50", "resnet41"); input_size: square input side in pixels
    (the models accept other sizes; this one is used for FLOPs and checks); stem_width / widths / blocks:
    ResNet geometry (see the module docstring); expansion: stage width / bottleneck width;
    stem_pool: keep the stem's 3x3 max-pool; conv4_stride: stride of conv4_x's first bottleneck in the
    truncated backbones; zero_init_residual: start every residual branch's last BN gamma at 0;
    K: number of attention maps; embedding_dim: size of f; pooling: attentional pooling "sum" (spec
    default) or "mean" (divide by the sum of the recalibrated map); pretrained: weights a new training run
    starts from ("" = random init; "dlib" = dlib's face ResNet from the installed extra, or a path to its
    converted .safetensors / .dat) for the models built on dlib's network (``dlib_resnet``, ``ours_dlib``);
    framing: how the input is cut from the aligned 160x160 face ("resize", "dlib-chip", or "auto": the
    registered model's own; see partialface.models.framing); s_temperature: T in s = softmax_k(GAP(Â_k) / T),
    1 = the paper's (which bounds s_max / s_min by e); below 1 lets the importance weights spread (a
    deviation, measured in docs/history/results.md); uniform_mix: β in
    v_k = (1 - β) · (Ã_k-weighted mean of F) + β · GAP(F), every map's pooling mixed with a uniform map, a holistic
    path through the same aggregation layers
    (0 = the paper's; needs pooling "mean"; a deviation, measured in docs/history/results.md).
    """

    name: str = "ours"
    input_size: int = 160
    stem_width: int = 64
    widths: tuple[int, int, int, int] = (256, 512, 1024, 2048)
    blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    expansion: int = 4
    stem_pool: bool = True
    conv4_stride: int = 1
    zero_init_residual: bool = True
    K: int = 12
    embedding_dim: int = 256
    pooling: str = "sum"
    pretrained: str = ""
    framing: str = "auto"
    s_temperature: float = 1.0
    uniform_mix: float = 0.0
    #: free-form note (e.g. which preset this came from); ignored by the builders
    preset_name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # Accept lists (YAML) for the tuple fields.
        for name in ("widths", "blocks"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Raise PartialFaceError (naming the option) for an impossible configuration."""

        def bad(option: str, what: str) -> PartialFaceError:
            return PartialFaceError(f"model.{option}: {what}")

        if len(self.widths) != 4 or len(self.blocks) != 4:
            raise bad("widths/blocks", "give exactly 4 values each (conv2_x..conv5_x)")
        if any(int(w) <= 0 for w in self.widths) or any(int(b) <= 0 for b in self.blocks):
            raise bad("widths/blocks", "all values must be positive integers")
        if self.expansion <= 0 or any(w % self.expansion for w in self.widths):
            raise bad("expansion", f"every width in {list(self.widths)} must be divisible by {self.expansion}")
        for option in ("input_size", "stem_width", "K", "embedding_dim"):
            if int(getattr(self, option)) <= 0:
                raise bad(option, "must be a positive integer")
        if self.conv4_stride not in (1, 2):
            raise bad("conv4_stride", f"must be 1 or 2, got {self.conv4_stride}")
        if self.framing not in FRAMINGS:
            raise bad("framing", f"must be one of {', '.join(FRAMINGS)}, got {self.framing!r}")
        if not float(self.s_temperature) > 0:
            raise bad("s_temperature", f"must be > 0 (1 = the paper's softmax), got {self.s_temperature}")
        if self.pooling not in POOLINGS:
            raise bad("pooling", f"must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if not 0.0 <= float(self.uniform_mix) <= 1.0:
            raise bad("uniform_mix", f"must be in [0, 1] (0 = the paper's pooling), got {self.uniform_mix}")
        if self.uniform_mix and self.pooling != "mean":
            raise bad("uniform_mix", "mixes mean-pooled vectors: set model.pooling=mean too")

    # ---------------------------------------------------------------- derived geometry
    @property
    def feature_channels(self) -> int:
        """Channels of F (conv4_x output) in the truncated backbones: widths[2]."""
        return self.widths[2]

    def map_size(self, truncated: bool = True) -> int:
        """Side of the final feature maps for ``input_size`` (every stride-2 op rounds up)."""
        strides = [2, 2 if self.stem_pool else 1, 1, 2, self.conv4_stride if truncated else 2]
        if not truncated:
            strides.append(2)
        n = self.input_size
        for s in strides:
            n = -(-n // s)
        return n

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists instead of tuples) suitable for YAML/JSON."""
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        d["blocks"] = list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from a dict; unknown keys raise PartialFaceError listing the known ones.

        A ``preset`` key (optional) selects the starting preset; the other keys override it.
        """
        d = dict(d)
        preset = d.pop("preset", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PartialFaceError(
                f"model: unknown option(s) {', '.join(unknown)}; known: preset, {', '.join(sorted(known))}"
            )
        base = cls.preset(preset) if preset is not None else cls()
        return base.replace(**d)

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with some fields changed (validated)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise PartialFaceError(f"model: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **overrides)

    # ---------------------------------------------------------------- presets
    @classmethod
    def presets(cls) -> list[str]:
        """Names accepted by :meth:`preset`."""
        return list(_PRESETS)

    @classmethod
    def preset(cls, name: str, /, **overrides: Any) -> ModelConfig:
        """A named preset (``paper``, ``cpu``, ``tiny``) with optional field overrides."""
        if name not in _PRESETS:
            raise PartialFaceError(f"model preset {name!r} is unknown; known presets: {', '.join(_PRESETS)}")
        return cls(**_PRESETS[name], preset_name=name).replace(**overrides)


#: paper: ResNet-50 widths, 160x160 -> 20x20 maps, K=12.
#: cpu: same geometry (160x160 -> 20x20 maps, K=12, 256-d), narrow and shallow so that a full training
#:      step of the attention model runs at 50+ images/s on 2 CPU threads (see benchmarks/bench_models.py).
#: tiny: for tests: 64x64 -> 8x8 maps, K=4, 32-d.
_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {
        "stem_width": 16,
        "widths": (32, 64, 128, 256),
        "blocks": (1, 1, 2, 1),
    },
    "tiny": {
        "input_size": 64,
        "stem_width": 8,
        "widths": (16, 32, 64, 128),
        "blocks": (1, 1, 1, 1),
        "K": 4,
        "embedding_dim": 32,
    },
}
