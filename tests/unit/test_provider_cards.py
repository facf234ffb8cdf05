"""Which provider cards may be charged in one statement: those whose verdict never changes."""

from __future__ import annotations

import pytest

from simulators.payment_provider.processing import (
    LOCKED_CARDS,
    TOKEN_DECLINE,
    TOKEN_ERROR,
    TOKEN_FLAKY,
    TOKEN_INSUFFICIENT_FUNDS,
    TOKEN_SLOW,
    verdict,
)


@pytest.mark.parametrize(
    "card_token", ["tok_visa", TOKEN_DECLINE, TOKEN_INSUFFICIENT_FUNDS, "tok_anything"]
)
def test_a_card_outside_the_locked_ones_has_one_verdict_on_every_attempt_and_a_charge(
    card_token: str,
) -> None:
    assert card_token not in LOCKED_CARDS
    verdicts = {verdict(card_token, attempt) for attempt in range(1, 6)}
    assert len(verdicts) == 1 and verdicts != {"unavailable"}


def test_the_cards_whose_verdict_depends_on_the_attempt_or_that_think_are_locked() -> None:
    assert {verdict(TOKEN_FLAKY, 1), verdict(TOKEN_FLAKY, 2)} == {"unavailable", "approve"}
    assert verdict(TOKEN_ERROR, 3) == "unavailable"
    assert {TOKEN_ERROR, TOKEN_FLAKY, TOKEN_SLOW} == LOCKED_CARDS
