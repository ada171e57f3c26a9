"""The peer table on the console: list, add, edit, remove. The same table and the same rules
as `scp-node ae` (scp_node.index.peer_rules), so a peer saved here is one `ae add` would save."""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from scp_node.config import PERMISSIONS, PeerConfig
from scp_node.index.models import Peer
from scp_node.index.peer_rules import (
    COMMITMENT_REPORTS,
    InvalidPeer,
    ae_title,
    describe,
    peer_entry,
    port_field,
)
from scp_node.index.repository import find_peer, list_peers, remove_peer, save_peer
from scp_node.web.console.forms import Form, read_form
from scp_node.web.console.pages import render
from scp_node.web.console.visitors import ROOT, Console, require, session_of
from scp_node.web.errors import HttpProblem, client_address

log = logging.getLogger(__name__)

# How the form names the inputs that a peer rule's message mentions.
FIELD_LABELS = {
    "host": "Host",
    "port": "Port",
    "check_host": "“Check host”",
    "tls": "TLS",
    "commitment_report": "Commitment report",
}
NEW_PEER = PeerConfig(ae_title="", host="", port=0, permissions=["echo", "store"])


class PeerPages:
    def __init__(self, console: Console) -> None:
        self.console = console

    def routes(self) -> list[Route]:
        return [
            Route("/peers", self.listing),
            Route("/peers", self.save, methods=["POST"]),
            Route("/peers/{ae_title}/remove", self.remove, methods=["POST"]),
        ]

    def listing(self, request: Request) -> Response:
        """The table, and the form: empty, or filled with the peer `?edit=TITLE` names."""
        require(request, "admin")
        editing = request.query_params.get("edit")
        values = _values(NEW_PEER)
        if editing is not None:
            with self.console.context.sessions() as session:
                peer = find_peer(session, editing)
                if peer is None:
                    raise HttpProblem(404, f"no peer {editing!r}")
                values = _values(_entry_of(peer))
        return self._page(request, values, editing=editing is not None)

    async def save(self, request: Request) -> Response:
        require(request, "admin")
        form = await read_form(request, session_of(request))
        try:
            entry = _entry_from(form)
        except InvalidPeer as exc:
            reason = exc.phrased(FIELD_LABELS)
            log.warning("console peer form from %s refused: %s", client_address(request), reason)
            draft = _draft(form)
            return self._page(
                request, draft, editing=form.get("editing") == "1", error=reason, error_field=exc.field
            )
        added = await run_in_threadpool(self._save, entry)
        message = f"{'added' if added else 'updated'} peer {entry.ae_title}: {describe(entry)}"
        log.info("console: %s (by %s)", message, session_of(request).principal.name)
        session_of(request).flash = message + self._seeded_note(entry.ae_title)
        return RedirectResponse(f"{ROOT}/peers", status_code=303)

    async def remove(self, request: Request) -> Response:
        require(request, "admin")
        await read_form(request, session_of(request))
        title = request.path_params["ae_title"]
        removed = await run_in_threadpool(self._remove, title)
        if not removed:
            raise HttpProblem(404, f"no peer {title!r}")
        log.info("console: removed peer %s (by %s)", title, session_of(request).principal.name)
        session_of(request).flash = f"removed peer {title}" + self._seeded_note(title)
        return RedirectResponse(f"{ROOT}/peers", status_code=303)

    def _save(self, entry: PeerConfig) -> bool:
        with self.console.context.sessions() as session:
            added = save_peer(session, entry)
            session.commit()
        return added

    def _remove(self, title: str) -> bool:
        with self.console.context.sessions() as session:
            removed = remove_peer(session, title)
            session.commit()
        return removed

    def _seeded_note(self, title: str) -> str:
        """As `ae remove` warns: config.yaml's peers are written to the table at every start."""
        if any(entry.ae_title == title for entry in self.console.context.config.access.peers):
            return f" (note: {title} is in access.peers of the config; `serve` writes it again at start)"
        return ""

    def _page(
        self,
        request: Request,
        values: dict[str, Any],
        *,
        editing: bool,
        error: str = "",
        error_field: str = "",
    ) -> Response:
        with self.console.context.sessions() as session:
            peers = [_entry_of(peer) for peer in list_peers(session)]
        seeded = {peer.ae_title for peer in self.console.context.config.access.peers}
        return render(
            request,
            "peers.html",
            status=400 if error else 200,
            peers=peers,
            seeded=seeded,
            values=values,
            editing=editing,
            error=error,
            error_field=error_field,
            all_permissions=PERMISSIONS,
            commitment_reports=COMMITMENT_REPORTS,
        )


def _entry_of(peer: Peer) -> PeerConfig:
    return PeerConfig(
        ae_title=peer.ae_title,
        host=peer.host,
        port=peer.port,
        check_host=peer.check_host,
        permissions=sorted(peer.permission_set, key=PERMISSIONS.index),
        tls=peer.tls,
        commitment_report=peer.commitment_report,
    )


def _values(entry: PeerConfig) -> dict[str, Any]:
    """The form's fields for a peer (port 0, none, is an empty field)."""
    return {**entry.model_dump(), "port": str(entry.port) if entry.port else ""}


def _entry_from(form: Form) -> PeerConfig:
    """The form's peer, by the rules of `ae add`: an empty host or port field is not given."""
    return peer_entry(
        ae_title(form.get("ae_title")),
        host=form.get("host").strip() or None,
        port=port_field(form.get("port")),
        permissions=form.get_all("permissions") or [""],
        check_host=form.get("check_host") == "on",
        tls=form.get("tls") == "on",
        commitment_report=form.get("commitment_report") or "same_association",
    )


def _draft(form: Form) -> dict[str, Any]:
    """What the admin typed, to show again beside the reason it was refused."""
    return {
        "ae_title": form.get("ae_title"),
        "host": form.get("host"),
        "port": form.get("port"),
        "check_host": form.get("check_host") == "on",
        "permissions": [p for p in form.get_all("permissions") if p in PERMISSIONS],
        "tls": form.get("tls") == "on",
        "commitment_report": form.get("commitment_report"),
    }
