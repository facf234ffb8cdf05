"""Payments under any interleaving and duplication of one order's events and of the provider's
answers to its effects (hypothesis), and the decisions one by one.

``World`` plays the service as the runtime runs it, without a database: a delivery
applies a reaction's decision (state, events, at most one requested effect, recorded
once per key); the executor runs the oldest unfinished effect, calling the fake
provider with the effect's key, retrying a transient failure up to ``BUDGET``
attempts (its deadline) and then failing it, and the decision about the outcome
is applied like a delivery. An executor may die between a call and its recording
(the call is made again later with the same key), and an operator may retry a
failed effect at any time.

The fake provider keeps a ledger like the real one (idempotent by key, one refund per
charge, voided keys refuse charges) and misbehaves on demand: ``down`` refuses a call
before doing anything, ``lost`` does the work and then loses the answer (a timeout),
``late`` loses a charge request in the network (a timeout too) and lets it reach the
provider only after everything else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.payments import PaymentFailed, PaymentRefunded, PaymentSucceeded
from payments import domain, effects
from payments.domain import (
    Charge,
    Decision,
    Payment,
    ProviderCharge,
    ProviderRefund,
    ProviderVoided,
    Refund,
    RequestKind,
)
from payments.provider import ProviderRejected, ProviderUnavailable
from saga_runtime import EffectOutcome, Event

ORDER = "o-1"
AMOUNT = 1500
BUDGET = 3  # attempts before an effect's deadline

E = TypeVar("E", bound=Event)
Glitch = Literal["ok", "down", "lost", "late"]
Name = Literal["created", "reserved", "cancelled"]
CALLS: dict[str, Callable[..., dict[str, Any]]] = {
    "charge": effects.charge,
    "void": effects.void,
    "refund": effects.refund,
}


@dataclass
class FakeProvider:
    glitches: list[Glitch] = field(default_factory=list)
    charges: dict[str, tuple[Charge, ProviderCharge]] = field(default_factory=dict)
    refunds: dict[str, tuple[Refund, ProviderRefund]] = field(default_factory=dict)
    voided: set[str] = field(default_factory=set)
    in_transit: list[Charge] = field(default_factory=list)
    charge_requests: int = 0

    def _glitch(self) -> Glitch:
        return self.glitches.pop(0) if self.glitches else "ok"

    def charge(self, request: Charge) -> ProviderCharge | ProviderVoided:
        self.charge_requests += 1
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
            answer = ProviderCharge(
                charge_id=f"ch_{len(self.charges) + 1}",
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

    @property
    def kept_cents(self) -> int:
        refunded = sum(answer.amount_cents for _, answer in self.refunds.values())
        return sum(a.amount_cents for a in self.approved) - refunded


@dataclass
class Effect:
    kind: RequestKind
    key: str
    request: dict[str, Any]
    status: Literal["pending", "done", "failed"] = "pending"
    attempts: int = 0
    outcome: EffectOutcome | None = None


def learn(name: Name, card_token: str) -> Callable[[Payment], Decision]:
    if name == "created":
        return lambda p: domain.card_known(p, card_token)
    if name == "reserved":
        return lambda p: domain.amount_known(p, AMOUNT)
    return domain.cancel


@dataclass
class World:
    """One order's payment as the service and its effect executor would run it."""

    provider: FakeProvider
    card_token: str = "tok_visa"
    payment: Payment = field(default_factory=lambda: domain.start(ORDER))
    events: list[Event] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    delivered: set[Name] = field(default_factory=set)

    def apply(self, decide: Callable[[Payment], Decision]) -> Decision:
        """One transaction: the decision's state, events and effect, committed together."""
        decision = decide(self.payment)
        if decision.request is not None:
            kind, key, request = effects.requested(decision.request)
            assert not (kind == "charge" and self.payment.cancelled), "a charge after cancel"
            if all(e.key != key for e in self.effects):  # requested again: recorded once
                self.effects.append(Effect(kind, key, request))
        self.payment = decision.payment
        self.events += decision.events
        return decision

    def deliver(self, name: Name) -> None:
        self.apply(learn(name, self.card_token))
        self.delivered.add(name)

    def run(self, *, crash_after_call: bool = False) -> bool:
        """Run the oldest unfinished effect once; False when there is none."""
        due = [e for e in self.effects if e.status == "pending"]
        if not due:
            return False
        effect = due[0]
        effect.attempts += 1
        try:
            result = CALLS[effect.kind](effect.request, effect.key, provider=self.provider)
        except ProviderUnavailable as exc:
            if effect.attempts < BUDGET:
                return True  # retried later, with the same key
            outcome = EffectOutcome(ok=False, error=f"gave up: {exc}")
        except ProviderRejected as exc:
            outcome = EffectOutcome(ok=False, error=str(exc))
        else:
            if crash_after_call:
                return True  # nothing recorded: the lease expires, the call is made again
            outcome = EffectOutcome(ok=True, result=result)
        effect.status, effect.outcome = ("done" if outcome.ok else "failed"), outcome
        self.apply(effects.answered(effect.kind, outcome))
        return True

    def retry_failed(self) -> None:
        """``sagactl effects retry``: back to pending, called again with the same key."""
        for effect in self.effects:
            if effect.status == "failed":
                effect.status, effect.attempts = "pending", 0

    def settle(self) -> None:
        """Everything that follows once the events are in: orders cancels an order whose
        payment failed, the executor runs what is due, late requests land, and an
        operator retries what failed, until nothing is left to do."""
        for _ in range(20):
            if self.of_type(PaymentFailed) and "cancelled" not in self.delivered:
                self.deliver("cancelled")
            while self.run():
                pass
            self.provider.land()
            failed = any(e.status == "failed" for e in self.effects)
            if not failed and not (
                self.of_type(PaymentFailed) and "cancelled" not in self.delivered
            ):
                return
            self.retry_failed()
        raise AssertionError("the payment never settled")

    def of_type(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]


