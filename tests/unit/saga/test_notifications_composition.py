"""The notifications composition root: channels and delivery deadline from the settings."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from notifications import bootstrap
from notifications.handlers import DELIVERY_DEADLINE, DeliveryPlan
from notifications.mailer import SmtpMailer
from notifications.settings import NotificationsSettings
from notifications.webhook import WebhookClient
from saga_runtime import ConfigurationError


def test_email_only_unless_a_webhook_is_configured() -> None:
    dependencies = bootstrap.compose(NotificationsSettings()).dependencies
    assert dependencies["delivery_plan"] == DeliveryPlan(("email",), DELIVERY_DEADLINE)
    assert isinstance(dependencies["mailer"], SmtpMailer)
    assert dependencies["webhook"] is None

    hooked = NotificationsSettings(webhook_url="https://hooks.example/saga", webhook_secret="s")
    dependencies = bootstrap.compose(hooked).dependencies
    plan = dependencies["delivery_plan"]
    assert isinstance(plan, DeliveryPlan) and plan.channels == ("email", "webhook")
    assert isinstance(dependencies["webhook"], WebhookClient)


def test_a_webhook_without_a_secret_is_refused_at_startup() -> None:
    with pytest.raises(ConfigurationError, match="NOTIFICATIONS_WEBHOOK_SECRET"):
        bootstrap.compose(NotificationsSettings(webhook_url="https://hooks.example/saga"))


def test_the_delivery_deadline_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert timedelta(hours=1) <= DELIVERY_DEADLINE, "an SMTP outage of minutes only delays mail"
    monkeypatch.setenv("NOTIFICATIONS_DELIVERY_DEADLINE", "900")
    plan = bootstrap.compose(NotificationsSettings()).dependencies["delivery_plan"]
    assert isinstance(plan, DeliveryPlan) and plan.deadline == timedelta(minutes=15)
    monkeypatch.setenv("NOTIFICATIONS_DELIVERY_DEADLINE", "0")
    with pytest.raises(ValidationError, match="delivery_deadline"):
        NotificationsSettings()
