"""Originals that lossy copies replaced: kept (losslessly) until compression.lossy's
keep_original_days run out, then dropped by the node's hourly purge or `scp-node originals
purge`. The page lists them, due ones first, and can purge the due ones now."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from scp_node.index.models import Instance, StorageState, utcnow
from scp_node.web.console.forms import read_form
from scp_node.web.console.pages import render
from scp_node.web.console.visitors import ROOT, Console, require, session_of
from workers.retention import purge_expired_originals

log = logging.getLogger(__name__)
LISTED = 500  # at most this many rows on the page (the count says how many there are)


@dataclass(frozen=True)
class KeptOriginal:
    sop_uid: str
    replaced_by: str
    codec: str
    stored_bytes: int | None
    expires_at: datetime | None  # None: kept forever (keep_original_days: null)
    due: bool


class OriginalPages:
    def __init__(self, console: Console) -> None:
        self.console = console

    def routes(self) -> list[Route]:
        return [
            Route("/originals", self.listing),
            Route("/originals/purge", self.purge, methods=["POST"]),
        ]

    def listing(self, request: Request) -> Response:
        require(request, "admin")
        now = utcnow()
        replaced = Instance.state == StorageState.REPLACED
        due = replaced & (Instance.original_expires_at <= now)
        with self.console.context.sessions() as session:
            count = session.scalar(select(func.count()).where(replaced)) or 0
            due_count = session.scalar(select(func.count()).where(due)) or 0
            rows = session.scalars(
                select(Instance)
                .where(replaced)
                .order_by(Instance.original_expires_at.is_(None), Instance.original_expires_at, Instance.id)
                .limit(LISTED)
            ).all()
            originals = [
                KeptOriginal(
                    row.sop_instance_uid,
                    row.replaced_by_uid or "",
                    row.codec or "",
                    row.stored_size,
                    _aware(row.original_expires_at),
                    row.original_expires_at is not None and _aware(row.original_expires_at) <= now,
                )
                for row in rows
            ]
        return render(
            request,
            "originals.html",
            originals=originals,
            count=count,
            due=due_count,
            keep_days=self.console.context.config.compression.lossy.keep_original_days,
        )

    async def purge(self, request: Request) -> Response:
        require(request, "admin")
        await read_form(request, session_of(request))
        dropped = await run_in_threadpool(purge_expired_originals, self.console.context)
        log.info(
            "console: dropped %d originals past their time (by %s)",
            dropped,
            session_of(request).principal.name,
        )
        session_of(request).flash = f"dropped {dropped} originals past their keeping time"
        return RedirectResponse(f"{ROOT}/originals", status_code=303)


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; the index writes UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