Action = tuple[Literal["deliver", "run", "crash", "retry"], Name]
actions = st.lists(
    st.tuples(
        st.sampled_from(["deliver", "deliver", "run", "run", "crash", "retry"]),
        st.sampled_from(["created", "reserved", "cancelled"]),
    ),
    min_size=1,
    max_size=12,
)
# In runs, so that "the answer was lost, then the provider stayed down" comes up often.
glitches = st.lists(
    st.tuples(st.sampled_from(["ok", "down", "lost", "late"]), st.integers(1, BUDGET)),
    max_size=6,
).map(lambda runs: [glitch for glitch, n in runs for _ in range(n)])
cards = st.sampled_from(["tok_visa", "tok_decline", "tok_insufficient_funds"])


def play(steps: list[Action], provider: FakeProvider, card_token: str) -> World:
    world = World(provider, card_token)
    for action, name in steps:
        if action == "deliver":
            world.deliver(name)
        elif action == "run":
            world.run()
        elif action == "crash":
            world.run(crash_after_call=True)
        else:
            world.retry_failed()
    world.settle()
    return world


@settings(max_examples=500)
@given(actions, glitches, cards)
def test_one_charge_at_most_a_cancelled_order_keeps_nothing_and_every_answer_counts_once(
    steps: list[Action], glitches: list[Glitch], card_token: str
) -> None:
    provider = FakeProvider(glitches=list(glitches))
    world = play(steps, provider, card_token)
    payment = world.payment

    assert len(provider.charges) <= 1, "every charge request uses the order's one key"
    assert len(provider.refunds) <= 1, "one refund at most"
    assert all(
        r.charge_id in {c.charge_id for c in provider.approved}
        for _, r in provider.refunds.values()
    ), "only an approved charge is refunded"
    assert len({e.key for e in world.effects}) == len(world.effects) <= 3

    succeeded, failed = world.of_type(PaymentSucceeded), world.of_type(PaymentFailed)
    refunded = world.of_type(PaymentRefunded)
    assert len(succeeded) + len(failed) <= 1, "one verdict per order"
    assert len(refunded) <= 1
    for event in succeeded:
        assert [event.charge_id] == [c.charge_id for c in provider.approved]
    for refund in refunded:
        assert (refund.charge_id, refund.refund_id) == next(
            (r.charge_id, r.refund_id) for _, r in provider.refunds.values()
        )
    assert payment.waiting_for is None, "nothing left to wait for"

    if payment.cancelled:
        assert provider.kept_cents == 0, "a cancelled order keeps no money"
        if provider.approved:
            assert payment.status == "refunded" and len(refunded) == 1
        else:
            assert payment.status in ("voided", "failed") and not refunded
    elif {"created", "reserved"} <= world.delivered:
        assert len(succeeded) == 1 and payment.status == "charged"
    else:
        assert provider.charge_requests == 0 and not world.events, "nothing to charge yet"

    # An answer decided again (a duplicate, or an operator's retry of a settled effect)
    # changes nothing.
    for effect in world.effects:
        if effect.outcome is not None:
            again = effects.answered(effect.kind, effect.outcome)(payment)
            assert again == Decision(payment), f"{effect.kind} answered again: {again}"


