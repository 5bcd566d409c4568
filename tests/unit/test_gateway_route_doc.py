"""docs/gateway-routes.md is the table the code would write now."""

from __future__ import annotations

from pathlib import Path

from gateway.route_doc import markdown, roles_of
from gateway.server import route_table

DOC = Path(__file__).parents[2] / "docs" / "gateway-routes.md"


def test_the_route_table_in_the_docs_is_current() -> None:
    assert DOC.read_text() == markdown(route_table()), "run: python -m gateway.route_doc"


def test_key_rules_of_the_route_roles() -> None:
    points = "/membership.points.v1.PointsService/"
    assert roles_of(points + "SettlePayment") == ["settlement"]
    assert "wallet-backend" not in roles_of(points + "SettlePayment")
    assert roles_of(points + "ApplyMemberEvents") == []
    assert roles_of("/membership.privacy.v1.DataRightsService/ApproveDataRequest") == ["officer"]
