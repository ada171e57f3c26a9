"""`ae list/add/remove`: the peer table, who may do what and where C-MOVE sends; each change says
what it did."""

from __future__ import annotations

import argparse
import sys

from scp_node.cli.errors import UsageError
from scp_node.cli.sessions import index_sessions
from scp_node.config import NodeConfig
from scp_node.index.peer_rules import InvalidPeer, describe, peer_entry


def ae_list(config: NodeConfig, _args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from scp_node.index.models import Peer

    with index_sessions(config) as sessions, sessions() as session:
        peers = session.scalars(select(Peer).order_by(Peer.ae_title)).all()
    if not peers:
        print("no peers (add one with `scp-node ae add`)")
        return 0
    row = "{:<16} {:<30} {:<6} {:<10} {:<4} {:<8} {}"
    print(row.format("AE title", "host", "port", "host check", "TLS", "reports", "permissions"))
    for peer in peers:
        has_address = bool(peer.host and peer.port)
        host = peer.host or "-"
        port = str(peer.port) if has_address else "-"
        check = "yes" if peer.check_host else "no"
        tls = "yes" if peer.tls else "no"
        reports = "same" if peer.commitment_report == "same_association" else "new"
        print(row.format(peer.ae_title, host, port, check, tls, reports, peer.permissions))
    return 0


# How `ae add` names the inputs that a peer rule's message mentions.
_OPTION_NAMES = {
    "host": "--host",
    "port": "--port",
    "check_host": "--check-host",
    "tls": "--tls",
    "commitment_report": "--commitment-report",
}


def ae_add(config: NodeConfig, args: argparse.Namespace) -> int:
    from scp_node.index.repository import save_peer

    try:
        entry = peer_entry(
            args.ae_title,
            host=args.host,
            port=args.peer_port,
            permissions=args.permissions.split(","),
            check_host=args.check_host,
            tls=args.tls,
            commitment_report=args.commitment_report,
        )
    except InvalidPeer as exc:
        raise UsageError(f"ae add: {exc.phrased(_OPTION_NAMES)}") from None
    with index_sessions(config) as sessions, sessions() as session:
        verb = "added" if save_peer(session, entry) else "updated"
        session.commit()
    print(f"{verb} peer {entry.ae_title}: {describe(entry)}")
    return 0


def ae_remove(config: NodeConfig, args: argparse.Namespace) -> int:
    from scp_node.index.repository import list_peers, remove_peer

    with index_sessions(config) as sessions, sessions() as session:
        if not remove_peer(session, args.ae_title):
            known = ", ".join(peer.ae_title for peer in list_peers(session)) or "none"
            print(f"scp-node: no peer {args.ae_title} (peers: {known})", file=sys.stderr)
            return 1
        session.commit()
    print(f"removed peer {args.ae_title}")
    if any(entry.ae_title == args.ae_title for entry in config.access.peers):
        print(f"note: {args.ae_title} is in access.peers of the config; `serve` adds it again at start")
    return 0
