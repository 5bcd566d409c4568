"""Settlement webhook signatures (timestamp window, rotation, malformed headers) and the
loader of the per-client secrets."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from gateway.server import load_gateway_settings
from gateway.webhooks import (
    SECRETS_ENV,
    SECRETS_FILE_ENV,
    Reason,
    WebhookConfigError,
    WebhookRejected,
    WebhookSecrets,
    load_secrets,
    load_secrets_file,
    make_signature_header,
    parse_secrets,
    sign,
    verify,
)
from services.runtime.config import ConfigError

NOW = 1_900_000_000
SECRET = "s" * 16 + "0123456789abcdef"  # 32 characters
OLD_SECRET = "o" * 16 + "fedcba9876543210"
OTHER = "x" * 40
BODY = b'{"payment_id":"pay-1","amount":{"minor_units":"1299","currency":"CNY"}}'
SECRETS: WebhookSecrets = {"acme-pay": (SECRET.encode(),), "other-psp": (OTHER.encode(),)}


def check(
    signature: str | None,
    timestamp: str | None = str(NOW),
    body: bytes = BODY,
    client: str | None = "acme-pay",
    now: float = NOW,
    secrets: WebhookSecrets | None = None,
) -> int:
    return verify(secrets or SECRETS, client, signature, timestamp, body, now)


def rejected(reason: Reason, *args: object, **kwargs: object) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as caught:
        check(*args, **kwargs)  # type: ignore[arg-type]
    assert caught.value.reason is reason
    return caught.value


def v1(secret: str = SECRET, timestamp: int = NOW, body: bytes = BODY) -> str:
    return f"v1={sign(secret, timestamp, body)}"


def test_sign_is_hex_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, BODY) == expected
    assert sign(SECRET.encode(), NOW, BODY) == expected


def test_a_good_signature_is_accepted_and_its_timestamp_returned() -> None:
    assert check(v1()) == NOW


def test_a_bare_signature_without_the_scheme_is_accepted() -> None:
    assert check(sign(SECRET, NOW, BODY)) == NOW


def test_upper_case_hex_and_spaces_around_parts_are_accepted() -> None:
    assert check(f" v1 = {sign(SECRET, NOW, BODY).upper()} ") == NOW


def test_a_bad_signature_is_rejected() -> None:
    rejected(Reason.BAD_SIGNATURE, v1(secret=OTHER))
    rejected(Reason.BAD_SIGNATURE, "v1=" + "0" * 64)


def test_a_tampered_body_is_rejected() -> None:
    tampered = BODY.replace(b"1299", b"9999")
    rejected(Reason.BAD_SIGNATURE, v1(), body=tampered)


def test_a_changed_timestamp_is_rejected() -> None:
    # a replay with a fresh timestamp header but the old signature
    rejected(Reason.BAD_SIGNATURE, v1(timestamp=NOW - 10), timestamp=str(NOW))


def test_another_clients_secret_does_not_sign_for_this_client() -> None:
    rejected(Reason.BAD_SIGNATURE, v1(secret=OTHER), client="acme-pay")
    assert check(v1(secret=OTHER), client="other-psp") == NOW


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_the_window_is_five_minutes_either_way(offset: int) -> None:
    ts = NOW + offset
    assert check(v1(timestamp=ts), timestamp=str(ts)) == ts


def test_a_stale_timestamp_is_rejected_even_when_correctly_signed() -> None:
    ts = NOW - 301
    rejected(Reason.STALE_TIMESTAMP, v1(timestamp=ts), timestamp=str(ts))


def test_a_future_timestamp_is_rejected_even_when_correctly_signed() -> None:
    ts = NOW + 301
    rejected(Reason.FUTURE_TIMESTAMP, v1(timestamp=ts), timestamp=str(ts))


def test_the_sender_rotating_sends_two_signatures_and_either_may_match() -> None:
    secrets: WebhookSecrets = {"acme-pay": (SECRET.encode(),)}
    both = make_signature_header([OLD_SECRET, SECRET], NOW, BODY)
    assert both.count("v1=") == 2
    assert check(both, secrets=secrets) == NOW
    assert check(make_signature_header([SECRET, OLD_SECRET], NOW, BODY), secrets=secrets) == NOW


def test_the_gateway_rotating_holds_two_secrets_and_either_may_sign() -> None:
    secrets: WebhookSecrets = {"acme-pay": (SECRET.encode(), OLD_SECRET.encode())}
    assert check(v1(secret=OLD_SECRET), secrets=secrets) == NOW
    assert check(v1(secret=SECRET), secrets=secrets) == NOW
    rejected(Reason.BAD_SIGNATURE, v1(secret=OTHER), secrets=secrets)


def test_signatures_of_other_schemes_are_skipped() -> None:
    assert check(f"v2=abc,{v1()}") == NOW
    rejected(Reason.MALFORMED_SIGNATURE, "v2=" + sign(SECRET, NOW, BODY))


@pytest.mark.parametrize(
    ("signature", "timestamp", "client"),
    [(None, str(NOW), "acme-pay"), ("v1=ab", None, "acme-pay"), ("v1=ab", str(NOW), None)],
)
def test_missing_headers_are_rejected(
    signature: str | None, timestamp: str | None, client: str | None
) -> None:
    rejected(Reason.MISSING_HEADER, signature, timestamp=timestamp, client=client)
    rejected(Reason.MISSING_HEADER, signature or "", timestamp=timestamp or "", client=client or "")


@pytest.mark.parametrize(
    "timestamp",
    ["abc", "1.5e9", "1900000000.5", "-1900000000", "+1900000000", "", " ", "１９００", "9" * 13],
)
def test_a_timestamp_that_is_no_whole_unix_time_is_rejected(timestamp: str) -> None:
    reason = Reason.MISSING_HEADER if timestamp == "" else Reason.BAD_TIMESTAMP
    rejected(reason, v1(), timestamp=timestamp)


@pytest.mark.parametrize(
    "signature",
    [
        "v1=",
        "v1=xyz",
        "v1=" + "a" * 63,
        "v1=" + "a" * 65,
        "v1=" + "g" * 64,
        ",",
        "v1=" + ("a" * 64 + ",v1=") * 4 + "a" * 64,  # five signatures
        "v1=" + "a" * 600,
    ],
)
def test_malformed_signature_headers_are_rejected(signature: str) -> None:
    rejected(Reason.MALFORMED_SIGNATURE, signature)


def test_an_unknown_client_is_rejected() -> None:
    rejected(Reason.UNKNOWN_CLIENT, v1(), client="nobody")


def test_no_rejection_message_carries_a_secret_or_signature() -> None:
    good = sign(SECRET, NOW, BODY)
    for error in (
        rejected(Reason.BAD_SIGNATURE, "v1=" + "0" * 64),
        rejected(Reason.MALFORMED_SIGNATURE, "v1=" + good[:-1]),
        rejected(Reason.UNKNOWN_CLIENT, v1(), client="nobody"),
    ):
        text = str(error)
        assert SECRET not in text and good[:16] not in text and "0" * 16 not in text


# -- secrets configuration ------------------------------------------------------------------


def test_secrets_come_from_inline_json() -> None:
    env = {SECRETS_ENV: json.dumps({"acme-pay": SECRET, "other-psp": [SECRET, OLD_SECRET]})}
    assert load_secrets(env) == {
        "acme-pay": (SECRET.encode(),),
        "other-psp": (SECRET.encode(), OLD_SECRET.encode()),
    }


def test_no_configuration_means_no_clients() -> None:
    assert load_secrets({}) == {}


def test_secrets_come_from_a_toml_or_json_file(tmp_path: Path) -> None:
    toml = tmp_path / "webhooks.toml"
    toml.write_text(f'acme-pay = "{SECRET}"\n"other.psp" = ["{SECRET}", "{OLD_SECRET}"]\n')
    assert load_secrets({SECRETS_FILE_ENV: str(toml)}) == {
        "acme-pay": (SECRET.encode(),),
        "other.psp": (SECRET.encode(), OLD_SECRET.encode()),
    }
    doc = tmp_path / "webhooks.json"
    doc.write_text(json.dumps({"acme-pay": SECRET}))
    assert load_secrets_file(doc) == {"acme-pay": (SECRET.encode(),)}


def config_error(env: dict[str, str]) -> WebhookConfigError:
    with pytest.raises(WebhookConfigError) as caught:
        load_secrets(env)
    assert isinstance(caught.value, ConfigError)  # the runner's "bad configuration", exit 2
    assert SECRET not in str(caught.value)
    return caught.value


def test_both_sources_at_once_is_an_error(tmp_path: Path) -> None:
    error = config_error({SECRETS_ENV: "{}", SECRETS_FILE_ENV: str(tmp_path / "x.json")})
    assert "set one, not both" in str(error)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    assert "cannot be read" in str(config_error({SECRETS_FILE_ENV: str(tmp_path / "no.json")}))
    yaml = tmp_path / "secrets.yaml"
    yaml.write_text("acme-pay: x")
    assert ".json or .toml" in str(config_error({SECRETS_FILE_ENV: str(yaml)}))
    big = tmp_path / "big.json"
    big.write_text(" " * (64 * 1024 + 1))
    assert "at most" in str(config_error({SECRETS_FILE_ENV: str(big)}))


def test_broken_documents_do_not_echo_their_content(tmp_path: Path) -> None:
    broken_toml = tmp_path / "broken.toml"
    broken_toml.write_text(f'acme-pay = "{SECRET}\n')
    assert "not valid TOML" in str(config_error({SECRETS_FILE_ENV: str(broken_toml)}))
    error = config_error({SECRETS_ENV: '{"acme-pay": "' + SECRET})
    assert error.path == SECRETS_ENV and "not valid JSON" in error.problem


@pytest.mark.parametrize(
    ("doc", "path", "problem"),
    [
        ([SECRET], "(document)", "must be an object"),
        ({"Acme Pay": SECRET}, "client #1", "client ids"),
        ({"acme-pay": 42}, "acme-pay[0]", "must be a string"),
        ({"acme-pay": "short"}, "acme-pay[0]", "32 to 512"),
        ({"acme-pay": SECRET + " "}, "acme-pay[0]", "printable ASCII"),
        ({"acme-pay": SECRET[:-1] + "é"}, "acme-pay[0]", "printable ASCII"),
        ({"acme-pay": []}, "acme-pay", "1 to 2 secrets"),
        ({"acme-pay": [SECRET, OLD_SECRET, OTHER]}, "acme-pay", "1 to 2 secrets"),
        ({"acme-pay": [SECRET, SECRET]}, "acme-pay", "twice"),
    ],
)
def test_invalid_documents_name_the_place_not_the_secret(
    doc: object, path: str, problem: str
) -> None:
    with pytest.raises(WebhookConfigError) as caught:
        parse_secrets(doc)
    assert caught.value.path == path
    assert problem in caught.value.problem
    assert SECRET not in str(caught.value)


def test_the_gateway_settings_carry_the_secrets_from_the_environment(tmp_path: Path) -> None:
    inline = load_gateway_settings({SECRETS_ENV: json.dumps({"acme-pay": SECRET})})
    assert inline.webhook_secrets == {"acme-pay": (SECRET.encode(),)}
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"other-psp": [OLD_SECRET, OTHER]}))
    from_file = load_gateway_settings({SECRETS_FILE_ENV: str(path)})
    assert from_file.webhook_secrets == {"other-psp": (OLD_SECRET.encode(), OTHER.encode())}
    with pytest.raises(ConfigError):
        load_gateway_settings({SECRETS_ENV: "{not json"})
