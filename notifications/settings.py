"""Settings of the notifications service."""

from __future__ import annotations

from pydantic import AliasChoices, Field, PositiveFloat, PositiveInt, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from notifications.errors import DeliveryRejected
from notifications.handlers import DELIVERY_DEADLINE
from notifications.message import MailAddress
from saga_runtime import ServiceSettings


class NotificationsSettings(ServiceSettings):
    """``NOTIFICATIONS_SMTP_HOST``/``_PORT`` (the SMTP sink by default), ``NOTIFICATIONS_FROM``.

    ``NOTIFICATIONS_WEBHOOK_URL`` turns the webhook channel on; it then needs
    ``NOTIFICATIONS_WEBHOOK_SECRET`` to sign the requests. While rotating it,
    ``NOTIFICATIONS_WEBHOOK_PREVIOUS_SECRET`` adds a second ``v1`` signature
    with the old secret, so receivers can switch at their own pace.

    Sends are effects: ``NOTIFICATIONS_DELIVERY_DEADLINE`` (seconds) is how long
    each channel's send is retried through an outage before it fails for good;
    ``EFFECTS_CONCURRENCY`` how many go at once, over at most
    ``NOTIFICATIONS_SMTP_CONNECTIONS`` SMTP connections.
    """

    model_config = SettingsConfigDict(env_prefix="NOTIFICATIONS_", extra="ignore")

    # No HTTP API: /healthz and /readyz on a port of their own (0: none).
    health_port: int = Field(default=8023, ge=0, le=65535)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=2525, ge=1, le=65535)
    smtp_timeout: PositiveFloat = 10.0
    smtp_connections: PositiveInt = 8
    sender: str = Field(
        default="Saga Shop <orders@saga-outbox.local>",
        validation_alias=AliasChoices("NOTIFICATIONS_FROM", "sender"),
    )
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_previous_secret: SecretStr | None = None
    webhook_timeout: PositiveFloat = Field(default=5.0, le=30.0)
    delivery_deadline: PositiveFloat = DELIVERY_DEADLINE.total_seconds()

    @field_validator("sender")
    @classmethod
    def _sender_is_a_mailbox(cls, value: str) -> str:
        # Refuse a sender that could never be sent at startup, not on every message.
        try:
            MailAddress.parse(value).addr_spec  # noqa: B018 - it raises if it cannot be written
        except DeliveryRejected as exc:
            raise ValueError(f"NOTIFICATIONS_FROM is not a usable address: {exc}") from None
        return value

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value
