"""The access table (services/runtime/access.py) enforced by the interceptor: every method of
accounts, points and privacy × every role, and every way a caller token can be bad."""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from membership.accounts.v1 import accounts_pb2 as apb
from membership.points.v1 import points_pb2 as ptpb
from membership.points.v1 import promotions_pb2 as prpb
from membership.points.v1 import promotions_pb2_grpc as prpb_grpc
from membership.privacy.v1 import audit_pb2 as aupb
from membership.privacy.v1 import consent_pb2 as cpb
from membership.privacy.v1 import data_rights_pb2 as drpb
from membership.privacy.v1 import field_crypto_pb2 as ppb

from services.runtime.access import METHOD_SCOPES, ROLE_SCOPES, SCOPE_READ_PII
from services.runtime.identity import ALGORITHM, TokenSigner, key_id, load_or_create_signing_key
from tests.support.accounts import register
from tests.support.rpc_errors import rpc_error
from tests.support.suite import Metadata, Suite

DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
SERVICES = {
    "membership.accounts.v1.AccountsService": apb,
    "membership.privacy.v1.FieldCryptoService": ppb,
    "membership.privacy.v1.ConsentService": cpb,
    "membership.privacy.v1.AuditService": aupb,
    "membership.privacy.v1.DataRightsService": drpb,
    "membership.points.v1.PointsService": ptpb,
    "membership.points.v1.PromotionsService": prpb,
}

_counter = itertools.count()


def _unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}"


def _split(method: str) -> tuple[str, str]:
    service, name = method.strip("/").split("/")
    return service, name


def test_the_table_names_every_rpc_of_every_service() -> None:
    """A method missing from the table would be closed to everyone (deny by default)."""
    declared = {
        f"/{full}/{m.name}"
        for full, module in SERVICES.items()
        for m in module.DESCRIPTOR.services_by_name[full.rsplit(".", 1)[1]].methods
    }
    assert declared == set(METHOD_SCOPES)
    used = set().union(*ROLE_SCOPES.values())
    assert set(METHOD_SCOPES.values()) <= used | {SCOPE_READ_PII}, "a scope no role holds"


def test_key_rules_of_the_policy() -> None:
    """What the design asks for, independently of how the table spells it."""

    def allowed(method: str) -> set[str]:
        scope = METHOD_SCOPES["/membership.accounts.v1.AccountsService/" + method]
        return {role for role, scopes in ROLE_SCOPES.items() if scope in scopes}

    assert allowed("ExportMemberData") == {"service:privacy"}
    assert allowed("EraseMemberData") == {"service:privacy"}
    assert "wallet-backend" in allowed("RegisterMember")
    assert "wallet-backend" not in allowed("FreezeMember")
    # listing every member is for the back office, not for an app acting for one member
    assert allowed("ListMembers") == {"officer", "admin"}
    assert "wallet-backend" in allowed("GetMember")
    assert "settlement" not in set().union(
        *(allowed(m) for m in ("GetMember", "RegisterMember", "UpdateMember"))
    )
    readers_in_clear = {r for r, s in ROLE_SCOPES.items() if SCOPE_READ_PII in s}
    assert readers_in_clear == {"officer", "admin"}


