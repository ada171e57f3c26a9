"""The console as one ASGI app, mounted by scp_node.web.app at /console: its pages, its
static files (one stylesheet), its session middleware and its refusals as pages."""

from __future__ import annotations

from pathlib import Path

from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from scp_node.context import NodeContext
from scp_node.web.auth import Authenticator
from scp_node.web.console.codec_trial import CodecTrialPages
from scp_node.web.console.login import LoginPages
from scp_node.web.console.middleware import SessionMiddleware
from scp_node.web.console.originals import OriginalPages
from scp_node.web.console.pages import login_redirect, problem_page, unavailable_page
from scp_node.web.console.peers import PeerPages
from scp_node.web.console.sessions import SessionStore
from scp_node.web.console.storage import StoragePages
from scp_node.web.console.studies import StudyPages
from scp_node.web.console.visitors import ROOT, Console, session_of
from scp_node.web.errors import HttpProblem
from workers.queue import JobQueue

STATIC = Path(__file__).parent / "static"
# The first page a visitor may see, by permission: the home page sends them there.
HOME_BY_PERMISSION = (("find", "/studies"), ("admin", "/storage"))


def create_console(context: NodeContext, queue: JobQueue, auth: Authenticator) -> Starlette:
    http = context.config.http
    console = Console(context, queue, auth, SessionStore(http.session_seconds))
    pages = (LoginPages, StudyPages, StoragePages, PeerPages, CodecTrialPages, OriginalPages)
    routes: list[BaseRoute] = [
        Route("/", _home),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        *(route for page in pages for route in page(console).routes()),
    ]
    secure = http.tls or http.public_url.startswith("https://")
    return Starlette(
        routes=routes,
        middleware=[Middleware(SessionMiddleware, console=console, secure_cookie=secure)],
        exception_handlers={
            HttpProblem: problem_page,
            OperationalError: unavailable_page,
            RedisError: unavailable_page,
        },
    )


def _home(request: Request) -> Response:
    principal = session_of(request).principal
    for permission, path in HOME_BY_PERMISSION:
        if permission in principal.permissions:
            return RedirectResponse(ROOT + path, status_code=303)
    if principal.name is None:
        return login_redirect(request)
    raise HttpProblem(403, f"user {principal.name!r} may use no console page (they need find or admin)")
