"""`codec try` on the console: an admin uploads one of their own DICOM files and sees, per
codec, what `scp-node codec try` prints (sizes, ratio, bits per sample, error, times), with
the same function (scp_node.codec_trial.try_codec) and the node's own codecs (its
site settings: weights the learned and ldm codecs load). Codecs run with their defaults.

Nothing is stored: the upload is tried in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scp_node.imaging.blob import extract_samples
from scp_node.imaging.codec_trial import TrialResult, try_codec
from scp_node.imaging.codecs.registry import CODECS
from scp_node.imaging.errors import ImagingError
from scp_node.web.console.forms import read_form
from scp_node.web.console.pages import render
from scp_node.web.console.visitors import Console, require, session_of
from scp_node.web.errors import HttpProblem, client_address

log = logging.getLogger(__name__)

# Checked unless the admin picks others: the standard lossless codecs, quick on any image.
DEFAULT_CODECS = ("jpegls", "jpegxl", "jpeg2000", "deflate")


@dataclass(frozen=True)
class Trial:
    codec: str
    result: TrialResult | None
    error: str  # why the codec could not code this file ("" when it did)


class CodecTrialPages:
    def __init__(self, console: Console) -> None:
        self.console = console

    def routes(self) -> list[Route]:
        return [
            Route("/codec-try", self.form),
            Route("/codec-try", self.run, methods=["POST"]),
        ]

    def form(self, request: Request) -> Response:
        require(request, "admin")
        return self._page(request, chosen=self._defaults())

    async def run(self, request: Request) -> Response:
        require(request, "admin")
        limit = self.console.context.config.http.max_body_bytes
        form = await read_form(request, session_of(request), upload_limit=limit)
        upload = form.files.get("file")
        if upload is None or not upload.data:
            raise HttpProblem(400, "no file uploaded: choose a DICOM file with pixel data")
        available = self.console.context.codecs.available()
        chosen = form.get_all("codec")
        unknown = [name for name in chosen if name not in available]
        if unknown or not chosen:
            what = f"codecs not available here: {', '.join(unknown)}" if unknown else "no codec chosen"
            raise HttpProblem(400, f"{what} (available: {', '.join(available)})")
        try:
            _samples, image = await run_in_threadpool(extract_samples, upload.data)
        except ImagingError as exc:
            raise HttpProblem(400, f"{upload.filename or 'the upload'} is not a DICOM image: {exc}") from None
        trials = await run_in_threadpool(self._try_all, upload.data, chosen, upload.filename)
        log.info(
            "console codec try of %s (%d bytes) by %s at %s: %s",
            upload.filename,
            len(upload.data),
            session_of(request).principal.name,
            client_address(request),
            ", ".join(f"{t.codec} {t.result.bytes if t.result else 'failed'}" for t in trials),
        )
        times = "\N{MULTIPLICATION SIGN}"
        size = f"{image.frames} frame(s) of {image.columns} {times} {image.rows}, {image.bit_depth} bits"
        return self._page(request, chosen=chosen, trials=trials, filename=upload.filename, image=size)

    def _try_all(self, data: bytes, names: list[str], filename: str) -> list[Trial]:
        return [self._try(name, data, filename) for name in names]

    def _try(self, name: str, data: bytes, filename: str) -> Trial:
        try:
            return Trial(name, try_codec(self.console.context.codecs.shared(name), data, filename), "")
        except ImagingError as exc:  # the codec refuses this image, or cannot run here
            log.warning("console codec try: %s failed: %s", name, exc)
            return Trial(name, None, str(exc))

    def _defaults(self) -> list[str]:
        available = self.console.context.codecs.available()
        return [name for name in DEFAULT_CODECS if name in available]

    def _page(self, request: Request, *, chosen: list[str], **values: object) -> Response:
        available = self.console.context.codecs.available()
        return render(
            request,
            "codec_try.html",
            codecs=[(name, CODECS[name].summary) for name in available],
            chosen=chosen,
            **{"trials": [], "filename": "", "image": "", **values},
        )
