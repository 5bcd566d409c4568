"""Consent tallies into counts per purpose."""

from __future__ import annotations

from datetime import UTC, datetime

from services.privacy.domain.consent import ConsentAction, ConsentTally
from services.privacy.domain.consent_statistics import summarise
from services.privacy.purpose_catalogue import load_purposes_file
from services.privacy.settings import DEFAULT_PURPOSES_FILE

GRANT = ConsentAction.GRANT

AT = datetime(2026, 11, 22, tzinfo=UTC)


def test_a_purpose_missing_from_the_catalogue_is_left_out() -> None:
    catalogue = load_purposes_file(DEFAULT_PURPOSES_FILE)
    tallies = [ConsentTally("retired", GRANT, 1, 5), ConsentTally("service", GRANT, 1, 7)]
    result = summarise(catalogue, tallies, 7, AT)
    assert [p.purpose_code for p in result.purposes] == list(catalogue.purposes)
    service = result.purposes[0]
    assert (service.granted_members, service.not_given_members) == (7, 0)
    marketing = next(p for p in result.purposes if p.purpose_code == "marketing")
    assert (marketing.granted_members, marketing.not_given_members) == (0, 7)
    assert result.compute_time == AT
