"""partialface — partial face recognition (Hörmann et al., ICIP 2021) and the PartialLFW benchmark.

Importing the package does nothing but define names: no process group, no downloads, no weights.
"""

__version__ = "0.1.0"
