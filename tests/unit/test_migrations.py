"""Schema migrations carry an existing index forward and match the models (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from scp_node.index.database import MIGRATIONS_DIR, migration_head, schema_revisions, upgrade
from scp_node.index.models import Base


def _alembic(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def test_0002_normalises_study_dates_and_adds_columns(database_url: str) -> None:
    command.upgrade(_alembic(database_url), "0001")
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO patient (id, patient_id, patient_name, birth_date, sex)"
                " VALUES (1, 'P', '', '', '')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO study (id, study_instance_uid, patient_pk, study_date, study_time,"
                " accession_number, study_id, study_description, referring_physician_name)"
                " VALUES (1, '1.2.3', 1, '20200115', '10:15', '', '', '', '')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO peer (id, ae_title, host, port, permissions) VALUES (1, 'CT', '', 104, 'store')"
            )
        )
    upgrade(database_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT study_date, study_time FROM study")).one() == (
            "20200115",
            "101500",
        )
        assert connection.execute(text("SELECT check_host FROM peer")).scalar_one() in (False, 0)
    engine.dispose()


def test_migrations_build_the_schema_the_models_describe(database_url: str) -> None:
    """A column added to a model without a migration (or the reverse) fails here."""
    upgrade(database_url)
    engine = create_engine(database_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_0003_adds_lossy_copy_columns_and_downgrades(database_url: str) -> None:
    upgrade(database_url)
    command.downgrade(_alembic(database_url), "0002")
    engine = create_engine(database_url)
    with engine.connect() as connection:
        columns = {column["name"] for column in inspect(connection).get_columns("instance")}
    assert "replaced_by_uid" not in columns and "original_expires_at" not in columns
    upgrade(database_url)
    with engine.connect() as connection:
        columns = {column["name"] for column in inspect(connection).get_columns("instance")}
    engine.dispose()
    assert {"derived_from_uid", "replaced_by_uid", "original_expires_at"} <= columns


def test_concurrent_upgrades_of_one_index_all_succeed(database_url: str) -> None:
    """Workers started together each run the migrations; they take turns, and none fails on
    a table another one just created."""
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            upgrade(database_url)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert schema_revisions(database_url) == (migration_head(), migration_head())
