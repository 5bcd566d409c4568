"""Settlement webhooks: HMAC-SHA256 signatures over timestamp and body, and the secrets.

The sender computes `hex(HMAC-SHA256(secret, f"{timestamp}." + body))` with the Unix time in
seconds as `X-Timestamp` and sends `X-Signature: v1=<hex>`. To rotate a secret without a
moment where deliveries fail, either side may hold two: the sender signs with both
(`v1=<new>,v1=<old>`) or the gateway lists both secrets for the client; one match is enough.
The timestamp is signed, so an old request cannot be replayed outside the ±5-minute window;
inside it, the payment or refund id is the idempotency key, so a replay returns the first
result instead of crediting twice (not this module's business: it only says yes or no).

Secrets per settlement client come from `MEMBERSHIP_GATEWAY_WEBHOOK_SECRETS` (a JSON object)
or from the JSON or TOML file named by `MEMBERSHIP_GATEWAY_WEBHOOK_SECRETS_FILE`:

    {"acme-pay": "a-long-random-secret...", "other-psp": ["new-secret...", "old-secret..."]}

A secret string's UTF-8 bytes are the HMAC key, as the sender uses them. No function here
does I/O except the loaders, and no error message contains a secret, a signature or a body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path

from services.runtime.config import ConfigError

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Timestamp"
SECRETS_ENV = "MEMBERSHIP_GATEWAY_WEBHOOK_SECRETS"
SECRETS_FILE_ENV = "MEMBERSHIP_GATEWAY_WEBHOOK_SECRETS_FILE"
SCHEME = "v1"
DEFAULT_WINDOW_S = 300

# bounded work per request: a header cannot make the gateway compute many HMACs
MAX_SIGNATURES = 4
MAX_SIGNATURE_HEADER_CHARS = 512
MAX_SECRETS_PER_CLIENT = 2
MAX_CLIENTS = 256
# 32 random characters carry well over 128 bits; shorter strings are likely not random
MIN_SECRET_CHARS = 32
MAX_SECRET_CHARS = 512
MAX_SECRETS_FILE_BYTES = 64 * 1024

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")
_CLIENT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_PRINTABLE_ASCII = re.compile(r"[!-~]+")

# client id -> its secrets (one, or two while rotating)
WebhookSecrets = Mapping[str, tuple[bytes, ...]]


class Reason(StrEnum):
    MISSING_HEADER = "MISSING_HEADER"
    BAD_TIMESTAMP = "BAD_TIMESTAMP"
    STALE_TIMESTAMP = "STALE_TIMESTAMP"
    FUTURE_TIMESTAMP = "FUTURE_TIMESTAMP"
    UNKNOWN_CLIENT = "UNKNOWN_CLIENT"
    MALFORMED_SIGNATURE = "MALFORMED_SIGNATURE"
    BAD_SIGNATURE = "BAD_SIGNATURE"


class WebhookRejected(Exception):
    """The webhook must not reach any service. `reason` is for logs and metrics; the
    message is safe to log (no secret, signature or body)."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"webhook rejected: {reason.value}" + (f" ({detail})" if detail else ""))
        self.reason = reason


