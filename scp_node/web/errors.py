"""The HTTP service's one error type: a request the node refuses, with the status and the reason
the client gets in the response body (and the admin in the log line)."""

from __future__ import annotations

from scp_node.errors import ServiceError


class HttpProblem(ServiceError):
    """A 4xx/5xx answer: `status` is the HTTP status, the message its reason."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}
