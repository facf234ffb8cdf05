"""The operator commands, registered on ``sagactl``'s parser."""

from __future__ import annotations

import argparse

from sagactl.ops.commands import audit, dlq, effects, graph, inbox, outbox, saga, top

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    outbox.register(sub)
    inbox.register(sub)
    dlq.register(sub)
    effects.register(sub)
    saga.register(sub)
    audit.register(sub)
    graph.register(sub)
    top.register(sub)
