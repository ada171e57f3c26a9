"""The HTTP service's one error type: a request the node refuses, with the status and the reason
the client gets in the response body (and the admin in the log line, with the client's address)."""

from __future__ import annotations

import logging

from starlette.requests import HTTPConnection, Request

from scp_node.errors import ServiceError


def client_address(request: HTTPConnection) -> str:
    """Who sent the request, for log lines."""
    return request.client.host if request.client else "unknown address"


class HttpProblem(ServiceError):
    """A 4xx/5xx answer: `status` is the HTTP status, the message its reason."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def log_problem(log: logging.Logger, service: str, request: Request, problem: HttpProblem) -> None:
    """The admin's line for a refused request: server errors as errors, the rest as warnings."""
    level = logging.ERROR if problem.status >= 500 else logging.WARNING
    log.log(
        level,
        "%s %s %s from %s: %d %s",
        service,
        request.method,
        request.url.path,
        client_address(request),
        problem.status,
        problem.reason,
    )
