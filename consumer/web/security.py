"""ASGI middleware: security headers on every response, and the optional bearer token.

With a token, every request needs `Authorization: Bearer <token>`, except /static/*. A browser cannot set that
header on a link, so a page may be opened once as `/...?token=<token>`: the server answers with a redirect to the
same URL without the token and sets an HttpOnly, SameSite=Strict cookie that the page, its fetches and its
event stream send from then on. Any GET with a `token` parameter is answered with that redirect (a browser that
already has the cookie, or a server without a token, included), so no page, link or live-refresh URL ever holds
the token; a wrong token without a cookie gets 401.

The redirect target is built from the request's raw path (ASGI `raw_path`, still percent-encoded), never from the
decoded one: `%2F`, `%5C`, `%3F`, `%0D%0A` and `%00` stay encoded, every byte outside the URL's safe characters is
percent-encoded, and the target starts with exactly one `/`: always this server, whatever the path holds.
`redact_token` hides the token in a logged request line (see consumer/web/server.py).
"""

from __future__ import annotations

import hmac
import json
import re
from http.cookies import SimpleCookie
from urllib.parse import unquote_plus

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["COOKIE", "CSP", "Guard", "redact_token", "safe_target"]

COOKIE = "metricfold_token"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
TOKEN_PARAM = "token"
# bytes that must be percent-encoded in a redirect target: all but RFC 3986's pchar, "/" and "?" (and "%" when it
# starts a %XX escape, which is kept as it is)
_UNSAFE = re.compile(rb"%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9\-._~!$&'()*+,;=:@/?%]")


def _encode(raw: bytes) -> str:
    return _UNSAFE.sub(lambda m: b"%%%02X" % m.group()[0], raw).decode("ascii")


def _is_token(part: bytes) -> bool:
    return unquote_plus(part.split(b"=", 1)[0].decode("latin-1")) == TOKEN_PARAM


def _token_values(query: bytes) -> list[str]:
    return [unquote_plus(p.split(b"=", 1)[1].decode("latin-1")) if b"=" in p else "" for p in query.split(b"&") if _is_token(p)]


def safe_target(raw_path: bytes, query: bytes) -> str:
    """The same-origin URL of *raw_path* and *query* without its `token` parameters: percent-encoded, and starting
    with exactly one `/` (`//evil.example` and `/\\evil.example` would leave this server)."""
    path = "/" + _encode(raw_path.split(b"?", 1)[0]).replace("?", "%3F").lstrip("/")
    rest = "&".join(_encode(p) for p in query.split(b"&") if p and not _is_token(p))
    return path + (f"?{rest}" if rest else "")


def redact_token(target: str) -> str:
    """A request target (path and query) as logged: the value of every `token` parameter replaced by `***`."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    parts = [f"{p.split('=', 1)[0]}=***" if _is_token(p.encode("latin-1", "replace")) else p for p in query.split("&")]
    return f"{path}?{'&'.join(parts)}"


class Guard:
    def __init__(self, app: ASGIApp, token: str | None = None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    def _ok(self, candidate: str | None) -> bool:
        return bool(self.token and candidate and hmac.compare_digest(candidate.encode(), self.token))

    def _authorized(self, headers: Headers) -> bool:
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no credential
            cookies = SimpleCookie()
        cookie = cookies[COOKIE].value if COOKIE in cookies else None
        return self._ok(bearer) or self._ok(cookie)

    async def _redirect(self, scope: Scope, send: Send, *, cookie: bool) -> None:
        """303 to the same URL without its token (built from the raw path); with *cookie*, set the token's cookie."""
        location = safe_target(scope.get("raw_path") or scope["path"].encode(), scope.get("query_string", b""))
        headers = [(b"location", location.encode("ascii")), (b"content-length", b"0")]
        if cookie and self.token:
            secure = b"; Secure" if scope.get("scheme") == "https" else b""
            headers.append((b"set-cookie", COOKIE.encode() + b"=" + self.token + b"; Path=/; HttpOnly; SameSite=Strict" + secure))
        await send({"type": "http.response.start", "status": 303, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("content-security-policy", CSP)
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("referrer-policy", "no-referrer")
                headers.setdefault("x-frame-options", "DENY")
                if not scope["path"].startswith("/static/"):
                    headers.setdefault("cache-control", "no-store")
            await send(message)

        query: bytes = scope.get("query_string", b"")
        given = _token_values(query) if scope["method"] in ("GET", "HEAD") else []
        if self.token is None or scope["path"].startswith("/static/"):
            if given:  # no token needed here: only take it out of the URL
                await self._redirect(scope, secured, cookie=False)
                return
            await self.app(scope, receive, secured)
            return
        if self._ok(given[0] if given else None):
            await self._redirect(scope, secured, cookie=True)
            return
        if self._authorized(Headers(scope=scope)):
            if given:  # the cookie (or header) is enough: a token in the URL goes, even a wrong one
                await self._redirect(scope, secured, cookie=False)
                return
            await self.app(scope, receive, secured)
            return
        body = json.dumps(
            {"error": "unauthorized", "message": "this server needs a token: send 'Authorization: Bearer <token>', "
             "or open a page once with ?token=<token>"}
        ).encode()
        await secured(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="metricfold"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
