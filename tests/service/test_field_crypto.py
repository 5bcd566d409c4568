"""membership.privacy.v1.FieldCryptoService in process against a real PostgreSQL: field
encryption, audited decryption, blind indexes, key rotation and crypto-shredding, and what
accounts makes of them."""

from __future__ import annotations

import asyncio
import stat

import asyncpg
import grpc
import pytest
from membership.accounts.v1 import accounts_pb2 as apb
from membership.privacy.v1 import field_crypto_pb2 as pb

from services.privacy import keyring
from services.privacy.domain.audit import GENESIS_HASH, first_broken_link
from services.privacy.field_crypto import FieldCrypto
from tests.support.accounts import register
from tests.support.privacy import (
    ACCOUNTS_SUBJECT,
    ADMIN_SUBJECT,
    EMAIL,
    FAILED_PRECONDITION,
    INVALID,
    NAME,
    PHONE,
    accounts_role,
    admin_role,
    audit_entries,
    context,
    decrypt,
    decrypt_request,
    encrypt,
    kek_of,
    privacy_role,
    wait_for_rewrap,
)
from tests.support.rpc_errors import expect_error, rpc_error
from tests.support.suite import Suite

# --- encrypt / decrypt -----------------------------------------------------------------------


async def test_encrypt_decrypt_round_trip_batched(suite: Suite, db: asyncpg.Connection) -> None:
    response = await suite.privacy.EncryptFields(
        pb.EncryptFieldsRequest(
            subject_id="m-1",
            fields=[
                pb.PlainField(context=context("phone"), plaintext=PHONE),
                pb.PlainField(context=context("email"), plaintext=EMAIL),
                pb.PlainField(context=context("display_name"), plaintext=NAME),
            ],
        ),
        metadata=accounts_role(suite),
    )
    assert response.data_key_id == "dek-v1"
    phone_ct, email_ct, name_ct = response.ciphertexts
    for plaintext, ct in [(PHONE, phone_ct), (EMAIL, email_ct), (NAME, name_ct)]:
        assert ct.startswith(b"WMC\x01")
        assert plaintext not in ct
    # request order is kept, also when decrypting in another order
    fields = [("display_name", name_ct), ("phone", phone_ct), ("email", email_ct)]
    assert await decrypt(suite, "m-1", fields) == [NAME, PHONE, EMAIL]
    # one data key per subject, created on first use and reused
    await encrypt(suite, "m-1", [("phone", PHONE)])
    assert await db.fetchval("SELECT count(*) FROM privacy.subject_keys") == 1
    wrapped = await db.fetchval("SELECT wrapped_key FROM privacy.subject_keys")
    assert len(wrapped) == 12 + 32 + 16


async def test_max_fields_and_max_plaintext_are_accepted(suite: Suite) -> None:
    big = bytes(range(256)) * 16  # 4096 bytes, every byte value
    fields = [("phone", big)] + [(f"c{i}", b"x" * i) for i in range(63)]
    cts = await encrypt(suite, "m-big", fields)
    clear = await decrypt(suite, "m-big", list(zip([c for c, _ in fields], cts, strict=True)))
    assert clear == [p for _, p in fields]


async def test_decrypt_requires_a_purpose(suite: Suite, db: asyncpg.Connection) -> None:
    (ct,) = await encrypt(suite, "m-1", [("phone", PHONE)])
    before = len(await audit_entries(db))
    for purpose in ["", "   ", "x" * 201]:
        await expect_error(
            suite.privacy.DecryptFields(
                decrypt_request("m-1", [("phone", ct)], purpose=purpose),
                metadata=accounts_role(suite),
            ),
            INVALID,
            reason="INVALID_ARGUMENT",
            fields={"purpose"},
        )
    assert len(await audit_entries(db)) == before


