"""The admin's command line, run as an admin runs it (a new process per command): light imports,
no migrations outside serve/worker/db upgrade, one-line errors with exit status 2, help texts
with defaults and choices, what ae add/remove did, stats in human units, the live view, and a
clean shutdown of serve on SIGTERM."""

from __future__ import annotations

import ast
import inspect
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from scp_node.imaging.codecs.registry import CODECS, codec_class
from scp_node.index.database import MIGRATIONS_DIR, migration_head
from tests.support import free_port, run_cli

HEAD = migration_head()


def _config_file(directory: Path, **settings: object) -> Path:
    """A config with a SQLite index under `directory` (not created: that is `db upgrade`'s job)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "storage": {
            "data_dir": str(directory / "data"),
            "database_url": f"sqlite:///{directory / 'index.sqlite'}",
        },
        "http": {"port": 0},  # any free port: tests run side by side, 8080 may be taken
        "log_level": "INFO",
        **settings,
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config whose index `db upgrade` brought to the head (shared by read-only tests)."""
    config_file = _config_file(tmp_path_factory.mktemp("cli-index"))
    upgrade = run_cli(config_file, "db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"now at revision {HEAD} (was empty)" in upgrade.stdout
    return config_file


@pytest.fixture
def fresh_index(tmp_path: Path) -> Path:
    config_file = _config_file(tmp_path)
    assert run_cli(config_file, "db", "upgrade").returncode == 0
    return config_file


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error of a refused command: exit 2, nothing on stdout, one line on stderr, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


# -- start-up cost ---------------------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter: what it imports is what a new admin command would."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_importing_the_cli_loads_no_torch_no_index_no_pixels() -> None:
    probe = (
        "import sys, scp_node.cli, scp_node.imaging.codecs; "
        "print(sorted(m for m in ('torch', 'numpy', 'pydicom', 'sqlalchemy', 'alembic', 'rich', 'redis') "
        "if m in sys.modules))"
    )
    loaded = _python(probe)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout.replace("'", '"')) == []


def test_ae_list_and_stats_do_not_import_torch(upgraded: Path) -> None:
    probe = (
        "import sys; from scp_node.cli import main; "
        f"codes = [main(['ae', 'list', '--config', {str(upgraded)!r}]), "
        f"main(['stats', '--config', {str(upgraded)!r}])]; "
        "print('torch' in sys.modules, codes)"
    )
    loaded = _python(probe)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip().splitlines()[-1] == "False [0, 0]"


def test_codec_classes_are_imported_on_first_use() -> None:
    probe = (
        "import sys; from scp_node.imaging.codecs import create_codec; "
        "create_codec('jpegxl', effort=3); "
        "print('torch' in sys.modules, 'scp_node.imaging.codecs.standard' in sys.modules)"
    )
    loaded = _python(probe)
    assert loaded.stdout.strip() == "False True", loaded.stderr


def test_declared_codec_options_are_the_ones_the_codecs_read() -> None:
    """The registry checks options against its declarations; a codec reading an option that is
    not declared (or the reverse) would make a valid option refused or a typo accepted."""
    for name, entry in CODECS.items():
        cls = codec_class(name)
        read: set[str] = set()
        for klass in cls.__mro__:
            if not klass.__module__.startswith("scp_node.imaging.codecs"):
                continue
            tree = ast.parse(inspect.getsource(klass))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "get"
                    and "options" in ast.unparse(node.func.value)
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                ):
                    read.add(node.args[0].value)
        assert read == set(entry.option_names), name


# -- migrations and the schema check ---------------------------------------------------------


def test_ordinary_commands_refuse_an_index_without_schema_and_create_nothing(tmp_path: Path) -> None:
    config_file = _config_file(tmp_path)
    for command in (["ae", "list"], ["stats"], ["stats", "--json"], ["ae", "remove", "CT1"], ["verify"]):
        line = _one_line_error(run_cli(config_file, *command))
        assert line == (
            f"scp-node: the index at sqlite:///{tmp_path / 'index.sqlite'} has no schema yet, "
            f"this version needs revision {HEAD}: run `scp-node db upgrade`"
        ), command
    assert not (tmp_path / "index.sqlite").exists()


