"""`http hash-password` and `http new-token`: the credentials of config's `http.users`, made here
so that config.yaml only ever holds their hashes."""

from __future__ import annotations

import argparse
import getpass
import sys

from scp_node.cli.errors import UsageError
from scp_node.config import NodeConfig


def hash_password(_config: NodeConfig, args: argparse.Namespace) -> int:
    """Read the password (asked twice on a terminal, one line on a pipe) and print its hash."""
    from scp_node.web.auth import hash_password as scrypt_hash

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise UsageError("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("empty password")
    print(f"password_hash: {scrypt_hash(password)}")
    return 0


def new_token(_config: NodeConfig, _args: argparse.Namespace) -> int:
    """Print a new bearer token (give it to the client) and the digest config.yaml keeps."""
    from scp_node.web.auth import new_token as make_token

    token, digest = make_token()
    print(f"token: {token}")
    print(f"token_sha256: {digest}")
    return 0
