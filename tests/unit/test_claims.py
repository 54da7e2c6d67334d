"""Event ids claimed within the dedupe horizon."""

from __future__ import annotations

from stream.state.claims import EventClaims

HORIZON = 1_000_000


def test_a_claim_holds_while_its_time_is_within_the_horizon() -> None:
    claims = EventClaims(HORIZON)
    claims.claim("a", 5_000_000, watermark=5_000_000)

    assert claims.is_claimed("a", 6_000_000)
    assert not claims.is_claimed("a", 6_000_001)
    assert not claims.is_claimed("b", 5_000_000)


def test_a_claim_already_outside_the_horizon_is_not_kept() -> None:
    claims = EventClaims(HORIZON)
    claims.claim("a", 1_000_000, watermark=3_000_000)

    assert len(claims) == 0
    assert not claims.is_claimed("a", 3_000_000)


def test_claims_are_forgotten_once_their_minute_has_left_the_horizon() -> None:
    claims = EventClaims(HORIZON)
    claims.claim("a", 120_000, watermark=120_000)
    claims.claim("b", 150_000, watermark=150_000)
    claims.claim("c", 180_000, watermark=180_000)

    claims.expire(180_000 + HORIZON)

    assert len(claims) == 1
    assert claims.is_claimed("c", 180_000 + HORIZON)


def test_a_newer_claim_of_a_forgotten_id_survives_the_old_one_expiring() -> None:
    claims = EventClaims(HORIZON)
    claims.claim("a", 0, watermark=0)
    claims.claim("a", 2_000_000, watermark=2_000_000)

    claims.expire(2_500_000)

    assert claims.is_claimed("a", 2_500_000)
