"""The compliance console at `/console`: a static page for officers and the few endpoints
behind it.

An officer signs in once with an API key (`POST /console/session`); the key stays in this
process's memory, bound to a random 256-bit session id sent as an HttpOnly, SameSite=Strict
cookie scoped to `/console`, marked Secure unless `MEMBERSHIP_GATEWAY_SECURE_COOKIES` is off
(TLS ends in front of the gateway, which therefore cannot tell by itself; `make run` turns it
off because it serves plain http on 127.0.0.1). The page then calls the REST API through
`/console/api/{path}`, which hands the call to the gateway's own REST handler with the
session's key, so the key never reaches the browser's JavaScript and every call is
authenticated, scoped, rate limited and audited exactly like a direct one (a revoked key
stops working within the key cache's lifetime). Failed sign-ins are limited per client
address (`console_sessions.SignInAttempts`): beyond the limit, 429 with `Retry-After`.

State-changing calls need the session's CSRF token in `X-CSRF-Token` (returned on sign-in
and by `GET /console/session`; cross-origin pages cannot read either); the page gives each
officer action its own idempotency key (`requestId`, reused when the same submission is sent
again: `console_static/console_actions.js`), which passes through. Members are shown
masked; a FULL view needs a stated purpose (the privacy service audits the decryption).
`GET /console/actors` names the actors of timelines and audit events (`console_names`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.console_cookies import COOKIE, clear_session, set_session
from gateway.console_names import ActorNames, actors_json, check_subjects
from gateway.console_sessions import Session, Sessions, SignInAttempts, client_key
from gateway.rate_limit import retry_after_header
from gateway.rest import RestGateway

STATIC = Path(__file__).parent / "console_static"
CSRF_HEADER = "X-CSRF-Token"
CONSOLE_ROLES = frozenset({"officer", "admin"})
MAX_EXPORT_PARTS = 4096  # 1 MiB parts: 4 GiB, far above any bundle
_STATIC_TYPES = {
    "index.html": "text/html",
    "console.css": "text/css",
    **{
        f"{name}.js": "application/javascript"
        for name in (
            "console",
            "console_lib",
            "console_labels",
            "console_names",
            "console_queue",
            "console_detail",
            "console_actions",
            "console_stop",
            "console_audit",
            "console_consent",
        )
    },
}
# what the console may call through its proxy (the key's role still bounds it)
_ALLOWED = (
    ("GET", re.compile(r"/v1/dataRequests")),
    ("GET", re.compile(r"/v1/dataRequests/[^/:]+")),
    (
        "POST",
        re.compile(
            r"/v1/dataRequests/[^/:]+:(verifyIdentity|approve|reject|cancel|extendDeadline)"
        ),
    ),
    ("GET", re.compile(r"/v1/purposes")),
    ("GET", re.compile(r"/v1/consentStatistics")),
    ("GET", re.compile(r"/v1/auditEvents(:verifyChain)?")),
    ("GET", re.compile(r"/v1/members/[^/:]+")),
)
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _json(status: int, payload: dict[str, Any]) -> web.Response:
    return web.json_response(payload, status=status, headers=_SECURITY_HEADERS)


def _refusal(status: int, reason: str, text: str) -> web.Response:
    return _json(status, {"error": {"code": status, "reason": reason, "message": text}})


def _same_origin(request: web.Request) -> bool:
    """A browser names the page's origin on POSTs; a foreign one is refused (no login CSRF)."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.host