async def test_decrypt_is_audited_with_a_verifiable_hash_chain(
    suite: Suite, db: asyncpg.Connection
) -> None:
    phone_ct, email_ct = await encrypt(suite, "m-7", [("phone", PHONE), ("email", EMAIL)])
    await decrypt(
        suite,
        "m-7",
        [("phone", phone_ct), ("email", email_ct)],
        purpose="complaint 42",
        on_behalf_of="officer:li",
    )
    await decrypt(suite, "m-7", [("phone", phone_ct)], purpose="delivery")

    entries = await audit_entries(db)
    reads = [e.event for e in entries if e.event.action == "fields.decrypt"]
    assert len(reads) == 2
    first, second = reads
    assert first.actor == ACCOUNTS_SUBJECT
    assert first.actor_role == "service:accounts"
    assert first.on_behalf_of == "officer:li"
    assert first.subject_id == "m-7"
    assert list(first.fields) == ["accounts.members.phone", "accounts.members.email"]
    assert first.purpose == "complaint 42"
    assert first.request_id  # correlates with the request's logs
    assert second.on_behalf_of == ""
    assert list(second.fields) == ["accounts.members.phone"]
    assert second.purpose == "delivery"
    # no values in the audit log, only field names
    for entry in entries:
        assert PHONE.decode() not in repr(entry)
        assert EMAIL.decode() not in repr(entry)

    assert [e.seq for e in entries] == sorted(e.seq for e in entries)
    assert entries[0].prev_hash == GENESIS_HASH
    assert first_broken_link(entries, GENESIS_HASH) is None

    # the chain notices an entry altered behind the trigger's back (superuser, trigger off)
    target = entries[-1]
    async with db.transaction():
        await db.execute("ALTER TABLE privacy.audit_log DISABLE TRIGGER audit_log_no_update")
        await db.execute(
            "UPDATE privacy.audit_log SET purpose = 'nothing to see' WHERE seq = $1", target.seq
        )
        await db.execute("ALTER TABLE privacy.audit_log ENABLE TRIGGER audit_log_no_update")
    assert first_broken_link(await audit_entries(db), GENESIS_HASH) == target.seq


async def test_failed_decryption_is_not_logged_as_a_read(
    suite: Suite, db: asyncpg.Connection
) -> None:
    (ct,) = await encrypt(suite, "m-1", [("phone", PHONE)])
    await encrypt(suite, "m-2", [("phone", PHONE)])
    await expect_error(
        suite.privacy.DecryptFields(
            decrypt_request("m-2", [("phone", ct)]), metadata=accounts_role(suite)
        ),
        INVALID,
    )
    entries = await audit_entries(db)
    assert not [e for e in entries if e.event.action == "fields.decrypt"]
    assert [e.event.subject_id for e in entries if e.event.action == "fields.decrypt_refused"]


async def test_audit_log_is_append_only(suite: Suite, db: asyncpg.Connection) -> None:
    (ct,) = await encrypt(suite, "m-1", [("phone", PHONE)])
    await decrypt(suite, "m-1", [("phone", ct)])
    assert await db.fetchval("SELECT count(*) FROM privacy.audit_log") == 1
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await db.execute("UPDATE privacy.audit_log SET purpose = 'changed'")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await db.execute("DELETE FROM privacy.audit_log")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await db.execute("TRUNCATE privacy.audit_log")
    assert await db.fetchval("SELECT purpose FROM privacy.audit_log") == "customer support"
    assert first_broken_link(await audit_entries(db), GENESIS_HASH) is None


async def test_decrypt_of_a_subject_without_key_is_not_found(suite: Suite) -> None:
    (ct,) = await encrypt(suite, "m-1", [("phone", PHONE)])
    await expect_error(
        suite.privacy.DecryptFields(
            decrypt_request("m-unknown", [("phone", ct)]), metadata=accounts_role(suite)
        ),
        grpc.StatusCode.NOT_FOUND,
    )


# --- associated data: ciphertext moved ------------------------------------------------------