def test_a_behind_or_foreign_schema_is_refused_until_db_upgrade(fresh_index: Path, tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    database = tmp_path / "index.sqlite"
    alembic_config = Config()
    alembic_config.set_main_option("script_location", str(MIGRATIONS_DIR))
    alembic_config.set_main_option("sqlalchemy.url", f"sqlite:///{database}")
    command.downgrade(alembic_config, "-1")
    behind = sqlite3.connect(database).execute("SELECT version_num FROM alembic_version").fetchone()[0]
    for args in (["ae", "list"], ["stats"], ["originals", "purge"]):
        line = _one_line_error(run_cli(fresh_index, *args))
        assert f"is at revision {behind}, this version needs {HEAD}: run `scp-node db upgrade`" in line

    upgrade = run_cli(fresh_index, "db", "upgrade")
    assert upgrade.returncode == 0 and f"now at revision {HEAD} (was {behind})" in upgrade.stdout
    again = run_cli(fresh_index, "db", "upgrade")
    assert again.returncode == 0 and f"already at revision {HEAD}" in again.stdout
    assert "setup plugin" not in upgrade.stderr + again.stderr

    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_future'")
    line = _one_line_error(run_cli(fresh_index, "stats"))
    assert "revision 9999_future, which this version does not know" in line and "upgrade scp-node" in line


def test_ordinary_commands_print_no_alembic_lines(upgraded: Path) -> None:
    for args in (["ae", "list"], ["stats"], ["stats", "--json"], ["verify"]):
        result = run_cli(upgraded, *args)
        assert result.returncode == 0, result.stderr
        assert "alembic" not in result.stdout + result.stderr, args
        assert result.stderr == "", args


# -- one-line errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["codec", "try", "--codec", "bicubic", "--option", "scale=3", "x.dcm"],
            ["scale", "one of 2, 4", "not 3"],
        ),
        (
            ["codec", "try", "--codec", "bicubic", "--option", "nonsense=1", "x.dcm"],
            ["'nonsense'", "its options: scale, delta"],
        ),
        (
            ["codec", "try", "--codec", "jpegxl", "--option", "effort", "x.dcm"],
            ["--option", "'effort'", "KEY=VALUE"],
        ),
        (["codec", "try", "--codec", "jpegxl", "--option", "effort=12", "x.dcm"], ["effort", "from 1 to 9"]),
        (["codec", "try", "--codec", "jpegxl", "--option", "effort=fast", "x.dcm"], ["effort", "'fast'"]),
        (["codec", "try", "--codec", "jpegls", "--option", "effort=3", "x.dcm"], ["effort", "no options"]),
        (["codec", "try", "--codec", "learned", "--option", "tile=12", "x.dcm"], ["tile", "multiple of 8"]),
        (
            ["codec", "try", "--codec", "learned", "--option", "compete=2", "x.dcm"],
            ["compete", "true or false"],
        ),
        (["codec", "try", "--codec", "nope", "x.dcm"], ["--codec", "'nope'", "'jpegxl'", "'ldm'"]),
        (
            ["ae", "add", "THIS_TITLE_IS_WAY_TOO_LONG", "--permissions", "echo"],
            ["ae_title", "26 characters", "1-16"],
        ),
        (["ae", "add", "BACK\\SLASH", "--permissions", "echo"], ["ae_title", "'\\\\'", "without backslash"]),
        (["ae", "add", "TAB\tBED", "--permissions", "echo"], ["ae_title", "'\\t'", "printable ASCII"]),
        (["ae", "add", "    ", "--permissions", "echo"], ["ae_title", "not all spaces"]),
        (["ae", "add", "CT2"], ["--permissions", "required"]),
        (
            ["ae", "add", "CT2", "--permissions", "echo,fly"],
            ["--permissions", "'fly'", "echo, store, find, get, move"],
        ),
        (
            ["ae", "add", "CT2", "--permissions", "echo", "--host", "10.0.0.5"],
            ["--host and --port go together"],
        ),
        (["ae", "add", "CT2", "--permissions", "echo", "--port", "104"], ["--host and --port go together"]),
        (["ae", "add", "CT2", "--permissions", "echo", "--host", "h", "--port", "0"], ["--port", "1-65535"]),
        (["ae", "add", "CT2", "--permissions", "echo", "--check-host"], ["--check-host needs --host"]),
        (["ae", "remove", "A_TITLE_TOO_LONG_AGAIN"], ["ae_title", "1-16"]),
        (["serve", "--port", "http"], ["--port", "0-65535"]),
        (["stats", "--interval", "0"], ["--interval", "positive"]),
        (["stats", "--json", "--watch"], ["--watch", "--json"]),
        (["verify", "--sample", "2"], ["--sample", "0 to 1"]),
        (["codec", "train", "f", "--checkpoint", "c.pt", "--device", "tpu"], ["--device", "'cpu', 'cuda'"]),
    ],
)
def test_bad_input_is_one_line_naming_the_option_and_what_is_allowed(
    args: list[str], expected: list[str], tmp_path: Path
) -> None:
    line = _one_line_error(run_cli(_config_file(tmp_path), *args))
    assert line.startswith("scp-node")
    for text in expected:
        assert text in line, (text, line)


