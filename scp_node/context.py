"""Everything a running node (or worker, or admin command) holds open: config, index, spool,
blobs, and the codecs as the site configured them (weights that decoding a blob may need)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class NodeContext:
    config: NodeConfig
    engine: Engine
    sessions: sessionmaker[Session]
    spool: Spool
    blobs: BlobStore
    codecs: SiteCodecs
    reference_slices: RecentFiles = field(default_factory=RecentFiles)

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
        return self.reference_slices.get(
            (sop_instance_uid, blob_sha256),
            lambda: decode_instance(Path(blob_path).read_bytes(), self.codecs, self.instance_file).data,
        )

    def discard_unreferenced(self, paths: Iterable[str | Path | None]) -> None:
        """Delete those of `paths` that no committed row names (a job's own blob after it lost
        a race or failed, a spool file its blob replaced); files a row names are kept."""
        with self.sessions() as session:
            doomed = unreferenced(session, paths)
        remove(doomed)

    def close(self) -> None:
        self.engine.dispose()
