"""The event envelope: what every event looks like on the wire and in the outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from saga_runtime.errors import InvalidEnvelopeError, PoisonMessageError

__all__ = [
    "HEADER_CORRELATION_ID",
    "HEADER_EVENT_ID",
    "HEADER_EVENT_TYPE",
    "Envelope",
    "Event",
    "unstorable_text",
]

_E = TypeVar("_E", bound="Event")

HEADER_EVENT_ID = "event_id"
HEADER_EVENT_TYPE = "event_type"
HEADER_CORRELATION_ID = "correlation_id"


def unstorable_text(value: Any) -> str | None:
    """Why PostgreSQL could not store a text inside ``value`` (None: it can).

    Looks into dict keys and values and lists: a NUL character or a lone UTF-16
    surrogate (which has no UTF-8 form) cannot be stored in ``text`` or ``jsonb``.
    """
    if isinstance(value, str):
        if "\x00" in value:
            return "contains a NUL character"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (not valid Unicode text)"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = unstorable_text(key) or unstorable_text(item)
            if problem is not None:
                return problem
    elif isinstance(value, list | tuple):
        for item in value:
            problem = unstorable_text(item)
            if problem is not None:
                return problem
    return None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Base class of a service's event payloads (its public contract).

    Subclasses set ``event_type`` (a fact in the past tense) and, when the
    payload changes incompatibly, ``schema_version``. Unknown fields are
    ignored so that producers can add fields without breaking consumers.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1


class Envelope(BaseModel):
    """One event with the metadata every consumer and operator relies on.

    ``aggregate_id`` is the order id and also the Kafka key, so all events of
    one order land on one partition in the order they were committed.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: UUID = Field(default_factory=uuid4)
    event_type: str = Field(min_length=1, max_length=200)
    schema_version: int = Field(default=1, ge=1)
    occurred_at: AwareDatetime = Field(default_factory=_utcnow)
    aggregate_id: str = Field(min_length=1, max_length=200)
    correlation_id: UUID
    causation_id: UUID | None = None
    producer: str = Field(min_length=1, max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("event_type", "aggregate_id", "producer", "payload")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        # Every text of an event ends up in PostgreSQL (inbox, state, outbox, dead
        # letters), which cannot hold NUL or a lone surrogate: such an event is
        # poison here, not a database error later in the handler's transaction.
        problem = unstorable_text(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @classmethod
    def new(
        cls,
        event: Event,
        *,
        aggregate_id: str,
        producer: str,
        correlation_id: UUID | None = None,
        cause: Envelope | None = None,
    ) -> Self:
        """Wrap ``event``; when it was caused by another event, inherit its saga.

        The correlation id is taken, in order, from the argument, from the
        cause, or freshly made (the event starts a new saga).
        """
        if correlation_id is None:
            correlation_id = cause.correlation_id if cause is not None else uuid4()
        return cls(
            event_type=event.event_type,
            schema_version=event.schema_version,
            aggregate_id=aggregate_id,
            correlation_id=correlation_id,
            causation_id=cause.event_id if cause is not None else None,
            producer=producer,
            payload=event.model_dump(mode="json"),
        )

    def to_bytes(self) -> bytes:
        """Serialize to the JSON bytes published to Kafka."""
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> Self:
        """Parse wire bytes; anything that is not a valid envelope is poison."""
        if not data:
            raise InvalidEnvelopeError("empty message value")
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise InvalidEnvelopeError(f"invalid envelope: {exc}") from exc

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """Headers that let tools route and trace without parsing the value."""
        return [
            (HEADER_EVENT_ID, str(self.event_id).encode()),
            (HEADER_EVENT_TYPE, self.event_type.encode()),
            (HEADER_CORRELATION_ID, str(self.correlation_id).encode()),
        ]

    def payload_as(self, model: type[_E]) -> _E:
        """Validate the payload against ``model``; a mismatch is poison, not a retry."""
        try:
            return model.model_validate(self.payload)
        except ValidationError as exc:
            raise PoisonMessageError(f"invalid {self.event_type} payload: {exc}") from exc
