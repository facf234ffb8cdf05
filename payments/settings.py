"""Settings of the payments service."""

from __future__ import annotations

from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt
from pydantic_settings import SettingsConfigDict

from saga_runtime import ServiceSettings


class PaymentsSettings(ServiceSettings):
    """``PAYMENTS_PROVIDER_URL``: the payment provider; the timeouts bound every call to it.

    A handler asks the provider up to ``PAYMENTS_PROVIDER_ATTEMPTS`` times, waiting
    ``PAYMENTS_PROVIDER_BACKOFF`` seconds (doubling) in between, inside its
    transaction: keep attempts x timeout well under a minute.
    """

    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore")

    provider_url: str = "http://127.0.0.1:8010"
    provider_timeout: PositiveFloat = 5.0
    provider_connect_timeout: PositiveFloat = 2.0
    provider_attempts: PositiveInt = 3
    provider_backoff: NonNegativeFloat = 0.5
    # Consumers in this process (one consumer group: Kafka gives each some of the
    # partitions). Payments waits on the provider inside its handler, so while one
    # waits the others work; more than the topics' partition count would sit idle.
    consumers: PositiveInt = 3