class Requests:
    """A minimal, mostly valid request for each method, so that allowed calls get past
    validation where they can and reach the domain."""

    def __init__(self, member: apb.Member, ciphertext: bytes) -> None:
        self.member = member
        self.ciphertext = ciphertext

    def build(self, method: str) -> Message:
        name = self.member.name
        phone_context = ppb.FieldContext(service="accounts", table="members", column="phone")
        builders: dict[str, Callable[[], Message]] = {
            "RegisterMember": lambda: apb.RegisterMemberRequest(
                request_id=_unique("acl"), phone=f"1370{next(_counter):07d}"
            ),
            "GetMember": lambda: apb.GetMemberRequest(name=name),
            "LookupMember": lambda: apb.LookupMemberRequest(phone="13800138000"),
            "ListMembers": lambda: apb.ListMembersRequest(page_size=1),
            "UpdateMember": lambda: apb.UpdateMemberRequest(
                member=apb.Member(name=name, display_name="acl"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                request_id=_unique("acl"),
            ),
            "FreezeMember": lambda: apb.FreezeMemberRequest(
                name=name, request_id=_unique("acl"), reason="acl"
            ),
            "UnfreezeMember": lambda: apb.UnfreezeMemberRequest(
                name=name, request_id=_unique("acl"), reason="acl"
            ),
            "CloseMember": lambda: apb.CloseMemberRequest(
                name=name, request_id=_unique("acl"), reason="acl"
            ),
            "ExportMemberData": lambda: apb.ExportMemberDataRequest(name=name, purpose="acl"),
            "EraseMemberData": lambda: apb.EraseMemberDataRequest(
                name=name, request_id=_unique("acl"), reason="acl"
            ),
            "EncryptFields": lambda: ppb.EncryptFieldsRequest(
                subject_id="acl-subject",
                fields=[ppb.PlainField(context=phone_context, plaintext=b"x")],
            ),
            "ComputeBlindIndex": lambda: ppb.ComputeBlindIndexRequest(
                inputs=[ppb.BlindIndexInput(context="accounts.members.phone", value=b"x")]
            ),
            "DecryptFields": lambda: ppb.DecryptFieldsRequest(
                subject_id="acl-subject",
                fields=[ppb.CipherField(context=phone_context, ciphertext=self.ciphertext)],
                purpose="acl",
            ),
            "RotateKeyEncryptionKey": lambda: ppb.RotateKeyEncryptionKeyRequest(
                request_id=_unique("acl")
            ),
            "GetKeyRingStatus": ppb.GetKeyRingStatusRequest,
            "DestroySubjectKey": lambda: ppb.DestroySubjectKeyRequest(
                subject_id="acl-other-subject", request_id=_unique("acl"), reason="acl"
            ),
            "ListPurposes": cpb.ListPurposesRequest,
            "GrantConsent": lambda: cpb.GrantConsentRequest(
                member=name,
                grants=[cpb.PurposeGrant(purpose="marketing", notice_version=1)],
                channel=cpb.CHANNEL_APP,
                request_id=_unique("acl"),
            ),
            "WithdrawConsent": lambda: cpb.WithdrawConsentRequest(
                member=name,
                purposes=["marketing"],
                channel=cpb.CHANNEL_APP,
                request_id=_unique("acl"),
            ),
            "GetConsents": lambda: cpb.GetConsentsRequest(member=name),
            "CheckConsent": lambda: cpb.CheckConsentRequest(member=name, purpose="marketing"),
            "GetConsentStatistics": cpb.GetConsentStatisticsRequest,
            "ListAuditEvents": lambda: aupb.ListAuditEventsRequest(page_size=1),
            "VerifyAuditChain": aupb.VerifyAuditChainRequest,
            "SettlePayment": self.payment,
            "SettlePayments": lambda: ptpb.SettlePaymentsRequest(requests=[self.payment()]),
            "GetBalance": lambda: ptpb.GetBalanceRequest(name=f"{name}/balance"),
            "GetTierProgress": lambda: ptpb.GetTierProgressRequest(name=f"{name}/tierProgress"),
            "GrantPoints": lambda: ptpb.GrantPointsRequest(
                member="members/macl",
                request_id=_unique("acl"),
                points=1,
                reason=ptpb.GRANT_REASON_CHECK_IN,
            ),
            "RefundPayment": lambda: ptpb.RefundPaymentRequest(
                member="members/macl",
                payment_id=_unique("acl"),
                refund_id=_unique("acl"),
                amount=ptpb.Money(currency_code="CNY", amount_minor=100),
            ),
            "HoldPoints": lambda: ptpb.HoldPointsRequest(
                member="members/macl", hold_id=_unique("acl"), points=1
            ),
            "CapturePoints": lambda: ptpb.CapturePointsRequest(
                name=f"members/macl/holds/{_unique('acl')}", capture_id=_unique("acl"), points=1
            ),
            "ReleaseHold": lambda: ptpb.ReleaseHoldRequest(
                name=f"members/macl/holds/{_unique('acl')}", request_id=_unique("acl")
            ),
            "RedeemPoints": lambda: ptpb.RedeemPointsRequest(
                member="members/macl", request_id=_unique("acl"), points=1
            ),
            "ListRewards": lambda: ptpb.ListRewardsRequest(page_size=1),
            "RedeemReward": lambda: ptpb.RedeemRewardRequest(
                member="members/macl", sku="coffee-voucher", request_id=_unique("acl")
            ),
            "ListTransactions": lambda: ptpb.ListTransactionsRequest(
                parent="members/macl", page_size=1
            ),
            "ExplainTransaction": lambda: ptpb.ExplainTransactionRequest(
                name="members/macl/transactions/1"
            ),
            "Reconcile": lambda: ptpb.ReconcileRequest(member="members/macl"),
            "ExportMemberLedger": lambda: ptpb.ExportMemberLedgerRequest(
                member="members/macl", page_size=1
            ),
            "StreamMemberLedger": lambda: ptpb.StreamMemberLedgerRequest(member="members/macl"),
            "RestrictMember": lambda: ptpb.RestrictMemberRequest(
                member=f"members/{_unique('acl')}",
                request_id=_unique("acl"),
                legal_basis="accounting retention",
                retention_end_time=timestamp_pb2.Timestamp(seconds=2_000_000_000),
            ),
            "ApplyProcessingEvents": lambda: ptpb.ApplyProcessingEventsRequest(
                events=[
                    ptpb.ProcessingEvent(
                        event_id=next(_counter) + 1,
                        member="members/macl",
                        cause=ptpb.PROCESSING_CAUSE_CONSENT_WITHDRAWN,
                        paused=False,
                        event_time=timestamp_pb2.Timestamp(seconds=1_700_000_000),
                    )
                ]
            ),
            **self._data_rights(),
            "ExplainMemberRules": lambda: ptpb.ExplainMemberRulesRequest(member="members/macl"),
            "GetProgram": lambda: ptpb.GetProgramRequest(name="program"),
            "CreateCampaign": lambda: prpb.CreateCampaignRequest(
                campaign_id=_unique("acl"), campaign=self.campaign()
            ),
            "UpdateCampaign": lambda: prpb.UpdateCampaignRequest(
                campaign=self.campaign("campaigns/acl-campaign")
            ),
            "ActivateCampaign": lambda: prpb.ActivateCampaignRequest(name="campaigns/acl-none"),
            "EndCampaign": lambda: prpb.EndCampaignRequest(name="campaigns/acl-none"),
            "GetCampaign": lambda: prpb.GetCampaignRequest(name="campaigns/acl-none"),
            "ListCampaigns": lambda: prpb.ListCampaignsRequest(page_size=1),
            "CreateCouponTemplate": lambda: prpb.CreateCouponTemplateRequest(
                template_id=_unique("acl"),
                template=prpb.CouponTemplate(
                    display_name="acl",
                    kind=prpb.CouponTemplate.KIND_AMOUNT_OFF,
                    currency_code="CNY",
                    amount_off_minor=100,
                    valid_days=1,
                ),
            ),
            "GetCouponTemplate": lambda: prpb.GetCouponTemplateRequest(
                name="couponTemplates/acl-none"
            ),
            "ListCouponTemplates": lambda: prpb.ListCouponTemplatesRequest(page_size=1),
            "IssueCoupons": lambda: prpb.IssueCouponsRequest(
                template="couponTemplates/acl-none", members=[name], request_id=_unique("acl")
            ),
            "ListMemberCoupons": lambda: prpb.ListMemberCouponsRequest(member=name),
            "ReserveCoupon": lambda: prpb.ReserveCouponRequest(
                name=f"{name}/coupons/ACLNONE", payment_id="acl"
            ),
            "ReleaseCoupon": lambda: prpb.ReleaseCouponRequest(
                name=f"{name}/coupons/ACLNONE", payment_id="acl"
            ),
            "RevokeCoupon": lambda: prpb.RevokeCouponRequest(
                name=f"{name}/coupons/ACLNONE", reason="acl"
            ),
            "QuoteCheckout": lambda: prpb.QuoteCheckoutRequest(
                member=name,
                amount=ptpb.Money(currency_code="CNY", amount_minor=100),
                merchant_id="acl",
                merchant_category="dining",
            ),
            "SimulateCampaign": lambda: prpb.SimulateCampaignRequest(
                campaign=self.campaign(),
                start_time=timestamp_pb2.Timestamp(seconds=int(time.time()) - 86_400),
                end_time=timestamp_pb2.Timestamp(seconds=int(time.time()) - 60),
            ),
            "ApplyMemberEvents": lambda: ptpb.ApplyMemberEventsRequest(
                events=[
                    ptpb.MemberEvent(
                        event_id=1,
                        member="members/macl",
                        type=ptpb.MEMBER_EVENT_TYPE_REGISTERED,
                        state=ptpb.MEMBER_STATE_ACTIVE,
                    )
                ]
            ),
        }
        return builders[_split(method)[1]]()

    def _data_rights(self) -> dict[str, Callable[[], Message]]:
        # a well-formed name of a request that does not exist: allowed calls get NOT_FOUND
        request = "dataRequests/draclaclaclaclaclacla"
        return {
            "CreateDataRequest": lambda: drpb.CreateDataRequestRequest(
                data_request=drpb.DataRequest(
                    member=self.member.name,
                    type=drpb.DATA_REQUEST_TYPE_ACCESS,
                    channel=cpb.CHANNEL_APP,
                ),
                request_id=_unique("acl"),
            ),
            "GetDataRequest": lambda: drpb.GetDataRequestRequest(name=request),
            "ListDataRequests": lambda: drpb.ListDataRequestsRequest(page_size=1),
            "IssueVerificationCode": lambda: drpb.IssueVerificationCodeRequest(name=request),
            "VerifyIdentity": lambda: drpb.VerifyIdentityRequest(name=request, code="12345678"),
            "ApproveDataRequest": lambda: drpb.ApproveDataRequestRequest(
                name=request, request_id=_unique("acl")
            ),
            "RejectDataRequest": lambda: drpb.RejectDataRequestRequest(name=request, reason="acl"),
            "CancelDataRequest": lambda: drpb.CancelDataRequestRequest(name=request),
            "ExtendDataRequestDeadline": lambda: drpb.ExtendDataRequestDeadlineRequest(
                name=request, extra_working_days=1, reason="acl", request_id=_unique("acl")
            ),
            "DownloadExport": lambda: drpb.DownloadExportRequest(name=f"{request}/export"),
        }

    def campaign(self, name: str = "") -> prpb.Campaign:
        message = prpb.Campaign(
            name=name,
            display_name="acl",
            effect=prpb.CampaignEffect(kind=prpb.CampaignEffect.KIND_FIXED_POINTS, points=1),
            audience=prpb.CampaignAudience(merchant_ids=["acl-campaigns"]),
        )
        message.start_time.GetCurrentTime()
        message.end_time.FromSeconds(message.start_time.seconds + 86_400)
        return message

    def payment(self) -> ptpb.SettlePaymentRequest:
        request = ptpb.SettlePaymentRequest(
            member="members/macl",
            payment_id=_unique("acl"),
            amount=ptpb.Money(currency_code="CNY", amount_minor=100),
            merchant_id="acl",
            merchant_category="dining",
        )
        request.occur_time.GetCurrentTime()
        return request


def _stub_method(suite: Suite, method: str) -> Callable[..., Any]:
    service, name = _split(method)
    stubs: dict[str, Any] = {
        "AccountsService": suite.accounts,
        "FieldCryptoService": suite.privacy,
        "ConsentService": suite.consent,
        "AuditService": suite.audit,
        "DataRightsService": suite.data_rights,
        "PointsService": suite.points,
        "PromotionsService": prpb_grpc.PromotionsServiceStub(suite.points_channel),
    }
    return getattr(stubs[service.rsplit(".", 1)[1]], name)  # type: ignore[no-any-return]


async def _code(suite: Suite, method: str, request: Message, metadata: Metadata) -> grpc.StatusCode:
    try:
        call = _stub_method(suite, method)(request, metadata=metadata, timeout=10)
        if isinstance(call, grpc.aio.UnaryStreamCall):  # a server stream: read it to its end
            async for _ in call:
                pass
        else:
            await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_every_method_for_every_role(suite: Suite) -> None:
    member = await register(suite, "13800138000")
    encrypted = await suite.privacy.EncryptFields(
        ppb.EncryptFieldsRequest(
            subject_id="acl-subject",
            fields=[
                ppb.PlainField(
                    context=ppb.FieldContext(service="accounts", table="members", column="phone"),
                    plaintext=b"x",
                )
            ],
        ),
        metadata=suite.auth("service:accounts"),
    )
    requests = Requests(member, encrypted.ciphertexts[0])
    wrong: list[str] = []
    outcomes: dict[tuple[str, str], grpc.StatusCode] = {}
    for method, scope in METHOD_SCOPES.items():
        for role, scopes in ROLE_SCOPES.items():
            code = await _code(suite, method, requests.build(method), suite.auth(role))
            outcomes[(method, role)] = code
            if scope not in scopes and code != DENIED:
                wrong.append(f"{role} lacks {scope} but {method} answered {code.name}")
            if scope in scopes and code in (
                DENIED,
                UNAUTHENTICATED,
                grpc.StatusCode.INTERNAL,
                grpc.StatusCode.UNKNOWN,
                grpc.StatusCode.UNIMPLEMENTED,
            ):
                wrong.append(f"{role} holds {scope} but {method} answered {code.name}")
    assert wrong == []
    # the allowed calls mostly reached the domain and succeeded, not just validation
    allowed_ok = [k for k, c in outcomes.items() if c == grpc.StatusCode.OK]
    assert len(allowed_ok) >= 25, outcomes


def _all_methods() -> list[str]:
    return list(METHOD_SCOPES)


def _crafted(suite: Suite, key: Ed25519PrivateKey | None = None, **claims: Any) -> str:
    """A caller token with chosen claims, signed by the suite's key unless another is given."""
    signing = key or load_or_create_signing_key(suite.keys_dir)
    now = int(time.time())
    doc: dict[str, Any] = {
        "iss": "tests",
        "sub": "test:crafted",
        "aud": suite.settings.token_audience,
        "iat": now,
        "exp": now + 300,
        "jti": "crafted",
        "role": "admin",
        "scope": " ".join(sorted(ROLE_SCOPES["admin"])),
    }
    doc.update(claims)
    doc = {k: v for k, v in doc.items() if v is not None}
    kid = key_id(load_or_create_signing_key(suite.keys_dir).public_key())
    return jwt.encode(doc, signing, algorithm=ALGORITHM, headers={"kid": kid})


def _unsigned(suite: Suite) -> str:
    """A token with "alg": "none" and no signature."""

    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    now = int(time.time())
    claims = {"sub": "x", "aud": suite.settings.token_audience, "role": "admin", "exp": now + 60}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims | {'iat': now})}."


