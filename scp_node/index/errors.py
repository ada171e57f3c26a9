"""The index's one exception base: a query, a value or a state change the index refuses, or a
schema it cannot work with. Callers catch IndexingError (or a subclass), never the bare
ValueError or RuntimeError a programming error raises."""

from __future__ import annotations


class IndexingError(Exception):
    """The index refuses a request for a reason the caller can act on."""
