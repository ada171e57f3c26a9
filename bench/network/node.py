"""scp-node as a target: `scp-node serve` on a config of its own, and the wait for compression."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import yaml

from bench.loopback import free_port
from bench.network.names import DEST_AE, GET_AE, NODE
from bench.network.targets import BenchError, Target, launch, log_tail
from scp_node.config import load_config


def scp_node_binary() -> str:
    beside = Path(sys.executable).parent / "scp-node"
    found = str(beside) if beside.exists() else shutil.which("scp-node")
    if not found:
        raise BenchError("scp-node is not installed (run from the project's virtual environment)")
    return found


def node_settings(port: int, storage: Path, destination_port: int, extra: Sequence[str]) -> dict:
    """The node's config.yaml: loopback, a free port, a fresh data_dir, the getscu / movescu AE
    and the C-MOVE destination (the bench's storescp on `destination_port`, which needs no
    permission to receive) as peers, and whatever --node-set adds (dotted keys, YAML values);
    everything else is the default."""
    peers = [
        {"ae_title": GET_AE, "host": "127.0.0.1", "permissions": ["get", "move"]},
        {"ae_title": DEST_AE, "host": "127.0.0.1", "port": destination_port, "permissions": []},
    ]
    settings: dict = {
        "network": {"host": "127.0.0.1", "port": port},
        "access": {"peers": peers},
        "storage": {"data_dir": str(storage)},
    }
    for assignment in extra:
        dotted, _, value = assignment.partition("=")
        section = settings
        *parents, leaf = dotted.split(".")
        for key in parents:
            section = section.setdefault(key, {})
        section[leaf] = yaml.safe_load(value)
    queue = settings.get("queue", {})
    if queue.get("redis_url"):  # a queue of this run's own: no job of another run is in it
        queue.setdefault("name", f"bench-{storage.parent.name}")
    return settings


def start_node(workdir: Path, binary: str, destination_port: int, extra: Sequence[str] = ()) -> Target:
    port = free_port()
    storage = workdir / "data"
    config = workdir / "config.yaml"
    settings = node_settings(port, storage, destination_port, extra)
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    loaded = load_config(config)
    log = workdir / "scp-node.log"
    process = launch([binary, "serve", "--config", str(config)], log, cwd=workdir)
    workers = ()
    if loaded.queue.redis_url:  # jobs go to Redis: `scp-node worker` runs them, as a site would
        workers = (
            launch([binary, "worker", "--config", str(config)], workdir / "scp-node-worker.log", cwd=workdir),
        )
    return Target(
        NODE, loaded.network.ae_title, port, storage, process, log, (port,), config, workers=workers
    )


def node_stats(binary: str, config: Path) -> dict:
    result = subprocess.run(
        [binary, "stats", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"scp-node stats failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def pending_in_index(data_dir: Path) -> int | None:
    """Instances still received or queued, read cheaply from the node's SQLite index (None: unknown).

    `scp-node stats` costs about 2 CPU seconds per call on this machine, which would compete with
    the compression it is waiting for; this query costs nothing and only decides when to ask it.
    """
    database = data_dir / "index.sqlite"
    try:
        with closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=5)) as connection:
            row = connection.execute(
                "SELECT count(*) FROM instance WHERE state IN ('received', 'queued')"
            ).fetchone()
    except sqlite3.Error:
        return None
    return int(row[0])


def wait_compressed(target: Target, binary: str, timeout: float, poll: float) -> tuple[float | None, dict]:
    """Seconds until `scp-node stats` shows no instance received or queued (None on timeout)."""
    assert target.node_config is not None
    started = time.perf_counter()
    while True:
        pending = pending_in_index(target.storage)
        if pending in (0, None):
            done = time.perf_counter()  # the stats call below takes seconds: not compression time
            stats = node_stats(binary, target.node_config)
            if stats["by_state"].get("received", 0) + stats["by_state"].get("queued", 0) == 0:
                return (done if pending == 0 else time.perf_counter()) - started, stats
        if not target.alive():
            raise BenchError(f"scp-node exited while compressing:\n{log_tail(target.log)}")
        if time.perf_counter() - started > timeout:
            return None, node_stats(binary, target.node_config)
        time.sleep(poll)
