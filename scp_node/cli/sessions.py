"""Sessions on the index for the short admin commands (ae, stats), which never migrate it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from scp_node.config import NodeConfig

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


@contextmanager
def index_sessions(config: NodeConfig) -> Iterator[sessionmaker[Session]]:
    """Sessions on the index for a short admin command: the schema must be current."""
    from scp_node.index.database import check_schema, create_index_engine, session_factory

    check_schema(config.database_url)
    engine = create_index_engine(config.database_url)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()
