"""The services running in process on 127.0.0.1:0 against a test database."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from membership.accounts.v1 import accounts_pb2_grpc
from membership.points.v1 import points_pb2_grpc
from membership.privacy.v1 import (
    audit_pb2_grpc,
    consent_pb2_grpc,
    data_rights_pb2_grpc,
    field_crypto_pb2_grpc,
)

from services.accounts.server import SPEC as ACCOUNTS
from services.points.server import SPEC as POINTS
from services.privacy.server import SPEC as PRIVACY
from services.runtime.config import Settings, load_settings
from services.runtime.identity import TokenSigner, load_or_create_signing_key
from services.runtime.server import RunningService, start_service

Metadata = tuple[tuple[str, str], ...]


@dataclass
class Suite:
    dsn: str
    keys_dir: Path
    settings: Settings
    privacy_service: RunningService
    accounts_service: RunningService
    accounts_channel: grpc.aio.Channel
    privacy_channel: grpc.aio.Channel
    signer: TokenSigner
    # a test may stop it and start another on the same port (accounts' relay reconnects)
    points_service: RunningService
    points_channel: grpc.aio.Channel

    @property
    def accounts(self) -> accounts_pb2_grpc.AccountsServiceStub:
        return accounts_pb2_grpc.AccountsServiceStub(self.accounts_channel)

    @property
    def privacy(self) -> field_crypto_pb2_grpc.FieldCryptoServiceStub:
        return field_crypto_pb2_grpc.FieldCryptoServiceStub(self.privacy_channel)

    @property
    def consent(self) -> consent_pb2_grpc.ConsentServiceStub:
        return consent_pb2_grpc.ConsentServiceStub(self.privacy_channel)

    @property
    def audit(self) -> audit_pb2_grpc.AuditServiceStub:
        return audit_pb2_grpc.AuditServiceStub(self.privacy_channel)

    @property
    def data_rights(self) -> data_rights_pb2_grpc.DataRightsServiceStub:
        return data_rights_pb2_grpc.DataRightsServiceStub(self.privacy_channel)

    @property
    def points(self) -> points_pb2_grpc.PointsServiceStub:
        return points_pb2_grpc.PointsServiceStub(self.points_channel)

    def auth(self, role: str, subject: str = "", ttl_s: int = 300) -> Metadata:
        token = self.signer.mint(subject or f"test:{role}", role, ttl_s)
        return (("authorization", f"Bearer {token}"),)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def settings_for(
    dsn: str,
    keys_dir: Path,
    privacy_addr: str = "127.0.0.1:1",
    points_addr: str = "127.0.0.1:1",
    accounts_addr: str = "127.0.0.1:1",
) -> Settings:
    return load_settings(
        {
            "DATABASE_URL": dsn,
            "MEMBERSHIP_KEYS_DIR": str(keys_dir),
            "MEMBERSHIP_PRIVACY_ADDR": privacy_addr,
            "MEMBERSHIP_POINTS_ADDR": points_addr,
            "MEMBERSHIP_ACCOUNTS_ADDR": accounts_addr,
            "MEMBERSHIP_DB_POOL_MIN": "1",
            "MEMBERSHIP_DB_POOL_MAX": "4",
            "MEMBERSHIP_SHUTDOWN_GRACE_S": "0.5",
            "MEMBERSHIP_OUTGOING_TIMEOUT_S": "2",
            # tests run the points jobs themselves, at the times they choose
            "MEMBERSHIP_POINTS_JOBS_INTERVAL_S": "0",
            # tests read the statistics right after changing consents
            "MEMBERSHIP_CONSENT_STATISTICS_TTL_S": "0",
        }
    )


PORT_ATTEMPTS = 5


async def _privacy_and_accounts(
    dsn: str, keys_dir: Path, points_addr: str
) -> tuple[RunningService, RunningService, Settings]:
    """Privacy calls accounts (data-subject requests) and accounts calls privacy, so
    accounts' port is chosen before privacy starts; another server may take it meanwhile,
    and then both start again on another."""
    for attempt in range(PORT_ATTEMPTS):
        accounts_addr = f"127.0.0.1:{free_port()}"
        privacy = await start_service(
            PRIVACY,
            settings_for(dsn, keys_dir, points_addr=points_addr, accounts_addr=accounts_addr),
            "127.0.0.1:0",
        )
        privacy_addr = f"127.0.0.1:{privacy.port}"
        settings = settings_for(dsn, keys_dir, privacy_addr, points_addr, accounts_addr)
        try:
            accounts = await start_service(ACCOUNTS, settings, accounts_addr)
        except OSError:
            await privacy.stop(0)
            if attempt == PORT_ATTEMPTS - 1:
                raise
            continue
        except BaseException:
            await privacy.stop(0)
            raise
        return privacy, accounts, settings
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def running_suite(dsn: str, keys_dir: Path) -> AsyncIterator[Suite]:
    async with contextlib.AsyncExitStack() as stack:
        # points first: the outbox relays of privacy and accounts deliver events to it
        points = await start_service(POINTS, settings_for(dsn, keys_dir), "127.0.0.1:0")
        stack.push_async_callback(points.stop, 0.2)
        points_addr = f"127.0.0.1:{points.port}"
        privacy, accounts, settings = await _privacy_and_accounts(dsn, keys_dir, points_addr)
        stack.push_async_callback(privacy.stop, 0.2)
        stack.push_async_callback(accounts.stop, 0.2)
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{s.port}") for s in (accounts, privacy, points)
        ]
        for channel in channels:
            stack.push_async_callback(channel.close)
        signer = TokenSigner(load_or_create_signing_key(keys_dir), settings.token_audience, "tests")
        suite = Suite(
            dsn,
            keys_dir,
            settings,
            privacy,
            accounts,
            channels[0],
            channels[1],
            signer,
            points_service=points,
            points_channel=channels[2],
        )
        # the one the test left running, which may have replaced the first (stops first)
        stack.push_async_callback(lambda: suite.points_service.stop(0.2))
        yield suite
