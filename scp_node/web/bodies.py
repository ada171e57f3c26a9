"""Reading a request body under a size limit: refused with 413 once it passes the limit, before
anything is parsed or stored (STOW-RS uploads, the console's forms and `codec try` uploads)."""

from __future__ import annotations

from starlette.requests import Request

from scp_node.web.errors import HttpProblem


async def read_body(request: Request, limit: int, setting: str) -> bytes:
    """The whole body; `setting` names the limit for the 413's reason."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HttpProblem(413, f"body of {declared} bytes is over the limit of {limit} ({setting})")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpProblem(413, f"body is over the limit of {limit} bytes ({setting})")
        chunks.append(chunk)
    return b"".join(chunks)
