"""Payments under any interleaving, duplication and rollback of one order's events (hypothesis).

The fake provider keeps a ledger like the real one (idempotent by key, one
refund per charge, voided keys refuse charges) and misbehaves on demand:
``down`` refuses a call before doing anything, ``lost`` does the work and then
loses the answer (a timeout), ``late`` loses a charge request in the network
(a timeout too) and lets it reach the provider only after every delivery is
done. A delivery may also be rolled back after its handler ran (a crash before
commit) and redelivered later, after other events.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.payments import PaymentFailed, PaymentRefunded, PaymentSucceeded
from payments import domain
from payments.domain import (
    Charge,
    Payment,
    ProviderCharge,
    ProviderRefund,
    ProviderVoided,
    Refund,
)
from payments.handlers import settle
from payments.provider import ProviderRejected, ProviderUnavailable, RetryPolicy
from saga_runtime import Event

ORDER = "o-1"
AMOUNT = 1500
RETRY = RetryPolicy(attempts=3, backoff=0.0, sleep=lambda _seconds: None)

E = TypeVar("E", bound=Event)
Glitch = Literal["ok", "down", "lost", "late"]
Name = Literal["created", "reserved", "cancelled"]


@dataclass
class FakeProvider:
    glitches: list[Glitch] = field(default_factory=list)
    charges: dict[str, tuple[Charge, ProviderCharge]] = field(default_factory=dict)
    refunds: dict[str, tuple[Refund, ProviderRefund]] = field(default_factory=dict)
    voided: set[str] = field(default_factory=set)
    in_transit: list[Charge] = field(default_factory=list)
    charge_requests: int = 0
    charges_after_cancel: int = 0
    cancel_seen: bool = False

    def _glitch(self) -> Glitch:
        return self.glitches.pop(0) if self.glitches else "ok"

    def charge(self, request: Charge) -> ProviderCharge | ProviderVoided:
        self.charge_requests += 1
        if self.cancel_seen:
            self.charges_after_cancel += 1
        glitch = self._glitch()
        if glitch == "down":
            raise ProviderUnavailable("503")
        if glitch == "late":
            self.in_transit.append(request)
            raise ProviderUnavailable("read timeout")
        return self._charge(request, lost=glitch == "lost")

    def land(self) -> None:
        """The requests lost in the network reach the provider at last (nobody hears back)."""
        while self.in_transit:
            with contextlib.suppress(ProviderUnavailable):
                self._charge(self.in_transit.pop(0), lost=True)

    def _charge(self, request: Charge, *, lost: bool) -> ProviderCharge | ProviderVoided:
        if request.idempotency_key in self.voided:
            if lost:
                raise ProviderUnavailable("read timeout")
            return ProviderVoided(request.idempotency_key)
        if request.idempotency_key in self.charges:
            original, answer = self.charges[request.idempotency_key]
            if original != request:
                raise ProviderRejected("409: key reused for another charge")
        else:
            n = len(self.charges) + 1
            answer = ProviderCharge(
                charge_id=f"ch_{n}",
                approved=request.card_token not in ("tok_decline", "tok_insufficient_funds"),
                amount_cents=request.amount_cents,
                decline_code="insufficient_funds"
                if request.card_token == "tok_insufficient_funds"
                else "card_declined",
                reason="declined",
            )
            self.charges[request.idempotency_key] = (request, answer)
        if lost:
            raise ProviderUnavailable("read timeout")
        return answer

    def void_charge(self, idempotency_key: str) -> ProviderCharge | ProviderVoided:
        glitch = self._glitch()
        if glitch in ("down", "late"):
            raise ProviderUnavailable("503")
        found = self.charges.get(idempotency_key)
        if found is None:
            self.voided.add(idempotency_key)
        if glitch == "lost":
            raise ProviderUnavailable("read timeout")
        return ProviderVoided(idempotency_key) if found is None else found[1]

    def refund(self, request: Refund) -> ProviderRefund:
        glitch = self._glitch()
        if glitch in ("down", "late"):
            raise ProviderUnavailable("503")
        if request.idempotency_key in self.refunds:
            original, answer = self.refunds[request.idempotency_key]
            if original != request:
                raise ProviderRejected("409: key reused for another refund")
        else:
            approved = [a for _, a in self.charges.values() if a.approved]
            if request.charge_id not in [a.charge_id for a in approved]:
                raise ProviderRejected(f"404/409: no approved charge {request.charge_id}")
            if any(r.charge_id == request.charge_id for r, _ in self.refunds.values()):
                raise ProviderRejected("409: charge already refunded")
            answer = ProviderRefund(f"re_{len(self.refunds) + 1}", request.charge_id, AMOUNT)
            self.refunds[request.idempotency_key] = (request, answer)
        if glitch == "lost":
            raise ProviderUnavailable("read timeout")
        return answer

    @property
    def approved(self) -> list[ProviderCharge]:
        return [a for _, a in self.charges.values() if a.approved]


def learn(name: Name, card_token: str) -> Callable[[Payment], Payment]:
    if name == "created":
        return partial(domain.card_known, card_token=card_token)
    if name == "reserved":
        return partial(domain.amount_known, amount_cents=AMOUNT)
    return domain.cancel


@dataclass
class Outcome:
    state: Payment | None
    committed: list[Event]
    delivered: set[Name]


def run(
    deliveries: list[tuple[Name, bool]], provider: FakeProvider, card_token: str = "tok_visa"
) -> Outcome:
    """Apply deliveries like the runtime: a rolled-back one comes again later, after the rest."""
    state: Payment | None = None
    committed: list[Event] = []
    queue = list(deliveries)
    delivered: set[Name] = set()
    for _ in range(200):
        if not queue:
            provider.land()
            return Outcome(state, committed, delivered)
        name, crash = queue.pop(0)
        current = state or domain.start(ORDER)
        # A charge while a cancellation is being handled, or after one committed, is a bug.
        cancel_seen = provider.cancel_seen
        provider.cancel_seen = cancel_seen or name == "cancelled"
        try:
            new, events = settle(learn(name, card_token)(current), provider, RETRY)
        except ProviderUnavailable:
            provider.cancel_seen = cancel_seen
            queue.append((name, False))  # rolled back; the runtime delivers it again
            continue
        if crash:
            provider.cancel_seen = cancel_seen
            queue.append((name, False))  # the process died before the commit
            continue
        state = new
        committed += events
        delivered.add(name)
    raise AssertionError("the deliveries never settled")


names = st.sampled_from(["created", "reserved", "cancelled"])
deliveries = st.lists(st.tuples(names, st.booleans()), min_size=1, max_size=8)
# In runs, so that "the answer was lost, then the provider stayed down" comes up often.
glitches = st.lists(
    st.tuples(st.sampled_from(["ok", "down", "lost", "late"]), st.integers(1, RETRY.attempts)),
    max_size=6,
).map(lambda runs: [glitch for glitch, n in runs for _ in range(n)])
cards = st.sampled_from(["tok_visa", "tok_decline", "tok_insufficient_funds"])


def of_type(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


@settings(max_examples=400)
@given(deliveries, glitches, cards)
def test_one_charge_at_most_none_after_cancel_refunded_once_if_cancelled(
    deliveries: list[tuple[Name, bool]], glitches: list[Glitch], card_token: str
) -> None:
    provider = FakeProvider(glitches=list(glitches))
    outcome = run(deliveries, provider, card_token)
    state, events = outcome.state, outcome.committed

    assert len(provider.charges) <= 1, "every charge request uses the order's one key"
    assert provider.charges_after_cancel == 0, "never a charge once a cancellation was seen"
    assert len(provider.refunds) <= 1, "one refund at most"
    assert all(
        r.charge_id in {c.charge_id for c in provider.approved}
        for _, r in provider.refunds.values()
    ), "only an approved charge is refunded"

    succeeded, failed = of_type(events, PaymentSucceeded), of_type(events, PaymentFailed)
    refunded = of_type(events, PaymentRefunded)
    assert len(succeeded) + len(failed) <= 1, "one verdict per order"
    assert len(refunded) <= 1
    for event in succeeded:
        assert [event.charge_id] == [c.charge_id for c in provider.approved]
    for refund in refunded:
        assert (refund.charge_id, refund.refund_id) == next(
            (r.charge_id, r.refund_id) for _, r in provider.refunds.values()
        )

    if "cancelled" in outcome.delivered:
        assert state is not None and state.cancelled
        if provider.approved:
            assert len(provider.refunds) == 1, "a cancelled order's charge is refunded"
            assert state.status == "refunded" and len(refunded) == 1
        else:
            assert state.status in ("voided", "failed") and not refunded
        assert domain.next_step(state) is None, "nothing left to do"
    elif {"created", "reserved"} <= outcome.delivered:
        assert len(succeeded) + len(failed) == 1, "an order with card and amount gets a verdict"
        assert state is not None
        assert state.status == ("charged" if succeeded else "failed")
    else:
        assert provider.charge_requests == 0 and not events, "nothing to charge yet"


@given(st.permutations(["created", "reserved", "cancelled"]), cards)
def test_cancellation_seen_before_card_and_amount_means_no_charge(
    order: list[Name], card_token: str
) -> None:
    provider = FakeProvider()
    outcome = run([(name, False) for name in order], provider, card_token)
    if order[-1] != "cancelled":
        assert provider.charge_requests == 0
        assert outcome.state is not None and outcome.state.status == "voided"
        assert outcome.committed == []


def test_declines_carry_their_reason_code() -> None:
    for card_token, code in (
        ("tok_decline", "payment_declined"),
        ("tok_insufficient_funds", "insufficient_funds"),
    ):
        outcome = run([("created", False), ("reserved", False)], FakeProvider(), card_token)
        [failed] = outcome.committed
        assert isinstance(failed, PaymentFailed) and failed.reason_code == code
        assert outcome.state is not None and outcome.state.failure_code == code


def test_a_provider_that_stays_down_fails_the_payment_after_the_attempts() -> None:
    provider = FakeProvider(glitches=["down"] * RETRY.attempts)
    outcome = run([("created", False), ("reserved", False)], provider)
    [failed] = outcome.committed
    assert isinstance(failed, PaymentFailed) and failed.reason_code == "payment_provider_error"
    assert provider.charge_requests == RETRY.attempts and provider.charges == {}


def test_a_charge_whose_answer_was_lost_is_found_and_refunded_when_the_order_is_cancelled() -> None:
    provider = FakeProvider(glitches=["lost", "down", "down"])
    outcome = run([("created", False), ("reserved", False)], provider)
    assert [type(e) for e in outcome.committed] == [PaymentFailed]
    assert len(provider.approved) == 1, "the provider took the money although we never heard"

    state = outcome.state
    assert state is not None
    state, events = settle(domain.cancel(state), provider, RETRY)
    [refund] = of_type(events, PaymentRefunded)
    assert refund.charge_id == provider.approved[0].charge_id
    assert state.status == "refunded"


def test_a_charge_still_in_transit_at_cancellation_is_refused_when_it_lands() -> None:
    # Every attempt is lost in the network: payments fails the payment, then the order is
    # cancelled and the key voided before the requests reach the provider.
    provider = FakeProvider(glitches=["late"] * RETRY.attempts)
    outcome = run([("created", False), ("reserved", False), ("cancelled", False)], provider)
    assert [type(e) for e in outcome.committed] == [PaymentFailed]
    assert provider.in_transit == [] and provider.charges == {}, "landed, and refused"
    assert outcome.state is not None and outcome.state.status == "voided"


def test_a_charge_refused_as_voided_is_not_charged_and_emits_nothing() -> None:
    # The cancellation voided the key, then rolled back; the reservation is redelivered first.
    provider = FakeProvider(voided={domain.charge_key(ORDER)})
    outcome = run([("created", False), ("reserved", False)], provider)
    assert outcome.committed == [] and provider.charges == {}
    assert outcome.state is not None and outcome.state.status == "voided"
    state, events = settle(domain.cancel(outcome.state), provider, RETRY)
    assert (state.status, state.cancelled, events) == ("voided", True, [])


def test_a_crash_after_the_charge_then_a_redelivery_charges_once() -> None:
    provider = FakeProvider()
    outcome = run([("created", False), ("reserved", True)], provider)
    assert provider.charge_requests == 2, "asked twice"
    assert len(provider.charges) == 1, "charged once"
    [succeeded] = outcome.committed
    assert isinstance(succeeded, PaymentSucceeded)
    assert succeeded.charge_id == provider.approved[0].charge_id
