"""Data-subject requests: receiving, identity, deadlines and the officers' decisions.

Every change of a request writes its timeline entry and its audit event in the same
transaction. Fulfilment (what an approved request does) is in fulfilment.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg

from services.privacy import data_requests as rules
from services.privacy import store, store_requests
from services.privacy.audit import AuditEvent
from services.privacy.consent import Consents, necessary_purpose, require_member
from services.privacy.domain import deadlines
from services.privacy.envelope import FieldContext
from services.privacy.field_crypto import FieldCrypto
from services.privacy.store_exports import ExportRow, get_export
from services.privacy.store_requests import EventRow, RequestRow
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import failed_precondition, idempotency_key_reused, not_found
from services.runtime.identity import Caller

T = TypeVar("T")
# (member id, a correction's changes, the create request's key): raises what accounts refuses
CorrectionCheck = Callable[[str, Sequence[tuple[str, str]], str], Awaitable[None]]

CORRECTION_CONTEXT = FieldContext("privacy", "data_requests", "correction")
CORRECTION_INDEX = "privacy.data_requests.correction"
CODE_INDEX = "privacy.data_requests.code"
INTERNAL_KEY_PREFIX = "\x1f"
# privacy's own identity for work it does on itself (encrypting a correction, shredding)
PRIVACY_CALLER = Caller("privacy", "service:privacy", frozenset(), "")


@dataclass(frozen=True)
class RequestView:
    row: RequestRow
    events: list[EventRow]
    export: ExportRow | None
    now: datetime

    @property
    def overdue(self) -> bool:
        return self.row.state not in rules.FINAL_STATES and self.now >= self.row.due_at


@dataclass(frozen=True)
class IssuedCode:
    code: str
    expires_at: datetime
    attempts: int


class DataRights:
    def __init__(
        self,
        pool: asyncpg.Pool,
        crypto: FieldCrypto,
        consents: Consents,
        calendar: deadlines.WorkingCalendar,
        check_correction: CorrectionCheck,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        self._crypto = crypto
        self._consents = consents
        self._calendar = calendar
        self._check_correction = check_correction
        self.clock = clock

    # -- reads ----------------------------------------------------------------------------

    async def get(self, request_id: str) -> RequestView:
        async with self._pool.acquire() as conn:
            return await self._view(conn, await _require(conn, request_id))

    async def _view(self, conn: Conn, row: RequestRow) -> RequestView:
        events = await store_requests.events_of(conn, row.id)
        return RequestView(row, events, await get_export(conn, row.id), self.clock())

    async def list(
        self,
        where: store_requests.ListFilter,
        after: tuple[bool, datetime, str] | None,
        limit: int,
    ) -> list[RequestView]:
        async with self._pool.acquire() as conn:
            rows = await store_requests.list_requests(conn, where, after, limit)
            return [RequestView(r, [], await get_export(conn, r.id), self.clock()) for r in rows]

    async def by_create_key(self, key: str) -> RequestRow:
        async with self._pool.acquire() as conn:
            row = await store_requests.find_by_create_request_id(conn, key)
        if row is None:
            raise not_found("data request")
        return row

    def internal_deletion(self, member_id: str, erased_by: str, now: datetime) -> RequestRow:
        """The DELETION that re-applies an erasure an older backup's restore undid: approved
        by the original request, so it starts IN_PROGRESS."""
        # a leading control character: no caller's request_id (printable) can take this key
        key = f"{INTERNAL_KEY_PREFIX}reapply:{member_id}:{erased_by}"
        row = self._new_row(
            rules.NewRequest(member_id, "DELETION", ""),
            key,
            hashlib.sha256(key.encode()).digest(),
            None,
        )
        return replace(
            row,
            state=rules.IN_PROGRESS,
            approve_request_id=key,
            steps=[store_requests.Step(name) for name in rules.STEPS["DELETION"]],
            next_attempt_at=now,
        )

    # -- receiving ------------------------------------------------------------------------

    async def create(self, caller: Caller, new: rules.NewRequest, key: str) -> RequestView:
        rules.check_type_fields(new)
        self._check_purposes(new)
        correction_json = _correction_json(new)
        keyed = self._keyed(CORRECTION_INDEX, correction_json) if correction_json else b""
        fingerprint = new.fingerprint(keyed)
        async with self._pool.acquire() as conn:
            done = await store_requests.find_by_create_request_id(conn, key)
            if done is not None:
                return await self._replay(conn, done, fingerprint)
            await require_member(conn, new.member_id)
        if new.correction:
            # accounts' rules, checked by accounts: a value it would refuse is refused now,
            # not found out after the approval
            await self._check_correction(new.member_id, new.correction, key)
        ciphertext = await self._encrypt_correction(new.member_id, correction_json)
        row = self._new_row(new, key, fingerprint, ciphertext)
        # a concurrent repeat of the same request may win; then answer like it
        with contextlib.suppress(asyncpg.UniqueViolationError):
            await in_transaction(self._pool, lambda conn: self._insert(conn, caller, row))
        async with self._pool.acquire() as conn:
            stored = await store_requests.find_by_create_request_id(conn, key)
            assert stored is not None, "the request or its concurrent repeat was written"
            return await self._replay(conn, stored, fingerprint)

    async def _replay(self, conn: Conn, row: RequestRow, fingerprint: bytes) -> RequestView:
        if not hmac.compare_digest(row.create_request_hash, fingerprint):
            raise idempotency_key_reused()
        return await self._view(conn, row)

    def _check_purposes(self, new: rules.NewRequest) -> None:
        for i, code in enumerate(new.purposes):
            purpose = self._consents.purpose(code, f"data_request.purposes[{i}]")
            if purpose.necessary:
                raise necessary_purpose()

    def _keyed(self, context: str, value: bytes) -> bytes:
        digests, _ = self._crypto.blind_indexes(PRIVACY_CALLER, [(context, value)])
        return digests[0]

    async def _encrypt_correction(self, member_id: str, plaintext: bytes) -> bytes | None:
        if not plaintext:
            return None
        ciphertexts, _ = await self._crypto.encrypt(
            PRIVACY_CALLER, member_id, [(CORRECTION_CONTEXT, plaintext)]
        )
        return ciphertexts[0]

    def _new_row(
        self, new: rules.NewRequest, key: str, fingerprint: bytes, ciphertext: bytes | None
    ) -> RequestRow:
        now = self.clock()
        due = deadlines.deadline(
            now, new.working_days or deadlines.DEFAULT_WORKING_DAYS, self._calendar
        )
        return RequestRow(
            id=rules.new_request_id(),
            member_id=new.member_id,
            type=new.type,
            channel=new.channel,
            state=rules.RECEIVED,
            create_request_id=key,
            create_request_hash=fingerprint,
            created_at=now,
            updated_at=now,
            received_on=due.received_on,
            initial_working_days=due.working_days,
            working_days=due.working_days,
            due_date=due.due_date,
            due_at=due.due,
            deadline_provisional=due.provisional,
            purposes=list(new.purposes),
            transactions=list(new.transactions),
            correction_fields=sorted(f for f, _ in new.correction),
            correction_ciphertext=ciphertext,
        )

    async def _insert(self, conn: Conn, caller: Caller, row: RequestRow) -> None:
        await store_requests.insert_request(conn, row)
        await record(conn, caller, row, "created", row.created_at)

    # -- identity -------------------------------------------------------------------------

    async def issue_code(self, caller: Caller, request_id: str) -> IssuedCode:
        code = rules.new_code()
        digest = self._keyed(CODE_INDEX, f"{request_id}:{code}".encode())

        async def work(conn: Conn) -> IssuedCode:
            row = await _require(conn, request_id, for_update=True)
            rules.require_allowed("issue_code", row.state)
            if row.codes_issued >= rules.MAX_CODES_ISSUED:
                raise failed_precondition(
                    "TOO_MANY_CODES", "no more codes for this request: verify another way"
                )
            now = self.clock()
            row = replace(
                row,
                codes_issued=row.codes_issued + 1,
                code_hash=digest,
                code_expires_at=now + rules.CODE_TTL,
                code_attempts_left=rules.CODE_ATTEMPTS,
                updated_at=now,
            )
            await store_requests.save_request(conn, row)
            await record(conn, caller, row, "verification_code.issued", now)
            return IssuedCode(code, now + rules.CODE_TTL, rules.CODE_ATTEMPTS)

        return await in_transaction(self._pool, work)

    async def verify_code(self, caller: Caller, request_id: str, code: str) -> RequestView:
        digest = self._keyed(CODE_INDEX, f"{request_id}:{code}".encode())

        async def work(conn: Conn) -> tuple[RequestView, bool]:
            row = await _require(conn, request_id, for_update=True)
            rules.require_allowed("verify", row.state)
            now = self.clock()
            problem = rules.code_problem(row.code_expires_at, row.code_attempts_left, now)
            if problem is not None:
                raise problem
            assert row.code_hash is not None
            if not hmac.compare_digest(row.code_hash, digest):
                row = replace(row, code_attempts_left=row.code_attempts_left - 1, updated_at=now)
                await store_requests.save_request(conn, row)
                await record(conn, caller, row, "verification_code.wrong", now)
                return await self._view(conn, row), False
            row = self._verified(row, now, "ONE_TIME_CODE", "", "")
            await store_requests.save_request(conn, row)
            await record(conn, caller, row, "identity_verified", now, "one-time code")
            return await self._view(conn, row), True

        # a wrong code is committed (the attempt counts) and then refused
        view, matched = await in_transaction(self._pool, work)
        if not matched:
            raise rules.wrong_code(view.row.code_attempts_left)
        return view

    async def attest(
        self, caller: Caller, request_id: str, method: str, reference: str
    ) -> RequestView:
        rules.check_attestation(caller.role, method, reference)

        async def work(conn: Conn) -> RequestView:
            row = await _require(conn, request_id, for_update=True)
            rules.require_allowed("verify", row.state)
            now = self.clock()
            row = self._verified(row, now, "WALLET_ATTESTATION", method, reference)
            await store_requests.save_request(conn, row)
            await record(conn, caller, row, "identity_verified", now, f"attestation:{method}")
            return await self._view(conn, row)

        return await in_transaction(self._pool, work)

    @staticmethod
    def _verified(
        row: RequestRow, now: datetime, method: str, attestation: str, reference: str
    ) -> RequestRow:
        return replace(
            row,
            state=rules.IDENTITY_VERIFIED,
            verification_method=method,
            attestation_method=attestation,
            attestation_reference=reference,
            verified_at=now,
            code_hash=None,  # a code works once
            code_attempts_left=0,
            updated_at=now,
        )

    # -- decisions ------------------------------------------------------------------------

    async def reject(
        self, caller: Caller, request_id: str, reason: str, key: str = ""
    ) -> RequestView:
        """`key`: the idempotency key, optional ("" for v1 callers sending none; then a
        repeat is an illegal transition like any other move out of a final state)."""
        text = rules.checked_reason(reason)
        fingerprint = rules.close_fingerprint("reject", text)

        async def work(conn: Conn, row: RequestRow, now: datetime) -> RequestRow:
            if rules.closed_by(row, key, fingerprint):
                return row  # a repeat (the first answer was lost)
            rules.require_allowed("reject", row.state)
            if row.state == rules.IN_PROGRESS and not await store_requests.fulfilment_idle(
                conn, row.id
            ):
                raise failed_precondition(
                    "FULFILMENT_RUNNING", "the request is being fulfilled; try again shortly"
                )
            if any(s.done_at for s in row.steps):
                # what was done for the member cannot be undone by a rejection
                raise rules.illegal_transition("reject", row.state, "part of it was fulfilled")
            row = replace(row, state=rules.REJECTED, rejection_reason=text)
            row = _closed(rules.with_close_key(row, key, fingerprint), now)
            await store_requests.save_request(conn, row)
            await record(conn, caller, row, "rejected", now, text)
            return row

        return await self._change(request_id, work)

    async def cancel(self, caller: Caller, request_id: str, key: str = "") -> RequestView:
        """`key` as for `reject`."""
        fingerprint = rules.close_fingerprint("cancel")

        async def work(conn: Conn, row: RequestRow, now: datetime) -> RequestRow:
            if rules.closed_by(row, key, fingerprint):
                return row  # a repeat (the first answer was lost)
            rules.require_allowed("cancel", row.state)
            row = replace(row, state=rules.CANCELLED)
            row = _closed(rules.with_close_key(row, key, fingerprint), now)
            await store_requests.save_request(conn, row)
            await record(conn, caller, row, "cancelled", now)
            return row

        return await self._change(request_id, work)

    async def extend(
        self, caller: Caller, request_id: str, extra_days: int, reason: str, key: str
    ) -> RequestView:
        fingerprint = hashlib.sha256(json.dumps([extra_days, reason]).encode()).digest()

        async def work(conn: Conn, row: RequestRow, now: datetime) -> RequestRow:
            done = await store_requests.get_extension(conn, row.id, key)
            if done is not None:
                if not hmac.compare_digest(done, fingerprint):
                    raise idempotency_key_reused()
                return row
            rules.require_allowed("extend", row.state)
            row = self._extended(row, extra_days, reason, caller, now)
            await store_requests.insert_extension(conn, row.id, key, fingerprint)
            await store_requests.save_request(conn, row)
            await record(conn, caller, row, "deadline.extended", now, row.extensions[-1]["reason"])
            return row

        return await self._change(request_id, work)

    def _extended(
        self, row: RequestRow, extra_days: int, reason: str, caller: Caller, now: datetime
    ) -> RequestRow:
        current = deadlines.Deadline(
            row.received_on, row.due_date, row.due_at, row.working_days, row.deadline_provisional
        )
        moved = deadlines.extend(current, extra_days, reason, self._calendar)
        entry = {
            "extra_working_days": extra_days,
            "reason": moved.extensions[-1].reason,
            "at": now.isoformat(),
            "actor": caller.subject,
        }
        return replace(
            row,
            working_days=moved.working_days,
            due_date=moved.due_date,
            due_at=moved.due,
            deadline_provisional=moved.provisional,
            extensions=[*row.extensions, entry],
            updated_at=now,
        )

    async def _change(
        self,
        request_id: str,
        work: Callable[[Conn, RequestRow, datetime], Awaitable[RequestRow]],
    ) -> RequestView:
        async def run(conn: Conn) -> RequestView:
            row = await _require(conn, request_id, for_update=True)
            row = await work(conn, row, self.clock())
            return await self._view(conn, row)

        return await in_transaction(self._pool, run)


def _correction_json(new: rules.NewRequest) -> bytes:
    if not new.correction:
        return b""
    return json.dumps(dict(new.correction), sort_keys=True, separators=(",", ":")).encode()


def _closed(row: RequestRow, now: datetime) -> RequestRow:
    return replace(row, closed_at=now, updated_at=now, next_attempt_at=None)


async def _require(conn: Conn, request_id: str, for_update: bool = False) -> RequestRow:
    row = await store_requests.get_request(conn, request_id, for_update)
    if row is None:
        raise not_found("data request")
    return row


async def record(
    conn: Conn, caller: Caller, row: RequestRow, action: str, at: datetime, note: str = ""
) -> None:
    """The timeline entry and the audit event of a change, in its transaction. The audit
    event names the member by id and the request; the note (a reason) stays in the
    timeline, out of the hash chain's clear fields."""
    await store_requests.append_event(conn, row.id, row.state, action, caller.subject, note, at)
    await store.append_audit(
        conn,
        AuditEvent(
            actor=caller.subject,
            actor_role=caller.role,
            action=f"data_request.{action}",
            subject_id=row.member_id,
            purpose=row.type,
            request_id=f"dataRequests/{row.id}",
        ),
    )
