"""An order placed with an internationalized address and name is mailed, end to end.

Through the orders API, the saga, the notifications service and the SMTP sink,
each a separate process; the audit then finds every order notified.
"""

from __future__ import annotations

import httpx
import pytest

from saga_harness.system import System
from simulators.smtp_sink import read_mail

pytestmark = pytest.mark.e2e


def mails_for(system: System, order_id: str) -> list[dict]:  # type: ignore[type-arg]
    mails = read_mail(system.mail_file)
    return [m for m in mails if order_id in (m.get("message_id") or "")]


@pytest.mark.parametrize(
    ("email", "recorded"),
    [
        ("zoë.ångström@bücher.de", "zoë.ångström@xn--bcher-kva.de"),  # SMTPUTF8 and IDNA
        ("ada@bücher.de", "ada@xn--bcher-kva.de"),  # IDNA only
    ],
)
def test_an_internationalized_customer_is_told_and_the_audit_is_clean(
    system: System, http: httpx.Client, email: str, recorded: str
) -> None:
    address = {
        "name": "Zoë Ångström",
        "line1": "Hauptstraße 5",
        "city": "München",
        "postal_code": "80331",
        "country": "DE",
    }
    placed = system.place_order(http, email=email, shipping_address=address)
    order = system.wait_for_order(http, placed["order_id"], ["SHIPPED", "CANCELLED"])
    assert order["status"] == "SHIPPED", order

    violations = system.wait_quiet()
    assert violations == [], "\n".join(map(str, violations))
    mails = mails_for(system, placed["order_id"])
    assert sorted(m["message_id"].split(".")[1].split("@")[0] for m in mails) == [
        "order_approved",
        "order_shipped",
    ]
    assert all(m["to"] == [recorded] for m in mails)
    [approval] = [m for m in mails if "order_approved" in m["message_id"]]
    assert "  Zoë Ångström\n  Hauptstraße 5\n  80331 München\n" in approval["body"]
