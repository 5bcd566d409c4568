from __future__ import annotations

from membership.accounts.v1 import accounts_pb2 as pb

from tests.support.suite import Suite


async def test_register_and_get(suite: Suite) -> None:
    wallet = suite.auth("wallet-backend")
    member = await suite.accounts.RegisterMember(
        pb.RegisterMemberRequest(request_id="r1", phone="13800138000", display_name="张三"),
        metadata=wallet,
    )
    assert member.phone == "138****8000"
    got = await suite.accounts.GetMember(
        pb.GetMemberRequest(name=member.name, view=pb.MEMBER_VIEW_FULL, purpose="support"),
        metadata=suite.auth("officer"),
    )
    assert got.phone == "+8613800138000"
    assert got.display_name == "张三"
