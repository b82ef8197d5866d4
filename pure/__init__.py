"""pure: PURE (Perceive, Understand and Restore) real-world image super-resolution."""

__version__ = "0.1.0"
