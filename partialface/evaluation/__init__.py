"""Evaluation: the PartialLFW benchmark definitions (protocols, settings, part pairs, factors)."""

from partialface.evaluation.protocols import (
    CENTRED,
    DEFAULT_COMBOS,
    HOLISTIC,
    PROTOCOLS,
    SETTINGS,
    Benchmark,
    BenchmarkPairs,
    aggregate,
    build_benchmarks,
    required_variants,
)

__all__ = [
    "CENTRED",
    "DEFAULT_COMBOS",
    "HOLISTIC",
    "PROTOCOLS",
    "SETTINGS",
    "Benchmark",
    "BenchmarkPairs",
    "aggregate",
    "build_benchmarks",
    "required_variants",
]
