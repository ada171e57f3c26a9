"""Who is asking, and may they: HTTP Basic users (salted scrypt password hashes) and bearer
tokens (SHA-256 of a random token) from config `http.users`; requests without credentials get
`http.anonymous_permissions`, as unknown AE titles get `access.unknown_peer_permissions`.

Failed logins are logged with the client's address. A successful password check is remembered
(by the SHA-256 of name and password, per Authenticator) so that a viewer's many requests do
not each pay for scrypt, which is slow on purpose.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import threading
from dataclasses import dataclass

from scp_node.config import HttpConfig, HttpUser
from scp_node.web.errors import HttpProblem

log = logging.getLogger(__name__)

# scrypt cost: about 50 ms and 16 MiB per check on one core (RFC 7914's interactive-login figures).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="scp-node", charset="UTF-8"'}


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$hash` (base64): what config's `password_hash` holds."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    encoded = [base64.b64encode(part).decode() for part in (salt, digest)]
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encoded[0]}${encoded[1]}"


def password_matches(password: str, stored: str) -> bool:
    """Constant-time check of `password` against a `hash_password` string; False when malformed."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(p.isdigit() for p in parts[1:4]):
        return False
    n, r, p = (int(part) for part in parts[1:4])
    try:
        salt, expected = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except binascii.Error:
        return False
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=len(expected)
    )
    return hmac.compare_digest(digest, expected)


def new_token() -> tuple[str, str]:
    """A bearer token and the SHA-256 that config's `token_sha256` holds (tokens are random, so
    an unsalted digest suffices and makes the check instant)."""
    token = secrets.token_urlsafe(32)
    return token, token_digest(token)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a user's name (None: anonymous) and what it may do."""

    name: str | None
    permissions: frozenset[str]

    def require(self, permission: str) -> None:
        """403 (or 401 inviting a login, for anonymous requests) unless `permission` is held."""
        if permission in self.permissions:
            return
        if self.name is None:
            raise HttpProblem(401, f"authentication required ({permission} permission)", _CHALLENGE)
        raise HttpProblem(403, f"user {self.name!r} lacks the {permission} permission")


class Authenticator:
    def __init__(self, config: HttpConfig) -> None:
        self._users = {user.name: user for user in config.users}
        self._anonymous = Principal(None, frozenset(config.anonymous_permissions))
        self._verified: set[str] = set()
        self._lock = threading.Lock()

    @property
    def anonymous(self) -> Principal:
        """What requests without credentials may do (http.anonymous_permissions)."""
        return self._anonymous

    def identify(self, authorization: str | None, client: str) -> Principal:
        """The principal for an Authorization header value; 401 for credentials that fail."""
        if not authorization:
            return self._anonymous
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            return self._basic(credentials.strip(), client)
        if scheme == "bearer":
            return self._bearer(credentials.strip(), client)
        log.warning("HTTP login from %s refused: unsupported scheme %r", client, scheme)
        raise HttpProblem(
            401, f"unsupported authorization scheme {scheme!r}: use Basic or Bearer", _CHALLENGE
        )

    def _basic(self, credentials: str, client: str) -> Principal:
        try:
            name, colon, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            name, colon, password = "", "", ""
        if not colon:
            log.warning("HTTP login from %s refused: malformed Basic credentials", client)
            raise HttpProblem(401, "malformed Basic credentials", _CHALLENGE)
        return self.login(name, password, client)

    def login(self, name: str, password: str, client: str) -> Principal:
        """The user `name` if `password` is theirs (HTTP Basic, the console's login form); 401
        and a log line with the client's address otherwise."""
        user = self._users.get(name)
        if user is None or user.password_hash is None or not self._password_ok(user, password):
            log.warning("HTTP login failed for user %r from %s", name, client)
            raise HttpProblem(401, "wrong user name or password", _CHALLENGE)
        return Principal(user.name, frozenset(user.permissions))

    def _password_ok(self, user: HttpUser, password: str) -> bool:
        key = hashlib.sha256(f"{user.name}\0{password}\0{user.password_hash}".encode()).hexdigest()
        with self._lock:
            if key in self._verified:
                return True
        assert user.password_hash is not None
        if not password_matches(password, user.password_hash):
            return False
        with self._lock:
            self._verified.add(key)
        return True

    def _bearer(self, token: str, client: str) -> Principal:
        digest = token_digest(token)
        for user in self._users.values():
            if user.token_sha256 is not None and hmac.compare_digest(user.token_sha256, digest):
                return Principal(user.name, frozenset(user.permissions))
        log.warning("HTTP login from %s refused: unknown bearer token", client)
        raise HttpProblem(401, "unknown bearer token", {"WWW-Authenticate": 'Bearer realm="scp-node"'})
