"""Facts that applied migrations depend on, kept in one place.

``FIRST_SERVICES`` are the services whose runtime tables migrations 0001 and 0004 created.
It is history, not the system's list of services (that is ``saga_system.SYSTEM``): a
migration that has run in a deployed database must go on doing exactly what it did, so
this tuple never grows. A service added later gets its schema and runtime tables from a
migration of its own, through ``saga_runtime.create_service_schema``.
"""

from __future__ import annotations

__all__ = ["FIRST_SERVICES"]

FIRST_SERVICES = ("orders", "stock", "payments", "shipments", "notifications")
