"""The index: what the node stores, where, and in which state (SQLAlchemy, schema by Alembic)."""
