"""The storage package's one exception base: the data dir cannot be used as asked."""

from __future__ import annotations


class StorageError(Exception):
    """The data dir or a file in it cannot be used as asked, for a reason an admin can act on."""
