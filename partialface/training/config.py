"""Typed training configuration: YAML files + dotted command-line overrides.

A config file has up to six sections, each optional (missing keys keep their defaults)::

    model:   {preset: cpu, K: 12}        # ModelConfig (partialface.models): a preset plus field overrides
    loss:    {lambda_div: 1.0}           # LossConfig (partialface.losses)
    data:    {root: /data/casia-aligned}  # DataConfig
    augment: {p_whole: 0.25}             # AugmentConfig
    optim:   {lr: 0.1, batch_size: 256}  # OptimConfig
    run:     {out: runs/paper, amp: bf16} # RunConfig

Overrides look like ``optim.lr=0.05`` or ``model.widths=[32,64,128,256]``; values are parsed as YAML.
Every key and value is checked against the dataclass types: an unknown key or a wrong type raises one
PartialFaceError line naming the key (and the file or override it came from) and listing the valid keys.
``--config`` also accepts the name of a packaged preset (``paper``, ``cpu``, ``tiny``).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from partialface.errors import PartialFaceError
from partialface.geometry.template import PARTS
from partialface.losses import LossConfig
from partialface.models.config import ModelConfig

SECTIONS = ("model", "loss", "data", "augment", "optim", "run")


@dataclass(frozen=True)
class DataConfig:
    """Where the training faces come from.

    root: identity folders ROOT/identity/*.jpg|png (VGGFace2 / CASIA-WebFace layout) of aligned
      160x160 faces, or of raw photos when ``align`` is on.
    pack: folder of a packed copy (images.npy (N,160,160,3) uint8, memory-mapped, + labels.npy +
      meta.json); built from ``root`` on first use when missing. "" = read the image files directly.
    align: detect (MTCNN) and align every image on the fly with the project's aligner.
    align_cache: folder caching aligned faces as PNG (one per image, mirrors root); "" = in memory,
      per DataLoader worker.
    min_images: drop identities with fewer images.
    holdout_identities: identities (chosen with the seed) kept out of training for the end-of-epoch
      verification check; 0 = no check (unless verify_root is given).
    verify_root: identity folders of aligned faces for the check in place of held-out identities of root
      (e.g. the test/ folder of ``partialface split``: the identities models are chosen on); "" = none.
    verify_pairs: pairs (half same, half different) of the check; each pair is scored holistic and with
      its second image partial (random part lEye/Nose/Mouth, benchmark factor, non-centred).
    workers: DataLoader worker processes (0 = decode in the main process).
    """

    root: str = ""
    pack: str = ""
    align: bool = False
    align_cache: str = ""
    min_images: int = 2
    holdout_identities: int = 0
    verify_root: str = ""
    verify_pairs: int = 400
    workers: int = 2
    prefetch_factor: int = 2

    def __post_init__(self) -> None:
        _check(self.min_images >= 1, "data.min_images", "must be >= 1")
        _check(self.holdout_identities >= 0, "data.holdout_identities", "must be >= 0")
        _check(self.verify_pairs >= 2, "data.verify_pairs", "must be >= 2")
        _check(self.workers >= 0, "data.workers", "must be >= 0")
        _check(self.prefetch_factor >= 1, "data.prefetch_factor", "must be >= 1")


CENTRINGS = ("bilinear", "integer")


@dataclass(frozen=True)
class AugmentConfig:
    """Online partial-face augmentation (benchmark geometry, partialface.geometry.template).

    enabled: off = every face whole (flip and resolution jitter still apply).
    p_whole: probability of keeping the face whole; otherwise a random part of ``parts`` is kept in a
      rectangle of random factor uniform in [factor_min, factor_max], grey elsewhere.
    p_centred: probability that a partial face is translated so its rectangle's centre lands on the image
      centre. 0 by default and in the ``paper`` preset: the paper trains on non-centred partial faces only
      (the centred protocols test whether a model generalises to a position it never saw); centring
      "bilinear" = OpenCV's fixed-point bilinear shift (bit-exact to the benchmark's
      centred faces for zero jitter), "integer" = shift rounded to whole pixels.
    jitter: the rectangle's centre moves by uniform [-jitter, jitter] pixels in x and y.
    hflip: probability of a horizontal flip, applied BEFORE the part is cut, so the part names refer to
      the flipped image (lEye is the eye on the image's left).
    p_lowres, lowres_min: resolution jitter — with probability p_lowres the face is down-sampled to a
      scale uniform in [lowres_min, 1) (antialiased bilinear) and up-sampled back (bilinear).
    p_occlude: probability that a WHOLE face (one the part crop left whole) wears an occluder
      (partialface.geometry.occlude; not in the paper: default 0); occluders: the kinds drawn from;
      occlude_coverage: (min, max) fraction of the face area, in occluder_levels even steps; occluder_looks:
      looks drawn once per kind and level (an OccluderBank). Kind "face" puts the next sample of the batch
      in front. The realistic occluders of issue #39 (partialface.geometry.realistic) are the kinds
      real-mask, real-sunglasses, real-hand and real-crop (their own sizes: the level is ignored);
      real-mask needs masks, MaskTheFace's folder (the real mask images).
    """

    enabled: bool = True
    p_whole: float = 0.25
    parts: tuple[str, ...] = PARTS
    factor_min: float = 0.1
    factor_max: float = 0.5
    p_centred: float = 0.0
    centring: str = "bilinear"
    jitter: float = 3.0
    hflip: float = 0.5
    p_lowres: float = 0.0
    lowres_min: float = 0.25
    p_occlude: float = 0.0
    occluders: tuple[str, ...] = ("mask", "sunglasses", "hand", "object", "scarf", "cap", "face")
    occlude_coverage: tuple[float, float] = (0.15, 0.45)
    occluder_levels: int = 3
    occluder_looks: int = 32
    masks: str = ""

    def __post_init__(self) -> None:
        from partialface.geometry.occlude import KINDS

        if not isinstance(self.parts, tuple):
            object.__setattr__(self, "parts", tuple(self.parts))
        for name in ("occluders", "occlude_coverage"):
            if not isinstance(getattr(self, name), tuple):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        _check(0.0 <= self.p_occlude <= 1.0, "augment.p_occlude", f"must be a probability in [0, 1], got "
               f"{self.p_occlude}")
        from partialface.geometry.realistic import REALISTIC_KINDS

        drawn = [k for k in KINDS if k != "image"] + [f"real-{k}" for k in REALISTIC_KINDS]
        bad_kinds = [k for k in self.occluders if k not in drawn]
        _check(bool(self.occluders) and not bad_kinds, "augment.occluders",
               f"choose from {', '.join(drawn)} (got {list(self.occluders)})")
        if self.p_occlude > 0 and "real-mask" in self.occluders:
            from pathlib import Path

            _check(bool(self.masks) and (Path(self.masks) / "masks" / "masks.cfg").is_file(), "augment.masks",
                   f"occluder real-mask needs MaskTheFace's folder (holding masks/masks.cfg), got {self.masks!r}")
        lo_hi = self.occlude_coverage
        _check(len(lo_hi) == 2 and 0 < lo_hi[0] <= lo_hi[1] < 1, "augment.occlude_coverage",
               f"give [min, max] with 0 < min <= max < 1, got {list(lo_hi)}")
        _check(self.occluder_levels >= 1 and self.occluder_looks >= 1, "augment.occluder_levels/occluder_looks",
               "must be >= 1")
        for name in ("p_whole", "p_centred", "hflip", "p_lowres"):
            v = getattr(self, name)
            _check(0.0 <= v <= 1.0, f"augment.{name}", f"must be a probability in [0, 1], got {v}")
        _check(len(self.parts) > 0, "augment.parts", f"give at least one of {', '.join(PARTS)}")
        bad = [p for p in self.parts if p not in PARTS]
        _check(not bad, "augment.parts", f"unknown part(s) {bad}; choose from {', '.join(PARTS)}")
        _check(
            0.0 <= self.factor_min <= self.factor_max,
            "augment.factor_min/factor_max",
            f"need 0 <= factor_min <= factor_max, got {self.factor_min}, {self.factor_max}",
        )
        _check(self.centring in CENTRINGS, "augment.centring", f"must be one of {', '.join(CENTRINGS)}")
        _check(self.jitter >= 0, "augment.jitter", "must be >= 0 (pixels)")
        _check(0.0 < self.lowres_min <= 1.0, "augment.lowres_min", "must be in (0, 1]")


OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation. batch_size is GLOBAL (split evenly across DDP ranks). weight_decay is the paper's
    lambda_reg; ``no_decay_bn_bias`` exempts BatchNorm weights and all biases. The learning rate follows
    a per-step schedule: linear warm-up over warmup_steps, then cosine down to min_lr, steps (x lr_gamma
    at each epoch in lr_milestones) or constant. max_steps > 0 caps the run (else epochs x steps/epoch).
    grad_clip > 0 clips the global gradient norm.

    max_minutes > 0 is a wall-clock budget: the run stops after the step during which the budget ran out
    (max_steps / epochs still cap it) and writes its final checkpoint and weights. The clock counts the
    training loop (steps, held-out checks, checkpoints; not the data and model setup before the first
    step) and carries over when a run is resumed. Under a budget the cosine schedule follows elapsed time
    instead of steps: after the warm-up (still in steps), progress = (t - t_w) / (budget - t_w), t_w
    being the time the warm-up ended, so the learning rate reaches min_lr when the time runs out whatever
    the machine's speed (the "step" schedule's milestones stay in epochs). Such a run is not
    bit-reproducible: where it stops and its learning rates depend on the timing.

    freeze_trunk_epochs > 0: for that many epochs from the start (fractions allowed) the model's
    pretrained trunk (its ``trunk_modules()``, e.g. dlib's stem and first two stages for ``dlib_resnet``
    and ``ours_dlib``) gets no updates and no gradients (and its BatchNorm layers, if any, stay in eval
    mode); the rest trains. Models without a trunk ignore it.

    new_lr_mult: with ``model.pretrained``, the layers that start from random weights (the model's
    ``new_modules()``, e.g. the attention convolution of ``ours_dlib``) train at
    this multiple of the learning rate (the usual fine-tuning practice: new layers need large steps,
    pretrained ones small). 1 = one rate for all; ignored without ``model.pretrained``."""

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    no_decay_bn_bias: bool = True
    batch_size: int = 256
    epochs: int = 20
    max_steps: int = 0
    max_minutes: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 500
    min_lr: float = 0.0
    lr_milestones: tuple[float, ...] = ()
    lr_gamma: float = 0.1
    grad_clip: float = 0.0
    freeze_trunk_epochs: float = 0.0
    new_lr_mult: float = 1.0

    def __post_init__(self) -> None:
        for name in ("betas", "lr_milestones"):
            v = getattr(self, name)
            if not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(v))
        _check(self.optimizer in OPTIMIZERS, "optim.optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
        _check(self.schedule in SCHEDULES, "optim.schedule", f"must be one of {', '.join(SCHEDULES)}")
        _check(self.lr > 0, "optim.lr", "must be > 0")
        _check(self.batch_size >= 1, "optim.batch_size", "must be >= 1")
        _check(self.epochs >= 1, "optim.epochs", "must be >= 1")
        _check(self.max_steps >= 0, "optim.max_steps", "must be >= 0 (0 = epochs x steps per epoch)")
        _check(
            math.isfinite(self.max_minutes) and self.max_minutes >= 0,
            "optim.max_minutes",
            "must be >= 0 (minutes of wall-clock training; 0 = no time budget)",
        )
        _check(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        _check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
        _check(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 = off)")
        _check(self.freeze_trunk_epochs >= 0, "optim.freeze_trunk_epochs", "must be >= 0 (0 = never frozen)")
        _check(math.isfinite(self.new_lr_mult) and self.new_lr_mult > 0, "optim.new_lr_mult", "must be > 0")
        _check(len(self.betas) == 2, "optim.betas", "give two numbers, e.g. [0.9, 0.999]")


AMPS = ("none", "bf16")


@dataclass(frozen=True)
class RunConfig:
    """Run settings. out: run folder (config.yaml, log.csv, verify.csv, tb/, checkpoints/).
    device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N" (under torchrun: cuda:LOCAL_RANK).
    amp: "bf16" autocast (CUDA and CPU) or "none". sync_bn: synchronise BatchNorm statistics across DDP
    ranks (nn.SyncBatchNorm on CUDA, the project's all-reduce version on CPU/gloo). freeze_bn: BatchNorm
    layers use their running statistics (eval mode) while training. threads: torch intra-op threads
    (0 = torch's default). checkpoint_every: steps between checkpoints (0 = only at the end of each
    epoch and of the run); keep_checkpoints: how many step folders to keep. verify_every: epochs between
    held-out checks (0 = never); with it on, a run that stops between epochs (max_steps, max_minutes) is
    also checked at its end, and verify_at_start checks a new run's starting model before its first step
    (e.g. the untouched pretrained network: the reference a fine-tune must beat)."""

    out: str = "runs/train"
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    freeze_bn: bool = False
    deterministic: bool = False
    threads: int = 0
    log_every: int = 20
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    verify_every: int = 1
    verify_at_start: bool = False
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        _check(self.amp in AMPS, "run.amp", f"must be one of {', '.join(AMPS)}")
        _check(bool(self.out), "run.out", "give the run folder")
        _check(self.threads >= 0, "run.threads", "must be >= 0")
        _check(self.log_every >= 1, "run.log_every", "must be >= 1")
        _check(self.checkpoint_every >= 0, "run.checkpoint_every", "must be >= 0")
        _check(self.keep_checkpoints >= 1, "run.keep_checkpoints", "must be >= 1")
        _check(self.verify_every >= 0, "run.verify_every", "must be >= 0")
        dev = self.device
        ok = dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())
        _check(ok, "run.device", f"must be auto, cpu, cuda or cuda:N, got {dev!r}")


@dataclass(frozen=True)
class TrainConfig:
    """The whole training configuration (see the module docstring)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from nested dicts (``source`` names the origin in error messages)."""
        if not isinstance(raw, dict):
            raise PartialFaceError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)})")
        unknown = sorted(set(raw) - set(SECTIONS))
        if unknown:
            raise PartialFaceError(
                f"{source}: unknown section(s) {', '.join(map(str, unknown))}; valid sections: {', '.join(SECTIONS)}"
            )
        parts: dict[str, Any] = {}
        for name in SECTIONS:
            section = raw.get(name) or {}
            if not isinstance(section, dict):
                raise PartialFaceError(f"{source}: section {name!r} must be a mapping of options")
            parts[name] = _build_section(name, section, source)
        return cls(**parts)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
        """Load a YAML file (or a packaged preset name) and apply ``key.sub=value`` overrides."""
        file = resolve_config_path(path)
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            where = f" (line {line + 1})" if line is not None else ""
            raise PartialFaceError(f"{file}: not valid YAML{where}; fix the file") from None
        except OSError as e:
            raise PartialFaceError(f"{file}: cannot read the config ({e.strerror})") from None
        if not isinstance(raw, dict):
            raise PartialFaceError(f"{file}: expected a mapping of sections ({', '.join(SECTIONS)})")
        raw = apply_overrides(raw, overrides)
        return cls.from_dict(raw, source=str(file))

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> TrainConfig:
        """A copy with ``key.sub=value`` overrides applied (checked like a file)."""
        return TrainConfig.from_dict(apply_overrides(self.to_dict(), overrides), source="config")

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict[str, Any]:
        """Nested plain dicts (lists for tuples), loadable by :meth:`from_dict`."""
        out: dict[str, Any] = {"model": self.model.to_dict(), "loss": self.loss.to_dict()}
        for name in ("data", "augment", "optim", "run"):
            out[name] = _plain(dataclasses.asdict(getattr(self, name)))
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------------------------- helpers
def _check(ok: bool, option: str, what: str) -> None:
    if not ok:
        raise PartialFaceError(f"{option}: {what}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_SECTION_TYPES: dict[str, type] = {
    "model": ModelConfig,
    "loss": LossConfig,
    "data": DataConfig,
    "augment": AugmentConfig,
    "optim": OptimConfig,
    "run": RunConfig,
}


def section_fields(name: str) -> dict[str, Any]:
    """Option name -> type of a section (``model`` also accepts ``preset``)."""
    cls = _SECTION_TYPES[name]
    hints = get_type_hints(cls)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    if name == "model":
        fields["preset"] = str
    return fields


def _build_section(name: str, section: dict[str, Any], source: str) -> Any:
    fields = section_fields(name)
    unknown = sorted(str(k) for k in section if k not in fields)
    if unknown:
        raise PartialFaceError(
            f"{source}: unknown option {name}.{unknown[0]}; valid options of {name}: {', '.join(sorted(fields))}"
        )
    values = {k: coerce(v, fields[k], f"{name}.{k}", source) for k, v in section.items()}
    try:
        if name == "model":
            return ModelConfig.from_dict(values)
        return _SECTION_TYPES[name](**values)
    except PartialFaceError as e:
        raise PartialFaceError(f"{source}: {e}") from None


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin in (tuple, list):
        return "a list"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in get_args(tp))
    return str(tp)


def coerce(value: Any, tp: Any, option: str, source: str = "config") -> Any:
    """Check ``value`` against type ``tp`` (bool, int, float, str, tuples/lists, unions with None);
    ints are accepted for floats. Raises PartialFaceError naming ``option`` on a mismatch."""

    def fail() -> PartialFaceError:
        return PartialFaceError(f"{source}: {option} must be {_type_name(tp)}, got {value!r}")

    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, option, source)
            except PartialFaceError:
                continue
        raise fail()
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise fail()
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise PartialFaceError(f"{source}: {option} must be a list of {len(args)} values, got {value!r}")
            return tuple(
                coerce(v, a, f"{option}[{i}]", source) for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        elem = args[0] if args else Any
        items = [v if elem is Any else coerce(v, elem, f"{option}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested dict (copied)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or "." not in key:
            raise PartialFaceError(
                f"override {item!r}: write SECTION.OPTION=VALUE (e.g. optim.lr=0.05); sections: {', '.join(SECTIONS)}"
            )
        section, _, option = key.partition(".")
        if section not in SECTIONS:
            raise PartialFaceError(
                f"override {item!r}: unknown section {section!r}; valid sections: {', '.join(SECTIONS)}"
            )
        fields = section_fields(section)
        if option not in fields:
            raise PartialFaceError(
                f"override {item!r}: unknown option {key}; valid options of {section}: {', '.join(sorted(fields))}"
            )
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        if fields[option] is str and value is not None and not isinstance(value, str):
            value = text.strip()  # "run.out=2024" is the folder "2024"
        coerce(value, fields[option], key, f"override {item!r}")
        sec = out.get(section)
        sec = dict(sec) if isinstance(sec, dict) else {}
        sec[option] = value
        out[section] = sec
    return out


def packaged_presets() -> list[str]:
    """Names of the preset YAML files shipped in partialface/configs."""
    folder = importlib.resources.files("partialface") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """A config file path, or a packaged preset name (``paper``, ``cpu``, ``tiny``) -> its path."""
    p = Path(path)
    if p.is_file():
        return p
    if p.suffix == "" and len(p.parts) == 1:
        res = importlib.resources.files("partialface") / "configs" / f"{p.name}.yaml"
        if res.is_file():
            return Path(str(res))
    hint = f"; packaged presets: {', '.join(packaged_presets())}"
    raise PartialFaceError(f"{p}: no such config file{hint}")
