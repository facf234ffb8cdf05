"""The order saga, declared once: every service, what it emits and how it reacts.

``SYSTEM`` is the single source of the topology; see ``saga_system.definition``.
"""

from saga_system.definition import SYSTEM

__all__ = ["SYSTEM"]
