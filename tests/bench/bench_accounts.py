"""Benchmark of the accounts service and field encryption (not a test: `make bench`).

Starts its own embedded PostgreSQL and the services in process (the test suite's set-up),
then measures side by side in one run:

  (a) an empty gRPC call (grpc.health.v1.Health/Check on the accounts server): the baseline
  (b) RegisterMember
  (c) GetMember view FULL as a compliance officer (decrypts through privacy, audited)
  (d) EncryptFields of 3 fields, against raw AES-GCM (`cryptography`) on the same 3 fields
      in process: throughput at the same concurrency, and latency with 1 call in flight

Each gRPC row: a fixed number of calls after a warm-up, a fixed number in flight (asyncio
tasks on one channel), throughput, p50 and p99 latency, and the ratio to the empty call.
Prints a table and writes bench-results/accounts.json with machine information.

    python -m tests.bench.bench_accounts [--calls 2000] [--concurrency 16] [--warmup 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from grpc_health.v1 import health_pb2, health_pb2_grpc
from membership.accounts.v1 import accounts_pb2 as apb
from membership.privacy.v1 import field_crypto_pb2 as ppb

from tests.bench.common import (
    Progress,
    Result,
    machine_info,
    measure,
    relate,
    related,
    summarise,
    table,
)
from tests.support.postgres import PostgresForTests
from tests.support.suite import Suite, running_suite

RESULTS = Path(__file__).resolve().parents[2] / "bench-results" / "accounts.json"
TOKEN_TTL_S = 3600
# the same three personal fields accounts encrypts at registration
FIELDS = (
    ("phone", b"+8613712345678"),
    ("email", b"bench.member.00001@example.com"),
    ("display_name", "会员 Member 00001".encode()),
)


def measure_raw_aesgcm(operations: int, warmup: int, phase: str = "") -> Result:
    """The same three fields encrypted with AES-256-GCM in process: fresh nonce, associated
    data like the service's; one key object (no key lookup, no unwrapping, no RPC)."""
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    aads = [f"accounts/members/{column}/m0000000000000000001".encode() for column, _ in FIELDS]
    work = [(aad, plaintext) for aad, (_, plaintext) in zip(aads, FIELDS, strict=True)]

    def once() -> None:
        for aad, plaintext in work:
            aead.encrypt(os.urandom(12), plaintext, aad)

    for _ in range(warmup):
        once()
    label = "raw AES-GCM, 3 fields"
    progress = Progress(f"{phase} {label}".strip(), operations)
    latencies: list[float] = []
    clock = time.perf_counter
    started = clock()
    for n in range(operations):
        t0 = clock()
        once()
        latencies.append(clock() - t0)
        if n % 1024 == 0 or n == operations - 1:
            progress.update(n + 1)
    return summarise(label, latencies, clock() - started, 1)


# --- the calls -------------------------------------------------------------------------------


def phone_of(i: int) -> str:
    """A valid mainland mobile number per index (137 + 8 digits)."""
    return f"137{i % 100_000_000:08d}"


@dataclass
class Calls:
    suite: Suite
    run_id: str
    members: list[str] = field(default_factory=list)  # resource names, for reads

    def __post_init__(self) -> None:
        self.health = health_pb2_grpc.HealthStub(self.suite.accounts_channel)
        self.wallet = self.suite.auth("wallet-backend", "bench:wallet", TOKEN_TTL_S)
        self.officer = self.suite.auth("officer", "bench:officer", TOKEN_TTL_S)
        self.accounts_svc = self.suite.auth("service:accounts", "bench:accounts", TOKEN_TTL_S)

    async def empty(self, i: int) -> object:
        response = await self.health.Check(health_pb2.HealthCheckRequest(service=""))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        return response

    async def register(self, i: int) -> object:
        member: apb.Member = await self.suite.accounts.RegisterMember(
            apb.RegisterMemberRequest(
                request_id=f"bench-{self.run_id}-{i}",
                phone=phone_of(i),
                email=f"bench.member.{i:05d}@example.com",
                display_name=f"会员 Member {i:05d}",
            ),
            metadata=self.wallet,
        )
        self.members.append(member.name)
        return member

    async def get_full(self, i: int) -> object:
        member: apb.Member = await self.suite.accounts.GetMember(
            apb.GetMemberRequest(
                name=self.members[i % len(self.members)],
                view=apb.MEMBER_VIEW_FULL,
                purpose="benchmark",
            ),
            metadata=self.officer,
        )
        assert member.view == apb.MEMBER_VIEW_FULL
        return member

    async def encrypt(self, i: int) -> object:
        member_id = self.members[i % len(self.members)].removeprefix("members/")
        response = await self.suite.privacy.EncryptFields(
            ppb.EncryptFieldsRequest(
                subject_id=member_id,
                fields=[
                    ppb.PlainField(
                        context=ppb.FieldContext(service="accounts", table="members", column=c),
                        plaintext=p,
                    )
                    for c, p in FIELDS
                ],
            ),
            metadata=self.accounts_svc,
        )
        assert len(response.ciphertexts) == len(FIELDS)
        return response


# --- report ----------------------------------------------------------------------------------