def test_a_bad_config_is_one_line(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"network": {"port": "many"}, "storage": {"colour": "blue"}}))
    line = _one_line_error(run_cli(config_file, "ae", "list"))
    assert "network.port" in line and "storage.colour" in line
    config_file.write_text("network: [unclosed")
    assert "not valid YAML" in _one_line_error(run_cli(config_file, "ae", "list"))
    assert "cannot read" in _one_line_error(run_cli(tmp_path / "absent.yaml", "ae", "list"))


def test_a_codec_rule_with_a_bad_option_stops_serve_in_one_line(tmp_path: Path) -> None:
    rule = {"modality": "CR", "codec": "bicubic", "options": {"scale": 3}}
    config_file = _config_file(tmp_path, compression={"rules": [rule]}, network={"port": free_port()})
    served = run_cli(config_file, "serve")  # serve migrates first, and says so
    assert served.returncode == 2 and "Traceback" not in served.stderr, served.stderr
    assert (
        served.stderr.strip().splitlines()[-1] == "scp-node: bicubic option scale must be one of 2, 4, not 3"
    )


# -- help ------------------------------------------------------------------------------------


def _help(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "scp_node.cli", *args, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split())  # argparse wraps lines at the terminal width


def test_help_texts_show_commands_defaults_and_choices() -> None:
    top = _help()
    for command in ("serve", "worker", "db", "ae", "stats", "verify", "originals", "codec"):
        assert f" {command} " in top
    ae = _help("ae")
    assert "list list the peer table" in ae and "add add a peer" in ae and "remove remove a peer" in ae
    serve = _help("serve")
    assert "(default: network.port, 11112)" in serve and "(default: network.ae_title, SCP_NODE)" in serve
    assert "(default: the config's, ./data)" in serve
    add = _help("ae", "add")
    assert "comma list of echo,store,find,get,move (required)" in add and "C-MOVE destination" in add
    stats = _help("stats")
    assert "(default: 2.0)" in stats and "--watch" in stats and "--count" in stats
    trial = _help("codec", "try")
    for name, entry in CODECS.items():
        assert f" {name} {entry.summary}" in trial
        for option in entry.options:
            assert f"{option.name} {option.help}: {option.allowed} (default: {option.default})" in trial
    assert "effort encode time against size: an integer from 1 to 9 (default: 7)" in trial
    train = _help("codec", "train")
    assert "(default: 1000)" in train and "{cpu,cuda}" in train


# -- ae --------------------------------------------------------------------------------------


