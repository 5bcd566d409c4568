"""gRPC <-> domain for membership.accounts.v1.AccountsService: the servicer is the sum of one
mixin per topic (server_*.py); this module builds the ports and the use cases once and wires
them to the runtime."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import grpc
from membership.accounts.v1 import accounts_pb2 as pb
from membership.accounts.v1 import accounts_pb2_grpc as pb_grpc

from services.accounts.member_data import MemberData
from services.accounts.members import Members
from services.accounts.outbox_relay import OutboxRelay
from services.accounts.ports import PrivacyPort
from services.accounts.ports_points import PointsPublisher
from services.accounts.ports_privacy import GrpcPrivacy
from services.accounts.profile_updates import ProfileUpdates
from services.accounts.registration import Registrations
from services.accounts.server_base import AccountsUseCases
from services.accounts.server_lifecycle import LifecycleRpcs
from services.accounts.server_member_data import MemberDataRpcs
from services.accounts.server_members import MemberReadRpcs
from services.accounts.server_registration import RegistrationRpcs
from services.accounts.server_update import UpdateRpcs
from services.accounts.status_changes import StatusChanges
from services.runtime.clients import ServiceCredentials, open_channel
from services.runtime.config import Settings
from services.runtime.identity import TokenSigner, load_or_create_signing_key
from services.runtime.scrape import outbox_probe
from services.runtime.server import ServiceSpec


class AccountsServicer(
    RegistrationRpcs,
    MemberReadRpcs,
    UpdateRpcs,
    LifecycleRpcs,
    MemberDataRpcs,
    pb_grpc.AccountsServiceServicer,
):
    """Every RPC of AccountsService; each mixin maps one topic."""


def use_cases(pool: asyncpg.Pool, privacy: PrivacyPort) -> AccountsUseCases:
    members = Members(pool, privacy)
    return AccountsUseCases(
        registrations=Registrations(pool, privacy),
        members=members,
        profile_updates=ProfileUpdates(pool, privacy),
        status_changes=StatusChanges(pool),
        member_data=MemberData(pool, members),
    )


class AccountsComponent:
    service_names = (pb.DESCRIPTOR.services_by_name["AccountsService"].full_name,)

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        signer = TokenSigner(
            load_or_create_signing_key(settings.keys_dir), settings.token_audience, "accounts"
        )
        credentials = ServiceCredentials(signer, "service:accounts")
        self._channel = open_channel(settings.addr_of("privacy"), settings.max_message_bytes)
        privacy = GrpcPrivacy(self._channel, credentials, settings.outgoing_timeout_s)
        self._servicer = AccountsServicer(use_cases(pool, privacy))
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
