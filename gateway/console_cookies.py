"""The console's session cookie and the setting that marks it Secure.

TLS ends in front of the gateway (an ingress or load balancer; the gateway speaks plain HTTP
inside the cluster), so the gateway cannot tell from the connection whether the browser used
https. `MEMBERSHIP_GATEWAY_SECURE_COOKIES` says so: on unless set off, because every
deployment has TLS in front; only a plain-http development setup (`make run` on 127.0.0.1)
turns it off, since a browser does not send a Secure cookie back over plain http.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from gateway.console_sessions import SESSION_TTL_S
from services.runtime.config import ConfigError

COOKIE = "wm_console"
PATH = "/console"
SECURE_COOKIES_ENV = "MEMBERSHIP_GATEWAY_SECURE_COOKIES"
_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"0", "false", "no", "off"})


def secure_cookies_setting(env: Mapping[str, str]) -> bool:
    """The setting's value; ConfigError for a value that is neither on nor off."""
    raw = env.get(SECURE_COOKIES_ENV, "").strip().lower()
    if not raw or raw in _ON:
        return True
    if raw in _OFF:
        return False
    raise ConfigError(f"{SECURE_COOKIES_ENV} must be 1 or 0 (true/false, yes/no, on/off)")


def _secure(request: web.Request, setting: bool) -> bool:
    # a request that came over https (as the proxy says) is marked Secure either way: the
    # header can only add the flag, never take it away
    forwarded = request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    return setting or request.secure or forwarded


def set_session(
    response: web.StreamResponse, request: web.Request, session_id: str, secure: bool
) -> None:
    response.set_cookie(
        COOKIE,
        session_id,
        path=PATH,
        httponly=True,
        samesite="Strict",
        secure=_secure(request, secure),
        max_age=int(SESSION_TTL_S),
    )


def clear_session(response: web.StreamResponse, request: web.Request, secure: bool) -> None:
    # the same attributes as when set, so every browser matches and drops it
    response.del_cookie(
        COOKIE, path=PATH, secure=_secure(request, secure), httponly=True, samesite="Strict"
    )