@given(st.permutations(["created", "reserved", "cancelled"]), cards)
def test_cancellation_seen_before_card_and_amount_means_no_charge_nor_call(
    order: list[Name], card_token: str
) -> None:
    world = play([("deliver", name) for name in order], FakeProvider(), card_token)
    if order[-1] != "cancelled":
        assert world.effects == [] and world.events == []
        assert world.payment.status == "voided"


def test_declines_carry_their_reason_code() -> None:
    for card_token, code in (
        ("tok_decline", "payment_declined"),
        ("tok_insufficient_funds", "insufficient_funds"),
    ):
        world = World(FakeProvider(), card_token)
        world.deliver("created")
        world.deliver("reserved")
        world.run()
        [failed] = world.events
        assert isinstance(failed, PaymentFailed) and failed.reason_code == code
        assert world.payment.failure_code == code


def charging() -> Payment:
    """Card and amount known: the charge is asked for and in flight."""
    payment = domain.card_known(domain.start(ORDER), "tok_visa").payment
    decision = domain.amount_known(payment, AMOUNT)
    assert decision.request == Charge(domain.charge_key(ORDER), ORDER, AMOUNT, "tok_visa")
    assert decision.payment.waiting_for == "charge" and decision.events == ()
    return decision.payment


CHARGED = ProviderCharge(charge_id="ch_1", approved=True, amount_cents=AMOUNT)
REFUND = ProviderRefund(refund_id="re_1", charge_id="ch_1", amount_cents=AMOUNT)


def test_a_cancellation_while_the_charge_is_in_flight_waits_for_it_then_refunds() -> None:
    cancelled = domain.cancel(charging())
    assert cancelled.request is None, "no second request while the charge is in flight"
    assert cancelled.payment.waiting_for == "charge" and cancelled.payment.cancelled

    answered = domain.charge_answered(cancelled.payment, CHARGED)
    assert [type(e) for e in answered.events] == [PaymentSucceeded]
    assert answered.request == Refund(domain.refund_key(ORDER), "ch_1", AMOUNT)
    done = domain.refunded(answered.payment, REFUND)
    assert (done.payment.status, done.payment.refund_id) == ("refunded", "re_1")
    assert [type(e) for e in done.events] == [PaymentRefunded] and done.request is None


def test_a_charge_that_failed_for_good_is_voided_on_cancellation_and_refunded_if_found() -> None:
    failed = domain.charge_failed(charging(), "no answer")
    [verdict] = failed.events
    assert isinstance(verdict, PaymentFailed) and verdict.reason_code == "payment_provider_error"
    assert failed.request is None, "nothing to undo before the order is cancelled"

    cancelled = domain.cancel(failed.payment)
    assert cancelled.request == domain.VoidCharge(domain.void_key(ORDER), domain.charge_key(ORDER))

    nothing = domain.voided(cancelled.payment, ProviderVoided(domain.charge_key(ORDER)))
    assert (nothing.payment.status, nothing.events, nothing.request) == ("voided", (), None)

    found = domain.voided(cancelled.payment, CHARGED)
    assert (found.payment.status, found.payment.charge_id) == ("charged", "ch_1")
    assert found.events == (), "the order heard PaymentFailed: no second verdict"
    assert found.request == Refund(domain.refund_key(ORDER), "ch_1", AMOUNT)