# --- main ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    calls: int
    concurrency: int
    warmup: int
    raw_calls: int
    output: Path


async def run(options: Options, dsn: str) -> dict[str, Any]:
    keys_dir = Path(tempfile.mkdtemp(prefix="wm-bench-keys-"))
    try:
        async with running_suite(dsn, keys_dir) as suite:
            return await _run_suite(options, suite)
    finally:
        shutil.rmtree(keys_dir, ignore_errors=True)


async def _run_suite(options: Options, suite: Suite) -> dict[str, Any]:
    conn = await asyncpg.connect(suite.dsn)
    try:
        server_version = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    calls = Calls(suite, datetime.now(UTC).strftime("%H%M%S"))
    n, w, c = options.calls, options.warmup, options.concurrency

    phases = 6
    empty = await measure("empty gRPC call (Health/Check)", calls.empty, n, w, c, f"[1/{phases}]")
    empty.note = "baseline: health check on the accounts server, no token, no database"
    register = await measure("RegisterMember", calls.register, n, w, c, f"[2/{phases}]")
    register.note = "blind indexes + encryption in privacy, one transaction in accounts"
    get_full = await measure("GetMember FULL (officer)", calls.get_full, n, w, c, f"[3/{phases}]")
    get_full.note = "decryption in privacy with an audit-log append per call"
    encrypt = await measure("EncryptFields, 3 fields", calls.encrypt, n, w, c, f"[4/{phases}]")
    encrypt.note = "privacy alone: data-key read + unwrap, 3 x AES-256-GCM"
    for result in (register, get_full, encrypt):
        relate(result, empty)
    sequential_calls = max(1, n // 4)
    encrypt_seq = await measure(
        "EncryptFields, 3 fields, 1 in flight",
        calls.encrypt,
        sequential_calls,
        min(w, sequential_calls),
        1,
        f"[5/{phases}]",
    )
    encrypt_seq.note = "one call at a time: latency without queueing"
    raw = measure_raw_aesgcm(options.raw_calls, min(options.raw_calls, 1000), f"[6/{phases}]")
    raw.note = "in process, one AESGCM object, fresh 12-byte nonce per field"
    relate(encrypt_seq, raw)
    encrypt_vs_raw = {
        "throughput_ratio": round(raw.throughput / encrypt.throughput, 1),
        "p50_ratio_one_in_flight": round(encrypt_seq.p50_ms / raw.p50_ms, 1),
    }

    results = [empty, register, get_full, encrypt]
    print()
    print(f"wallet-membership accounts benchmark — {n} calls per row, {c} in flight, {w} warm-up")
    print("baseline: the empty gRPC call (grpc.health.v1.Health/Check on the accounts server)")
    print()
    print(table(results))
    print()
    print("field encryption against raw AES-GCM (ratios relative to raw AES-GCM)")
    print(table([raw, encrypt_seq, related(encrypt, raw)]))
    print(
        f"EncryptFields vs raw AES-GCM: {encrypt_vs_raw['throughput_ratio']}x lower throughput,"
        f" {encrypt_vs_raw['p50_ratio_one_in_flight']}x the p50 latency (1 in flight)"
    )
    print()
    print(
        "x slower = empty-call throughput / row throughput; x p50 = row p50 / empty-call p50."
        "\nClient and servers share one process and event loop (in-process suite, like the"
        " service tests);\nDB pools of the test settings"
        f" ({suite.settings.db_pool_max} connections per service); request logging off."
    )
    return {
        "benchmark": "accounts",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": {
            "calls": n,
            "warmup": w,
            "concurrency": c,
            "raw_aesgcm_operations": options.raw_calls,
            "db_pool_max_per_service": suite.settings.db_pool_max,
            "postgres": server_version,
            "setup": "in-process suite (tests/support/suite.running_suite), embedded PostgreSQL",
        },
        "machine": machine_info(),
        "baseline": empty.name,
        "results": [asdict(r) for r in results],
        "encrypt_fields_one_in_flight": asdict(encrypt_seq),
        "raw_aesgcm": asdict(raw),
        "encrypt_fields_vs_raw_aesgcm": encrypt_vs_raw,
    }


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.bench_accounts", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--calls", type=int, default=2000, help="measured calls per gRPC row")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured calls per row")
    parser.add_argument(
        "--raw-calls", type=int, default=0, help="raw AES-GCM operations (default 10 x --calls)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 1_000_000:
        parser.error("--calls must be between 1 and 1000000")
    if not 1 <= args.concurrency <= 256:
        parser.error("--concurrency must be between 1 and 256")
    if not 0 <= args.warmup <= 100_000:
        parser.error("--warmup must be between 0 and 100000")
    if not 0 <= args.raw_calls <= 10_000_000:
        parser.error("--raw-calls must be between 0 and 10000000")
    return Options(
        calls=args.calls,
        concurrency=args.concurrency,
        warmup=args.warmup,
        raw_calls=args.raw_calls or 10 * args.calls,
        output=args.output,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    sys.stderr.write("starting embedded PostgreSQL and the services...\n")
    postgres = PostgresForTests()
    try:
        dsn = asyncio.run(postgres.new_database())
        report = asyncio.run(run(options, dsn))
    finally:
        postgres.close()
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
