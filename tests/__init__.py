"""Test suite of the saga engine (unit, integration, e2e, chaos)."""
