"""What a peer-table entry must be, as an admin gives one (`scp-node ae add`, the web console's
peer form): one set of rules, so that neither front end stores a peer the other would refuse.

A broken rule is an InvalidPeer. Where its message names other inputs it holds placeholders
({host}, {port}, {check_host}, {tls}, {commitment_report}) that each front end fills with its
own names (the CLI's options, the console's labels): the rule is worded once. The module
imports no database code, as the CLI checks its arguments before it opens the index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scp_node.config import PERMISSIONS, PeerConfig
from scp_node.index.errors import IndexingError

AE_TITLE_RULE = "an AE title is 1-16 characters of printable ASCII, without backslash, not all spaces"
COMMITMENT_REPORTS = ("same_association", "new_association")


class InvalidPeer(IndexingError):
    """An entry the peer table must not hold. `field` is the input at fault (for a form to
    point at); `phrased` fills the message's placeholders with a front end's input names."""

    def __init__(self, field: str, template: str) -> None:
        super().__init__(template)
        self.field = field
        self.template = template

    def phrased(self, names: Mapping[str, str]) -> str:
        return self.template.format_map(names)

    def __str__(self) -> str:
        return self.phrased(_INPUT_NAMES)


# The inputs a rule's message may name, named as the PeerConfig fields they fill.
_INPUT_NAMES = {name: name for name in ("host", "port", "check_host", "tls", "commitment_report")}


def _literal(text: str) -> str:
    """`text` (an admin's input) inside a message template: its braces are not placeholders."""
    return text.replace("{", "{{").replace("}", "}}")


def ae_title(text: str) -> str:
    """An AE title (PS3.5 6.2, AE): 1-16 characters of the default repertoire, no backslash or
    control characters; leading and trailing spaces are not significant."""
    title = text.strip(" ")
    given = _literal(repr(text))
    if not title:
        raise InvalidPeer("ae_title", f"{given} is empty: {AE_TITLE_RULE}")
    if len(title) > 16:
        raise InvalidPeer("ae_title", f"{given} has {len(title)} characters: {AE_TITLE_RULE}")
    bad = sorted({char for char in title if not " " <= char <= "~" or char == "\\"})
    if bad:
        characters = _literal(", ".join(map(repr, bad)))
        raise InvalidPeer("ae_title", f"{given} contains {characters}: {AE_TITLE_RULE}")
    return title


def permission_list(text: str) -> list[str]:
    """A comma list of DIMSE permissions, each once, in the order given."""
    given = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in given if part not in PERMISSIONS]
    if unknown or not given:
        what = f"unknown {_literal(', '.join(map(repr, unknown)))}" if unknown else "none given"
        raise InvalidPeer("permissions", f"{what}: allowed a comma list of {', '.join(PERMISSIONS)}")
    return list(dict.fromkeys(given))


def port_field(text: str) -> int | None:
    """A port as typed in a form field; "" (or spaces) is none given."""
    text = text.strip()
    if not text:
        return None
    if not text.isdigit():
        raise InvalidPeer("port", f"{{port}} {_literal(repr(text))} is not a port: allowed 1-65535")
    return int(text)


def peer_entry(
    title: str,
    *,
    host: str | None,
    port: int | None,
    permissions: Iterable[str],
    check_host: bool = False,
    tls: bool = False,
    commitment_report: str = "same_association",
) -> PeerConfig:
    """The entry for the peer table. `host` and `port` None: not given (a peer that only
    connects to the node); both given: a C-MOVE destination. The checks run in the order the
    CLI has always reported them."""
    if (host is None) != (port is None):
        raise InvalidPeer(
            "host" if host is None else "port",
            "{host} and {port} go together (both: a C-MOVE destination; "
            "neither: a peer that only connects to the node)",
        )
    if check_host and not host:
        raise InvalidPeer("check_host", "{check_host} needs {host} (and {port})")
    if tls and not host:
        raise InvalidPeer("tls", "{tls} needs {host} and {port} (it applies to associations the node opens)")
    if commitment_report not in COMMITMENT_REPORTS:
        raise InvalidPeer(
            "commitment_report", f"{{commitment_report}} must be {' or '.join(COMMITMENT_REPORTS)}"
        )
    if commitment_report == "new_association" and not host:
        raise InvalidPeer("commitment_report", "{commitment_report} new_association needs {host} and {port}")
    address = (host or "").strip()
    if host is not None and not address:
        raise InvalidPeer("host", "{host} is empty")
    if port is not None and not 1 <= port <= 65535:
        raise InvalidPeer("port", f"{{port}} {port} is not a port: allowed 1-65535")
    return PeerConfig(
        ae_title=ae_title(title),
        host=address,
        port=port or 0,  # 0: none
        check_host=check_host,
        permissions=permission_list(",".join(permissions)),
        tls=tls,
        commitment_report=commitment_report,
    )


def describe(entry: PeerConfig) -> str:
    """What the entry says, in an admin's words (`ae add` prints it; the console shows it)."""
    has_address = entry.host and entry.port
    destination = (
        f"host {entry.host} port {entry.port}" if has_address else "no host/port (not a C-MOVE destination)"
    )
    new_association = entry.commitment_report == "new_association"
    details = [
        *([", connections checked against the host"] if entry.check_host else []),
        *([", commitment reports on a new association"] if new_association else []),
    ]
    tls = " over TLS" if entry.tls else ""
    return f"{destination}{tls}, permissions {','.join(entry.permissions)}" + "".join(details)
