"""`stats`: counts, bytes, ratio and queue depth in human units, once (or as JSON) or, with
`--watch`, sampled until Ctrl-C with rates and an ETA (a rich progress bar on a terminal)."""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scp_node.cli.sessions import index_sessions
from scp_node.config import NodeConfig

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from scp_node.index.repository import IndexStats

PENDING_STATES = ("received", "queued")  # acknowledged, not yet compressed
WATCH_WINDOW_S = 30.0  # rates in `stats --watch` are over about this long


class _QueueDepth:
    """Compress jobs waiting: RQ's queue length with Redis; else the index's received and
    queued instances (the in-process queue lives in the serving process)."""

    def __init__(self, config: NodeConfig) -> None:
        self._queue = None
        if config.queue.redis_url:
            from redis import Redis
            from rq import Queue

            self._queue = Queue(config.queue.name, connection=Redis.from_url(config.queue.redis_url))

    def __call__(self, by_state: dict[str, int]) -> int:
        if self._queue is not None:
            return self._queue.count
        return sum(by_state.get(state, 0) for state in PENDING_STATES)

    def close(self) -> None:
        if self._queue is not None:
            self._queue.connection.close()


def show_stats(config: NodeConfig, args: argparse.Namespace) -> int:
    depth = _QueueDepth(config)
    try:
        with index_sessions(config) as sessions:
            if args.watch:
                return _watch(lambda: _sample(sessions, depth), args.interval, args.count)
            from scp_node.index.repository import stats

            with sessions() as session:
                result = stats(session)
            queue_depth = depth(result.by_state)
    finally:
        depth.close()
    report = {
        **result.__dict__,
        "compression_ratio": round(result.compression_ratio, 4),
        "queue_depth": queue_depth,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from scp_node.index.database import display_url

    _print_stats(result, queue_depth, display_url(config.database_url))
    return 0


def _print_stats(result: IndexStats, queue_depth: int, where: str) -> None:
    ratio = result.compression_ratio
    rows = [
        ("index", where),
        ("patients", result.patients),
        ("studies", result.studies),
        ("series", result.series),
        ("instances", result.instances),
        ("received", human_bytes(result.received_bytes)),
        ("stored", human_bytes(result.stored_bytes)),
        ("ratio", f"{ratio:.2f} : 1" if ratio else "-"),
        ("pixel data in", human_bytes(result.pixel_bytes_in)),
        ("pixel data out", human_bytes(result.pixel_bytes_out)),
        ("codec fallbacks", result.codec_fallbacks),
        ("queue depth", queue_depth),
    ]
    for label, value in rows:
        print(f"{label:<16} {value}")
    for title, counts in (("state", result.by_state), ("codec", result.by_codec)):
        print()
        print(f"{title:<16} {'instances':>10}")
        for key, value in sorted(counts.items(), key=lambda item: (-item[1], item[0])) or [("(none)", 0)]:
            print(f"{key:<16} {value:>10}")


def human_bytes(count: float) -> str:
    """Decimal units as disks are sold: 999 B, 12.3 kB, 4.56 MB, 1.20 GB."""
    if count < 1000:
        return f"{int(count)} B"
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        count /= 1000
        if count < 1000 or unit == "PB":
            return f"{count:.3g} {unit}" if count < 100 else f"{count:.0f} {unit}"
    raise AssertionError("unreachable")


def _sample(sessions: sessionmaker[Session], depth: _QueueDepth) -> dict:
    """One `--watch` sample from aggregate queries (the full `stats` also checks every file on
    disk, too slow to repeat every few seconds on a large index). "settled": instances that
    left the queue (compressed, failed, replaced by a copy...)."""
    from sqlalchemy import func, select

    from scp_node.index.models import Instance

    with sessions() as session:
        by_state = {
            str(state): count
            for state, count in session.execute(select(Instance.state, func.count()).group_by(Instance.state))
        }
        pixel_bytes_in = session.scalar(select(func.coalesce(func.sum(Instance.pixel_bytes_in), 0))) or 0
        # A lossy copy is a row of its own that was never queued: not work done on the queue.
        copies = session.scalar(select(func.count()).where(Instance.derived_from_uid.is_not(None))) or 0
    return {
        "time": time.monotonic(),
        "pending": depth(by_state),
        "compressed": by_state.get("compressed", 0),
        "settled": sum(by_state.values()) - sum(by_state.get(state, 0) for state in PENDING_STATES) - copies,
        "pixel_bytes_in": int(pixel_bytes_in),
        "by_state": by_state,
    }


class _Rates:
    """Instances/s and MB/s compressed, and the ETA of the queue, over a sliding window."""

    def __init__(self) -> None:
        self.samples: deque[dict] = deque()
        self.first: dict | None = None

    def add(self, sample: dict) -> dict[str, Any]:
        self.first = self.first or sample
        self.samples.append(sample)
        while len(self.samples) > 2 and sample["time"] - self.samples[0]["time"] > WATCH_WINDOW_S:
            self.samples.popleft()
        oldest = self.samples[0]
        elapsed = sample["time"] - oldest["time"]

        def rate(key: str) -> float:
            return max(0.0, (sample[key] - oldest[key]) / elapsed) if elapsed > 0 else 0.0

        settle_rate = rate("settled")
        eta = sample["pending"] / settle_rate if settle_rate > 0 else None
        done = max(0, sample["settled"] - self.first["settled"])
        return {
            "pending": sample["pending"],
            "done": done,
            "instances_per_s": rate("compressed"),
            "mb_per_s": rate("pixel_bytes_in") / 1e6,
            "eta": "-" if eta is None else _clock(eta) if sample["pending"] else "0:00:00",
        }


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _watch(sample: Callable[[], dict], interval: float, count: int | None) -> int:
    """`stats --watch`: on a terminal a live progress bar (rich), else one line per sample."""
    from rich.console import Console

    console = Console()
    rates = _Rates()
    samples = 0
    try:
        if console.is_terminal:
            _watch_live(console, sample, rates, interval, count)
        else:
            while count is None or samples < count:
                if samples:
                    time.sleep(interval)
                view = rates.add(sample())
                samples += 1
                print(
                    f"{time.strftime('%H:%M:%S')} queue {view['pending']} done {view['done']} "
                    f"{view['instances_per_s']:.2f} instances/s {view['mb_per_s']:.2f} MB/s "
                    f"ETA {view['eta']}",
                    flush=True,
                )
    except KeyboardInterrupt:
        pass
    return 0


def _watch_live(
    console: Any, sample: Callable[[], dict], rates: _Rates, interval: float, count: int | None
) -> None:
    """A table of states over a progress bar: the instances compressed since the watch began
    against those plus the queue, with rates and the ETA."""
    from rich.console import Group
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TextColumn
    from rich.table import Table

    progress = Progress(
        TextColumn("[bold]{task.description:<12}"),
        BarColumn(),
        TextColumn("{task.fields[counts]}"),
        TextColumn("{task.fields[rates]}"),
        TextColumn("ETA {task.fields[eta]}"),
        console=console,
    )
    task = progress.add_task("sampling", total=1, completed=0, counts="", rates="", eta="-")
    samples = 0
    with Live(progress, console=console, refresh_per_second=4) as live:
        while count is None or samples < count:
            if samples:
                time.sleep(interval)
            current = sample()
            view = rates.add(current)
            samples += 1
            total = view["done"] + view["pending"]
            progress.update(
                task,
                total=max(total, 1),
                completed=view["done"] if total else 1,
                description=f"queue {view['pending']}" if view["pending"] else "idle",
                counts=f"{view['done']}/{total} done",
                rates=f"{view['instances_per_s']:.2f} instances/s  {view['mb_per_s']:.2f} MB/s",
                eta=view["eta"],
            )
            states = Table(box=None, pad_edge=False)
            states.add_column("state")
            states.add_column("instances", justify="right")
            for state, number in sorted(current["by_state"].items(), key=lambda item: (-item[1], item[0])):
                states.add_row(state, str(number))
            live.update(Group(states, progress))
