"""ASGI middleware: security headers on every response, and the optional bearer token.

With a token, every request needs `Authorization: Bearer <token>`, except /static/*. A browser cannot set that
header on a link, so a page may be opened once as `/...?token=<token>`: the server answers with a redirect to the
same URL without the token and sets an HttpOnly, SameSite=Strict cookie that the page, its fetches and its
event stream send from then on.
"""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["COOKIE", "CSP", "Guard"]

COOKIE = "metricfold_token"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


class Guard:
    def __init__(self, app: ASGIApp, token: str | None = None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    def _ok(self, candidate: str | None) -> bool:
        return bool(self.token and candidate and hmac.compare_digest(candidate.encode(), self.token))

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

        if self.token is None or scope["path"].startswith("/static/"):
            await self.app(scope, receive, secured)
            return
        headers = Headers(scope=scope)
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no credential
            cookies = SimpleCookie()
        cookie = cookies[COOKIE].value if COOKIE in cookies else None
        if self._ok(bearer) or self._ok(cookie):
            await self.app(scope, receive, secured)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if given and self._ok(given[0]) and scope["method"] in ("GET", "HEAD"):
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = scope["path"] + (f"?{rest}" if rest else "")
            secure = "; Secure" if scope.get("scheme") == "https" else ""
            await secured(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [
                        (b"location", location.encode("latin-1", "replace")),
                        (b"set-cookie", f"{COOKIE}={given[0]}; Path=/; HttpOnly; SameSite=Strict{secure}".encode()),
                        (b"content-length", b"0"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
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