def test_a_refund_that_failed_for_good_keeps_the_payment_waiting_until_it_is_retried() -> None:
    charged = domain.charge_answered(charging(), CHARGED).payment
    refunding = domain.cancel(charged)
    assert isinstance(refunding.request, Refund)

    gave_up = effects.answered("refund", EffectOutcome(ok=False, error="gave up"))
    stuck = gave_up(refunding.payment)
    assert stuck == Decision(refunding.payment), "no event, no new request"
    assert stuck.payment.waiting_for == "refund", "visibly waiting for the refund"

    # The operator retries the effect: the same key, and its answer decided as any other.
    result = {"refund_id": "re_1", "charge_id": "ch_1", "amount_cents": AMOUNT}
    retried = effects.answered("refund", EffectOutcome(ok=True, result=result))
    done = retried(stuck.payment)
    assert done.payment.status == "refunded" and len(done.events) == 1
    assert retried(done.payment) == Decision(done.payment), "refunded once"


def test_answers_to_requests_the_payment_moved_past_change_nothing() -> None:
    refunding = domain.cancel(domain.charge_answered(charging(), CHARGED).payment).payment
    refunded = domain.refunded(refunding, REFUND).payment
    assert refunded.status == "refunded"
    # A void's answer (the charge found) after the refund does not make it charged again.
    for late in (
        domain.voided(refunded, CHARGED),
        domain.charge_answered(refunded, CHARGED),
        domain.charge_failed(refunded, "late"),
        domain.refunded(refunded, REFUND),
    ):
        assert late == Decision(refunded)

    # An operator retried the charge that failed, after the void had fenced its key.
    failed = domain.charge_failed(charging(), "no answer").payment
    fenced = domain.voided(domain.cancel(failed).payment, ProviderVoided("k")).payment
    assert domain.charge_answered(fenced, ProviderVoided("k")) == Decision(fenced)
    # ... or before the order was cancelled: the void that follows finds the charge.
    assert domain.charge_answered(failed, CHARGED) == Decision(failed)


def test_a_redelivered_fact_asks_for_nothing_again() -> None:
    payment = charging()
    assert domain.amount_known(payment, AMOUNT) == Decision(payment)
    assert domain.card_known(payment, "tok_visa") == Decision(payment)
    cancelled = domain.cancel(payment).payment
    assert domain.cancel(cancelled) == Decision(cancelled)


def test_a_crash_between_the_charge_and_its_recording_charges_once() -> None:
    world = World(FakeProvider())
    world.deliver("created")
    world.deliver("reserved")
    assert world.run(crash_after_call=True)
    assert world.events == [] and len(world.provider.approved) == 1, "charged, not recorded"
    world.run()
    assert world.provider.charge_requests == 2, "asked twice"
    assert len(world.provider.charges) == 1, "charged once"
    [succeeded] = world.events
    assert isinstance(succeeded, PaymentSucceeded)
    assert succeeded.charge_id == world.provider.approved[0].charge_id


def test_a_charge_still_in_transit_when_it_failed_is_refused_when_it_lands() -> None:
    world = World(FakeProvider(glitches=["late"] * BUDGET))
    world.deliver("created")
    world.deliver("reserved")
    while world.run():
        pass
    assert [type(e) for e in world.events] == [PaymentFailed]
    world.deliver("cancelled")
    while world.run():
        pass
    world.provider.land()
    assert world.provider.in_transit == [] and world.provider.charges == {}, "landed, refused"
    assert world.payment.status == "voided"


def test_a_charge_refused_as_voided_is_not_charged_and_emits_nothing() -> None:
    # Only a void fences a key, after the charge's answer; a payment from before effects
    # (a cancellation that voided the key and rolled back) can still meet one.
    refused = domain.charge_answered(charging(), ProviderVoided(domain.charge_key(ORDER)))
    assert (refused.payment.status, refused.events, refused.request) == ("voided", (), None)
    cancelled = domain.cancel(refused.payment)
    assert (cancelled.payment.status, cancelled.payment.cancelled) == ("voided", True)
    assert (cancelled.events, cancelled.request) == ((), None)
