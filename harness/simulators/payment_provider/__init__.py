"""A stand-in for an external card payment provider (not one of the saga's services).

It keeps its own ledger of charges and refunds in the ``provider`` schema and
behaves like a real provider where it matters to the saga: requests are
idempotent by key, a charge is refunded at most once, and card tokens choose
the outcome (declines, outages, flakiness, slowness) so tests can provoke them.
"""
