"""Benchmarks: ``sagactl bench saga`` and ``sagactl bench relay`` (see BENCHMARKS.md)."""