async def test_ciphertext_moved_to_another_subject_or_column_fails(suite: Suite) -> None:
    a_phone, a_email = await encrypt(suite, "m-a", [("phone", PHONE), ("email", EMAIL)])
    (b_phone,) = await encrypt(suite, "m-b", [("phone", b"+8613900000000")])

    # A's phone presented as B's (B's row): second field of the batch is the bad one
    err = await expect_error(
        suite.privacy.DecryptFields(
            decrypt_request("m-b", [("phone", b_phone), ("phone", a_phone)]),
            metadata=accounts_role(suite),
        ),
        INVALID,
        fields={"fields[1].ciphertext"},
    )
    assert PHONE.decode() not in err.message

    # A's email presented as A's phone (another column)
    await expect_error(
        suite.privacy.DecryptFields(
            decrypt_request("m-a", [("phone", a_email)]), metadata=accounts_role(suite)
        ),
        INVALID,
        fields={"fields[0].ciphertext"},
    )
    # another table or (for privacy, which may handle every service's fields) another service
    for ctx, role in [
        (context("phone", table="archive"), accounts_role(suite)),
        (context("phone", service="points"), privacy_role(suite)),
    ]:
        request = pb.DecryptFieldsRequest(
            subject_id="m-a",
            fields=[pb.CipherField(context=ctx, ciphertext=a_phone)],
            purpose="check",
        )
        await expect_error(
            suite.privacy.DecryptFields(request, metadata=role),
            INVALID,
            fields={"fields[0].ciphertext"},
        )
    # tampered and garbage ciphertexts
    tampered = a_phone[:-1] + bytes([a_phone[-1] ^ 1])
    await expect_error(
        suite.privacy.DecryptFields(
            decrypt_request("m-a", [("phone", tampered), ("phone", b"junk")]),
            metadata=accounts_role(suite),
        ),
        INVALID,
        fields={"fields[0].ciphertext", "fields[1].ciphertext"},
    )
    # the genuine placements still work
    assert await decrypt(suite, "m-a", [("phone", a_phone), ("email", a_email)]) == [
        PHONE,
        EMAIL,
    ]


async def test_member_ciphertext_copied_into_another_row_is_not_revealed(
    suite: Suite, db: asyncpg.Connection
) -> None:
    first = await register(suite, "13800138000", display_name="张三")
    second = await register(suite, "13900139000", display_name="李四")
    await db.execute(
        "UPDATE accounts.members SET phone_ct = (SELECT phone_ct FROM accounts.members"
        " WHERE member_id = $1) WHERE member_id = $2",
        first.member_id,
        second.member_id,
    )
    officer = suite.auth("officer", "officer:wang")
    request = apb.GetMemberRequest(
        name=second.name, view=apb.MEMBER_VIEW_FULL, purpose="complaint 7"
    )
    try:
        leaked = await suite.accounts.GetMember(request, metadata=officer)
    except grpc.aio.AioRpcError as exc:
        err = exc
    else:
        raise AssertionError(f"GetMember FULL returned {leaked.phone!r} from a moved ciphertext")
    assert err.code() not in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
    for needle in ["+8613800138000", "13800138000", "张三", "李四"]:
        assert needle not in (err.details() or "")
        assert needle not in repr(err.trailing_metadata())
    # the untouched member still reads fine
    got = await suite.accounts.GetMember(
        apb.GetMemberRequest(name=first.name, view=apb.MEMBER_VIEW_FULL, purpose="complaint 7"),
        metadata=officer,
    )
    assert got.phone == "+8613800138000"
    assert got.display_name == "张三"
    # and that read is audited in privacy on behalf of the officer
    reads = [e.event for e in await audit_entries(db) if e.event.action == "fields.decrypt"]
    assert reads[-1].subject_id == first.member_id
    assert reads[-1].actor_role == "service:accounts"
    assert reads[-1].on_behalf_of == "officer:wang"
    assert reads[-1].purpose == "complaint 7"
    assert "accounts.members.phone" in reads[-1].fields


# --- blind indexes ---------------------------------------------------------------------------


async def test_blind_index_is_deterministic_per_context(suite: Suite) -> None:
    def request(*inputs: tuple[str, bytes]) -> pb.ComputeBlindIndexRequest:
        return pb.ComputeBlindIndexRequest(
            inputs=[pb.BlindIndexInput(context=c, value=v) for c, v in inputs]
        )

    first = await suite.privacy.ComputeBlindIndex(
        request(
            ("accounts.members.phone", PHONE),
            ("accounts.members.email", PHONE),
            ("accounts.members.phone", b"+8613800138001"),
        ),
        metadata=accounts_role(suite),
    )
    again = await suite.privacy.ComputeBlindIndex(
        request(("accounts.members.phone", PHONE)), metadata=privacy_role(suite)
    )
    phone, same_value_other_context, other_value = first.digests
    assert all(len(d) == 32 for d in first.digests)
    assert again.digests[0] == phone
    assert same_value_other_context != phone
    assert other_value != phone
    assert first.index_key_id == again.index_key_id
    assert first.index_key_id.startswith("bik-")
    assert PHONE not in phone


