"""The console's parts without a node: the peer rules shared with `scp-node ae add`, sessions
(expiry, who is evicted first), form parsing and the CSRF check, the charts' layout, and the
process activity /metrics reports (associations, compress-job durations)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from starlette.requests import Request

from scp_node.context import JOB_SECONDS_BUCKETS, Activity, timed_job
from scp_node.index.models import Instance, StorageState
from scp_node.index.peer_rules import InvalidPeer, ae_title, describe, peer_entry, permission_list, port_field
from scp_node.web.auth import Principal
from scp_node.web.console import sessions as console_sessions
from scp_node.web.console.chart import WIDTH, paired_bars, stacked_bar
from scp_node.web.console.figures import Group
from scp_node.web.console.forms import read_form
from scp_node.web.console.sessions import SessionStore
from scp_node.web.console.studies import InstanceRow
from scp_node.web.errors import HttpProblem

CLI = {"host": "--host", "port": "--port", "check_host": "--check-host", "tls": "--tls"}
ANONYMOUS, ADMIN = Principal(None, frozenset()), Principal("admin", frozenset({"admin"}))

# -- peer rules --------------------------------------------------------------------------------


def test_peer_rules_are_worded_once_and_named_by_each_front_end() -> None:
    with pytest.raises(InvalidPeer) as refused:
        peer_entry("CT1", host="10.0.0.5", port=None, permissions=["echo"])
    assert refused.value.field == "port"
    assert refused.value.phrased(CLI).startswith("--host and --port go together (both: a C-MOVE destination")
    assert str(refused.value).startswith("host and port go together")
    with pytest.raises(InvalidPeer) as refused:
        peer_entry("CT1", host=None, port=None, permissions=["echo"], tls=True)
    assert (
        refused.value.phrased(CLI)
        == "--tls needs --host and --port (it applies to associations the node opens)"
    )
    with pytest.raises(InvalidPeer, match="is empty"):
        peer_entry("CT1", host="  ", port=104, permissions=["echo"])


def test_an_admins_braces_are_text_not_placeholders() -> None:
    with pytest.raises(InvalidPeer) as refused:
        ae_title("{host}{port}{tls}")
    assert refused.value.phrased(CLI).startswith("'{host}{port}{tls}' has 17 characters: an AE title is 1-16")
    with pytest.raises(InvalidPeer) as refused:
        port_field("{port}")
    assert refused.value.phrased(CLI) == "--port '{port}' is not a port: allowed 1-65535"


def test_a_valid_entry_is_described_as_ae_add_prints_it() -> None:
    entry = peer_entry(
        " PACS ",
        host="10.0.0.9",
        port=104,
        permissions=["store", "move", "store"],
        tls=True,
        commitment_report="new_association",
    )
    assert (entry.ae_title, entry.port, entry.permissions) == ("PACS", 104, ["store", "move"])
    assert describe(entry) == (
        "host 10.0.0.9 port 104 over TLS, permissions store,move, commitment reports on a new association"
    )
    modality = peer_entry("US1", host=None, port=None, permissions=permission_list("echo, store"))
    assert describe(modality) == "no host/port (not a C-MOVE destination), permissions echo,store"
    assert port_field(" ") is None and port_field("11112") == 11112


# -- sessions ----------------------------------------------------------------------------------


def test_sessions_expire_when_idle_and_anonymous_ones_are_evicted_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(console_sessions.time, "monotonic", lambda: clock[0])
    store = SessionStore(idle_s=60)
    admin = store.open(ADMIN)
    assert store.find(admin.id) is admin and admin.is_new and admin.csrf != admin.id
    clock[0] += 59
    assert store.find(admin.id) is admin  # using it starts the idle time again
    clock[0] += 61
    assert store.find(admin.id) is None and store.find("") is None and store.find("unknown") is None

    monkeypatch.setattr(console_sessions, "MAX_SESSIONS", 3)
    kept = store.open(ADMIN)
    clock[0] += 1
    first_visitor = store.open(ANONYMOUS)
    clock[0] += 1
    second_visitor = store.open(ANONYMOUS)
    clock[0] += 1
    store.open(ANONYMOUS)  # full: the longest unused anonymous session goes, not the admin's
    assert store.find(kept.id) is kept and store.find(first_visitor.id) is None
    assert store.find(second_visitor.id) is second_visitor
    store.close(kept.id)
    assert store.find(kept.id) is None


# -- forms -------------------------------------------------------------------------------------


def _request(body: bytes, content_type: str) -> Request:
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    return Request({"type": "http", "method": "POST", "headers": headers, "path": "/"}, receive)


def _session() -> SimpleNamespace:
    return SimpleNamespace(csrf="token")


def test_url_encoded_forms_need_the_session_token() -> None:
    form = asyncio.run(
        read_form(
            _request(b"csrf=token&p=echo&p=get&name=%C3%A9", "application/x-www-form-urlencoded"), _session()
        )
    )
    assert form.get_all("p") == ["echo", "get"] and form.get("name") == "\N{LATIN SMALL LETTER E WITH ACUTE}"
    assert form.get("absent") == ""
    for body in (b"p=echo", b"csrf=tokem&p=echo", b"csrf=&p=echo"):
        with pytest.raises(HttpProblem) as refused:
            asyncio.run(read_form(_request(body, "application/x-www-form-urlencoded"), _session()))
        assert refused.value.status == 403 and "CSRF" in refused.value.reason
    with pytest.raises(HttpProblem) as refused:
        asyncio.run(read_form(_request(b"csrf=token", "text/plain"), _session()))
    assert refused.value.status == 415
    with pytest.raises(HttpProblem) as refused:
        asyncio.run(read_form(_request(b"csrf=token&x=%FF", "application/x-www-form-urlencoded"), _session()))
    assert refused.value.status == 400


def test_uploads_are_read_only_where_allowed_and_within_the_limit() -> None:
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\ntoken\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.dcm"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + bytes(range(256))
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f"multipart/form-data; boundary={boundary}"
    form = asyncio.run(read_form(_request(body, content_type), _session(), upload_limit=10_000))
    assert form.files["file"].filename == "x.dcm" and form.files["file"].data == bytes(range(256))
    with pytest.raises(HttpProblem) as refused:
        asyncio.run(read_form(_request(body, content_type), _session()))  # this form takes no upload
    assert refused.value.status == 415
    with pytest.raises(HttpProblem) as refused:
        asyncio.run(read_form(_request(body, content_type), _session(), upload_limit=100))
    assert refused.value.status == 413 and "http.max_body_bytes" in refused.value.reason
    with pytest.raises(HttpProblem) as refused:
        asyncio.run(read_form(_request(b"no parts", "multipart/form-data"), _session(), upload_limit=100))
    assert refused.value.status == 400


# -- charts and activity -----------------------------------------------------------------------


def test_paired_bars_share_one_scale_and_stacked_parts_fill_the_width() -> None:
    chart = paired_bars("bytes", [Group("CT", 3, 4000, 2000), Group("MR", 1, 1000, 0)])
    widths = {(rect.title.split(":")[0], rect.kind): rect.width for rect in chart.rects}
    assert widths[("CT", "received")] == 2 * widths[("CT", "stored")] == 4 * widths[("MR", "received")]
    assert widths[("MR", "stored")] == 1.0  # an empty bar is still drawn, one pixel wide
    assert [text.text for text in chart.texts] == ["CT", "2.00:1", "MR", "-"]
    progress = stacked_bar("progress", [("compressed", 3), ("pending", 1), ("failed", 0)])
    bars = [rect for rect in progress.rects if rect.height > 10]
    assert [rect.kind for rect in bars] == ["compressed", "pending"]
    assert sum(rect.width for rect in bars) == pytest.approx(WIDTH - 2)
    assert paired_bars("empty", []).rects == ()


class _Association:
    """Stands for a pynetdicom Association (Activity holds them by weak reference)."""


def test_activity_counts_open_associations_and_buckets_job_seconds() -> None:
    activity = Activity()
    first, second = SimpleNamespace(assoc=_Association()), SimpleNamespace(assoc=_Association())
    activity.association_established(first)
    activity.association_established(second)
    activity.connection_closed(first)
    activity.connection_closed(first)  # a second close of the same connection changes nothing
    activity.connection_closed(SimpleNamespace(assoc=_Association()))  # one never established (refused)
    assert activity.associations() == (1, 2)

    context = SimpleNamespace(activity=activity)

    @timed_job
    def job(_context: object, fail: bool) -> str:
        if fail:
            raise RuntimeError("codec failed")
        return "jpegxl"

    assert job(context, False) == "jpegxl" and job.__name__ == "job"
    with pytest.raises(RuntimeError):
        job(context, True)
    activity.job_finished(45.0)
    durations = activity.job_durations()
    assert durations.count == 3 and durations.total_s >= 45.0
    counts = dict(durations.buckets)
    assert counts[JOB_SECONDS_BUCKETS[0]] == 2 and counts[30.0] == 2 and counts[60.0] == 3


def test_an_instance_coded_against_a_neighbour_shows_its_reference() -> None:
    row = Instance(
        sop_instance_uid="1.2.3.2",
        instance_number="2",
        state=StorageState.COMPRESSED,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        codec="learned",
        codec_fallback=False,
        received_size=1000,
        stored_size=400,
        calling_ae="CT1",
        reference_uid="1.2.3.1",
    )
    assert InstanceRow.of(row).reference == "1.2.3.1"
    row.reference_uid = None
    assert InstanceRow.of(row).reference == ""