def test_ae_add_list_remove_say_what_they_did(fresh_index: Path, tmp_path: Path) -> None:
    added = run_cli(
        fresh_index, "ae", "add", "CT1", "--host", "10.0.0.5", "--port", "104", "--permissions", "echo,store"
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added peer CT1: host 10.0.0.5 port 104, permissions echo,store"
    updated = run_cli(
        fresh_index, "ae", "add", "CT1", "--host", "ct1.local", "--port", "11112", "--permissions", "store",
        "--check-host",
    )  # fmt: skip
    assert updated.stdout.strip() == (
        "updated peer CT1: host ct1.local port 11112, permissions store, connections checked against the host"
    )
    modality = run_cli(fresh_index, "ae", "add", " US1 ", "--permissions", "echo,store")
    assert modality.stdout.strip() == (
        "added peer US1: no host/port (not a C-MOVE destination), permissions echo,store"
    )
    with sqlite3.connect(tmp_path / "index.sqlite") as connection:
        rows = connection.execute("SELECT ae_title, host, port FROM peer ORDER BY ae_title").fetchall()
    assert rows == [("CT1", "ct1.local", 11112), ("US1", "", 0)]  # port 0: none

    pacs = run_cli(
        fresh_index, "ae", "add", "PACS", "--host", "10.0.0.9", "--port", "104",
        "--permissions", "store,move", "--tls", "--commitment-report", "new_association",
    )  # fmt: skip
    assert pacs.stdout.strip() == (
        "added peer PACS: host 10.0.0.9 port 104 over TLS, permissions store,move, "
        "commitment reports on a new association"
    )
    for needs_address in (["--tls"], ["--commitment-report", "new_association"]):
        refused = run_cli(fresh_index, "ae", "add", "US2", "--permissions", "store", *needs_address)
        assert refused.returncode == 2 and "needs --host and --port" in refused.stderr
    bad_choice = run_cli(fresh_index, "ae", "add", "US2", "--permissions", "store", "--commitment-report=?")
    assert bad_choice.returncode == 2 and "same_association" in bad_choice.stderr

    listed = run_cli(fresh_index, "ae", "list").stdout.splitlines()
    header = ["AE", "title", "host", "port", "host", "check", "TLS", "reports", "permissions"]
    assert listed[0].split() == header
    assert listed[1].split() == ["CT1", "ct1.local", "11112", "yes", "no", "same", "store"]
    assert listed[2].split() == ["PACS", "10.0.0.9", "104", "no", "yes", "new", "store,move"]
    assert listed[3].split() == ["US1", "-", "-", "no", "no", "same", "echo,store"]
    assert run_cli(fresh_index, "ae", "remove", "PACS").returncode == 0

    removed = run_cli(fresh_index, "ae", "remove", "CT1")
    assert removed.returncode == 0 and removed.stdout.strip() == "removed peer CT1"
    again = run_cli(fresh_index, "ae", "remove", "CT1")
    assert again.returncode == 1 and again.stderr.strip() == "scp-node: no peer CT1 (peers: US1)"
    assert run_cli(fresh_index, "ae", "remove", "US1").returncode == 0
    assert run_cli(fresh_index, "ae", "list").stdout.strip() == "no peers (add one with `scp-node ae add`)"


# -- stats -----------------------------------------------------------------------------------

STATS_KEYS = {
    "patients",
    "studies",
    "series",
    "instances",
    "by_state",
    "by_codec",
    "codec_fallbacks",
    "received_bytes",
    "stored_bytes",
    "pixel_bytes_in",
    "pixel_bytes_out",
    "compression_ratio",
    "queue_depth",
}


def _add_instances(directory: Path, rows: list[dict]) -> None:
    """Index rows as a node writes them, with real files (stats counts absent files as missing)."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from scp_node.index.models import Instance, Patient, Series, Study

    engine = create_engine(f"sqlite:///{directory / 'index.sqlite'}")
    with Session(engine) as session:
        patient = Patient(patient_id="P1")
        study = Study(study_instance_uid="1.2.3", patient=patient)
        series = Series(series_instance_uid="1.2.3.4", study=study, modality="CT")
        session.add_all([patient, study, series])
        session.flush()
        for number, row in enumerate(rows):
            path = directory / f"file-{number}"
            path.write_bytes(b"x")
            compressed = row["state"] == "compressed"
            session.add(
                Instance(
                    sop_instance_uid=f"1.2.3.4.{number}",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    series_pk=series.id,
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    dataset_sha256="0" * 64,
                    blob_path=str(path) if compressed else None,
                    spool_path=None if compressed else str(path),
                    **row,
                )
            )
        session.commit()
    engine.dispose()


def test_stats_in_human_units_and_json_keys_unchanged(fresh_index: Path, tmp_path: Path) -> None:
    mb = 1_000_000
    compressed = {"state": "compressed", "codec": "jpegxl", "received_size": 3 * mb, "stored_size": mb}
    _add_instances(
        tmp_path,
        [
            {**compressed, "pixel_bytes_in": 2 * mb, "pixel_bytes_out": mb // 2},
            {**compressed, "pixel_bytes_in": 2 * mb, "pixel_bytes_out": mb // 2},
            {"state": "queued", "received_size": 2 * mb},
        ],
    )
    report = json.loads(run_cli(fresh_index, "stats", "--json").stdout)
    assert set(report) >= STATS_KEYS
    assert report["by_state"] == {"compressed": 2, "queued": 1} and report["queue_depth"] == 1
    assert report["received_bytes"] == 8 * mb and report["stored_bytes"] == 4 * mb
    assert report["compression_ratio"] == 2.0

    shown = run_cli(fresh_index, "stats")
    assert shown.returncode == 0 and shown.stderr == ""
    rows = {line[:16].strip(): line[16:].strip() for line in shown.stdout.splitlines() if line.strip()}
    assert rows["received"] == "8 MB" and rows["stored"] == "4 MB" and rows["ratio"] == "2.00 : 1"
    assert rows["pixel data in"] == "4 MB" and rows["pixel data out"] == "1 MB"
    assert rows["instances"] == "3" and rows["queue depth"] == "1"
    assert rows["state"] == "instances" and rows["compressed"] == "2" and rows["queued"] == "1"
    assert rows["codec"] == "instances" and rows["jpegxl"] == "2"


def test_human_bytes() -> None:
    from scp_node.cli.stats import human_bytes

    assert [human_bytes(n) for n in (0, 999, 1000, 12_345, 4_560_000, 123_456_789, 1.2e9)] == [
        "0 B",
        "999 B",
        "1 kB",
        "12.3 kB",
        "4.56 MB",
        "123 MB",
        "1.2 GB",
    ]


def test_stats_watch_samples_then_stops(fresh_index: Path, tmp_path: Path) -> None:
    _add_instances(tmp_path, [{"state": "queued", "received_size": 100}] * 2)
    watched = run_cli(fresh_index, "stats", "--watch", "--interval", "0.1", "--count", "3")
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.strip().splitlines()
    assert len(lines) == 3
    assert all("queue 2 done 0 0.00 instances/s 0.00 MB/s ETA -" in line for line in lines)


def _watch_command(config_file: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "scp_node.cli", "stats", "--watch", *options, "--config", str(config_file)]


def test_stats_watch_progress_on_a_terminal(fresh_index: Path, tmp_path: Path) -> None:
    """On a terminal, rich draws the states and a progress bar with rates and the ETA."""
    _add_instances(tmp_path, [{"state": "compressed", "received_size": 100, "stored_size": 10}])
    watched = subprocess.run(
        _watch_command(fresh_index, "--interval", "0.1", "--count", "2"),
        capture_output=True,
        text=True,
        timeout=60,
        env={"FORCE_COLOR": "1", "COLUMNS": "120", "PATH": "/usr/bin:/bin"},
    )
    assert watched.returncode == 0, watched.stderr
    for text in ("compressed", "idle", "━", "0/0 done", "instances/s", "MB/s", "ETA"):
        assert text in watched.stdout, text


def test_stats_watch_stops_on_ctrl_c(fresh_index: Path) -> None:
    process = subprocess.Popen(
        _watch_command(fresh_index, "--interval", "0.2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "queue 0" in process.stdout.readline()  # watching
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0 and "Traceback" not in err, err


# -- codec try -------------------------------------------------------------------------------


def test_codec_try_shows_original_size_and_ratio(upgraded: Path) -> None:
    from tests.support import pydicom_test_file

    mr = str(pydicom_test_file("MR_small.dcm"))
    table = run_cli(upgraded, "codec", "try", "--codec", "jpegls", mr)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:4] == ["file", "original", "coded", "ratio"]
    assert row.split()[:3] == ["MR_small.dcm", "8.19", "kB"]  # 64 x 64 16-bit samples
    result = json.loads(run_cli(upgraded, "codec", "try", "--codec", "jpegls", "--json", mr).stdout)
    assert result["original_bytes"] == 64 * 64 * 2
    assert result["ratio"] == pytest.approx(result["original_bytes"] / result["bytes"])
    assert f"{result['ratio']:.2f}:1" in row


# -- serve -----------------------------------------------------------------------------------


def test_sigterm_lets_in_flight_associations_finish_then_shuts_down_cleanly(tmp_path: Path) -> None:
    port = free_port()
    config_file = _config_file(tmp_path, network={"port": port})
    log_file = tmp_path / "serve.log"
    with open(log_file, "wb") as log:
        node = subprocess.Popen(
            [sys.executable, "-m", "scp_node.cli", "serve", "--config", str(config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "listening on" not in log_file.read_text():
            assert node.poll() is None and time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.1)
        ae = AE(ae_title="ADMIN")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="SCP_NODE")
        assert assoc.is_established
        node.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while "no new associations; waiting" not in log_file.read_text():
            assert time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.1)
        assert node.poll() is None  # waiting for the association in flight
        assert assoc.send_c_echo().Status == 0x0000
        late = AE(ae_title="LATE")
        late.add_requested_context(Verification)
        assert not late.associate("127.0.0.1", port, ae_title="SCP_NODE").is_established
        assoc.release()
        assert node.wait(timeout=30) == 0
    finally:
        node.kill()
    log = log_file.read_text()
    assert "SIGTERM: shutting down" in log
    assert "no new associations; waiting up to 60 s for 1 in flight" in log
    assert "in-flight associations finished" in log and log.rstrip().endswith("shut down cleanly")
    assert "Traceback" not in log
