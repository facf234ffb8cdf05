"""The event envelope: what every event looks like on the wire and in the outbox."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from saga_runtime.errors import InvalidEnvelopeError, PoisonMessageError

__all__ = [
    "HEADER_CORRELATION_ID",
    "HEADER_EVENT_ID",
    "HEADER_EVENT_TYPE",
    "HEADER_TRACEPARENT",
    "Envelope",
    "Event",
    "unstorable_text",
]

_E = TypeVar("_E", bound="Event")

HEADER_EVENT_ID = "event_id"
HEADER_EVENT_TYPE = "event_type"
HEADER_CORRELATION_ID = "correlation_id"
HEADER_TRACEPARENT = "traceparent"  # W3C Trace Context (see saga_runtime.tracing)


def unstorable_text(value: Any) -> str | None:
    """Why PostgreSQL could not store a text inside ``value`` (None: it can).

    Looks into dict keys and values and lists: a NUL character or a lone UTF-16
    surrogate (which has no UTF-8 form) cannot be stored in ``text`` or ``jsonb``.
    """
    if isinstance(value, dict | list | tuple):
        # Every event's payload is checked, as it is written and as it is read, so the
        # common case goes at C speed: JSON writes a NUL as the escape \u0000 (never a
        # raw NUL), and a lone surrogate fails the UTF-8 encoding. Only a value that
        # shows either, or is not plain JSON, is walked, which also says which.
        try:
            text = json.dumps(value, ensure_ascii=False)
            text.encode("utf-8")
        # Not JSON, a lone surrogate (UnicodeEncodeError), or nested deeper than the
        # encoder goes (the walk goes a few levels further, as it always did).
        except (TypeError, ValueError, RecursionError):
            return _walk(value)
        return _walk(value) if "\\u0000" in text else None
    return _walk(value)


def _walk(value: Any) -> str | None:
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
            problem = _walk(key) or _walk(item)
            if problem is not None:
                return problem
    elif isinstance(value, list | tuple):
        for item in value:
            problem = _walk(item)
            if problem is not None:
                return problem
    return None


def _utcnow() -> datetime:
    return datetime.now(UTC)


_UPCASTER_NAME = re.compile(r"upcast_v(\d+)_v(\d+)")


def _upcaster_name(version: int) -> str:
    return f"upcast_v{version}_v{version + 1}"


class Event(BaseModel):
    """Base class of a service's event payloads (its public contract).

    Subclasses set ``event_type`` (a fact in the past tense) and, when the
    payload changes incompatibly, ``schema_version``. Unknown fields are
    ignored so that producers can add fields without breaking consumers.

    ``schema_version`` is one integer major version. A class at version N
    defines one upcaster per step, ``upcast_v1_v2(payload) -> payload`` up to
    ``upcast_v{N-1}_v{N}`` (static or class methods on a dict), so an event
    written by an older producer can still be read; a missing step fails the
    class definition, not a message. ``Envelope.payload_as`` runs the steps
    from the envelope's version to the class's. An envelope newer than the
    class is poison: consumers are deployed before the producers that change
    an event, and an upcaster that fails is poison too.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        # Checked when the class is defined (at import), so a version bump
        # without its upcaster stops the service from starting instead of
        # dead-lettering every old event it later meets.
        super().__pydantic_init_subclass__(**kwargs)
        _check_versioning(cls)


def _check_versioning(cls: type[Event]) -> None:
    version = cls.schema_version
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise TypeError(f"{cls.__name__}.schema_version must be an integer >= 1, not {version!r}")
    missing = [
        _upcaster_name(step)
        for step in range(1, version)
        if not callable(getattr(cls, _upcaster_name(step), None))
    ]
    if missing:
        raise TypeError(
            f"{cls.__name__} is at schema_version {version} but has no {', '.join(missing)}:"
            " every older version must be upcast one step at a time"
        )
    for name in dir(cls):
        match = _UPCASTER_NAME.fullmatch(name)
        # An upcaster beyond the class's version means a bump was forgotten: the
        # producer would send the new shape under the old number.
        if match and not (int(match[2]) == int(match[1]) + 1 <= version):
            raise TypeError(
                f"{cls.__name__}.{name} does not fit schema_version {version}:"
                " upcasters go one version at a time, up to the class's own"
            )


def _upcast(model: type[Event], event_type: str, version: int, payload: Any) -> Any:
    """``payload`` of ``version`` brought to ``model``'s version, step by step."""
    if version == model.schema_version:
        return payload
    state = copy.deepcopy(payload)  # an upcaster may edit in place; the envelope stays as read
    for step in range(version, model.schema_version):
        name = _upcaster_name(step)
        try:
            state = getattr(model, name)(state)
        except Exception as exc:
            raise PoisonMessageError(
                f"{event_type} schema_version {version}: {model.__name__}.{name} failed: {exc!r}"
            ) from exc
        if not isinstance(state, dict):
            raise PoisonMessageError(
                f"{event_type} schema_version {version}: {model.__name__}.{name} returned"
                f" {type(state).__name__}, not a payload dict"
            )
    return state


class Envelope(BaseModel):
    """One event with the metadata every consumer and operator relies on.

    ``aggregate_id`` names the aggregate the event is about and is also the Kafka
    key, so all events of one aggregate land on one partition in the order they
    were committed.
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
    # W3C trace context of the span that emitted the event (``saga_runtime.tracing``):
    # its consumers continue that trace. Absent from envelopes older than tracing.
    traceparent: str | None = Field(default=None, max_length=128)

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("event_type", "aggregate_id", "producer", "payload", "traceparent")
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
        traceparent: str | None = None,
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
            traceparent=traceparent,
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
        headers = [
            (HEADER_EVENT_ID, str(self.event_id).encode()),
            (HEADER_EVENT_TYPE, self.event_type.encode()),
            (HEADER_CORRELATION_ID, str(self.correlation_id).encode()),
        ]
        if self.traceparent is not None:
            headers.append((HEADER_TRACEPARENT, self.traceparent.encode()))
        return headers

    def payload_as(self, model: type[_E]) -> _E:
        """Validate the payload against ``model``; a mismatch is poison, not a retry.

        An older ``schema_version`` is upcast to ``model``'s first (see
        ``Event``); a newer one is poison, since no upcaster can guess a
        future shape.
        """
        known = model.schema_version
        if self.schema_version > known:
            raise PoisonMessageError(
                f"{self.event_type} schema_version {self.schema_version} is newer than this"
                f" service understands ({known}); deploy its consumers before its producer"
            )
        payload = _upcast(model, self.event_type, self.schema_version, self.payload)
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            upcast = (
                f" (upcast from v{self.schema_version} to v{known})"
                if self.schema_version < known
                else ""
            )
            raise PoisonMessageError(f"invalid {self.event_type} payload{upcast}: {exc}") from exc
