"""gRPC <-> domain for membership.accounts.v1.AccountsService."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
from google.protobuf import timestamp_pb2
from membership.accounts.v1 import accounts_pb2 as pb
from membership.accounts.v1 import accounts_pb2_grpc as pb_grpc
from membership.privacy.v1 import consent_pb2 as cpb

from services.accounts import normalise, validation
from services.accounts.lifecycle import Action, Status
from services.accounts.members import Members, Registration, SignupConsents
from services.accounts.model import Member, member_name
from services.accounts.outbox_relay import OutboxRelay, PointsPublisher
from services.accounts.ports import Channel
from services.accounts.privacy_client import GrpcPrivacy
from services.accounts.status_changes import StatusChanges
from services.runtime import access, paging
from services.runtime.clients import ServiceCredentials, open_channel
from services.runtime.config import Settings
from services.runtime.context import current_caller
from services.runtime.errors import ViolationCollector, bad_field, permission_denied
from services.runtime.identity import TokenSigner, load_or_create_signing_key
from services.runtime.scrape import outbox_probe
from services.runtime.server import ServiceSpec

STATUS_TO_PB = {
    Status.ACTIVE: pb.MEMBER_STATUS_ACTIVE,
    Status.FROZEN: pb.MEMBER_STATUS_FROZEN,
    Status.CLOSED: pb.MEMBER_STATUS_CLOSED,
    Status.ERASED: pb.MEMBER_STATUS_ERASED,
}
PB_TO_STATUS = {v: k for k, v in STATUS_TO_PB.items()}
CHANNELS: dict[cpb.Channel.ValueType, Channel] = {
    cpb.CHANNEL_APP: Channel.APP,
    cpb.CHANNEL_WEB: Channel.WEB,
    cpb.CHANNEL_COUNTER: Channel.COUNTER,
    cpb.CHANNEL_PHONE: Channel.PHONE,
}


def _timestamp(value: object) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)  # type: ignore[arg-type]
    return ts


def _signup_consents(
    v: ViolationCollector, request: pb.RegisterMemberRequest
) -> SignupConsents | None:
    """The consents given at sign-up with their channel; None when none were given (a
    channel alone is then not recorded anywhere)."""
    grants = validation.consents(v, [(c.purpose, c.notice_version) for c in request.consents])
    channel = CHANNELS.get(request.channel)
    if channel is None and request.channel != cpb.CHANNEL_UNSPECIFIED:
        v.add("channel", "unknown channel")
    elif channel is None and grants:
        v.add("channel", "required when consents are given: APP, WEB, COUNTER or PHONE")
    if not grants or channel is None:
        return None
    return SignupConsents(grants, channel)


def to_pb(member: Member) -> pb.Member:
    return pb.Member(
        name=member_name(member.member_id),
        member_id=member.member_id,
        phone=member.phone,
        email=member.email,
        display_name=member.display_name,
        status=STATUS_TO_PB[member.status],
        referral_code=member.referral_code,
        referred_by=member_name(member.referred_by) if member.referred_by else "",
        create_time=_timestamp(member.created_at),
        update_time=_timestamp(member.updated_at),
        view=pb.MEMBER_VIEW_FULL if member.full else pb.MEMBER_VIEW_MASKED,
    )


class AccountsServicer(pb_grpc.AccountsServiceServicer):
    def __init__(self, members: Members, changes: StatusChanges) -> None:
        self._members = members
        self._changes = changes

    async def RegisterMember(
        self, request: pb.RegisterMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.Member:
        v = ViolationCollector()
        v.request_id(request.request_id)
        reg = Registration(
            request_id=request.request_id,
            phone=validation.normalised(v, "phone", request.phone, normalise.normalise_phone, True),
            email=validation.normalised(v, "email", request.email, normalise.normalise_email),
            display_name=validation.normalised(
                v, "display_name", request.display_name, normalise.normalise_display_name
            ),
            referral_code=validation.normalised(
                v, "referral_code", request.referral_code, normalise.normalise_referral_code
            ),
            consents=_signup_consents(v, request),
        )
        v.raise_if_any()
        return to_pb(await self._members.register(reg))

    async def GetMember(
        self, request: pb.GetMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.Member:
        full = request.view == pb.MEMBER_VIEW_FULL
        caller = current_caller()
        # permission first: a caller that may not read in clear learns nothing more
        if full and not caller.has_scope(access.SCOPE_READ_PII):
            raise permission_denied(
                "SCOPE_MISSING", "the FULL view needs accounts.members.read_pii"
            )
        v = ViolationCollector()
        member_id = validation.member_id_of(v, request.name)
        if request.view not in pb.MemberView.values():
            v.add("view", "unknown view")
        if full:
            validation.purpose(v, request.purpose)
        v.raise_if_any()
        if not full:
            return to_pb(await self._members.get(member_id))
        return to_pb(await self._members.get_full(caller, member_id, request.purpose.strip()))

    async def LookupMember(
        self, request: pb.LookupMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.Member:
        v = ViolationCollector()
        key = request.WhichOneof("key")
        if key is None:
            v.add("key", "set phone or email")
            v.raise_if_any()
        fn = normalise.normalise_phone if key == "phone" else normalise.normalise_email
        value = validation.normalised(v, str(key), getattr(request, str(key)), fn, True)
        v.raise_if_any()
        return to_pb(await self._members.lookup(str(key), value))

    async def UpdateMember(
        self, request: pb.UpdateMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.Member:
        v = ViolationCollector()
        v.request_id(request.request_id)
        member_id = validation.member_id_of(v, request.member.name, "member.name")
        paths = validation.update_paths(v, list(request.update_mask.paths))
        fns = {
            "phone": normalise.normalise_phone,
            "email": normalise.normalise_email,
            "display_name": normalise.normalise_display_name,
        }
        changes = {
            p: validation.normalised(
                v, f"member.{p}", getattr(request.member, p), fns[p], p == "phone"
            )
            for p in paths
        }
        v.raise_if_any()
        if request.validate_only:
            return to_pb(await self._members.preview_update(member_id, changes))
        return to_pb(await self._members.update(member_id, request.request_id, changes))

    async def _change(self, name: str, request_id: str, reason: str, action: Action) -> pb.Member:
        v = ViolationCollector()
        member_id = validation.member_id_of(v, name)
        v.request_id(request_id)
        validation.reason(v, reason)
        v.raise_if_any()
        member = await self._changes.change(
            current_caller(), member_id, action, request_id, reason.strip()
        )
        return to_pb(member)

    async def FreezeMember(
        self, request: pb.FreezeMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.Member:
        return await self._change(request.name, request.request_id, request.reason, Action.FREEZE)

    async def UnfreezeMember(
        self, request: pb.UnfreezeMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.Member:
        return await self._change(request.name, request.request_id, request.reason, Action.UNFREEZE)

    async def CloseMember(
        self, request: pb.CloseMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.Member:
        return await self._change(request.name, request.request_id, request.reason, Action.CLOSE)

    async def ListMembers(
        self, request: pb.ListMembersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMembersResponse:
        v = ViolationCollector()
        if request.status not in pb.MemberStatus.values():
            v.add("status", "unknown status")
        v.raise_if_any()
        size = paging.page_size(request.page_size)
        status = PB_TO_STATUS.get(request.status)
        query = {"status": status.value if status else ""}
        position = paging.decode_token(request.page_token, query)
        after = _position(position)
        members = await self._members.list(status, after, size + 1)
        token = ""
        if len(members) > size:
            last = members[size - 1]
            token = paging.encode_token(
                {"t": last.created_at.isoformat(), "m": last.member_id}, query
            )
        return pb.ListMembersResponse(
            members=[to_pb(m) for m in members[:size]], next_page_token=token
        )

    async def ExportMemberData(
        self, request: pb.ExportMemberDataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportMemberDataResponse:
        v = ViolationCollector()
        member_id = validation.member_id_of(v, request.name)
        validation.purpose(v, request.purpose)
        v.raise_if_any()
        export = await self._changes.export(current_caller(), member_id, request.purpose.strip())
        return pb.ExportMemberDataResponse(
            member=to_pb(export.member),
            status_history=[
                pb.StatusChange(
                    from_status=STATUS_TO_PB[c.from_status],
                    to_status=STATUS_TO_PB[c.to_status],
                    reason=c.reason,
                    actor=c.actor,
                    change_time=_timestamp(c.changed_at),
                )
                for c in export.history
            ],
            referred_members=[member_name(m) for m in export.referred_members],
        )

    async def EraseMemberData(
        self, request: pb.EraseMemberDataRequest, context: grpc.aio.ServicerContext
    ) -> pb.EraseMemberDataResponse:
        v = ViolationCollector()
        member_id = validation.member_id_of(v, request.name)
        v.request_id(request.request_id)
        validation.reason(v, request.reason)
        v.raise_if_any()
        erasure = await self._changes.erase(
            current_caller(), member_id, request.request_id, request.reason.strip()
        )
        return pb.EraseMemberDataResponse(
            member=to_pb(erasure.member), removed_index_entries=erasure.removed_index_entries
        )


def _position(position: dict[str, object] | None) -> tuple[datetime, str] | None:
    if position is None:
        return None
    t, m = position.get("t"), position.get("m")
    try:
        if not isinstance(t, str) or not isinstance(m, str):
            raise ValueError("position fields must be text")
        when = datetime.fromisoformat(t)
        if when.tzinfo is None:
            raise ValueError("position time needs a time zone")
        when = when.astimezone(UTC)  # OverflowError beyond the ends of the calendar
    except (ValueError, OverflowError) as exc:
        raise bad_field("page_token", "not a page token of this list") from exc
    if not (0 < len(m) <= validation.MEMBER_ID_MAX and m.isascii() and m.isalnum()):
        raise bad_field("page_token", "not a page token of this list")
    return when, m


class AccountsComponent:
    service_names = (pb.DESCRIPTOR.services_by_name["AccountsService"].full_name,)

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        signer = TokenSigner(
            load_or_create_signing_key(settings.keys_dir), settings.token_audience, "accounts"
        )
        credentials = ServiceCredentials(signer, "service:accounts")
        self._channel = open_channel(settings.addr_of("privacy"), settings.max_message_bytes)
        privacy = GrpcPrivacy(self._channel, credentials, settings.outgoing_timeout_s)
        members = Members(pool, privacy)
        self._servicer = AccountsServicer(members, StatusChanges(pool, members))
        self._points = PointsPublisher(
            lambda: open_channel(settings.addr_of("points"), settings.max_message_bytes),
            credentials,
            settings.outgoing_timeout_s,
        )
        self._relay = OutboxRelay(pool, self._points)

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_AccountsServiceServicer_to_server(self._servicer, server)
        # member events reach points from here on, also while points is down (retried)
        self._relay.start()

    async def close(self) -> None:
        # the relay first: it uses the pool and the points channel
        await self._relay.close()
        await self._points.close()
        await self._channel.close()


async def build(pool: asyncpg.Pool, settings: Settings) -> AccountsComponent:
    return AccountsComponent(pool, settings)


SPEC = ServiceSpec(
    name="accounts",
    migrations_dir=Path(__file__).parent / "migrations",
    build=build,
    probes=(outbox_probe("accounts"),),
)
