"""Everything a running node (or worker, or admin command) holds open: config, index, spool,
blobs, and the codecs as the site configured them (weights that decoding a blob may need)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from scp_node.config import NodeConfig
from scp_node.imaging.codecs import SiteCodecs
from scp_node.index.database import check_schema, create_index_engine, session_factory, upgrade
from scp_node.index.repository import unreferenced
from scp_node.storage.blobs import BlobStore
from scp_node.storage.durable import remove
from scp_node.storage.spool import Spool


@dataclass
class NodeContext:
    config: NodeConfig
    engine: Engine
    sessions: sessionmaker[Session]
    spool: Spool
    blobs: BlobStore
    codecs: SiteCodecs

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

    def discard_unreferenced(self, paths: Iterable[str | Path | None]) -> None:
        """Delete those of `paths` that no committed row names (a job's own blob after it lost
        a race or failed, a spool file its blob replaced); files a row names are kept."""
        with self.sessions() as session:
            doomed = unreferenced(session, paths)
        remove(doomed)

    def close(self) -> None:
        self.engine.dispose()
