"""Assembles the data-subject request machinery of the privacy service: the domain, its
channels to accounts and points, the erasure journal and the background fulfilment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import grpc
from membership.privacy.v1 import data_rights_pb2, data_rights_pb2_grpc

from services.privacy import store_requests
from services.privacy.consent import Consents
from services.privacy.data_request_proto import request_pb
from services.privacy.data_rights import PRIVACY_CALLER, DataRights
from services.privacy.domain.deadlines import WorkingCalendar
from services.privacy.erasure_journal import ErasureJournal
from services.privacy.exports import Exports
from services.privacy.field_crypto import FieldCrypto
from services.privacy.fulfilment import Fulfiller
from services.privacy.member_services import MemberServices
from services.privacy.request_steps import StepExecutor
from services.privacy.server_data_rights import DataRightsServicer
from services.privacy.settings import PrivacySettings
from services.runtime.clients import ReconnectingChannel, ServiceCredentials, open_channel
from services.runtime.config import Settings

MAX_HISTORY_REQUESTS = 1000
SERVICE_NAME = data_rights_pb2.DESCRIPTOR.services_by_name["DataRightsService"].full_name


@dataclass
class DataRightsParts:
    rights: DataRights
    fulfiller: Fulfiller
    exports: Exports
    services: MemberServices

    def add_to(self, server: grpc.aio.Server) -> None:
        data_rights_pb2_grpc.add_DataRightsServiceServicer_to_server(
            DataRightsServicer(self.rights, self.fulfiller, self.exports), server
        )
        # requests left IN_PROGRESS (a service was down, this process restarted) resume
        self.fulfiller.start()

    async def close(self) -> None:
        await self.fulfiller.close()  # before the channels it calls on
        await self.services.close()


async def build_data_rights(
    pool: asyncpg.Pool,
    crypto: FieldCrypto,
    consents: Consents,
    settings: Settings,
    privacy_settings: PrivacySettings,
    calendar: WorkingCalendar,
    credentials: ServiceCredentials,
) -> DataRightsParts:
    """Also re-erases, before the service serves, the members the erasure journal names
    that a restored backup brought back."""
    services = MemberServices(
        ReconnectingChannel(
            lambda: open_channel(settings.addr_of("accounts"), settings.max_message_bytes)
        ),
        ReconnectingChannel(
            lambda: open_channel(settings.addr_of("points"), settings.max_message_bytes)
        ),
        credentials,
        settings.outgoing_timeout_s,
    )
    rights = DataRights(pool, crypto, consents, calendar, services.check_correction)
    exports = Exports(pool, crypto, PRIVACY_CALLER, rights.clock)
    # appends to this process's file only; reads every writer's file in its folder (the
    # replicas sharing one volume each have their own)
    journal = ErasureJournal(privacy_settings.erasure_journal)

    async def history(member_id: str) -> Sequence[data_rights_pb2.DataRequest]:
        where = store_requests.ListFilter((), (), member_id, None)
        views = await rights.list(where, None, MAX_HISTORY_REQUESTS)
        return [request_pb(view, with_timeline=False) for view in views]

    steps = StepExecutor(pool, crypto, consents, exports, services, journal, history, rights.clock)
    fulfiller = Fulfiller(pool, rights, steps, journal)
    try:
        await fulfiller.reapply_erasures()
    except BaseException:
        await services.close()
        raise
    return DataRightsParts(rights, fulfiller, exports, services)
