"""Around every console request: the visitor's session from its cookie (a new anonymous one
when there is none), the cookie set or deleted when the page changed the session, and the
headers that keep the pages from being framed, cached or given scripts from elsewhere."""

from __future__ import annotations

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from scp_node.web.console.sessions import COOKIE
from scp_node.web.console.visitors import ROOT, Console

# Everything the pages load comes from the node itself: no CDN, no inline script or style.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class SessionMiddleware(BaseHTTPMiddleware):
    def __init__(self, app: ASGIApp, console: Console, secure_cookie: bool) -> None:
        super().__init__(app)
        self._console = console
        self._secure = secure_cookie

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        store = self._console.sessions
        session = store.find(request.cookies.get(COOKIE)) or store.open(self._console.auth.anonymous)
        request.state.console_session = session
        response = await call_next(request)
        current = request.state.console_session
        if current is None:
            store.close(session.id)
            response.delete_cookie(COOKIE, path=ROOT, secure=self._secure, httponly=True, samesite="strict")
        elif current.is_new:
            current.is_new = False
            response.set_cookie(
                COOKIE, current.id, path=ROOT, secure=self._secure, httponly=True, samesite="strict"
            )
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response
