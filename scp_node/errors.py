"""The DICOM service's one exception base: the node cannot start as configured, or cannot
produce what a peer asked for. Handlers turn these into DIMSE statuses and log lines; the CLI
prints them as one line."""

from __future__ import annotations


class ServiceError(Exception):
    """The service cannot do what was asked, for a reason the admin or the peer can act on."""
