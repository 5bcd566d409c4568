"""schemathesis against the live gateway's `/openapi.json`: requests generated from the
document, valid and invalid, each sent with the key of every role allowed to call the
operation (so that they reach transcoding and the services), never get a 5xx.

The gateway and the services run on the test's event loop; schemathesis makes blocking
HTTP calls, so it runs in a worker thread (`asyncio.to_thread`) while the loop serves."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.errors import FailureGroup

from gateway.route_doc import EXTERNAL_ROLES, roles_of
from gateway.server import RunningGateway, start_gateway
from tests.service.test_gateway_rest import SETTINGS, new_key
from tests.support.suite import Suite

EXAMPLES = 5  # per operation, generation mode and key: bounded, the whole run well under 60 s
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
Operation = APIOperation[Any, Any, Any, Any]


@dataclass(frozen=True)
class ServerError:
    operation: str
    role: str
    status: int
    request: str

    def __str__(self) -> str:
        return f"{self.operation} ({self.role}) -> {self.status}\n    {self.request}"


@dataclass
class Report:
    statuses: Counter[int]
    errors: list[ServerError]


@pytest.fixture
async def gateway(suite: Suite) -> AsyncIterator[RunningGateway]:
    running = await start_gateway(suite.settings, SETTINGS)
    yield running
    await running.stop()


def roles_for(operation: Operation) -> list[str]:
    """The roles allowed to call the operation; admin for internal ones (refused, 403)."""
    rpc_path = str(operation.definition.raw.get("x-grpc-method", ""))
    return roles_of(rpc_path) or ["admin"]


def fuzz(base_url: str, keys: dict[str, str]) -> Report:
    """Runs every operation of the document with bounded examples and no shrinking.
    Blocking: call it in a thread."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    report = Report(Counter(), [])
    with requests.Session() as session:
        for result in schema.get_all_operations():
            # the document must be one schemathesis reads whole
            assert not isinstance(result, Err), result.err()
            operation = result.ok()
            sent = {
                role: {"Authorization": f"Bearer {keys[role]}"} for role in roles_for(operation)
            }
            for mode in MODES:
                fuzz_operation(operation, mode, base_url, session, sent, report)
    return report


def fuzz_operation(
    operation: Operation,
    mode: GenerationMode,
    base_url: str,
    session: requests.Session,
    headers_of: dict[str, dict[str, str]],
    report: Report,
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        phases=[Phase.explicit, Phase.generate],  # no shrinking
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case[Operation]) -> None:
        for role, headers in headers_of.items():
            response = case.call(base_url=base_url, session=session, headers=headers)
            report.statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=[not_a_server_error], headers=headers)
            except FailureGroup:
                request = case.as_curl_command(headers={"Authorization": "Bearer <key>"})
                report.errors.append(
                    ServerError(operation.label, role, response.status_code, request)
                )

    run()


async def test_generated_requests_never_get_a_server_error(
    suite: Suite, gateway: RunningGateway
) -> None:
    keys = {role: await new_key(suite, role) for role in EXTERNAL_ROLES}
    base_url = f"http://127.0.0.1:{gateway.http_port}"
    report = await asyncio.to_thread(fuzz, base_url, keys)
    assert not report.errors, "\n".join(str(error) for error in report.errors)
    # not a vacuous pass: many requests got through to the services, valid and invalid ones
    assert report.statuses.total() >= 200, report.statuses
    assert report.statuses[200] > 0 and report.statuses[400] > 0, report.statuses
    assert max(report.statuses) < 500, report.statuses