async def test_encrypt_fields_computes_blind_indexes_in_the_same_call(suite: Suite) -> None:
    role = accounts_role(suite)
    inputs = [
        pb.BlindIndexInput(context="accounts.members.phone", value=PHONE),
        pb.BlindIndexInput(context="accounts.requests.register", value=b"canonical request"),
    ]
    phone = pb.PlainField(context=context("phone"), plaintext=PHONE)
    both = await suite.privacy.EncryptFields(
        pb.EncryptFieldsRequest(subject_id="m-both", fields=[phone], blind_index_inputs=inputs),
        metadata=role,
    )
    alone = await suite.privacy.ComputeBlindIndex(
        pb.ComputeBlindIndexRequest(inputs=inputs), metadata=role
    )
    assert list(both.digests) == list(alone.digests)
    assert both.index_key_id == alone.index_key_id
    assert await decrypt(suite, "m-both", [("phone", both.ciphertexts[0])]) == [PHONE]
    plain = await suite.privacy.EncryptFields(
        pb.EncryptFieldsRequest(subject_id="m-both", fields=[phone]), metadata=role
    )
    assert (list(plain.digests), plain.index_key_id) == ([], "")


async def test_blind_index_inputs_of_encrypt_fields_are_checked_with_its_fields(
    suite: Suite, db: asyncpg.Connection
) -> None:
    role = accounts_role(suite)
    oversized = pb.PlainField(context=context("phone"), plaintext=b"x" * 4097)
    bad = pb.EncryptFieldsRequest(
        subject_id="m-checked",
        fields=[oversized],
        blind_index_inputs=[pb.BlindIndexInput(context="Not A Context", value=b"")],
    )
    await expect_error(
        suite.privacy.EncryptFields(bad, metadata=role),
        INVALID,
        fields={
            "fields[0].plaintext",
            "blind_index_inputs[0].context",
            "blind_index_inputs[0].value",
        },
    )
    too_many = pb.EncryptFieldsRequest(
        subject_id="m-checked",
        fields=[pb.PlainField(context=context("phone"), plaintext=PHONE)],
        blind_index_inputs=[pb.BlindIndexInput(context="accounts.x", value=b"v")] * 65,
    )
    await expect_error(
        suite.privacy.EncryptFields(too_many, metadata=role), INVALID, fields={"blind_index_inputs"}
    )
    # another service's index context is refused before a data key is made
    foreign = pb.EncryptFieldsRequest(
        subject_id="m-foreign",
        fields=[pb.PlainField(context=context("phone"), plaintext=PHONE)],
        blind_index_inputs=[pb.BlindIndexInput(context="points.members.phone", value=PHONE)],
    )
    await expect_error(
        suite.privacy.EncryptFields(foreign, metadata=role),
        grpc.StatusCode.PERMISSION_DENIED,
        reason="CONTEXT_NOT_OWNED",
    )
    keys = "SELECT count(*) FROM privacy.subject_keys WHERE subject_id LIKE 'm-%'"
    assert await db.fetchval(keys) == 0


# --- bounds ----------------------------------------------------------------------------------


