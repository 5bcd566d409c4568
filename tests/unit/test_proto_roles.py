"""Every RPC's comment names the roles the access table lets call it."""

from __future__ import annotations

from membership_cli.proto_roles import ROLES_PREFIX, main, proto_files, roles_line, with_roles


def test_every_proto_states_the_roles_of_the_access_table() -> None:
    stale = [
        p.name for p in proto_files() if with_roles(p.read_text("utf-8")) != p.read_text("utf-8")
    ]
    assert stale == [], "run: python -m membership_cli.proto_roles --write"
    assert main([]) == 0


def test_a_roles_line_is_replaced_not_repeated() -> None:
    text = (
        "package membership.points.v1;\nservice PointsService {\n"
        "  // Settles.\n  // Roles: `nobody`.\n  rpc SettlePayment(A) returns (B);\n}\n"
    )
    once = with_roles(text)
    assert once.count(ROLES_PREFIX) == 1
    assert roles_line("/membership.points.v1.PointsService/SettlePayment") in once
    assert "`settlement`" in once and "`nobody`" not in once
    assert with_roles(once) == once


def test_a_method_missing_from_the_table_is_closed_to_everyone() -> None:
    assert roles_line("/membership.points.v1.PointsService/Nothing") == ROLES_PREFIX + "none."
