"""Purposes file: the default set, strict validation with paths, and when consent is stale."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.privacy.domain.consent import CHANNELS
from services.privacy.domain.purpose_catalogue import (
    Notice,
    Purpose,
    PurposesError,
    parse_purposes,
)
from services.privacy.proto import CHANNELS_BY_ENUM
from services.privacy.purpose_catalogue import load_purposes_file
from services.privacy.settings import DEFAULT_PURPOSES_FILE

Doc = dict[str, Any]
DEFAULT_DOC: Doc = tomllib.loads(DEFAULT_PURPOSES_FILE.read_text(encoding="utf-8"))


def test_the_default_file() -> None:
    catalogue = load_purposes_file(DEFAULT_PURPOSES_FILE)
    purposes = catalogue.purposes
    assert list(purposes) == [
        "service",
        "payment_records",
        "marketing",
        "personalization",
        "third_party_sharing",
        "cross_border",
    ]
    assert [c for c, p in purposes.items() if p.necessary] == ["service"]
    separate = {c for c, p in purposes.items() if p.separate_consent}
    assert separate == {"payment_records", "third_party_sharing", "cross_border"}
    assert all(p.current_version == 1 for p in purposes.values())


def test_the_api_and_the_domain_name_the_same_channels() -> None:
    assert sorted(CHANNELS_BY_ENUM.values()) == sorted(CHANNELS)


def _set(key: str, value: object) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        doc["purposes"]["marketing"][key] = value

    return change


def _drop(key: str) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        del doc["purposes"]["marketing"][key]

    return change


def _notices(*notices: object) -> Callable[[Doc], None]:
    return _set("notices", list(notices))


def _rename(code: str) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        doc["purposes"][code] = doc["purposes"].pop("marketing")

    return change


def _necessary_and_separate(doc: Doc) -> None:
    doc["purposes"]["service"]["separate_consent"] = True


BAD: list[tuple[Callable[[Doc], None], str]] = [
    (_set("colour", "blue"), "purposes.marketing.colour"),
    (_drop("legal_basis"), "purposes.marketing.legal_basis"),
    (_set("legal_basis", "legitimate_interest"), "purposes.marketing.legal_basis"),
    (_set("necessary", "yes"), "purposes.marketing.necessary"),
    (_set("separate_consent", 1), "purposes.marketing.separate_consent"),
    (_set("description", ""), "purposes.marketing.description"),
    (_set("description", "x" * 201), "purposes.marketing.description"),
    (_set("description", "line\nbreak"), "purposes.marketing.description"),
    (_set("notices", []), "purposes.marketing.notices"),
    (_set("notices", "v1"), "purposes.marketing.notices"),
    (_notices({"version": 0, "material": True}), "purposes.marketing.notices[0].version"),
    (_notices({"version": True, "material": True}), "purposes.marketing.notices[0].version"),
    (_notices({"version": "1", "material": True}), "purposes.marketing.notices[0].version"),
    (_notices({"version": 2**31, "material": True}), "purposes.marketing.notices[0].version"),
    (_notices({"version": 1, "material": "no"}), "purposes.marketing.notices[0].material"),
    (_notices({"version": 1}), "purposes.marketing.notices[0].material"),
    (
        _notices({"version": 1, "material": True, "date": "2025"}),
        "purposes.marketing.notices[0].date",
    ),
    (
        _notices({"version": 2, "material": True}, {"version": 2, "material": False}),
        "purposes.marketing.notices[1].version",
    ),
    (
        _notices({"version": 3, "material": True}, {"version": 2, "material": False}),
        "purposes.marketing.notices[1].version",
    ),
    (_rename("Marketing"), "purposes.Marketing"),
    (_rename("m" * 65), "purposes." + "m" * 65),
    (_necessary_and_separate, "purposes.service"),
]


@pytest.mark.parametrize(("change", "path"), BAD)
def test_invalid_documents_name_the_offending_path(
    change: Callable[[Doc], None], path: str
) -> None:
    doc = copy.deepcopy(DEFAULT_DOC)
    change(doc)
    with pytest.raises(PurposesError) as raised:
        parse_purposes(doc)
    assert raised.value.path == path


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({}, "(document).purposes"),
        ({"purposes": {}}, "purposes"),
        ({"purposes": {}, "extra": 1}, "(document).extra"),
        ({"purposes": {f"p{i}": {} for i in range(65)}}, "purposes"),
        ({"purposes": {"marketing": "yes"}}, "purposes.marketing"),
    ],
)
def test_invalid_document_shapes(doc: Doc, path: str) -> None:
    with pytest.raises(PurposesError) as raised:
        parse_purposes(doc)
    assert raised.value.path == path


def test_a_file_that_is_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "purposes.toml"
    path.write_text("[purposes\n", encoding="utf-8")
    with pytest.raises(PurposesError, match="not valid TOML"):
        load_purposes_file(path)


def test_only_a_newer_material_notice_makes_consent_stale() -> None:
    notices = (Notice(1, True), Notice(2, False), Notice(3, True), Notice(4, False))
    purpose = Purpose("marketing", "offers", "consent", False, False, notices)
    assert purpose.current_version == 4
    assert purpose.is_stale(1)
    assert purpose.is_stale(2)
    assert not purpose.is_stale(3)  # only a non-material version came since
    assert not purpose.is_stale(4)
