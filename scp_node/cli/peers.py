"""`ae list/add/remove`: the peer table, who may do what and where C-MOVE sends; each change says
what it did."""

from __future__ import annotations

import argparse
import sys

from scp_node.cli.errors import UsageError
from scp_node.cli.sessions import index_sessions
from scp_node.config import NodeConfig, PeerConfig


def _destination(host: str, port: int) -> str:
    return f"host {host} port {port}" if host and port else "no host/port (not a C-MOVE destination)"


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


def ae_add(config: NodeConfig, args: argparse.Namespace) -> int:
    from scp_node.index.repository import save_peer

    if (args.host is None) != (args.peer_port is None):
        raise UsageError(
            "ae add: --host and --port go together (both: a C-MOVE destination; "
            "neither: a peer that only connects to the node)"
        )
    if args.check_host and not args.host:
        raise UsageError("ae add: --check-host needs --host (and --port)")
    if args.tls and not args.host:
        raise UsageError("ae add: --tls needs --host and --port (it applies to associations the node opens)")
    if args.commitment_report == "new_association" and not args.host:
        raise UsageError("ae add: --commitment-report new_association needs --host and --port")
    host, port = (args.host or "").strip(), args.peer_port or 0  # port 0: none
    if args.host is not None and not host:
        raise UsageError("ae add: --host is empty")
    entry = PeerConfig(
        ae_title=args.ae_title,
        host=host,
        port=port,
        check_host=args.check_host,
        permissions=args.permissions.split(","),
        tls=args.tls,
        commitment_report=args.commitment_report,
    )
    with index_sessions(config) as sessions, sessions() as session:
        verb = "added" if save_peer(session, entry) else "updated"
        session.commit()
    new_association = args.commitment_report == "new_association"
    details = [
        *([", connections checked against the host"] if args.check_host else []),
        *([", commitment reports on a new association"] if new_association else []),
    ]
    tls = " over TLS" if args.tls else ""
    print(
        f"{verb} peer {args.ae_title}: {_destination(host, port)}{tls}, permissions {args.permissions}"
        + "".join(details)
    )
    return 0


def ae_remove(config: NodeConfig, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from scp_node.index.models import Peer

    with index_sessions(config) as sessions, sessions() as session:
        peer = session.scalar(select(Peer).where(Peer.ae_title == args.ae_title))
        if peer is None:
            known = ", ".join(session.scalars(select(Peer.ae_title).order_by(Peer.ae_title))) or "none"
            print(f"scp-node: no peer {args.ae_title} (peers: {known})", file=sys.stderr)
            return 1
        session.delete(peer)
        session.commit()
    print(f"removed peer {args.ae_title}")
    if any(entry.ae_title == args.ae_title for entry in config.access.peers):
        print(f"note: {args.ae_title} is in access.peers of the config; `serve` adds it again at start")
    return 0
