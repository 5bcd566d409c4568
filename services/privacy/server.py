"""The privacy service: its SPEC, and the wiring that builds each use case once and serves
membership.privacy.v1's FieldCryptoService, ConsentService, AuditService and
DataRightsService (one server_* module each)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
from membership.privacy.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    consent_pb2,
    consent_pb2_grpc,
    data_rights_pb2,
    data_rights_pb2_grpc,
    field_crypto_pb2,
    field_crypto_pb2_grpc,
)

from services.privacy import metrics as privacy_metrics
from services.privacy import settings as privacy_settings
from services.privacy.audit import AuditLog
from services.privacy.consent import Consents
from services.privacy.consent_statistics import ConsentStatisticsCache
from services.privacy.data_request_fulfilment import Fulfiller
from services.privacy.data_request_steps import StepExecutor
from services.privacy.data_requests import PRIVACY_CALLER, DataRequests
from services.privacy.deadlines import load_calendar
from services.privacy.erasure_journal import ErasureJournal
from services.privacy.exports import Exports
from services.privacy.field_crypto import FieldCrypto
from services.privacy.keyring import load_index_key, load_keyring
from services.privacy.ports import AccountsPort, PointsPort
from services.privacy.ports_processing import ProcessingEventsPort
from services.privacy.processing_relay import pause_relay
from services.privacy.proto_export_bundle import bundle_frame
from services.privacy.purpose_catalogue import load_purposes
from services.privacy.rewrapper import Rewrapper
from services.privacy.server_audit import AuditServicer
from services.privacy.server_consent import ConsentServicer
from services.privacy.server_data_requests import DataRightsServicer
from services.privacy.server_field_crypto import FieldCryptoServicer
from services.runtime.clients import ReconnectingChannel, ServiceCredentials, open_channel
from services.runtime.config import Settings
from services.runtime.identity import TokenSigner, load_or_create_signing_key
from services.runtime.server import ServiceSpec


@dataclass(frozen=True)
class Remotes:
    """The ports data requests call accounts and points on."""

    accounts: AccountsPort
    points: PointsPort

    @classmethod
    def open(cls, settings: Settings, credentials: ServiceCredentials) -> Remotes:
        def channel_to(addr: str) -> ReconnectingChannel:
            return ReconnectingChannel(lambda: open_channel(addr, settings.max_message_bytes))

        timeout_s = settings.outgoing_timeout_s
        return cls(
            AccountsPort(channel_to(settings.addr_of("accounts")), credentials, timeout_s),
            PointsPort(channel_to(settings.addr_of("points")), credentials, timeout_s),
        )

    async def close(self) -> None:
        await self.accounts.close()
        await self.points.close()


@dataclass(frozen=True)
class DataRequestParts:
    """The data-request use cases, and the ports they call on."""

    requests: DataRequests
    fulfiller: Fulfiller
    exports: Exports
    remotes: Remotes

    async def close(self) -> None:
        await self.fulfiller.close()  # before the channels it calls on
        await self.remotes.close()


class PrivacyComponent:
    service_names = (
        field_crypto_pb2.DESCRIPTOR.services_by_name["FieldCryptoService"].full_name,
        consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name,
        audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
        data_rights_pb2.DESCRIPTOR.services_by_name["DataRightsService"].full_name,
    )

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        crypto: FieldCrypto,
        consents: Consents,
        statistics_ttl_s: float,
        data_requests: DataRequestParts,
        credentials: ServiceCredentials,
    ) -> None:
        self.crypto = crypto
        self.consents = consents
        self.consent_statistics = ConsentStatisticsCache(pool, consents.catalogue, statistics_ttl_s)
        self._data_requests = data_requests
        self.data_requests = data_requests.requests
        self.fulfiller = data_requests.fulfiller
        self.exports = data_requests.exports
        self.rewrapper = Rewrapper(crypto)
        self.audit = AuditLog(pool)
        self._processing = ProcessingEventsPort(
            lambda: open_channel(settings.addr_of("points"), settings.max_message_bytes),
            credentials,
            settings.outgoing_timeout_s,
        )
        self._relay = pause_relay(pool, self._processing)

    def add_to(self, server: grpc.aio.Server) -> None:
        field_crypto_pb2_grpc.add_FieldCryptoServiceServicer_to_server(
            FieldCryptoServicer(self.crypto), server
        )
        consent_pb2_grpc.add_ConsentServiceServicer_to_server(
            ConsentServicer(self.consents, self.consent_statistics), server
        )
        audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(self.audit), server)
        data_rights_pb2_grpc.add_DataRightsServiceServicer_to_server(
            DataRightsServicer(self.data_requests, self.fulfiller, self.exports), server
        )
        # requests left IN_PROGRESS (a service was down, this process restarted) resume
        self.fulfiller.start()
        self.rewrapper.start()
        # processing pauses reach points from here on, also while points is down (retried)
        self._relay.start()

    async def close(self) -> None:
        await self.consent_statistics.close()
        await self._data_requests.close()
        await self._relay.close()  # before the channel it sends on
        await self._processing.close()
        await self.rewrapper.stop()


def service_credentials(settings: Settings) -> ServiceCredentials:
    signer = TokenSigner(
        load_or_create_signing_key(settings.keys_dir), settings.token_audience, "privacy"
    )
    return ServiceCredentials(signer, "service:privacy")


async def build_data_requests(
    pool: asyncpg.Pool,
    settings: Settings,
    own: privacy_settings.PrivacySettings,
    *,
    crypto: FieldCrypto,
    consents: Consents,
    credentials: ServiceCredentials,
) -> DataRequestParts:
    """Also re-erases, before the service serves, the members the erasure journal names
    that a restored backup brought back."""
    remotes = Remotes.open(settings, credentials)
    calendar = load_calendar(own.calendar_overrides)
    requests = DataRequests(pool, crypto, consents, calendar, remotes.accounts)
    exports = Exports(pool, crypto, PRIVACY_CALLER, requests.clock)
    # appends to this process's file only; reads every writer's file in its folder (the
    # replicas sharing one volume each have their own)
    journal = ErasureJournal(own.erasure_journal)
    steps = StepExecutor(
        pool=pool,
        crypto=crypto,
        consents=consents,
        requests=requests,
        exports=exports,
        accounts=remotes.accounts,
        points=remotes.points,
        journal=journal,
        frame_bundle=bundle_frame,
        clock=requests.clock,
    )
    fulfiller = Fulfiller(pool, requests, steps, journal, calendar)
    try:
        await fulfiller.reapply_erasures()
    except BaseException:
        await remotes.close()
        raise
    return DataRequestParts(requests, fulfiller, exports, remotes)


async def build(pool: asyncpg.Pool, settings: Settings) -> PrivacyComponent:
    own = privacy_settings.load(settings)
    keys = own.keys
    crypto = FieldCrypto(
        pool,
        load_keyring(keys.keys_dir, keys.keyring_json),
        load_index_key(keys.keys_dir, keys.index_key),
    )
    consents = Consents(pool, await load_purposes(pool, own.purposes_file))
    credentials = service_credentials(settings)
    data_requests = await build_data_requests(
        pool, settings, own, crypto=crypto, consents=consents, credentials=credentials
    )
    return PrivacyComponent(
        pool,
        settings,
        crypto=crypto,
        consents=consents,
        statistics_ttl_s=own.consent_statistics_ttl_s,
        data_requests=data_requests,
        credentials=credentials,
    )


SPEC = ServiceSpec(
    name="privacy",
    migrations_dir=Path(__file__).parent / "migrations",
    build=build,
    probes=privacy_metrics.PROBES,
)
