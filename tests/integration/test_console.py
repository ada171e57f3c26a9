"""The admin console over HTTP against a running node (requests, as a browser posts forms):
login and its cookie, refusals (anonymous, without the permission, without the CSRF token),
every page, the peer table as `scp-node ae` keeps it, searching and browsing studies with
thumbnails, storage figures, `codec try` uploads good and bad, lossy originals, /metrics."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from sqlalchemy import select

from scp_node.index.models import Peer
from scp_node.web.auth import hash_password
from tests.support import RunningNode, make_config, pydicom_test_file, start_node, store_test_files

PASSWORD = "console test password"
HASH = hash_password(PASSWORD)
USERS = [
    {"name": "admin", "password_hash": HASH, "permissions": ["find", "get", "admin"]},
    {"name": "viewer", "password_hash": HASH, "permissions": ["find", "get"]},
    {"name": "finder", "password_hash": HASH, "permissions": ["find"]},
]
# MR goes to a lossy copy whose original is due for purge at once (keep_original_days 0).
LOSSY_MR = {
    "rules": [{"modality": "MR", "codec": "bicubic", "options": {"scale": 2}}],
    "lossy": {"keep_original": True, "keep_original_days": 0},
}


@pytest.fixture
def node(tmp_path: Path, database_url: str) -> Iterator[RunningNode]:
    config = make_config(tmp_path, database_url, **{"http.users": USERS, "compression": LOSSY_MR})
    running = start_node(config, http=True)
    store_test_files(running, ["CT_small.dcm", "MR_small.dcm"])
    yield running
    running.stop()


def _base(node: RunningNode) -> str:
    return f"http://127.0.0.1:{node.config.http.port}/console"


def _csrf(page: requests.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def _login(node: RunningNode, user: str = "admin", password: str = PASSWORD) -> requests.Session:
    session = requests.Session()
    form = session.get(f"{_base(node)}/login")
    answer = session.post(
        f"{_base(node)}/login",
        data={"csrf": _csrf(form), "username": user, "password": password, "next": "/console/storage"},
        allow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return session


def _post(session: requests.Session, node: RunningNode, path: str, data: dict) -> requests.Response:
    """A form post as the browser sends it: with the token of a page the session was shown."""
    token = _csrf(session.get(f"{_base(node)}/"))
    return session.post(f"{_base(node)}{path}", data={"csrf": token, **data}, allow_redirects=False)


# -- login, sessions, refusals -------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login_page(node: RunningNode) -> None:
    root = requests.get(f"http://127.0.0.1:{node.config.http.port}/", allow_redirects=False)
    assert root.status_code == 303 and root.headers["location"] == "/console/"
    for path in ("/", "/studies", "/peers", "/storage", "/codec-try", "/originals"):
        answer = requests.get(_base(node) + path, allow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/console/login?next=/console")
        assert "www-authenticate" not in answer.headers  # no browser password dialog
    page = requests.get(_base(node) + "/peers")
    assert page.status_code == 200 and 'id="username"' in page.text


def test_login_sets_a_strict_http_only_cookie_and_logout_ends_the_session(node: RunningNode) -> None:
    session = requests.Session()
    form = session.get(f"{_base(node)}/login")
    anonymous_id = session.cookies["scp_console"]
    answer = session.post(
        f"{_base(node)}/login",
        data={
            "csrf": _csrf(form),
            "username": "admin",
            "password": PASSWORD,
            "next": "https://evil.example/",
        },
        allow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/console/"  # never off-site
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert session.cookies["scp_console"] != anonymous_id  # a new session on login
    storage = session.get(f"{_base(node)}/storage")
    assert (
        storage.status_code == 200 and "frame-ancestors 'none'" in storage.headers["content-security-policy"]
    )
    old_id = session.cookies["scp_console"]
    out = session.post(f"{_base(node)}/logout", data={"csrf": _csrf(storage)}, allow_redirects=False)
    assert out.status_code == 303
    replay = requests.get(f"{_base(node)}/storage", cookies={"scp_console": old_id}, allow_redirects=False)
    assert replay.status_code == 303  # the old cookie is worth nothing


def test_a_failed_login_is_refused_and_logged_with_the_address(
    node: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    session = requests.Session()
    form = session.get(f"{_base(node)}/login")
    with caplog.at_level(logging.WARNING):
        answer = session.post(
            f"{_base(node)}/login",
            data={"csrf": _csrf(form), "username": "admin", "password": "wrong", "next": ""},
        )
    assert answer.status_code == 401 and "wrong user name or password" in answer.text
    assert "HTTP login failed for user 'admin' from 127.0.0.1" in caplog.text


def test_forms_without_the_session_token_are_refused(
    node: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    session = _login(node)
    peer = {"ae_title": "CSRF1", "permissions": "echo"}
    with caplog.at_level(logging.WARNING):
        missing = session.post(f"{_base(node)}/peers", data=peer, allow_redirects=False)
        wrong = session.post(f"{_base(node)}/peers", data={**peer, "csrf": "guessed"}, allow_redirects=False)
    for answer in (missing, wrong):
        assert answer.status_code == 403 and "CSRF" in answer.text
    assert "console POST /console/peers from 127.0.0.1: 403" in caplog.text
    login_form = requests.post(f"{_base(node)}/login", data={"username": "admin", "password": PASSWORD})
    assert login_form.status_code == 403  # the login form needs its token too
    with node.context.sessions() as db:
        assert db.scalar(select(Peer).where(Peer.ae_title == "CSRF1")) is None


def test_pages_need_their_permission(node: RunningNode) -> None:
    viewer = _login(node, "viewer")
    for path in ("/peers", "/storage", "/codec-try", "/originals"):
        refused = viewer.get(_base(node) + path)
        assert refused.status_code == 403 and "lacks the admin permission" in refused.text, path
    studies = viewer.get(_base(node) + "/studies")
    assert studies.status_code == 200
    refused = viewer.post(f"{_base(node)}/peers/VIEWER/remove", data={"csrf": _csrf(studies)})
    assert refused.status_code == 403 and "lacks the admin permission" in refused.text
    nav = viewer.get(_base(node) + "/studies").text
    assert ">Studies<" in nav and ">Peers<" not in nav


def test_bad_input_is_a_4xx_page_with_the_reason(node: RunningNode) -> None:
    admin = _login(node)
    cases = {
        "/studies?date_from=yesterday": (400, "expected YYYY-MM-DD"),
        "/studies?offset=-1": (400, "non-negative integer"),
        "/studies?modality=C%3CT": (400, "expected a code"),
        "/studies/1.2.not-a-uid": (400, "is not a UID"),
        "/studies/1.2.3.4": (404, "no study 1.2.3.4"),
        "/peers?edit=NOBODY": (404, "no peer"),
    }
    for path, (status, reason) in cases.items():
        answer = admin.get(_base(node) + path)
        assert answer.status_code == status and reason in answer.text, (path, answer.status_code)
        assert "Traceback" not in answer.text and answer.headers["content-type"].startswith("text/html")


# -- peers -----------------------------------------------------------------------------------


def test_peers_are_added_edited_and_removed_with_the_rules_of_ae_add(node: RunningNode) -> None:
    admin = _login(node)
    added = _post(
        admin,
        node,
        "/peers",
        {
            "ae_title": " PACS2 ",
            "host": "10.0.0.9",
            "port": "104",
            "permissions": ["store", "move"],
            "tls": "on",
        },
    )
    assert added.status_code == 303
    page = admin.get(f"{_base(node)}/peers").text
    assert "added peer PACS2: host 10.0.0.9 port 104 over TLS, permissions store,move" in page
    with node.context.sessions() as db:
        row = db.scalar(select(Peer).where(Peer.ae_title == "PACS2"))
        assert (row.host, row.port, row.tls, row.permissions) == ("10.0.0.9", 104, True, "store,move")

    refusals = [
        ({"ae_title": "CT2", "host": "10.0.0.5", "permissions": "echo"}, "Host and Port go together"),
        ({"ae_title": "CT2", "check_host": "on", "permissions": "echo"}, "“Check host” needs Host"),
        ({"ae_title": "CT2", "host": "h", "port": "http", "permissions": "echo"}, "is not a port"),
        ({"ae_title": "CT2", "host": "h", "port": "0", "permissions": "echo"}, "allowed 1-65535"),
        ({"ae_title": "THIS_TITLE_IS_WAY_TOO_LONG", "permissions": "echo"}, "1-16 characters"),
        ({"ae_title": "CT2"}, "none given"),
        ({"ae_title": "CT2", "permissions": "fly"}, "unknown &#39;fly&#39;"),
        (
            {"ae_title": "CT2", "permissions": "echo", "commitment_report": "never"},
            "Commitment report must be",
        ),
    ]
    for form, reason in refusals:
        refused = _post(admin, node, "/peers", form)
        assert refused.status_code == 400 and reason in refused.text, (form, refused.text[-800:])

    editing = admin.get(f"{_base(node)}/peers?edit=PACS2").text
    assert 'value="10.0.0.9"' in editing and "readonly" in editing
    edited = _post(
        admin,
        node,
        "/peers",
        {"ae_title": "PACS2", "host": "pacs.local", "port": "11112", "permissions": "find", "editing": "1"},
    )
    assert edited.status_code == 303
    assert (
        "updated peer PACS2: host pacs.local port 11112, permissions find"
        in admin.get(f"{_base(node)}/peers").text
    )

    removed = _post(admin, node, "/peers/PACS2/remove", {})
    assert removed.status_code == 303 and "removed peer PACS2" in admin.get(f"{_base(node)}/peers").text
    again = _post(admin, node, "/peers/PACS2/remove", {})
    assert again.status_code == 404
    seeded = _post(admin, node, "/peers/VIEWER/remove", {})
    assert seeded.status_code == 303
    assert "VIEWER is in access.peers of the config" in admin.get(f"{_base(node)}/peers").text


# -- studies ---------------------------------------------------------------------------------


def _links(page: requests.Response, pattern: str) -> list[str]:
    return re.findall(pattern, page.text)


def test_studies_are_found_as_qido_finds_them_and_browsed_to_thumbnails(node: RunningNode) -> None:
    viewer = _login(node, "viewer")
    studies = f"{_base(node)}/studies"
    everything = viewer.get(studies)
    assert everything.text.count('class="study"') == 2
    by_name = viewer.get(studies, params={"patient_name": "ct1"})  # part of the name, any case
    assert _links(by_name, r'class="study"[^>]*>([^<]+)<') == ["CompressedSamples^CT1"]
    by_modality = viewer.get(studies, params={"modality": "mr"})
    assert _links(by_modality, r'class="study"[^>]*>([^<]+)<') == ["CompressedSamples^MR1"]
    by_date = viewer.get(studies, params={"date_from": "2004-01-19", "date_to": "2004-01-19"})
    assert by_date.text.count('class="study"') == 1  # CT_small's date; MR_small has none
    assert "No study matches" in viewer.get(studies, params={"patient_id": "nobody"}).text

    study = viewer.get(
        _base(node).removesuffix("/console") + _links(by_name, r'href="(/console/studies/[0-9.]+)"')[0]
    )
    assert study.status_code == 200
    series_link = _links(study, r'href="(/console/studies/[0-9.]+/series/[0-9.]+)"')[0]
    series = viewer.get(_base(node).removesuffix("/console") + series_link)
    assert series.status_code == 200
    row = series.text[series.text.index("<tbody>") :]
    assert "compressed" in row and "jpegxl" in row and "Explicit VR Little Endian" in row and "KiB" in row
    thumbnail = viewer.get(
        _base(node).removesuffix("/console") + _links(series, r'src="([^"]+/thumbnail)"')[0]
    )
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(thumbnail.content)))
    assert max(pixels.shape) == 128 and pixels.std() > 10

    finder = _login(node, "finder")  # find without get: the pages, not the pixels
    no_pixels = finder.get(_base(node).removesuffix("/console") + series_link)
    assert no_pixels.status_code == 200 and "/thumbnail" not in no_pixels.text
    refused = finder.get(_base(node).removesuffix("/console") + _links(series, r'src="([^"]+/thumbnail)"')[0])
    assert refused.status_code == 403


def test_a_lossy_copy_shows_its_original_replaced_and_due_for_purge(node: RunningNode) -> None:
    admin = _login(node)
    mr = admin.get(f"{_base(node)}/studies", params={"modality": "MR"})
    study = admin.get(
        _base(node).removesuffix("/console") + _links(mr, r'href="(/console/studies/[0-9.]+)"')[0]
    )
    series = admin.get(
        _base(node).removesuffix("/console")
        + _links(study, r'href="(/console/studies/[0-9.]+/series/[0-9.]+)"')[0]
    )
    assert "lossy copy" in series.text and "replaced" in series.text and "bicubic" in series.text

    originals = admin.get(f"{_base(node)}/originals")
    assert "1 kept, <b>1</b> due for purge now." in originals.text
    purged = _post(admin, node, "/originals/purge", {})
    assert purged.status_code == 303
    after = admin.get(f"{_base(node)}/originals").text
    assert "dropped 1 originals past their keeping time" in after and "0 kept" in after


# -- storage figures, codec try, /metrics ------------------------------------------------------


def test_storage_figures_and_charts(node: RunningNode) -> None:
    page = _login(node).get(f"{_base(node)}/storage")
    assert page.status_code == 200
    figures = dict(re.findall(r'id="([a-z-]+)">([^<]+)<', page.text))
    assert figures["queue-depth"] == "0" and figures["pending"] == "0" and figures["failed"] == "0"
    assert figures["received-bytes"].endswith("KiB") and figures["ratio"].endswith(":1")
    assert page.text.count("<svg") == 3 and "<rect" in page.text
    for codec in ("jpegxl", "bicubic"):
        assert f"<td>{codec}</td>" in page.text
    for modality in ("CT", "MR"):
        assert f"<td>{modality}</td>" in page.text


def test_codec_try_shows_each_codec_on_an_upload_and_refuses_what_is_no_image(
    node: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    admin = _login(node)
    token = _csrf(admin.get(f"{_base(node)}/codec-try"))
    url = f"{_base(node)}/codec-try"
    ct = pydicom_test_file("CT_small.dcm").read_bytes()
    tried = admin.post(
        url, data={"csrf": token, "codec": ["jpegls", "deflate"]}, files={"file": ("CT_small.dcm", ct)}
    )
    assert tried.status_code == 200, tried.text
    rows = re.findall(
        r"<tr><td>(\w+)</td><td class=\"size\">([^<]+)</td><td class=\"size\">([^<]+)</td>", tried.text
    )
    assert [row[0] for row in rows] == ["jpegls", "deflate"] and all(row[1] == "32.0 KiB" for row in rows)
    assert "1 frame(s) of 128 \N{MULTIPLICATION SIGN} 128, 12 bits" in tried.text

    with caplog.at_level(logging.WARNING):
        text = admin.post(
            url, data={"csrf": token, "codec": "jpegls"}, files={"file": ("notes.txt", b"not DICOM")}
        )
    assert text.status_code == 400 and "notes.txt is not a DICOM image" in text.text
    assert "console POST /console/codec-try from 127.0.0.1: 400 notes.txt is not a DICOM image" in caplog.text
    no_pixels = admin.post(
        url,
        data={"csrf": token, "codec": "jpegls"},
        files={"file": ("plan.dcm", pydicom_test_file("rtplan.dcm").read_bytes())},
    )
    assert no_pixels.status_code == 400 and "no pixel data" in no_pixels.text
    empty = admin.post(url, data={"csrf": token, "codec": "jpegls"}, files={"file": ("empty.dcm", b"")})
    assert empty.status_code == 400 and "no file uploaded" in empty.text
    unknown = admin.post(url, data={"csrf": token, "codec": "zip"}, files={"file": ("CT_small.dcm", ct)})
    assert unknown.status_code == 400 and "not available here: zip" in unknown.text
    no_token = admin.post(url, data={"codec": "jpegls"}, files={"file": ("CT_small.dcm", ct)})
    assert no_token.status_code == 403


def test_metrics_count_associations_and_time_compress_jobs(node: RunningNode) -> None:
    text = requests.get(
        f"http://127.0.0.1:{node.config.http.port}/metrics", auth=("admin", PASSWORD), timeout=30
    ).text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert values["scp_node_associations_total"] == "1" and values["scp_node_associations_open"] == "0"
    assert int(values["scp_node_compress_job_seconds_count"]) == 2
    assert values['scp_node_compress_job_seconds_bucket{le="+Inf"}'] == "2"
    assert float(values["scp_node_compress_job_seconds_sum"]) > 0
    assert float(values["scp_node_compression_ratio"]) > 1


def test_anonymous_permissions_let_visitors_browse_without_logging_in(tmp_path: Path) -> None:
    users = [{"name": "getter", "password_hash": HASH, "permissions": ["get"]}]
    settings = {"http.users": users, "http.anonymous_permissions": ["find"]}
    node = start_node(make_config(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite'}", **settings), http=True)
    try:
        visitor = requests.Session()
        home = visitor.get(f"{_base(node)}/", allow_redirects=False)
        assert home.status_code == 303 and home.headers["location"] == "/console/studies"
        studies = visitor.get(f"{_base(node)}/studies")
        assert (
            studies.status_code == 200 and "No study matches" in studies.text and ">Log in<" in studies.text
        )
        storage = visitor.get(f"{_base(node)}/storage", allow_redirects=False)
        assert storage.status_code == 303 and storage.headers["location"].startswith("/console/login")
        getter = _login(node, "getter")  # logged in, but with no page of the console to see
        refused = getter.get(f"{_base(node)}/")
        assert refused.status_code == 403 and "may use no console page" in refused.text
    finally:
        node.stop()
