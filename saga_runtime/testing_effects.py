"""Test helpers for effects: settle a service's requested effects by hand, without an executor.

``HandlerRunner`` (``saga_runtime.testing``) records the effects a reaction requests in
the service's real effects table; a test then settles them one at a time, in the order
the executor would (an aggregate's oldest unfinished effect first), either by making the
declared call with the test's dependencies or with an outcome it gives (a provider that
answered, a deadline that passed). The decision about the outcome runs as the executor
runs it: in a unit of work of its own, holding the aggregate's lock, in the effect's
saga, and the effect is marked ``done`` or ``failed`` in the same transaction.

Left out: leases, heartbeats, retries and backoff (the executor's own tests cover
them); a call that raises ``RetryableError`` raises here, so that a test says what
the retries came to by giving the outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from saga_runtime.effect_retry import is_retryable
from saga_runtime.effects import Effect, EffectKind, EffectOutcome, Effects
from saga_runtime.effects_schema import UNFINISHED
from saga_runtime.envelope import Envelope
from saga_runtime.faults import CrashPointError
from saga_runtime.system import Service

if TYPE_CHECKING:
    from saga_runtime.testing import RecordingUnitOfWorkFactory

__all__ = ["EffectSettler", "UndeclaredEffectEventError"]


class UndeclaredEffectEventError(AssertionError):
    """A decision about an effect emitted an event its declaration does not list."""


class EffectSettler:
    """One service's effects table, read and settled by hand (see the module docstring)."""

    def __init__(
        self,
        service: Service,
        units: RecordingUnitOfWorkFactory,
        dependencies: Mapping[str, object] | None,
    ) -> None:
        self.service = service
        self.units = units
        kinds = service.effect_kinds(dependencies)
        self.store: Effects | None = Effects(schema=service.name, kinds=kinds) if kinds else None
        table = sql.Identifier(service.name, "effects")
        columns = (
            "id, aggregate_id, kind, idempotency_key, request, attempts, correlation_id, status"
        )
        self._select = sql.SQL(
            "SELECT " + columns + " FROM {} WHERE id = ANY(%s) ORDER BY id"
        ).format(table)
        unfinished = sql.SQL(", ").join(sql.Literal(s) for s in UNFINISHED)
        self._heads = sql.SQL(
            "SELECT DISTINCT ON (aggregate_id) " + columns + " FROM {} WHERE status IN ({})"
            " ORDER BY aggregate_id, id"
        ).format(table, unfinished)
        self._all = sql.SQL("SELECT kind, idempotency_key, status FROM {} ORDER BY id").format(
            table
        )
        self._decided = sql.SQL(
            "UPDATE {} SET status = %s, outcome = %s, last_error = %s, attempts = attempts + %s,"
            " decided_at = now(), updated_at = now() WHERE id = %s"
        ).format(table)

    @property
    def conn(self) -> psycopg.Connection:
        return self.units.conn

    def by_ids(self, ids: list[int]) -> tuple[Effect, ...]:
        if not ids:
            return ()
        return tuple(_effect(row) for row in self.conn.execute(self._select, (ids,)))

    def table(self) -> list[tuple[str, str, str]]:
        """(kind, key, status) of every effect in the table, in the order requested."""
        if self.store is None:
            return []
        return [(str(k), str(key), str(st)) for k, key, st in self.conn.execute(self._all)]

    def due(self) -> list[Effect]:
        """Each aggregate's oldest unfinished effect, oldest first: what an executor may run."""
        if self.store is None:
            return []
        return sorted((_effect(row) for row in self.conn.execute(self._heads)), key=lambda e: e.id)

    def settle(
        self, effect: Effect | None = None, outcome: EffectOutcome | None = None
    ) -> tuple[Effect, EffectOutcome, tuple[Envelope, ...], tuple[Effect, ...]]:
        """Settle ``effect`` (default: the oldest due one) with ``outcome`` (default: make
        the declared call; a non-retryable exception is a failed outcome). Returns the
        effect, its outcome, what the decision emitted and the effects it requested."""
        if self.store is None:
            raise AssertionError(f"{self.service.name} declares no effects")
        if effect is None:
            due = self.due()
            if not due:
                raise AssertionError(f"{self.service.name} has no unfinished effect to settle")
            effect = due[0]
        kind = self.store.kind(effect.kind)
        called = outcome is None
        if outcome is None:
            outcome = _call(kind, effect)
        with self.units.begin(correlation_id=effect.correlation_id) as uow:
            uow.lock(effect.aggregate_id)
            kind.on_outcome(uow, effect, outcome)
            self._check_declared(effect, [e.event_type for e in uow.emitted])
            status = "done" if outcome.ok else "failed"
            self.conn.execute(
                self._decided,
                (status, Jsonb(outcome.to_json()), outcome.error, int(called), effect.id),
            )
        return effect, outcome, tuple(uow.emitted), self.by_ids(uow.requested)

    def _check_declared(self, effect: Effect, emitted: list[str]) -> None:
        declared = {event.event_type for event in self.service.effects[effect.kind].emits}
        undeclared = [t for t in emitted if t not in declared]
        if undeclared:
            raise UndeclaredEffectEventError(
                f"{self.service.name}: its decision about effect {effect.kind} emitted "
                f"{', '.join(undeclared)}, which its declaration does not list "
                f"(declared: {', '.join(sorted(declared)) or 'nothing'})"
            )


def _call(kind: EffectKind, effect: Effect) -> EffectOutcome:
    try:
        return EffectOutcome(ok=True, result=kind.call(effect.request, effect.key))
    except CrashPointError:
        raise  # a crash, as the executor treats it, not a failed call
    except Exception as exc:
        if is_retryable(exc):
            raise
        return EffectOutcome(ok=False, error=f"{type(exc).__name__}: {exc}")


def _effect(row: tuple[object, ...]) -> Effect:
    return Effect(
        id=int(row[0]),  # type: ignore[call-overload]
        aggregate_id=str(row[1]),
        kind=str(row[2]),
        key=str(row[3]),
        request=dict(row[4]),  # type: ignore[call-overload]
        attempts=int(row[5]),  # type: ignore[call-overload]
        correlation_id=row[6],  # type: ignore[arg-type]
    )