def _bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


async def test_bad_tokens_are_unauthenticated_everywhere(suite: Suite) -> None:
    member = await register(suite, "13800138000")
    requests = Requests(member, b"\x00")
    now = int(time.time())
    other_key = Ed25519PrivateKey.generate()
    own_key = load_or_create_signing_key(suite.keys_dir)
    bad: dict[str, Metadata] = {
        "no token": (),
        "empty header": (("authorization", ""),),
        "no scheme": (("authorization", suite.auth("admin")[0][1].removeprefix("Bearer ")),),
        "basic scheme": (("authorization", "Basic YWRtaW46YWRtaW4="),),
        "bearer without token": (("authorization", "Bearer "),),
        "garbage": _bearer("garbage"),
        "three garbage parts": _bearer("a.b.c"),
        "expired": _bearer(_crafted(suite, iat=now - 600, exp=now - 60)),
        "other key, unknown kid": _bearer(
            TokenSigner(other_key, suite.settings.token_audience, "evil").mint(
                "test:evil", "admin", 300
            )
        ),
        "other key, our kid": _bearer(_crafted(suite, key=other_key)),
        "wrong audience": _bearer(
            TokenSigner(own_key, "another-audience", "tests").mint("test:aud", "admin", 300)
        ),
        "no audience": _bearer(_crafted(suite, aud=None)),
        "no expiry": _bearer(_crafted(suite, exp=None)),
        "unknown role": _bearer(_crafted(suite, role="superuser")),
        "unsigned": _bearer(_unsigned(suite)),
    }
    wrong = []
    for method in _all_methods():
        for what, metadata in bad.items():
            code = await _code(suite, method, requests.build(method), metadata)
            if code != UNAUTHENTICATED:
                wrong.append(f"{what}: {method} answered {code.name}")
    assert wrong == []


