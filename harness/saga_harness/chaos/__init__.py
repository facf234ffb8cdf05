"""Chaos harness: drive orders, inject faults mid-saga, converge, audit."""

from saga_harness.chaos.harness import ChaosConfig, ChaosReport, run_chaos

__all__ = ["ChaosConfig", "ChaosReport", "run_chaos"]
