"""Property tests of RegisterMember over generated input, against a running suite.

The oracle for bad input is the pure normaliser (unit-tested on its own): a request is
INVALID_ARGUMENT naming exactly the fields it rejects, and otherwise succeeds, unless its
phone or email is already taken. Nothing else (INTERNAL, UNKNOWN) may ever come back.
One suite serves all examples of a test function (hence the suppressed health check).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import grpc
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from membership.accounts.v1 import accounts_pb2 as pb

from services.accounts.domain import normalise
from services.accounts.domain.normalise import InvalidValue
from tests.support.accounts import table_counts
from tests.support.rpc_errors import parse_rpc_error, rpc_error
from tests.support.suite import Suite

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_ids = itertools.count()

# valid mainland mobile prefixes (China Mobile, Unicom, Telecom)
MOBILE_PREFIXES = ["130", "133", "135", "138", "139", "150", "151", "158", "186", "188", "199"]

phones = st.one_of(
    st.text(max_size=24),
    st.from_regex(r"\+?[0-9 ()-]{6,20}", fullmatch=True),
    st.builds(
        lambda p, n: p + n,
        st.sampled_from(MOBILE_PREFIXES),
        st.from_regex(r"[0-9]{8}", fullmatch=True),
    ),
)
emails = st.one_of(st.just(""), st.text(max_size=40), st.emails())
names = st.one_of(st.just(""), st.text(max_size=70))


def _expected(phone: str, email: str, display_name: str) -> tuple[set[str], str, str]:
    """Fields the service must reject, and the normalised phone and email otherwise."""
    bad: set[str] = set()
    e164 = normalised_email = ""
    try:
        e164 = normalise.normalise_phone(phone)
    except InvalidValue:
        bad.add("phone")
    if email.strip():
        try:
            normalised_email = normalise.normalise_email(email)
        except InvalidValue:
            bad.add("email")
    if display_name.strip():
        try:
            normalise.normalise_display_name(display_name)
        except InvalidValue:
            bad.add("display_name")
    return bad, e164, normalised_email


@SETTINGS
@given(phone=phones, email=emails, display_name=names)
async def test_arbitrary_text_is_registered_or_rejected_by_field(
    suite: Suite, phone: str, email: str, display_name: str
) -> None:
    bad, e164, normalised_email = _expected(phone, email, display_name)
    request = pb.RegisterMemberRequest(
        request_id=f"hyp-{next(_ids)}", phone=phone, email=email, display_name=display_name
    )
    rows_before = (await table_counts(suite.dsn, ("members",)))["members"]
    try:
        member = await suite.accounts.RegisterMember(request, metadata=suite.auth("wallet-backend"))
    except grpc.aio.AioRpcError as err:
        outcome = parse_rpc_error(err)
        event(f"{outcome.code.name} {outcome.reason}")
        if bad:
            assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome.describe()
            assert outcome.fields == bad, outcome.describe()
        else:
            # the only other refusal: the phone or email is already someone's
            assert outcome.code == grpc.StatusCode.ALREADY_EXISTS, outcome.describe()
            assert outcome.reason in ("PHONE_TAKEN", "EMAIL_TAKEN"), outcome.describe()
            taken = (
                await _lookup(suite, phone=e164)
                if outcome.reason == "PHONE_TAKEN"
                else (await _lookup(suite, email=normalised_email))
            )
            assert taken, "ALREADY_EXISTS although nobody holds the value"
        rows_after = (await table_counts(suite.dsn, ("members",)))["members"]
        assert rows_after == rows_before
        return
    event("OK")
    assert not bad, f"accepted although {sorted(bad)} should be rejected"
    assert member.phone == normalise.mask_phone(e164)
    assert member.email == (normalise.mask_email(normalised_email) if normalised_email else "")
    assert member.status == pb.MEMBER_STATUS_ACTIVE


async def _lookup(suite: Suite, **key: str) -> str:
    try:
        found = await suite.accounts.LookupMember(
            pb.LookupMemberRequest(**key), metadata=suite.auth("officer")
        )
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND, err
        return ""
    return str(found.member_id)


@SETTINGS
@given(request_id=st.text(max_size=140))
async def test_arbitrary_request_ids(suite: Suite, request_id: str) -> None:
    phone = f"137{next(_ids):08d}"
    request = pb.RegisterMemberRequest(request_id=request_id, phone=phone)
    valid = 0 < len(request_id) <= 128 and request_id.isprintable()
    try:
        member = await suite.accounts.RegisterMember(request, metadata=suite.auth("wallet-backend"))
    except grpc.aio.AioRpcError as err:
        outcome = parse_rpc_error(err)
        if not valid:
            assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome.describe()
            assert outcome.fields == {"request_id"}, outcome.describe()
        else:
            # a request id generated twice (e.g. while shrinking) with another phone
            assert outcome.reason == "IDEMPOTENCY_KEY_REUSED", outcome.describe()
        return
    assert valid, f"accepted the request id {request_id!r}"
    assert member.phone == normalise.mask_phone("+86" + phone)


mainland_numbers = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(MOBILE_PREFIXES),
    st.from_regex(r"[0-9]{8}", fullmatch=True),
)
SPELLINGS: list[Callable[[str], str]] = [
    lambda n: n,
    lambda n: "+86" + n,
    lambda n: "+86 " + n,
    lambda n: "86" + n,
    lambda n: "0086" + n,
    lambda n: f"{n[:3]} {n[3:7]} {n[7:]}",
    lambda n: f"+86-{n[:3]}-{n[3:7]}-{n[7:]}",
    lambda n: f" (+86) {n[:3]}-{n[3:7]} {n[7:]} ",
]
spelling_indexes = st.integers(min_value=0, max_value=len(SPELLINGS) - 1)


@SETTINGS
@given(
    number=mainland_numbers, first=spelling_indexes, second=spelling_indexes, third=spelling_indexes
)
async def test_spellings_of_a_mainland_number_are_one_member(
    suite: Suite, number: str, first: int, second: int, third: int
) -> None:
    e164 = "+86" + number
    assume(normalise.normalise_phone(number) == e164)
    assume(not await _lookup(suite, phone=number))  # a number drawn in an earlier example
    wallet = suite.auth("wallet-backend")
    n = next(_ids)
    member = await suite.accounts.RegisterMember(
        pb.RegisterMemberRequest(request_id=f"a-{n}", phone=SPELLINGS[first](number)),
        metadata=wallet,
    )
    assert member.phone == f"{number[:3]}****{number[-4:]}"
    err = await rpc_error(
        suite.accounts.RegisterMember(
            pb.RegisterMemberRequest(request_id=f"b-{n}", phone=SPELLINGS[second](number)),
            metadata=wallet,
        )
    )
    assert err.code == grpc.StatusCode.ALREADY_EXISTS, err.describe()
    assert err.reason == "PHONE_TAKEN"
    assert await _lookup(suite, phone=SPELLINGS[third](number)) == member.member_id
