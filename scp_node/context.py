"""Everything a running node (or worker, or admin command) holds open: config, index, spool,
blobs, and the codecs as the site configured them (weights that decoding a blob may need); and
what the process did that the index cannot tell (Activity: DICOM associations, compress-job
durations), which the DICOM server and the compress job feed and /metrics reads.

Activity is per process: with an RQ queue, the jobs `scp-node worker` processes run are timed
there, not in the node that serves /metrics."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from weakref import WeakSet

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from scp_node.config import NodeConfig
from scp_node.imaging.blob import BlobError, decode_instance
from scp_node.imaging.codecs import SiteCodecs
from scp_node.index.database import check_schema, create_index_engine, session_factory, upgrade
from scp_node.index.repository import find_instance, unreferenced
from scp_node.storage.blobs import BlobStore
from scp_node.storage.durable import remove
from scp_node.storage.recent_files import RecentFiles
from scp_node.storage.spool import Spool

if TYPE_CHECKING:
    from pynetdicom.events import Event

_Result = TypeVar("_Result")


# Upper bounds (seconds) of the compress-job duration buckets: a standard codec on a CT slice
# takes a fraction of a second, a learned codec on a mammogram minutes.
JOB_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class JobDurations:
    """A Prometheus histogram's content: cumulative counts per bucket bound, then +Inf."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    total_s: float


class Activity:
    """Counters the DICOM server's threads and the compress workers update at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: WeakSet[Any] = WeakSet()  # established associations not yet closed
        self._associations = 0
        self._last_message = float("-inf")  # time.monotonic() of the latest DIMSE message in
        self._bucket_counts = [0] * len(JOB_SECONDS_BUCKETS)
        self._jobs = 0
        self._job_seconds = 0.0

    # pynetdicom event handlers (scp_node.server binds them)

    def association_established(self, event: Event) -> None:
        with self._lock:
            self._open.add(event.assoc)
            self._associations += 1

    def connection_closed(self, event: Event) -> None:
        """Every association's connection closes, whether it was released or aborted."""
        with self._lock:
            self._open.discard(event.assoc)

    def message_received(self, _event: Event) -> None:
        self._last_message = time.monotonic()  # one float store: atomic, no lock needed

    # what in-process compress workers wait on

    def wait_for_quiet(self, quiet_s: float, at_most_s: float) -> None:
        """Return once no DIMSE message has come in for `quiet_s`, or after `at_most_s`."""
        deadline = time.monotonic() + at_most_s
        while (now := time.monotonic()) < deadline:
            quiet_at = self._last_message + quiet_s
            if now >= quiet_at:
                return
            time.sleep(min(quiet_at, deadline) - now)

    def job_finished(self, seconds: float) -> None:
        with self._lock:
            self._jobs += 1
            self._job_seconds += seconds
            for index, bound in enumerate(JOB_SECONDS_BUCKETS):
                if seconds <= bound:
                    self._bucket_counts[index] += 1

    # what /metrics reads

    def associations(self) -> tuple[int, int]:
        """(open now, accepted since the process started)."""
        with self._lock:
            return len(self._open), self._associations

    def job_durations(self) -> JobDurations:
        with self._lock:
            return JobDurations(
                tuple(zip(JOB_SECONDS_BUCKETS, self._bucket_counts, strict=True)),
                self._jobs,
                self._job_seconds,
            )


@dataclass
class NodeContext:
    config: NodeConfig
    engine: Engine
    sessions: sessionmaker[Session]
    spool: Spool
    blobs: BlobStore
    codecs: SiteCodecs
    recent_files: RecentFiles  # rebuilt files, for retrieval and series references
    activity: Activity = field(default_factory=Activity)  # associations, job durations (/metrics)

    @classmethod
    def open(cls, config: NodeConfig, *, migrate: bool = True) -> NodeContext:
        """migrate: bring the index to the newest schema (serve, worker); False: only check it
        and raise SchemaNotCurrent when it is behind (admin commands leave migrating to
        `scp-node db upgrade`)."""
        config.storage.data_dir.mkdir(parents=True, exist_ok=True)
        if migrate:
            upgrade(config.database_url)
        else:
            check_schema(config.database_url)
        engine = create_index_engine(config.database_url)
        return cls(
            config=config,
            engine=engine,
            sessions=session_factory(engine),
            spool=Spool(config.storage.data_dir),
            blobs=BlobStore(config.storage.data_dir),
            codecs=SiteCodecs(config.compression),
            recent_files=RecentFiles(config.storage.recent_files_mb * 1024 * 1024),
        )

    def instance_file(self, sop_instance_uid: str) -> bytes:
        """The Part-10 file a stored instance rebuilds to, for series-mode blobs that name it
        as their reference slice (`imaging.blob.ReferenceFiles`); its own reference, if any,
        is rebuilt the same way. BlobError where the index holds no file for it."""
        with self.sessions() as session:
            instance = find_instance(session, sop_instance_uid)
            if instance is None or not (instance.blob_path or instance.spool_path):
                raise BlobError(f"reference slice {sop_instance_uid} is not stored")
            blob_path, blob_sha256, spool_path = instance.blob_path, instance.blob_sha256, instance.spool_path
        if spool_path:
            return Path(spool_path).read_bytes()
        assert blob_path is not None
        return self.recent_files.rebuilt(
            sop_instance_uid,
            blob_sha256,
            lambda: decode_instance(Path(blob_path).read_bytes(), self.codecs, self.instance_file),
        ).data

    def discard_unreferenced(self, paths: Iterable[str | Path | None]) -> None:
        """Delete those of `paths` that no committed row names (a job's own blob after it lost
        a race or failed, a spool file its blob replaced); files a row names are kept."""
        with self.sessions() as session:
            doomed = unreferenced(session, paths)
        remove(doomed)

    def close(self) -> None:
        self.engine.dispose()


def timed_job(job: Callable[..., _Result]) -> Callable[..., _Result]:
    """A job function `job(context, ...)` whose every run, failed or not, is counted in
    `context.activity`. functools.wraps keeps its module and name, which RQ enqueues by."""

    @functools.wraps(job)
    def run(context: NodeContext, *args: Any, **kwargs: Any) -> _Result:
        started = time.monotonic()
        try:
            return job(context, *args, **kwargs)
        finally:
            context.activity.job_finished(time.monotonic() - started)

    return run