async def test_bad_input_is_invalid_argument(suite: Suite, db: asyncpg.Connection) -> None:
    role = accounts_role(suite)

    def plain(n: int, size: int = 1, ctx: pb.FieldContext | None = None) -> list[pb.PlainField]:
        return [pb.PlainField(context=ctx or context("phone"), plaintext=b"x" * size)] * n

    encrypt_cases: list[tuple[pb.EncryptFieldsRequest, set[str]]] = [
        (pb.EncryptFieldsRequest(subject_id="m-1", fields=plain(65)), {"fields"}),
        (pb.EncryptFieldsRequest(subject_id="m-1", fields=[]), {"fields"}),
        (
            pb.EncryptFieldsRequest(subject_id="m-1", fields=plain(1, 4097)),
            {"fields[0].plaintext"},
        ),
        (
            pb.EncryptFieldsRequest(
                subject_id="m-1",
                fields=[*plain(1), pb.PlainField(context=context("phone"), plaintext=b"x" * 9999)],
            ),
            {"fields[1].plaintext"},
        ),
    ]
    for subject in ["", "m 1", "m/1", "m-1\n", "..\x00", "成员", "m" * 65]:
        encrypt_cases.append(
            (pb.EncryptFieldsRequest(subject_id=subject, fields=plain(1)), {"subject_id"})
        )
    for bad in ["", "Accounts", "1accounts", "acc-ounts", "acc.ounts", "a" * 64, "accounts\n"]:
        for part in ("service", "table", "column"):
            ctx = context("phone")
            setattr(ctx, part, bad)
            encrypt_cases.append(
                (
                    pb.EncryptFieldsRequest(subject_id="m-1", fields=plain(1, ctx=ctx)),
                    {f"fields[0].context.{part}"},
                )
            )
    for request, fields in encrypt_cases:
        await expect_error(
            suite.privacy.EncryptFields(request, metadata=role), INVALID, fields=fields
        )

    (ct,) = await encrypt(suite, "m-1", [("phone", PHONE)])
    cipher = pb.CipherField(context=context("phone"), ciphertext=ct)
    decrypt_cases: list[tuple[pb.DecryptFieldsRequest, set[str]]] = [
        (pb.DecryptFieldsRequest(subject_id="m-1", fields=[cipher] * 65, purpose="p"), {"fields"}),
        (pb.DecryptFieldsRequest(subject_id="m-1", purpose="p"), {"fields"}),
        (pb.DecryptFieldsRequest(subject_id="m 1", fields=[cipher], purpose="p"), {"subject_id"}),
        (
            pb.DecryptFieldsRequest(
                subject_id="m-1",
                fields=[pb.CipherField(context=context("phone"), ciphertext=b"")],
                purpose="p",
            ),
            {"fields[0].ciphertext"},
        ),
        (
            pb.DecryptFieldsRequest(
                subject_id="m-1",
                fields=[pb.CipherField(context=context("phone"), ciphertext=b"W" * 8193)],
                purpose="p",
            ),
            {"fields[0].ciphertext"},
        ),
        (
            pb.DecryptFieldsRequest(
                subject_id="m-1",
                fields=[pb.CipherField(context=context("Phone"), ciphertext=ct)],
                purpose="p",
            ),
            {"fields[0].context.column"},
        ),
        (
            pb.DecryptFieldsRequest(
                subject_id="m-1", fields=[cipher], purpose="p", on_behalf_of="o" * 201
            ),
            {"on_behalf_of"},
        ),
    ]
    for drequest, fields in decrypt_cases:
        await expect_error(
            suite.privacy.DecryptFields(drequest, metadata=role), INVALID, fields=fields
        )

    def index(ctx: str, value: bytes = b"v") -> pb.BlindIndexInput:
        return pb.BlindIndexInput(context=ctx, value=value)

    index_cases: list[tuple[pb.ComputeBlindIndexRequest, set[str]]] = [
        (pb.ComputeBlindIndexRequest(inputs=[index("a.b")] * 65), {"inputs"}),
        (pb.ComputeBlindIndexRequest(), {"inputs"}),
        (pb.ComputeBlindIndexRequest(inputs=[index("a.b", b"")]), {"inputs[0].value"}),
        (pb.ComputeBlindIndexRequest(inputs=[index("a.b", b"v" * 4097)]), {"inputs[0].value"}),
    ]
    for bad in ["", "Accounts.members", "accounts members", "accounts/members", "a" * 129, "a\n"]:
        index_cases.append(
            (pb.ComputeBlindIndexRequest(inputs=[index("ok"), index(bad)]), {"inputs[1].context"})
        )
    for irequest, fields in index_cases:
        await expect_error(
            suite.privacy.ComputeBlindIndex(irequest, metadata=role), INVALID, fields=fields
        )

    # every violation of a request is reported at once
    err = await rpc_error(
        suite.privacy.EncryptFields(
            pb.EncryptFieldsRequest(
                subject_id="",
                fields=[pb.PlainField(context=pb.FieldContext(), plaintext=b"x" * 5000)],
            ),
            metadata=role,
        )
    )
    assert err.fields == {
        "subject_id",
        "fields[0].context.service",
        "fields[0].context.table",
        "fields[0].context.column",
        "fields[0].plaintext",
    }
    # nothing was written by any rejected call
    assert await db.fetchval("SELECT count(*) FROM privacy.subject_keys") == 1
    assert await db.fetchval("SELECT count(*) FROM privacy.audit_log") == 0