async def test_a_token_cannot_widen_its_roles_scopes(suite: Suite) -> None:
    member = await register(suite, "13800138000")
    freeze = apb.FreezeMemberRequest(name=member.name, request_id="w1", reason="x")
    widened = _crafted(
        suite, role="wallet-backend", scope="accounts.members.freeze accounts.internal.privacy"
    )
    err = await rpc_error(suite.accounts.FreezeMember(freeze, metadata=_bearer(widened)))
    assert err.code == DENIED
    assert err.reason == "SCOPE_MISSING"
    # but may narrow them
    narrowed = _crafted(suite, role="admin", scope="accounts.members.read")
    err = await rpc_error(suite.accounts.FreezeMember(freeze, metadata=_bearer(narrowed)))
    assert err.code == DENIED
    got = await suite.accounts.GetMember(
        apb.GetMemberRequest(name=member.name), metadata=_bearer(narrowed)
    )
    assert got.member_id == member.member_id


async def test_unauthenticated_errors_carry_status_details(suite: Suite) -> None:
    err = await rpc_error(suite.accounts.ListMembers(apb.ListMembersRequest()))
    assert err.code == UNAUTHENTICATED
    assert err.reason == "TOKEN_MISSING"
    assert err.domain == "accounts.membership"
    err = await rpc_error(suite.privacy.GetKeyRingStatus(ppb.GetKeyRingStatusRequest()))
    assert err.code == UNAUTHENTICATED
    assert err.domain == "privacy.membership"


@pytest.mark.parametrize("service", ["accounts", "privacy"])
async def test_health_check_needs_no_token(suite: Suite, service: str) -> None:
    channel = suite.accounts_channel if service == "accounts" else suite.privacy_channel
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", next(n for n in SERVICES if service in n.lower())):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
