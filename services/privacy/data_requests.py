"""Data-subject requests: receiving, identity, deadlines and the officers' decisions (the
rules are domain/data_requests.py and domain/data_request_intake.py).

Every change of a request writes its timeline entry and its audit event in the same
transaction. Approval and fulfilment (what an approved request does) are in
data_request_fulfilment.py.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import asyncpg

from services.privacy.consent import Consents, require_member
from services.privacy.domain import data_request_intake as intake
from services.privacy.domain.consent import necessary_purpose
from services.privacy.domain.data_request_decisions import (
    checked_reason,
    close_fingerprint,
    closed,
    closed_by,
    extend_fingerprint,
    extended,
    rejected,
)
from services.privacy.domain.data_request_intake import Change, IssuedCode, NewRequest
from services.privacy.domain.data_requests import (
    DataRequest,
    ListFilter,
    ListPosition,
    RequestView,
    State,
    TimelineAction,
    TimelineEvent,
    Transition,
    VerificationMethod,
    audit_event,
    fulfilment_running,
    illegal_transition,
    require_allowed,
    too_many_codes,
)
from services.privacy.domain.deadlines import WorkingCalendar
from services.privacy.domain.envelope import FieldContext
from services.privacy.domain.field_crypto import FieldValue, IndexInput
from services.privacy.domain.service_calls import ServiceCallError
from services.privacy.field_crypto import FieldCrypto
from services.privacy.ports import AccountsPort
from services.privacy.store import audit as audit_store
from services.privacy.store import data_requests as request_store
from services.privacy.store import exports as export_store
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import idempotency_key_reused, not_found
from services.runtime.identity import Caller

CORRECTION_CONTEXT = FieldContext("privacy", "data_requests", "correction")
CORRECTION_INDEX = "privacy.data_requests.correction"
CODE_INDEX = "privacy.data_requests.code"
MAX_HISTORY_REQUESTS = 1000  # of a member, in their export bundle
# privacy's own identity for work it does on itself (encrypting a correction, shredding)
PRIVACY_CALLER = Caller("privacy", "service:privacy", frozenset(), "")

RequestWork = Callable[[Conn, DataRequest, datetime], Awaitable[DataRequest]]


class DataRequests:
    def __init__(
        self,
        pool: asyncpg.Pool,
        crypto: FieldCrypto,
        consents: Consents,
        calendar: WorkingCalendar,
        accounts: AccountsPort,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        self._crypto = crypto
        self._consents = consents
        self._calendar = calendar
        self._accounts = accounts
        self.clock = clock

    # -- reads ----------------------------------------------------------------------------

    async def get(self, request_id: str) -> RequestView:
        async with self._pool.acquire() as conn:
            return await self._view(conn, await _require(conn, request_id))

    async def _view(self, conn: Conn, request: DataRequest) -> RequestView:
        events = await request_store.events_of(conn, request.id)
        export = await export_store.get_export(conn, request.id)
        return RequestView(request, events, export, self.clock())

    async def history(self, member_id: str) -> list[RequestView]:
        """The member's requests, as their export bundle shows them."""
        return await self.list(ListFilter(member_id=member_id), None, MAX_HISTORY_REQUESTS)

    async def list(
        self, where: ListFilter, after: ListPosition | None, limit: int
    ) -> list[RequestView]:
        """Without their timelines."""
        overdue_at = self.clock() if where.overdue_only else None
        async with self._pool.acquire() as conn:
            found = await request_store.list_requests(
                conn, where, overdue_at=overdue_at, after=after, limit=limit
            )
            return [
                RequestView(r, [], await export_store.get_export(conn, r.id), self.clock())
                for r in found
            ]

    async def by_create_key(self, key: str) -> DataRequest:
        async with self._pool.acquire() as conn:
            found = await request_store.find_by_create_request_id(conn, key)
        if found is None:
            raise not_found("data request")
        return found

    # -- receiving ------------------------------------------------------------------------

    async def create(self, caller: Caller, new: NewRequest, key: str) -> RequestView:
        intake.check_type_fields(new)
        self._check_purposes(new)
        correction_json = new.correction_json()
        keyed = self._keyed(CORRECTION_INDEX, correction_json) if correction_json else b""
        fingerprint = new.fingerprint(keyed)
        async with self._pool.acquire() as conn:
            done = await request_store.find_by_create_request_id(conn, key)
            if done is not None:
                return await self._replay(conn, done, fingerprint)
            await require_member(conn, new.member_id)
        if new.correction:
            # accounts' rules, checked by accounts: a value it would refuse is refused now,
            # not found out after the approval
            await self._check_correction(new.member_id, new.correction, key)
        ciphertext = await self._encrypt_correction(new.member_id, correction_json)
        request = intake.received(
            new,
            key=key,
            fingerprint=fingerprint,
            ciphertext=ciphertext,
            now=self.clock(),
            calendar=self._calendar,
        )
        # a concurrent repeat of the same request may win; then answer like it
        with contextlib.suppress(asyncpg.UniqueViolationError):
            await in_transaction(self._pool, lambda conn: self._insert(conn, caller, request))
        async with self._pool.acquire() as conn:
            stored = await request_store.find_by_create_request_id(conn, key)
            assert stored is not None, "the request or its concurrent repeat was written"
            return await self._replay(conn, stored, fingerprint)

    async def _replay(self, conn: Conn, request: DataRequest, fingerprint: bytes) -> RequestView:
        if not hmac.compare_digest(request.create_request_hash, fingerprint):
            raise idempotency_key_reused()
        return await self._view(conn, request)

    def _check_purposes(self, new: NewRequest) -> None:
        for i, code in enumerate(new.purposes):
            purpose = self._consents.purpose(code, field_path=f"data_request.purposes[{i}]")
            if purpose.necessary:
                raise necessary_purpose()

    async def _check_correction(self, member_id: str, changes: Sequence[Change], key: str) -> None:
        """At CreateDataRequest: accounts checks the values with the rules of any update
        (UpdateMember, validate_only: nothing written, nothing recorded), so that privacy
        neither imports nor copies them (domain/data_request_intake.py reads its answer)."""
        try:
            await self._accounts.update_member(
                member_id, changes, request_id=key, validate_only=True
            )
        except ServiceCallError as exc:
            refused = intake.correction_check_refused(exc)
            if refused is not None:
                raise refused from None

    def _keyed(self, context: str, value: bytes) -> bytes:
        digests, _ = self._crypto.blind_indexes(PRIVACY_CALLER, [IndexInput(context, value)])
        return digests[0]

    async def _encrypt_correction(self, member_id: str, plaintext: bytes) -> bytes | None:
        if not plaintext:
            return None
        ciphertexts, _ = await self._crypto.encrypt(
            PRIVACY_CALLER, member_id, [FieldValue(CORRECTION_CONTEXT, plaintext)]
        )
        return ciphertexts[0]

    async def _insert(self, conn: Conn, caller: Caller, request: DataRequest) -> None:
        await request_store.insert_request(conn, request)
        await record(conn, caller, request, TimelineAction.CREATED, request.created_at)

    # -- identity -------------------------------------------------------------------------

    async def issue_code(self, caller: Caller, request_id: str) -> IssuedCode:
        code = intake.new_code()
        digest = self._keyed(CODE_INDEX, f"{request_id}:{code}".encode())

        async def work(conn: Conn) -> IssuedCode:
            request = await _require(conn, request_id, for_update=True)
            require_allowed(Transition.ISSUE_CODE, request.state)
            if request.codes_issued >= intake.MAX_CODES_ISSUED:
                raise too_many_codes()
            now = self.clock()
            request = intake.code_issued(request, digest, now)
            await request_store.save_request(conn, request)
            await record(conn, caller, request, TimelineAction.CODE_ISSUED, now)
            return IssuedCode(code, now + intake.CODE_TTL, intake.CODE_ATTEMPTS)

        return await in_transaction(self._pool, work)

    async def verify_code(self, caller: Caller, request_id: str, *, code: str) -> RequestView:
        digest = self._keyed(CODE_INDEX, f"{request_id}:{code}".encode())

        async def work(conn: Conn) -> tuple[RequestView, bool]:
            request = await _require(conn, request_id, for_update=True)
            require_allowed(Transition.VERIFY, request.state)
            now = self.clock()
            problem = intake.code_problem(request, now)
            if problem is not None:
                raise problem
            assert request.code_hash is not None
            if not hmac.compare_digest(request.code_hash, digest):
                request = intake.code_wrong(request, now)
                await request_store.save_request(conn, request)
                await record(conn, caller, request, TimelineAction.CODE_WRONG, now)
                return await self._view(conn, request), False
            request = intake.verified(request, VerificationMethod.ONE_TIME_CODE, now=now)
            await request_store.save_request(conn, request)
            action = TimelineAction.IDENTITY_VERIFIED
            await record(conn, caller, request, action, now, note="one-time code")
            return await self._view(conn, request), True

        # a wrong code is committed (the attempt counts) and then refused
        view, matched = await in_transaction(self._pool, work)
        if not matched:
            raise intake.wrong_code(view.request.code_attempts_left)
        return view

    async def attest(
        self, caller: Caller, request_id: str, *, method: str, reference: str
    ) -> RequestView:
        intake.check_attestation(caller.role, method=method, reference=reference)

        async def work(conn: Conn) -> RequestView:
            request = await _require(conn, request_id, for_update=True)
            require_allowed(Transition.VERIFY, request.state)
            now = self.clock()
            request = intake.verified(
                request,
                VerificationMethod.WALLET_ATTESTATION,
                attestation_method=method,
                reference=reference,
                now=now,
            )
            await request_store.save_request(conn, request)
            note = f"attestation:{method}"
            await record(conn, caller, request, TimelineAction.IDENTITY_VERIFIED, now, note=note)
            return await self._view(conn, request)

        return await in_transaction(self._pool, work)

    # -- decisions ------------------------------------------------------------------------

    async def reject(
        self, caller: Caller, request_id: str, *, reason: str, key: str = ""
    ) -> RequestView:
        """`key`: the idempotency key, optional ("" for v1 callers sending none; then a
        repeat is an illegal transition like any other move out of a final state)."""
        text = checked_reason(reason)
        fingerprint = close_fingerprint(Transition.REJECT, text)

        async def work(conn: Conn, request: DataRequest, now: datetime) -> DataRequest:
            if closed_by(request, key, fingerprint):
                return request  # a repeat (the first answer was lost)
            require_allowed(Transition.REJECT, request.state)
            if request.state == State.IN_PROGRESS and not await request_store.fulfilment_idle(
                conn, request.id
            ):
                raise fulfilment_running()
            if request.partly_done:
                # what was done for the member cannot be undone by a rejection
                raise illegal_transition(
                    Transition.REJECT, request.state, "part of it was fulfilled"
                )
            request = rejected(request, text, key=key, fingerprint=fingerprint, now=now)
            await request_store.save_request(conn, request)
            await record(conn, caller, request, TimelineAction.REJECTED, now, note=text)
            return request

        return await self._change(request_id, work)

    async def cancel(self, caller: Caller, request_id: str, *, key: str = "") -> RequestView:
        """`key` as for `reject`."""
        fingerprint = close_fingerprint(Transition.CANCEL)

        async def work(conn: Conn, request: DataRequest, now: datetime) -> DataRequest:
            if closed_by(request, key, fingerprint):
                return request  # a repeat (the first answer was lost)
            require_allowed(Transition.CANCEL, request.state)
            request = closed(request, State.CANCELLED, key=key, fingerprint=fingerprint, now=now)
            await request_store.save_request(conn, request)
            await record(conn, caller, request, TimelineAction.CANCELLED, now)
            return request

        return await self._change(request_id, work)

    async def extend(
        self, caller: Caller, request_id: str, *, extra_days: int, reason: str, key: str
    ) -> RequestView:
        fingerprint = extend_fingerprint(extra_days, reason)

        async def work(conn: Conn, request: DataRequest, now: datetime) -> DataRequest:
            done = await request_store.get_extension(conn, request.id, key=key)
            if done is not None:
                if not hmac.compare_digest(done, fingerprint):
                    raise idempotency_key_reused()
                return request
            require_allowed(Transition.EXTEND, request.state)
            request = extended(
                request,
                extra_days=extra_days,
                reason=reason,
                actor=caller.subject,
                now=now,
                calendar=self._calendar,
            )
            await request_store.insert_extension(
                conn, request.id, key=key, request_hash=fingerprint
            )
            await request_store.save_request(conn, request)
            note = request.extensions[-1].reason
            await record(conn, caller, request, TimelineAction.DEADLINE_EXTENDED, now, note=note)
            return request

        return await self._change(request_id, work)

    async def _change(self, request_id: str, work: RequestWork) -> RequestView:
        async def run(conn: Conn) -> RequestView:
            request = await _require(conn, request_id, for_update=True)
            request = await work(conn, request, self.clock())
            return await self._view(conn, request)

        return await in_transaction(self._pool, run)


async def _require(conn: Conn, request_id: str, *, for_update: bool = False) -> DataRequest:
    found = await request_store.get_request(conn, request_id, for_update=for_update)
    if found is None:
        raise not_found("data request")
    return found


async def record(
    conn: Conn,
    caller: Caller,
    request: DataRequest,
    action: str,
    at: datetime,
    *,
    note: str = "",
) -> None:
    """The timeline entry and the audit event of a change, in its transaction. The audit
    event names the member by id and the request; the note (a reason) stays in the
    timeline, out of the hash chain's clear fields."""
    event = TimelineEvent(
        state=request.state, action=action, actor=caller.subject, note=note, created_at=at
    )
    await request_store.append_event(conn, request.id, event)
    audited = audit_event(request, action, actor=caller.subject, actor_role=caller.role)
    await audit_store.append_audit(conn, audited)
