"""Who is visiting the console and what they may do: the runtime the pages work on, the
visitor's session (SessionMiddleware puts it on the request), and the permission checks.

Permissions are the HTTP ones (config `http.users`, `http.anonymous_permissions`): browsing
studies needs find, their thumbnails get, everything else on the console admin.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from scp_node.context import NodeContext
from scp_node.web.auth import Authenticator, Principal
from scp_node.web.console.sessions import ConsoleSession, SessionStore
from workers.queue import JobQueue

ROOT = "/console"  # where the app mounts the console


@dataclass(frozen=True)
class Console:
    """What every console page works on."""

    context: NodeContext
    queue: JobQueue
    auth: Authenticator
    sessions: SessionStore


def session_of(request: Request) -> ConsoleSession:
    session = request.state.console_session
    assert isinstance(session, ConsoleSession), "SessionMiddleware runs before every console page"
    return session


def set_session(request: Request, session: ConsoleSession | None) -> None:
    """Replace the visitor's session (logging in) or end it (None: logging out)."""
    request.state.console_session = session


def require(request: Request, permission: str) -> Principal:
    """The visitor, if they hold `permission`: else 401 (anonymous: the console sends them to
    the login page) or 403."""
    principal = session_of(request).principal
    principal.require(permission)
    return principal