class WebhookConfigError(ConfigError):
    """The secrets configuration is invalid; `path` names the offending place (an env var,
    a file, `acme-pay[1]`), never the secret."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"webhook secrets: {path}: {problem}")
        self.path = path
        self.problem = problem


def sign(secret: bytes | str, timestamp: int, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def make_signature_header(secrets: Sequence[bytes | str], timestamp: int, body: bytes) -> str:
    """What a sender puts in `X-Signature`: one `v1=` signature per secret it holds."""
    return ",".join(f"{SCHEME}={sign(secret, timestamp, body)}" for secret in secrets)


def verify(
    secrets_by_client: WebhookSecrets,
    client_id: str | None,
    signature_header: str | None,
    timestamp_header: str | None,
    body: bytes,
    now: float,
    window_s: int = DEFAULT_WINDOW_S,
) -> int:
    """The signed timestamp if the webhook is authentic and fresh; WebhookRejected if not.
    `now` is the Unix time in seconds (wall clock: the sender's timestamps are Unix time)."""
    if not client_id or not signature_header or not timestamp_header:
        missing = [
            name
            for name, value in (
                ("client id", client_id),
                (SIGNATURE_HEADER, signature_header),
                (TIMESTAMP_HEADER, timestamp_header),
            )
            if not value
        ]
        raise WebhookRejected(Reason.MISSING_HEADER, ", ".join(missing))
    timestamp = _timestamp(timestamp_header)
    _check_window(timestamp, now, window_s)
    secrets = secrets_by_client.get(client_id)
    if not secrets:
        raise WebhookRejected(Reason.UNKNOWN_CLIENT)
    candidates = parse_signatures(signature_header)
    if not _any_match(secrets, candidates, timestamp, body):
        raise WebhookRejected(Reason.BAD_SIGNATURE)
    return timestamp


def _timestamp(header: str) -> int:
    value = header.strip()
    if not _TIMESTAMP.fullmatch(value):
        raise WebhookRejected(Reason.BAD_TIMESTAMP, "must be Unix time in whole seconds")
    return int(value)


def _check_window(timestamp: int, now: float, window_s: int) -> None:
    if timestamp < now - window_s:
        raise WebhookRejected(Reason.STALE_TIMESTAMP, f"older than {window_s} s")
    if timestamp > now + window_s:
        raise WebhookRejected(Reason.FUTURE_TIMESTAMP, f"more than {window_s} s ahead")


def parse_signatures(header: str) -> list[str]:
    """The `v1` signatures of an `X-Signature` header (lowercase hex): comma-separated,
    `v1=<hex>` or bare `<hex>`; signatures of other schemes are skipped, so a sender can
    add a future scheme next to v1. At least one v1 signature is required."""
    if len(header) > MAX_SIGNATURE_HEADER_CHARS:
        raise WebhookRejected(Reason.MALFORMED_SIGNATURE, "header too long")
    parts = [part.strip() for part in header.split(",")]
    if len(parts) > MAX_SIGNATURES:
        raise WebhookRejected(Reason.MALFORMED_SIGNATURE, f"more than {MAX_SIGNATURES}")
    found: list[str] = []
    for part in parts:
        scheme, sep, value = part.partition("=")
        scheme, value = (scheme.strip(), value.strip()) if sep else (SCHEME, part)
        if scheme != SCHEME:
            continue
        if not _HEX_SIGNATURE.fullmatch(value):
            raise WebhookRejected(Reason.MALFORMED_SIGNATURE, "expected 64 hex digits")
        found.append(value.lower())
    if not found:
        raise WebhookRejected(Reason.MALFORMED_SIGNATURE, f"no {SCHEME} signature")
    return found


def _any_match(
    secrets: Sequence[bytes], candidates: Sequence[str], timestamp: int, body: bytes
) -> bool:
    matched = False
    for secret in secrets:
        expected = sign(secret, timestamp, body).encode()
        for candidate in candidates:
            # constant time, and no early exit: how long this takes says nothing
            matched |= hmac.compare_digest(expected, candidate.encode())
    return matched


# -- configuration --------------------------------------------------------------------------


def load_secrets(env: Mapping[str, str]) -> dict[str, tuple[bytes, ...]]:
    """The secrets named by the environment: the JSON in SECRETS_ENV, or the file named by
    SECRETS_FILE_ENV; neither: none (every webhook is then refused as UNKNOWN_CLIENT)."""
    inline = env.get(SECRETS_ENV, "").strip()
    path = env.get(SECRETS_FILE_ENV, "").strip()
    if inline and path:
        raise WebhookConfigError(f"{SECRETS_ENV} and {SECRETS_FILE_ENV}", "set one, not both")
    if path:
        return load_secrets_file(Path(path))
    if inline:
        try:
            doc = json.loads(inline)
        except json.JSONDecodeError as exc:
            # the decoder's message is a position, never the text around it
            raise WebhookConfigError(SECRETS_ENV, f"not valid JSON: {exc.msg}") from None
        return parse_secrets(doc)
    return {}


def load_secrets_file(path: Path) -> dict[str, tuple[bytes, ...]]:
    """A `.json` or `.toml` file of client id -> secret (or a list of two while rotating)."""
    suffix = path.suffix.lower()
    if suffix not in {".json", ".toml"}:
        raise WebhookConfigError(str(path), "must end in .json or .toml")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SECRETS_FILE_BYTES + 1)
    except OSError as exc:
        raise WebhookConfigError(str(path), f"cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_SECRETS_FILE_BYTES:
        raise WebhookConfigError(str(path), f"must be at most {MAX_SECRETS_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
        doc: object = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except UnicodeDecodeError:
        raise WebhookConfigError(str(path), "not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise WebhookConfigError(str(path), f"not valid JSON: {exc.msg}") from None
    except tomllib.TOMLDecodeError:
        # TOML messages may quote the line, which may hold a secret
        raise WebhookConfigError(str(path), "not valid TOML") from None
    return parse_secrets(doc)


def parse_secrets(doc: object) -> dict[str, tuple[bytes, ...]]:
    """Validates a secrets document; WebhookConfigError at the first fault."""
    if not isinstance(doc, dict):
        raise WebhookConfigError("(document)", "must be an object of client id -> secret")
    if len(doc) > MAX_CLIENTS:
        raise WebhookConfigError("(document)", f"at most {MAX_CLIENTS} clients")
    return {
        _client_id(i, key): _client_secrets(key, value)
        for i, (key, value) in enumerate(doc.items())
    }


def _client_id(index: int, key: object) -> str:
    if not isinstance(key, str) or not _CLIENT_ID.fullmatch(key):
        # named by position: a malformed key might be a secret pasted in the wrong place
        raise WebhookConfigError(
            f"client #{index + 1}", "client ids are 1-64 characters: a-z, 0-9, '.', '_', '-'"
        )
    return key


def _client_secrets(client_id: str, value: object) -> tuple[bytes, ...]:
    values = value if isinstance(value, list) else [value]
    if not 1 <= len(values) <= MAX_SECRETS_PER_CLIENT:
        raise WebhookConfigError(client_id, f"1 to {MAX_SECRETS_PER_CLIENT} secrets")
    secrets = tuple(_secret(f"{client_id}[{i}]", item) for i, item in enumerate(values))
    if len(set(secrets)) != len(secrets):
        raise WebhookConfigError(client_id, "lists the same secret twice")
    return secrets


def _secret(path: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise WebhookConfigError(path, "must be a string")
    if not MIN_SECRET_CHARS <= len(value) <= MAX_SECRET_CHARS:
        raise WebhookConfigError(
            path, f"must be {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters"
        )
    # whitespace or non-ASCII in a secret is almost always a copy-paste accident
    if not _PRINTABLE_ASCII.fullmatch(value):
        raise WebhookConfigError(path, "must be printable ASCII without spaces")
    return value.encode()
