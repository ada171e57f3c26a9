"""Rendering console pages: the Jinja2 templates (autoescaped: every value from the index or a
form is text, never markup), what every page shows (who is logged in, the menu they may use,
the form token, the last action's message), and refusals as pages of their own.

A refusal is logged with the client's address like any HTTP refusal; an anonymous visitor
who needs to log in is sent to the login page instead of being shown a 401.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from scp_node.web.console.visitors import ROOT, session_of
from scp_node.web.errors import HttpProblem, log_problem

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
# The menu: (path under ROOT, label, permission needed to see it).
MENU = (
    ("/studies", "Studies", "find"),
    ("/storage", "Storage", "admin"),
    ("/peers", "Peers", "admin"),
    ("/codec-try", "Codec try", "admin"),
    ("/originals", "Lossy originals", "admin"),
)


def human_bytes(count: int | float | None) -> str:
    """Bytes in binary units, as `scp-node stats` shows them."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,  # a misspelt value fails a test rather than showing nothing
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters["bytes"] = human_bytes
_environment.globals["root"] = ROOT


def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    session = session_of(request)
    principal = session.principal
    menu = [(ROOT + path, label) for path, label, needed in MENU if needed in principal.permissions]
    html = _environment.get_template(template).render(
        user=principal.name,
        permissions=principal.permissions,
        menu=menu,
        path=request.url.path,
        csrf=session.csrf,
        flash=session.take_flash(),
        **values,
    )
    return HTMLResponse(html, status_code=status)


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{ROOT}/login?next={quote(target, safe='/')}", status_code=303)


async def problem_page(request: Request, exc: Exception) -> Response:
    """An HttpProblem as a console page (or, for an anonymous GET, the way to the login page)."""
    assert isinstance(exc, HttpProblem)
    log_problem(log, "console", request, exc)
    if exc.status == 401 and request.method == "GET":
        return login_redirect(request)
    return render(request, "problem.html", status=exc.status, status_code=exc.status, reason=exc.reason)


async def unavailable_page(request: Request, exc: Exception) -> Response:
    log.error("console %s %s: the index or queue is unreachable: %s", request.method, request.url.path, exc)
    reason = "the index or queue is unreachable"
    return render(request, "problem.html", status=503, status_code=503, reason=reason)
