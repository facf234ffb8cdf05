"""Every path of the order saga on the real stack, each service a separate process.

Each test ends with the invariant checker over all services' data and the
provider's ledger.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from saga_harness.bench.load import open_loop
from saga_harness.bench.saga import order_body
from saga_harness.chaos.driver import OrderDriver
from saga_harness.chaos.harness import _restock
from saga_harness.system import REPO, System
from saga_system import SYSTEM
from sagactl.cli import system_logins
from simulators.smtp_sink import read_mail

pytestmark = pytest.mark.e2e


def timeline(order: dict) -> list[str]:  # type: ignore[type-arg]
    return [entry["event_type"] for entry in order["timeline"]]


def stock_of(system: System, http: httpx.Client, sku: str) -> dict:  # type: ignore[type-arg]
    return dict(http.get(f"{system.stock_url}/stock/{sku}").json())


def charges_for(system: System, order_id: str) -> tuple[int, int]:
    charges, refunds = system.ledger()
    mine = {c.charge_id for c in charges if c.order_id == order_id}
    return len(mine), sum(1 for r in refunds if r.charge_id in mine)


def mail_kinds(system: System, order_id: str) -> list[str]:
    kinds = []
    for mail in read_mail(system.mail_file):
        if order_id in (mail.get("message_id") or ""):
            kinds.append(mail["message_id"].split(".")[1].split("@")[0])
    return sorted(kinds)


def settle(system: System) -> None:
    violations = system.wait_quiet()
    assert violations == [], "\n".join(map(str, violations))


def test_happy_order_is_priced_charged_shipped_and_announced(system: System, http: httpx.Client):
    before = stock_of(system, http, "KEYB-01")
    placed = system.place_order(http)
    order = system.wait_for_order(http, placed["order_id"], ["SHIPPED", "CANCELLED"])

    assert order["status"] == "SHIPPED", order
    assert order["total_cents"] == 8_900 + 2 * 1_200
    assert {(line["sku"], line["unit_price_cents"]) for line in order["lines"]} == {
        ("KEYB-01", 8_900),
        ("CABLE-C", 1_200),
    }
    settle(system)
    events = timeline(system.wait_for_order(http, placed["order_id"]))
    for expected in (
        "OrderCreated",
        "StockReserved",
        "PaymentSucceeded",
        "OrderApproved",
        "StockSold",
        "ShipmentScheduled",
        "OrderShipped",
    ):
        assert expected in events
    assert (
        events.index("OrderCreated") < events.index("OrderApproved") < events.index("OrderShipped")
    )
    assert charges_for(system, placed["order_id"]) == (1, 0)
    after = stock_of(system, http, "KEYB-01")
    assert (after["on_hand"], after["sold"]) == (before["on_hand"] - 1, before["sold"] + 1)
    assert mail_kinds(system, placed["order_id"]) == ["order_approved", "order_shipped"]


def test_every_process_logs_in_as_its_own_database_role(system: System, http: httpx.Client):
    """No service or relay session runs as the admin: each is its own login role's."""
    placed = system.place_order(http)
    system.wait_for_order(http, placed["order_id"])
    database = system.database_url.rsplit("/", 1)[-1]
    with psycopg.connect(system.database_url, autocommit=True) as conn:
        sessions = conn.execute(
            "SELECT application_name, usename FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    outboxes = SYSTEM.outboxes()
    expected = {}
    for application, user in sessions:
        process, _, part = application.partition(":")
        if process in SYSTEM.names:
            expected[application] = (user, f"{database}_{process}")
        elif process.startswith("relay-"):
            outbox = part.split(":")[0] if part.split(":")[0] in outboxes else outboxes[0]
            expected[application] = (user, f"{database}_{outbox}_relay")
    assert all(user == login for user, login in expected.values()), expected
    logins = {login for _, login in expected.values()}
    assert logins == {f"{database}_{login}" for login in system_logins()}, sessions


def test_out_of_stock_order_is_cancelled_and_nothing_is_charged(system: System, http: httpx.Client):
    placed = system.place_order(http, items=[{"sku": "LAMP-01", "quantity": 50}])
    order = system.wait_for_order(http, placed["order_id"])
    assert (order["status"], order["reason_code"]) == ("CANCELLED", "out_of_stock")
    assert "LAMP-01" in order["reason"]
    settle(system)
    assert charges_for(system, placed["order_id"]) == (0, 0)
    assert mail_kinds(system, placed["order_id"]) == ["order_cancelled"]


def test_unknown_sku_is_cancelled(system: System, http: httpx.Client):
    placed = system.place_order(http, items=[{"sku": "NO-SUCH-SKU", "quantity": 1}])
    order = system.wait_for_order(http, placed["order_id"])
    assert (order["status"], order["reason_code"]) == ("CANCELLED", "unknown_sku")
    settle(system)


def test_declined_card_cancels_and_releases_the_reservation(system: System, http: httpx.Client):
    before = stock_of(system, http, "MON-27")
    placed = system.place_order(
        http, items=[{"sku": "MON-27", "quantity": 2}], payment={"card_token": "tok_decline"}
    )
    order = system.wait_for_order(http, placed["order_id"])
    assert (order["status"], order["reason_code"]) == ("CANCELLED", "payment_declined")
    settle(system)
    assert "StockReleased" in timeline(system.wait_for_order(http, placed["order_id"]))
    after = stock_of(system, http, "MON-27")
    assert (after["on_hand"], after["reserved"]) == (before["on_hand"], before["reserved"])
    assert charges_for(system, placed["order_id"]) == (0, 0)


def test_cancellation_after_payment_refunds_and_restocks(system: System, http: httpx.Client):
    before = stock_of(system, http, "HEAD-01")
    placed = system.place_order(http, items=[{"sku": "HEAD-01", "quantity": 1}])
    system.wait_for_order(http, placed["order_id"], ["APPROVED"])
    customer = system.tokens.customer(placed["customer_id"])
    response = http.post(
        f"{system.orders_url}/orders/{placed['order_id']}/cancel", headers=customer
    )
    assert response.status_code == 202, response.text

    order = system.wait_for_order(http, placed["order_id"])
    assert (order["status"], order["reason_code"]) == ("CANCELLED", "customer_request")
    settle(system)
    events = timeline(system.wait_for_order(http, placed["order_id"]))
    assert "PaymentRefunded" in events and "StockRestocked" in events
    assert charges_for(system, placed["order_id"]) == (1, 1)
    after = stock_of(system, http, "HEAD-01")
    assert after["on_hand"] == before["on_hand"]
    cancel = f"{system.orders_url}/orders/{placed['order_id']}/cancel"
    customer = system.tokens.customer(placed["customer_id"])
    assert http.post(cancel, headers=customer).status_code == 409


def test_cancelling_a_shipped_order_is_refused(system: System, http: httpx.Client):
    placed = system.place_order(http, items=[{"sku": "MOUSE-01", "quantity": 1}])
    system.wait_for_order(http, placed["order_id"], ["SHIPPED"])
    cancel = f"{system.orders_url}/orders/{placed['order_id']}/cancel"
    customer = system.tokens.customer(placed["customer_id"])
    assert http.post(cancel, headers=customer).status_code == 409
    settle(system)


def test_shipment_failure_after_approval_refunds_and_restocks(system: System, http: httpx.Client):
    address = {
        "name": "Ana",
        "line1": "Rua 1",
        "city": "Rio",
        "postal_code": "20000",
        "country": "BR",
    }
    placed = system.place_order(
        http, items=[{"sku": "CABLE-C", "quantity": 3}], shipping_address=address
    )
    order = system.wait_for_order(http, placed["order_id"])
    assert (order["status"], order["reason_code"]) == ("CANCELLED", "shipment_failed")
    settle(system)
    events = timeline(system.wait_for_order(http, placed["order_id"]))
    assert {"OrderApproved", "ShipmentFailed", "PaymentRefunded", "StockRestocked"} <= set(events)
    assert charges_for(system, placed["order_id"]) == (1, 1)


def test_pending_order_past_its_deadline_is_cancelled_and_a_late_charge_refunded(
    system: System, http: httpx.Client
):
    # The provider answers tok_slow after 13 s; the deadline is 10 s.
    placed = system.place_order(http, payment={"card_token": "tok_slow"})
    order = system.wait_for_order(http, placed["order_id"], timeout=40)
    assert (order["status"], order["reason_code"]) == ("CANCELLED", "timeout")
    settle(system)
    charged, refunded = charges_for(system, placed["order_id"])
    assert charged == refunded, "a charge that landed after the deadline is refunded"


def test_the_readme_demo_script_runs_every_path(system: System):
    env = {
        **system.env,
        "ORDERS_URL": system.orders_url,
        "STOCK_URL": system.stock_url,
        "PROVIDER_URL": system.provider_url,
        "PYTHON": sys.executable,
        "SAGACTL": f"{sys.executable} -m sagactl",
    }
    result = subprocess.run(
        ["bash", "scripts/demo.sh"], env=env, cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert "'status': 'SHIPPED'" in out
    assert "'reason_code': 'out_of_stock'" in out
    assert "'reason_code': 'payment_declined'" in out
    assert "'reason_code': 'customer_request'" in out and "payments/PaymentRefunded" in out
    settle(system)


def test_the_harness_clients_carry_their_tokens(system: System, http: httpx.Client):
    """The bench's load generator, the chaos driver (orders, cancellations) and the chaos
    restock call the secured APIs as their customers and as an operator."""
    url = f"{system.orders_url}/orders"
    as_customer = lambda body: system.tokens.customer(body["customer_id"])  # noqa: E731
    load = asyncio.run(
        open_loop(url, order_body, rate=4, duration=1, seed=3, authorize=as_customer)
    )
    assert (len(load.submitted), load.rejected) == (4, {})
    anonymous = asyncio.run(open_loop(url, order_body, rate=2, duration=1, seed=3))
    assert anonymous.rejected == {"HTTP 401": 2}

    driver = OrderDriver(system=system, rng=random.Random(1), rate=1.0)
    with httpx.Client(timeout=10) as client:
        driver._place(client, "happy", 0.0)
    [(order_id, kind)] = driver.accepted.items()
    assert driver.refused == {}
    driver._cancel(order_id, f"chaos-{kind}")
    assert system.wait_for_order(http, order_id)["status"] == "CANCELLED"

    restocked = f"{system.stock_url}/stock/MOUSE-01"
    low = http.put(restocked, json={"on_hand": 5}, headers=system.tokens.operator())
    assert low.status_code == 200, low.text
    _restock(system)
    assert http.get(restocked).json()["received"] == low.json()["received"] + 100
    settle(system)


def test_no_secret_or_token_is_ever_logged(system: System, http: httpx.Client):
    headers = system.tokens.customer("c-logged")
    token = headers["Authorization"].removeprefix("Bearer ")
    placed = system.place_order(http, customer_id="c-logged")
    assert http.get(f"{system.orders_url}/orders/{placed['order_id']}", headers=headers).is_success
    http.get(f"{system.orders_url}/orders", headers={"Authorization": "Bearer forged." + token})
    system.wait_for_order(http, placed["order_id"])
    secrets = [system.env[n] for n in ("AUTH_JWT_SECRET", "PROVIDER_API_KEY")] + [token]
    # And every database login's password, which only its own processes are given.
    passwords = {
        value
        for process in system.processes.values()
        for name, value in process.env.items()
        if name.startswith("DATABASE_PASSWORD_")
    }
    assert len(passwords) == 2 * len(SYSTEM.names)
    secrets += sorted(passwords)
    # The superuser's, which the provider and sagactl get in their URL: the local server's is
    # generated (a container's may be a word such as 'postgres', which logs do contain).
    admin = urlsplit(system.database_url).password
    secrets += [admin] if admin and len(admin) >= 20 else []
    logs = {p.name: p.read_text(errors="replace") for p in system.log_dir.glob("*.log")}
    assert {"orders.log", "payments.log", "provider.log"} <= set(logs)
    for name, text in logs.items():
        for secret in secrets:
            assert secret not in text, f"a secret in {name}"