class Console:
    def __init__(
        self,
        rest: RestGateway,
        sessions: Sessions | None = None,
        attempts: SignInAttempts | None = None,
        names: ActorNames | None = None,
        *,
        secure_cookies: bool = True,
    ) -> None:
        self._rest = rest
        self.sessions = sessions or Sessions()
        self.attempts = attempts or SignInAttempts()
        self.names = names if names is not None else ActorNames(None)  # it has a len()
        self.secure_cookies = secure_cookies

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/console", self._redirect)
        app.router.add_get("/console/", self._page)
        app.router.add_get("/console/static/{file}", self._static)
        app.router.add_get("/console/session", self._whoami)
        app.router.add_post("/console/session", self._sign_in)
        app.router.add_delete("/console/session", self._sign_out)
        app.router.add_post("/console/export/{request_id}", self._export)
        app.router.add_get("/console/actors", self._actors)
        app.router.add_route("*", "/console/api/{tail:.*}", self._proxy)

    # --- page -------------------------------------------------------------------------

    async def _redirect(self, _: web.Request) -> web.Response:
        raise web.HTTPFound("/console/")

    async def _page(self, _: web.Request) -> web.FileResponse:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.FileResponse:
        return self._file(request.match_info["file"])

    def _file(self, name: str) -> web.FileResponse:
        content_type = _STATIC_TYPES.get(name)
        if content_type is None:
            raise web.HTTPNotFound()
        response = web.FileResponse(STATIC / name, headers=_SECURITY_HEADERS)
        response.content_type = content_type
        return response

    # --- sessions ---------------------------------------------------------------------

    def _session(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    async def _whoami(self, request: web.Request) -> web.Response:
        session = self._session(request)
        if session is None:
            return _refusal(401, "SIGNED_OUT", "not signed in")
        return _json(200, _session_json(session))

    async def _sign_in(self, request: web.Request) -> web.Response:
        if not _same_origin(request):
            return _refusal(403, "CROSS_ORIGIN", "cross-origin sign-in refused")
        client = client_key(request.remote)
        wait_s = self.attempts.wait_s(client)
        if wait_s > 0:
            # checked before the key is looked up: a guesser learns nothing while waiting
            retry = retry_after_header(wait_s)
            text = f"too many failed sign-ins; try again in {retry} s"
            refused = _refusal(429, "SIGN_IN_ATTEMPTS_EXCEEDED", text)
            refused.headers["Retry-After"] = retry
            return refused
        # counted as failed before the first await, and forgiven on success: parallel
        # attempts cannot all pass the check above before any of them is recorded
        self.attempts.failed(client)
        form = request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data")
        api_key = await _api_key_of(request, form)
        if isinstance(api_key, web.Response):
            return api_key
        try:
            principal = await self._rest.authenticate(api_key)
        except PermissionError:
            return _refusal(401, "API_KEY_INVALID", "the API key is not valid")
        if principal.role not in CONSOLE_ROLES:
            # a valid key of another role is a failure too: the form is not for probing keys
            return _refusal(403, "ROLE_NOT_ALLOWED", "the console is for officer and admin keys")
        self.attempts.succeeded(client)
        session_id, session = self.sessions.open(api_key, principal.key_id, principal.role)
        response: web.Response
        if form:
            response = web.Response(
                status=303, headers={**_SECURITY_HEADERS, "Location": "/console/"}
            )
        else:
            response = _json(200, _session_json(session))
        set_session(response, request, session_id, self.secure_cookies)
        return response

    async def _sign_out(self, request: web.Request) -> web.Response:
        session = self._session(request)
        if session is not None:
            refused = _csrf_refusal(request, session)
            if refused is not None:
                return refused
            self.sessions.close(request.cookies.get(COOKIE))
        response = _json(200, {"signed_out": True})
        clear_session(response, request, self.secure_cookies)
        return response

    def _guard(self, request: web.Request) -> Session | web.Response:
        session = self._session(request)
        if session is None:
            return _refusal(401, "SIGNED_OUT", "not signed in")
        if request.method not in ("GET", "HEAD"):
            refused = _csrf_refusal(request, session)
            if refused is not None:
                return refused
        return session

    async def _actors(self, request: web.Request) -> web.Response:
        """`?id=<subject>` (repeated, at most 100): each subject's actor, named."""
        session = self._guard(request)
        if isinstance(session, web.Response):
            return session
        subjects = request.query.getall("id", [])
        refused = check_subjects(subjects)
        if refused is not None:
            return _refusal(400, "INVALID_REQUEST", refused)
        return _json(200, actors_json(await self.names.resolve(subjects)))

    # --- REST calls -------------------------------------------------------------------

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        session = self._guard(request)
        if isinstance(session, web.Response):
            return session
        raw = request.raw_path
        path, _, _ = raw.partition("?")
        tail = path.removeprefix("/console/api")
        if not any(m == request.method and p.fullmatch(tail) for m, p in _ALLOWED):
            return _refusal(403, "NOT_IN_CONSOLE", "the console does not make this call")
        views = request.query.getall("view", [])
        purpose = request.query.get("purpose", "").strip()
        if any(v not in ("MASKED", "MEMBER_VIEW_MASKED") for v in views) and not purpose:
            # in clear only with a stated purpose, which the privacy service audits
            return _refusal(403, "PURPOSE_REQUIRED", "state a purpose to see a member in clear")
        # the inner request reads the body from the connection itself (bounded the same way)
        response = await self._call(request, session, request.method, raw[len("/console/api") :])
        response.headers.update(_SECURITY_HEADERS)
        return response

    async def _call(
        self,
        request: web.Request,
        session: Session,
        method: str,
        rel_url: str,
        body: bytes | None = None,
    ) -> web.StreamResponse:
        """The REST gateway's answer to the call made with the session's key. `body` None:
        the console request's own body (unread so far); otherwise this body instead."""
        headers = CIMultiDict(
            {"Authorization": f"Bearer {session.api_key}", "Content-Type": "application/json"}
        )
        for name in ("Idempotency-Key", "X-Request-Id"):
            if name in request.headers:
                headers[name] = request.headers[name]
        inner = request.clone(method=method, rel_url=URL(rel_url, encoded=True), headers=headers)
        if body is not None:
            # aiohttp reads a body once and keeps it here; a made-up body goes in its place
            inner._read_bytes = body
        return await self._rest.handle(inner)

    async def _export(self, request: web.Request) -> web.StreamResponse:
        """Every part of a new download of the request's export, joined into one ZIP."""
        session = self._guard(request)
        if isinstance(session, web.Response):
            return session
        request_id = request.match_info["request_id"]
        if not _REQUEST_ID.fullmatch(request_id):
            return _refusal(400, "INVALID_REQUEST", "not a data request id")
        archive = await self._download(request, session, request_id)
        if not isinstance(archive, bytes):
            if isinstance(archive, web.Response):
                archive.headers.update(_SECURITY_HEADERS)
            return archive
        return web.Response(
            body=archive,
            content_type="application/zip",
            headers={
                **_SECURITY_HEADERS,
                "Content-Disposition": f'attachment; filename="export-{request_id}.zip"',
            },
        )

    async def _download(
        self, request: web.Request, session: Session, request_id: str
    ) -> bytes | web.StreamResponse:
        """The joined archive, or the first refusal (the service's or a broken part's)."""
        path = f"/v1/dataRequests/{request_id}/export:download"
        parts: list[bytes] = []
        token = ""
        digest = b""
        for _ in range(MAX_EXPORT_PARTS):
            body = json.dumps({"pageToken": token}).encode()
            reply = await self._call(request, session, "POST", path, body)
            if not isinstance(reply, web.Response) or reply.status != 200:
                return reply
            try:
                part = json.loads(reply.body if isinstance(reply.body, bytes) else b"")
                parts.append(base64.b64decode(part.get("archivePart", ""), validate=True))
                digest = base64.b64decode(part.get("archiveSha256", ""), validate=True)
            except (binascii.Error, ValueError, AttributeError):
                return _refusal(502, "BAD_EXPORT", "an export part could not be read")
            token = part.get("nextPageToken", "")
            if not token:
                break
        else:
            return _refusal(502, "BAD_EXPORT", "the export has too many parts")
        archive = b"".join(parts)
        if digest and not hmac.compare_digest(hashlib.sha256(archive).digest(), digest):
            return _refusal(502, "BAD_EXPORT", "the export parts do not join up")
        return archive


async def _api_key_of(request: web.Request, form: bool) -> str | web.Response:
    """The API key from a form or a JSON body, or the refusal of a body without one."""
    try:
        if form:
            api_key = str((await request.post()).get("api_key", ""))
        else:
            body = await request.json()
            api_key = str(body.get("api_key", "")) if isinstance(body, dict) else ""
    except (ValueError, UnicodeDecodeError):
        return _refusal(400, "INVALID_REQUEST", "send api_key as JSON or a form")
    api_key = api_key.strip()
    if not api_key:
        return _refusal(400, "API_KEY_MISSING", "an API key is required")
    return api_key


def _session_json(session: Session) -> dict[str, Any]:
    return {"role": session.role, "key_id": session.key_id, "csrf_token": session.csrf}


def _csrf_refusal(request: web.Request, session: Session) -> web.Response | None:
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        return _refusal(403, "CSRF_TOKEN_INVALID", f"the {CSRF_HEADER} header is missing or wrong")
    return None


def add_to(
    app: web.Application,
    rest: RestGateway,
    pool: asyncpg.Pool | None = None,
    *,
    secure_cookies: bool = True,
) -> Console:
    """Serves the console on `app` (before the REST catch-all route); `pool` (the gateway's
    own database) names API keys in timelines, without it actors stay ids."""
    console = Console(rest, names=ActorNames(pool), secure_cookies=secure_cookies)
    console.add_to(app)
    return console
