"""Engine and session set-up; the schema itself comes only from the Alembic migrations.

Only `serve`, `worker` and `db upgrade` migrate (`upgrade`); every other command checks that
the index is at the newest revision (`check_schema`) and otherwise asks for `db upgrade`.
"""

from __future__ import annotations

import ast
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from scp_node.index.errors import IndexingError

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
VERSION_TABLE = "alembic_version"


class SchemaNotCurrent(IndexingError):
    """The index is not at the revision this version needs (empty, behind, or ahead); the
    message says what to run (one line for the admin)."""


def create_index_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _sqlite_pragmas(connection, _record) -> None:
    """WAL lets retrievals read while a store writes; FULL sync makes a commit survive power loss."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def upgrade(url: str) -> None:
    """Bring the database to the newest schema (`serve` and `worker` run this at start, like
    `db upgrade`)."""
    with _quiet_alembic(only="alembic.runtime.plugins"):  # "setup plugin ..." lines say nothing
        from alembic import command
        from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    with _one_migration_at_a_time(url):
        command.upgrade(config, "head")


# Any number that no other application on the same PostgreSQL uses as an advisory lock key.
_MIGRATION_LOCK_KEY = 0x5C_90DE


@contextlib.contextmanager
def _one_migration_at_a_time(url: str) -> Iterator[None]:
    """Workers started together (compose scales them) would otherwise race on the same DDL:
    PostgreSQL serialises them with an advisory lock, which works across machines; a SQLite
    index lives on one machine, where a lock file next to it does."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            yield
            return
        import fcntl

        with open(f"{parsed.database}.migrate.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    finally:
        engine.dispose()


def schema_revisions(url: str) -> tuple[str | None, str]:
    """(the index's current revision or None when it has no schema, the revision this version
    needs). Reads the alembic_version table; creates nothing, not even a SQLite file."""
    head = migration_head()
    parsed = make_url(url)
    on_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
    if on_file and not Path(parsed.database).exists():
        return None, head
    engine = create_index_engine(url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(VERSION_TABLE):
                return None, head
            versions = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    finally:
        engine.dispose()
    return (versions[0] if len(versions) == 1 else ",".join(sorted(versions)) or None), head


def migration_revisions() -> dict[str, tuple[str, ...]]:
    """Revision -> the revisions it follows, read from migrations/versions without importing
    Alembic (an admin command checks the schema in milliseconds; `upgrade` uses Alembic)."""
    graph: dict[str, tuple[str, ...]] = {}
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        values: dict[str, object] = {}
        for node in ast.parse(path.read_text()).body:
            names = [target.id for target in getattr(node, "targets", ()) if isinstance(target, ast.Name)]
            if isinstance(node, ast.Assign) and names in (["revision"], ["down_revision"]):
                values[names[0]] = ast.literal_eval(node.value)
        if isinstance(values.get("revision"), str):
            down = values.get("down_revision")
            graph[values["revision"]] = (down,) if isinstance(down, str) else tuple(down or ())
    return graph


def migration_head() -> str:
    """The newest revision: the one no other migration follows."""
    graph = migration_revisions()
    followed = {parent for parents in graph.values() for parent in parents}
    heads = sorted(set(graph) - followed)
    if len(heads) != 1:
        raise RuntimeError(f"migrations/versions has heads {heads}; exactly one is expected")
    return heads[0]


def check_schema(url: str) -> None:
    """Raise SchemaNotCurrent unless the index at `url` is at the newest revision."""
    current, head = schema_revisions(url)
    if current == head:
        return
    where = f"the index at {display_url(url)}"
    if current is None:
        raise SchemaNotCurrent(
            f"{where} has no schema yet, this version needs revision {head}: run `scp-node db upgrade`"
        )
    if current not in migration_revisions():  # a newer scp-node migrated it
        raise SchemaNotCurrent(
            f"{where} is at revision {current}, which this version does not know (it needs {head}): "
            "upgrade scp-node"
        )
    raise SchemaNotCurrent(
        f"{where} is at revision {current}, this version needs {head}: run `scp-node db upgrade`"
    )


def display_url(url: str) -> str:
    """The URL without its password, as messages show it."""
    return make_url(url).render_as_string(hide_password=True)


@contextlib.contextmanager
def _quiet_alembic(only: str) -> Iterator[None]:
    """Alembic logs "setup plugin ..." lines at INFO on import: they tell an admin nothing."""
    logger = logging.getLogger(only)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
