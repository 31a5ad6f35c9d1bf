"""What the processor can do: vendor, model and the SIMD / matrix extensions that decide the fast paths.

Read from ``/proc/cpuinfo`` (Linux) and PyTorch's own CPU-feature probes; never assumed from the vendor.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

#: the flags that matter for inference, as /proc/cpuinfo spells them
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class CpuInfo:
    """vendor, model: as the OS reports them (family: 'cpu family/model', e.g. '26/2' = AMD Zen 5, '6/143' = Intel
    Sapphire Rapids); flags: the subset of :data:`FLAGS` present; cores: logical CPUs."""

    vendor: str
    model: str
    flags: frozenset[str]
    cores: int
    family: str = ""

    @property
    def amx(self) -> bool:
        return "amx_tile" in self.flags

    @property
    def bf16(self) -> bool:
        """Native bf16 arithmetic (AMX or AVX512-BF16)."""
        return self.amx or "avx512_bf16" in self.flags

    @property
    def vnni(self) -> bool:
        """int8 dot products (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)

    def describe(self) -> str:
        """One line, e.g. 'AuthenticAMD AMD EPYC, 2 cores, avx2 fma avx512f avx512_bf16 avx512_vnni (no AMX)'."""
        flags = " ".join(f for f in FLAGS if f in self.flags) or "no AVX2"
        fam = f" (family/model {self.family})" if self.family else ""
        return f"{self.vendor} {self.model}{fam}, {self.cores} cores, {flags}{'' if self.amx else ' (no AMX)'}"


def _parse_cpuinfo(text: str) -> tuple[str, str, set[str], str]:
    """/proc/cpuinfo -> (vendor, model name, flags, 'family/model') of the first processor."""
    vendor = model = family = number = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "vendor_id" and not vendor:
            vendor = value
        elif key == "model name" and not model:
            model = value
        elif key == "cpu family" and not family:
            family = value
        elif key == "model" and not number:
            number = value
        elif key == "flags" and not flags:
            flags = set(value.split())
    return vendor, model, flags, f"{family}/{number}" if family else ""


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """The processor of this machine (cached)."""
    import os

    text = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        pass
    vendor, model, flags, family = _parse_cpuinfo(text)
    # PyTorch's probes see what the OS enables (e.g. AMX tiles need kernel support), so they can add flags
    for probe, flag in (("_is_amx_tile_supported", "amx_tile"), ("_is_avx512_bf16_supported", "avx512_bf16"),
                        ("_is_avx512_vnni_supported", "avx512_vnni"), ("_is_avx2_supported", "avx2")):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                flags.add(flag)
        except Exception:  # a failing probe means: not known
            continue
    return CpuInfo(vendor or platform.processor() or "unknown", model or platform.machine(),
                   frozenset(f for f in FLAGS if f in flags), os.cpu_count() or 1, family)


__all__ = ["FLAGS", "CpuInfo", "cpu_info"]