async def test_admin_request_bounds(suite: Suite) -> None:
    await expect_error(
        suite.privacy.RotateKeyEncryptionKey(
            pb.RotateKeyEncryptionKeyRequest(), metadata=admin_role(suite)
        ),
        INVALID,
        fields={"request_id"},
    )
    await expect_error(
        suite.privacy.DestroySubjectKey(
            pb.DestroySubjectKeyRequest(subject_id="m 1"), metadata=privacy_role(suite)
        ),
        INVALID,
        fields={"subject_id", "request_id", "reason"},
    )


# --- rotation --------------------------------------------------------------------------------


async def test_rotation_rewraps_without_plaintext_and_keeps_old_data_readable(
    suite: Suite, db: asyncpg.Connection
) -> None:
    admin = admin_role(suite)
    before = await suite.privacy.GetKeyRingStatus(pb.GetKeyRingStatusRequest(), metadata=admin)
    assert before.provider == "file"
    assert len(before.keys) == 1
    old_kek = before.keys[0].kek_id
    assert before.keys[0].primary

    # more data keys than one re-wrap batch
    subjects = [f"m-{i:04d}" for i in range(250)]
    cts = await asyncio.gather(*(encrypt(suite, s, [("phone", PHONE)]) for s in subjects))
    old_ct = dict(zip(subjects, (c[0] for c in cts), strict=True))
    old_wrapped = await db.fetchval(
        "SELECT wrapped_key FROM privacy.subject_keys WHERE subject_id = 'm-0000'"
    )
    assert {await kek_of(db, s) for s in subjects[:3]} == {old_kek}
    last_seq_before = max([e.seq for e in await audit_entries(db)], default=0)

    rotated = await suite.privacy.RotateKeyEncryptionKey(
        pb.RotateKeyEncryptionKeyRequest(request_id="rotate-1"), metadata=admin
    )
    assert rotated.previous_kek_id == old_kek
    new_kek = rotated.primary_kek_id
    assert new_kek not in ("", old_kek)
    assert rotated.data_keys_to_rewrap == len(subjects)

    # new data keys are wrapped by the new key at once
    (fresh_ct,) = await encrypt(suite, "m-after", [("email", EMAIL)])
    assert await kek_of(db, "m-after") == new_kek

    status = await wait_for_rewrap(suite)
    assert [k.kek_id for k in status.keys] == [new_kek, old_kek]  # newest first
    assert [k.primary for k in status.keys] == [True, False]
    assert [k.wrapped_data_keys for k in status.keys] == [len(subjects) + 1, 0]
    assert status.keys[0].create_time.ToNanoseconds() >= status.keys[1].create_time.ToNanoseconds()
    assert status.destroyed_data_keys == 0
    assert (
        await db.fetchval(
            "SELECT count(*) FROM privacy.subject_keys WHERE kek_id <> $1 OR rewrapped_at IS NULL",
            new_kek,
        )
        == 1
    )  # only m-after, born under the new key
    new_wrapped = await db.fetchval(
        "SELECT wrapped_key FROM privacy.subject_keys WHERE subject_id = 'm-0000'"
    )
    assert new_wrapped != old_wrapped

    # only wrapped keys moved: no field was decrypted for the rotation
    after = [e.event for e in await audit_entries(db) if e.seq > last_seq_before]
    assert [e.action for e in after] == ["kek.rotate"]
    assert after[0].actor == ADMIN_SUBJECT
    assert after[0].actor_role == "admin"

    # old ciphertext (data key now wrapped by the new key) and new ciphertext both decrypt
    for subject in [subjects[0], subjects[123], subjects[-1]]:
        assert await decrypt(suite, subject, [("phone", old_ct[subject])]) == [PHONE]
    assert await decrypt(suite, "m-after", [("email", fresh_ct)]) == [EMAIL]

    # a repeat of the same request does not rotate again
    repeat = await suite.privacy.RotateKeyEncryptionKey(
        pb.RotateKeyEncryptionKeyRequest(request_id="rotate-1"), metadata=admin
    )
    assert repeat.primary_kek_id == new_kek
    assert repeat.previous_kek_id == old_kek
    assert repeat.data_keys_to_rewrap == 0
    ring = keyring.load_keyring(suite.keys_dir)
    assert {k.kek_id for k in ring.all_keys()} == {old_kek, new_kek}
    assert ring.primary.kek_id == new_kek

    # a second rotation (new request id) keeps every key
    third = await suite.privacy.RotateKeyEncryptionKey(
        pb.RotateKeyEncryptionKeyRequest(request_id="rotate-2"), metadata=admin
    )
    assert third.previous_kek_id == new_kek
    status = await wait_for_rewrap(suite)
    assert [k.kek_id for k in status.keys] == [third.primary_kek_id, new_kek, old_kek]
    assert await decrypt(suite, subjects[7], [("phone", old_ct[subjects[7]])]) == [PHONE]


