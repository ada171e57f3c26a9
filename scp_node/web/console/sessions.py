"""Console sessions, kept in the serving process: who is logged in, the CSRF token their forms
carry, and a message for the next page. The browser holds only a random id in an HttpOnly,
SameSite=Strict cookie, so nothing needs signing and logging out ends the session for good.

A visitor without a session gets an anonymous one on the first console request, so that the
login form (and, where http.anonymous_permissions allow, every form) has a CSRF token too.
Logging in opens a new session rather than upgrading the old one: an id a visitor was handed
before logging in is worth nothing after.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from scp_node.web.auth import Principal

COOKIE = "scp_console"
# At most this many sessions are kept; past it, the longest unused go, anonymous ones first
# (a visitor who never logs in cannot push a logged-in admin out).
MAX_SESSIONS = 10_000


@dataclass
class ConsoleSession:
    id: str
    principal: Principal
    csrf: str
    last_used: float
    flash: str = ""  # a message for the next page (what a form did)
    is_new: bool = field(default=False, compare=False)  # its cookie is still to be sent

    def take_flash(self) -> str:
        message, self.flash = self.flash, ""
        return message


class SessionStore:
    def __init__(self, idle_s: float) -> None:
        self._idle_s = idle_s
        self._sessions: dict[str, ConsoleSession] = {}
        self._lock = threading.Lock()

    def open(self, principal: Principal) -> ConsoleSession:
        session = ConsoleSession(
            id=secrets.token_urlsafe(32),
            principal=principal,
            csrf=secrets.token_urlsafe(32),
            last_used=time.monotonic(),
            is_new=True,
        )
        with self._lock:
            self._prune()
            self._sessions[session.id] = session
        return session

    def find(self, session_id: str | None) -> ConsoleSession | None:
        """The live session with that id (its idle time starts again); None for an unknown or
        expired one."""
        if not session_id:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_used > self._idle_s:
                del self._sessions[session_id]
                return None
            session.last_used = now
            return session

    def close(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _prune(self) -> None:
        """Drop expired sessions, then the longest unused while there are too many (lock held)."""
        now = time.monotonic()
        for key in [k for k, s in self._sessions.items() if now - s.last_used > self._idle_s]:
            del self._sessions[key]
        excess = len(self._sessions) - MAX_SESSIONS + 1
        if excess > 0:
            ranked = sorted(
                self._sessions.values(), key=lambda s: (s.principal.name is not None, s.last_used)
            )
            for session in ranked[:excess]:
                del self._sessions[session.id]
