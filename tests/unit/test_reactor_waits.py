"""An association the node prepared (`scp_node.transport.prepare_connection`) costs no CPU while
idle: its two reactor threads wait for work instead of polling each millisecond (four idle
associations held 31 % of a core of the node), and still answer at once when work comes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from scp_node.reactor_waits import WAIT_AT_MOST_S
from scp_node.transport import prepare_connection


@pytest.fixture(params=["acceptor", "requestor"])
def associations(request: pytest.FixtureRequest) -> Iterator[tuple[Association, Association]]:
    """(the requestor's association, the side prepared as the node prepares its own: the
    acceptor or the requestor, the parameter; the node accepts associations and opens them for
    C-MOVE and commitment reports)."""
    prepared = [(evt.EVT_CONN_OPEN, prepare_connection)]
    scp = AE(ae_title="NODE")
    scp.add_supported_context(Verification)
    server = scp.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=prepared if request.param == "acceptor" else []
    )
    scu = AE(ae_title="SCU")
    scu.add_requested_context(Verification)
    requestor = scu.associate(
        "127.0.0.1",
        server.server_address[1],
        ae_title="NODE",
        evt_handlers=prepared if request.param == "requestor" else [],
    )
    try:
        assert requestor.is_established
        deadline = time.monotonic() + 5
        while not server.active_associations and time.monotonic() < deadline:
            time.sleep(0.01)
        yield requestor, server.active_associations[0] if request.param == "acceptor" else requestor
    finally:
        requestor.release()
        server.shutdown()


def _counted(owner: object, name: str) -> list[int]:
    """Count the calls of `owner.name` from now on (an instance attribute over the method)."""
    calls = [0]
    method: Callable = getattr(owner, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return method(*args, **kwargs)

    setattr(owner, name, counted)
    return calls


def test_an_idle_association_wakes_its_reactors_only_on_their_clock(
    associations: tuple[Association, Association],
) -> None:
    _, prepared = associations
    dul_turns = _counted(prepared.dul, "_is_transport_event")  # once per turn of the DUL reactor
    association_turns = _counted(prepared.dimse, "get_msg")  # once per turn of the association's
    idle_s = 1.0
    time.sleep(idle_s)
    most = 2 * idle_s / WAIT_AT_MOST_S + 5  # pynetdicom's own reactors turn about 1,000 times a second
    assert dul_turns[0] <= most
    assert association_turns[0] <= most


def test_requests_after_idling_are_answered_at_once(associations: tuple[Association, Association]) -> None:
    """Each echo needs the prepared side's reactors woken: the acceptor's DUL by the socket, its
    association by the decoded request, its DUL again by the queued response; the requestor's
    association by send_c_echo() pausing it. Had any of them waited for its clock, 20 echoes
    would take at least 20 x WAIT_AT_MOST_S."""
    requestor, _ = associations
    answering_s = 0.0
    for message_id in range(1, 21):
        time.sleep(0.02)  # the reactors settle into their wait
        started = time.monotonic()
        assert requestor.send_c_echo(msg_id=message_id).get("Status") == 0x0000
        answering_s += time.monotonic() - started
    assert answering_s < 20 * WAIT_AT_MOST_S / 2