async def test_rotation_needs_the_admin_role(suite: Suite) -> None:
    for role in ("service:accounts", "service:privacy", "officer"):
        await expect_error(
            suite.privacy.RotateKeyEncryptionKey(
                pb.RotateKeyEncryptionKeyRequest(request_id="r"), metadata=suite.auth(role)
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )


async def test_a_stale_replica_does_not_rewrap_back_to_the_old_key(
    suite: Suite, db: asyncpg.Connection
) -> None:
    """Another privacy replica that loaded the key ring before the rotation must neither
    re-wrap data keys back under the old key nor drop the new key when it rotates."""
    stale = FieldCrypto(
        suite.privacy_service.pool,
        keyring.load_keyring(suite.keys_dir),
        keyring.load_index_key(suite.keys_dir),
    )
    await encrypt(suite, "m-1", [("phone", PHONE)])
    rotated = await suite.privacy.RotateKeyEncryptionKey(
        pb.RotateKeyEncryptionKeyRequest(request_id="rotate-1"), metadata=admin_role(suite)
    )
    await wait_for_rewrap(suite)
    assert (await stale.rewrap_pass()).moved == 0
    assert await kek_of(db, "m-1") == rotated.primary_kek_id

    # the stale replica rotates next: the key ring keeps all three keys
    from services.runtime.identity import Caller

    caller = Caller("admin:other", "admin", frozenset(), "t")
    result = await stale.rotate(caller, "rotate-2")
    assert result.previous_kek_id == rotated.primary_kek_id
    ring = keyring.load_keyring(suite.keys_dir)
    assert {k.kek_id for k in ring.all_keys()} == {
        rotated.previous_kek_id,
        rotated.primary_kek_id,
        result.primary_kek_id,
    }


# --- crypto-shredding ------------------------------------------------------------------------


async def test_destroyed_subject_key_makes_data_unreadable(
    suite: Suite, db: asyncpg.Connection
) -> None:
    privacy = privacy_role(suite)
    (ct,) = await encrypt(suite, "m-gone", [("phone", PHONE)])
    (kept,) = await encrypt(suite, "m-kept", [("phone", PHONE)])

    destroyed = await suite.privacy.DestroySubjectKey(
        pb.DestroySubjectKeyRequest(subject_id="m-gone", request_id="erase-1", reason="dsr-1"),
        metadata=privacy,
    )
    assert destroyed.destroyed
    assert destroyed.HasField("destroy_time")
    row = await db.fetchrow(
        "SELECT kek_id, wrapped_key, destroyed_at, destroy_reason FROM privacy.subject_keys"
        " WHERE subject_id = 'm-gone'"
    )
    assert row is not None
    assert row["kek_id"] is None
    assert row["wrapped_key"] is None
    assert row["destroy_reason"] == "dsr-1"

    await expect_error(
        suite.privacy.DecryptFields(
            decrypt_request("m-gone", [("phone", ct)]), metadata=accounts_role(suite)
        ),
        FAILED_PRECONDITION,
        reason="SUBJECT_KEY_DESTROYED",
    )
    # encrypting never brings a destroyed key back
    await expect_error(
        suite.privacy.EncryptFields(
            pb.EncryptFieldsRequest(
                subject_id="m-gone",
                fields=[pb.PlainField(context=context("phone"), plaintext=PHONE)],
            ),
            metadata=accounts_role(suite),
        ),
        FAILED_PRECONDITION,
        reason="SUBJECT_KEY_DESTROYED",
    )
    assert await db.fetchval(
        "SELECT wrapped_key IS NULL FROM privacy.subject_keys WHERE subject_id = 'm-gone'"
    )
    # other subjects are untouched
    assert await decrypt(suite, "m-kept", [("phone", kept)]) == [PHONE]

    # a repeat is harmless and reports the first destruction
    again = await suite.privacy.DestroySubjectKey(
        pb.DestroySubjectKeyRequest(subject_id="m-gone", request_id="erase-2", reason="dsr-2"),
        metadata=privacy,
    )
    assert again.destroyed
    assert again.destroy_time == destroyed.destroy_time
    assert (
        await db.fetchval(
            "SELECT destroy_reason FROM privacy.subject_keys WHERE subject_id = 'm-gone'"
        )
        == "dsr-1"
    )

    # a subject that never had a key
    unknown = await suite.privacy.DestroySubjectKey(
        pb.DestroySubjectKeyRequest(subject_id="m-never", request_id="erase-3", reason="dsr-3"),
        metadata=privacy,
    )
    assert not unknown.destroyed
    assert not unknown.HasField("destroy_time")

    status = await suite.privacy.GetKeyRingStatus(
        pb.GetKeyRingStatusRequest(), metadata=admin_role(suite)
    )
    assert status.destroyed_data_keys == 1
    assert status.keys[0].wrapped_data_keys == 1
    assert status.data_keys_to_rewrap == 0

    # destruction is audited, and the chain still holds
    entries = await audit_entries(db)
    destroys = [e.event for e in entries if e.event.action == "subject_key.destroy"]
    assert [(d.subject_id, d.purpose) for d in destroys] == [
        ("m-gone", "dsr-1"),
        ("m-gone", "dsr-2"),
        ("m-never", "dsr-3"),
    ]
    assert first_broken_link(entries, GENESIS_HASH) is None


async def test_destroyed_key_is_not_rewrapped_by_rotation(
    suite: Suite, db: asyncpg.Connection
) -> None:
    (ct,) = await encrypt(suite, "m-gone", [("phone", PHONE)])
    await suite.privacy.DestroySubjectKey(
        pb.DestroySubjectKeyRequest(subject_id="m-gone", request_id="erase-1", reason="dsr-1"),
        metadata=privacy_role(suite),
    )
    await suite.privacy.RotateKeyEncryptionKey(
        pb.RotateKeyEncryptionKeyRequest(request_id="rotate-1"), metadata=admin_role(suite)
    )
    status = await wait_for_rewrap(suite)
    assert status.destroyed_data_keys == 1
    assert await kek_of(db, "m-gone") is None
    await expect_error(
        suite.privacy.DecryptFields(
            decrypt_request("m-gone", [("phone", ct)]), metadata=accounts_role(suite)
        ),
        FAILED_PRECONDITION,
        reason="SUBJECT_KEY_DESTROYED",
    )


async def test_member_with_destroyed_key_is_failed_precondition_in_accounts(suite: Suite) -> None:
    member = await register(suite, "13800138000", email="a@example.com", display_name="张三")
    destroyed = await suite.privacy.DestroySubjectKey(
        pb.DestroySubjectKeyRequest(
            subject_id=member.member_id, request_id="erase-1", reason="dsr-1"
        ),
        metadata=privacy_role(suite),
    )
    assert destroyed.destroyed
    err = await expect_error(
        suite.accounts.GetMember(
            apb.GetMemberRequest(name=member.name, view=apb.MEMBER_VIEW_FULL, purpose="audit"),
            metadata=suite.auth("officer"),
        ),
        FAILED_PRECONDITION,
    )
    assert "13800138000" not in err.message
    # the masked view needs no key
    masked = await suite.accounts.GetMember(
        apb.GetMemberRequest(name=member.name), metadata=suite.auth("officer")
    )
    assert masked.phone == "138****8000"


# --- keys at rest ----------------------------------------------------------------------------


async def test_key_files_are_owner_only(suite: Suite) -> None:
    ring = suite.keys_dir / keyring.KEYRING_FILE
    index = suite.keys_dir / keyring.INDEX_KEY_FILE
    assert stat.S_IMODE(ring.stat().st_mode) == 0o600
    assert stat.S_IMODE(index.stat().st_mode) == 0o600
    assert stat.S_IMODE(suite.keys_dir.stat().st_mode) == 0o700
