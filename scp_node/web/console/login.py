"""Logging in and out of the console: the user names and password hashes of config
`http.users`, checked by the same Authenticator as HTTP Basic (a failed login is logged with
the client's address there)."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from scp_node.web.console.forms import read_form
from scp_node.web.console.pages import render
from scp_node.web.console.visitors import ROOT, Console, session_of, set_session
from scp_node.web.errors import HttpProblem, client_address

log = logging.getLogger(__name__)


def safe_next(target: str) -> str:
    """Where to go after logging in: a console path only (never another site)."""
    if target.startswith(ROOT + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return ROOT + "/"


class LoginPages:
    def __init__(self, console: Console) -> None:
        self.console = console

    def routes(self) -> list[Route]:
        return [
            Route("/login", self.form),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
        ]

    def form(self, request: Request) -> Response:
        return render(request, "login.html", next=safe_next(request.query_params.get("next", "")), error="")

    async def login(self, request: Request) -> Response:
        form = await read_form(request, session_of(request))
        name, target = form.get("username").strip(), safe_next(form.get("next"))
        client = client_address(request)
        try:
            principal = await run_in_threadpool(self.console.auth.login, name, form.get("password"), client)
        except HttpProblem as exc:
            return render(request, "login.html", status=401, next=target, error=exc.reason)
        self.console.sessions.close(session_of(request).id)
        set_session(request, self.console.sessions.open(principal))
        log.info("console login of %r from %s", principal.name, client)
        return RedirectResponse(target, status_code=303)

    async def logout(self, request: Request) -> Response:
        await read_form(request, session_of(request))
        log.info("console logout of %r from %s", session_of(request).principal.name, client_address(request))
        set_session(request, None)
        return RedirectResponse(f"{ROOT}/login", status_code=303)
