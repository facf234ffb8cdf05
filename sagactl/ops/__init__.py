"""Operator tooling behind ``sagactl outbox|dlq|effects|saga|audit|audit-log``.

One module per job: ``connection`` (reaching PostgreSQL and Kafka, or refusing
with the fix), ``parsing`` (durations, times, ids), ``render`` (tables, JSON,
progress), ``audit_log`` (who changed what, and why), ``outbox``,
``dead_letters``, ``effects`` (and ``effects_change``: retry, abandon), ``saga``
(trace and stuck orders), ``ledger`` (the payment provider's ledger);
``commands/`` wires them into the command line.
"""
