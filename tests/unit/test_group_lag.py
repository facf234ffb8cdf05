"""The harness's consumer-group lag while the broker is still coming back."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaException

from saga_harness.group_lag import GroupLag
from saga_runtime import KafkaSettings


def test_a_topic_the_broker_does_not_know_yet_is_an_error_to_retry_not_a_lag_of_zero() -> None:
    lag = GroupLag(KafkaSettings(bootstrap_servers="127.0.0.1:9", topic_prefix="t-"))
    try:
        lag._admin = SimpleNamespace(list_topics=lambda timeout: SimpleNamespace(topics={}))  # type: ignore[assignment]

        with pytest.raises(KafkaException, match="not known to the broker yet"):
            lag.total()
        assert lag._partitions is None, "a partial partition map must not be kept"
    finally:
        lag.close()
