"""The storage page: bytes received and stored, the ratio per codec and per modality as
charts, the compress queue's depth and how far compression has got."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scp_node.web.console.chart import paired_bars, stacked_bar
from scp_node.web.console.figures import storage_figures
from scp_node.web.console.pages import render
from scp_node.web.console.visitors import Console, require


class StoragePages:
    def __init__(self, console: Console) -> None:
        self.console = console

    def routes(self) -> list[Route]:
        return [Route("/storage", self.figures)]

    def figures(self, request: Request) -> Response:
        require(request, "admin")
        with self.console.context.sessions() as session:
            figures = storage_figures(session)
        progress = figures.progress
        parts = [
            ("compressed", progress.compressed),
            ("pending", progress.pending),
            ("failed", progress.failed),
        ]
        charts = [
            paired_bars("Bytes received and stored, per codec", figures.by_codec),
            paired_bars("Bytes received and stored, per modality", figures.by_modality),
        ]
        return render(
            request,
            "storage.html",
            figures=figures,
            queue_depth=self.console.queue.depth(),
            progress_chart=stacked_bar("Compression progress", parts),
            charts=charts,
        )
