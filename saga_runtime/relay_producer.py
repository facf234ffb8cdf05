"""The relay's Kafka producer: which of its errors fail a row, and which the producer itself."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from saga_runtime.logs import get_logger

__all__ = [
    "RETRIABLE_CODES",
    "ProducerFatalError",
    "discard",
    "is_producer_failure",
    "poll",
    "recorder",
]

log = get_logger(__name__)

# Errors after which the same message may well go through: keep the row pending.
RETRIABLE_CODES = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._PURGE_QUEUE,
    KafkaError._PURGE_INFLIGHT,
}


class ProducerFatalError(Exception):
    """The producer is unusable (a fatal error, e.g. fenced); a new one must be created."""


# Delivery or produce() errors that describe the producer's state, not the row:
# librdkafka reports them with fatal() false (INVALID_PRODUCER_EPOCH for each
# message in flight when the producer was fenced, _FATAL from produce() once it
# has failed), while the real fatal error surfaces as a KafkaException from
# poll(). A row that got one is never marked failed: a new producer republishes it.
_PRODUCER_STATE_CODES = {
    KafkaError._FATAL,
    KafkaError._FENCED,
    KafkaError._GAPLESS_GUARANTEE,
    KafkaError._INCONSISTENT,
    KafkaError._STATE,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.PRODUCER_FENCED,
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    KafkaError.UNKNOWN_PRODUCER_ID,
    KafkaError.INVALID_PRODUCER_ID_MAPPING,
    KafkaError.INVALID_TXN_STATE,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}


def is_producer_failure(err: KafkaError) -> bool:
    """Whether ``err`` says the producer failed (so nothing about the row it reports on)."""
    return bool(err.fatal()) or err.code() in _PRODUCER_STATE_CODES


def poll(producer: Producer, timeout: float) -> None:
    """``producer.poll``, where confluent-kafka raises the producer's fatal errors."""
    try:
        producer.poll(timeout)
    except KafkaException as exc:
        raise ProducerFatalError(str(exc.args[0] if exc.args else exc)) from exc


def discard(producer: Producer) -> None:
    """Drop a producer: nothing still queued in it may be sent, or reported, later."""
    try:
        producer.purge(in_queue=True, in_flight=True, blocking=False)
        producer.flush(0)
    except (KafkaException, RuntimeError) as exc:
        log.debug("relay.producer_discard_failed", error=repr(exc))


def recorder(results: dict[int, KafkaError | None], row_id: int) -> Callable[[Any, Any], None]:
    """The delivery callback of one row (a ``partial``: cheaper to make than a closure)."""
    return partial(_record, results, row_id)


def _record(
    results: dict[int, KafkaError | None], row_id: int, err: KafkaError | None, _msg: Any
) -> None:
    results[row_id] = err
