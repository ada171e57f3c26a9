"""The ASGI app: DICOMweb under /dicom-web, the admin console under /console (`/` leads
there), /healthz and /metrics, over one runtime's context and queue. Every refusal is an
HttpProblem: a status, the reason as the body (a page on the console), and a log line with
the client's address."""

from __future__ import annotations

import logging
from itertools import chain

from pydicom.dataset import Dataset
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route

from scp_node.context import NodeContext
from scp_node.web import monitoring, stow
from scp_node.web.auth import Authenticator, Principal
from scp_node.web.bodies import read_body
from scp_node.web.console.routes import create_console
from scp_node.web.console.visitors import ROOT as CONSOLE
from scp_node.web.errors import HttpProblem, client_address, log_problem
from scp_node.web.frames import encoded_frames, frame_numbers, frame_syntaxes
from scp_node.web.multipart import MediaType, Part, RelatedWriter, split_related
from scp_node.web.qido import Level, parse_search
from scp_node.web.rendered import render, rendered_media_type, viewport
from scp_node.web.wado import Target, instance_parts, load, metadata, native, requested_syntaxes
from workers.queue import JobQueue

log = logging.getLogger(__name__)

PREFIX = "/dicom-web"
DICOM_JSON = "application/dicom+json"
STUDY, SERIES, INSTANCE = "/studies/{study}", "/series/{series}", "/instances/{instance}"


def create_app(context: NodeContext, queue: JobQueue) -> Starlette:
    service = DicomWeb(context, queue)
    http = context.config.http
    middleware = []
    if http.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=http.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Accept", "Content-Type"],
                expose_headers=["Warning", "Content-Type"],
            )
        )
    console = create_console(context, queue, service.auth)
    routes = [*service.routes(), Route("/", _to_console), Mount(CONSOLE, app=console)]
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            HttpProblem: _problem,
            OperationalError: _unavailable,
            RedisError: _unavailable,
        },
    )


def _to_console(_request: Request) -> Response:
    return RedirectResponse(f"{CONSOLE}/", status_code=303)


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpProblem)
    log_problem(log, "HTTP", request, exc)
    return PlainTextResponse(exc.reason + "\n", status_code=exc.status, headers=exc.headers)


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.error("HTTP %s %s: the index or queue is unreachable: %s", request.method, request.url.path, exc)
    return PlainTextResponse("the index or queue is unreachable\n", status_code=503)


def _header_text(text: str) -> str:
    """A value safe in an HTTP header: one line of printable ASCII."""
    return " ".join(text.split()).encode("ascii", "replace").decode()


class DicomWeb:
    """The endpoints, bound to one runtime's context and queue."""

    def __init__(self, context: NodeContext, queue: JobQueue) -> None:
        self.context = context
        self.queue = queue
        self.config = context.config.http
        self.auth = Authenticator(self.config)

    def routes(self) -> list[Route]:
        instance = STUDY + SERIES + INSTANCE
        return [
            Route("/healthz", self.healthz),
            Route("/metrics", self.metrics),
            Route(f"{PREFIX}/studies", self.search_studies),
            Route(f"{PREFIX}/series", self.search_series),
            Route(f"{PREFIX}/instances", self.search_instances),
            Route(f"{PREFIX}{STUDY}/series", self.search_series),
            Route(f"{PREFIX}{STUDY}/instances", self.search_instances),
            Route(f"{PREFIX}{STUDY}{SERIES}/instances", self.search_instances),
            Route(f"{PREFIX}/studies", self.store, methods=["POST"], name="stow"),
            Route(f"{PREFIX}{STUDY}", self.store, methods=["POST"], name="stow_study"),
            Route(f"{PREFIX}{STUDY}", self.retrieve),
            Route(f"{PREFIX}{STUDY}{SERIES}", self.retrieve),
            Route(f"{PREFIX}{instance}", self.retrieve),
            Route(f"{PREFIX}{STUDY}/metadata", self.metadata),
            Route(f"{PREFIX}{STUDY}{SERIES}/metadata", self.metadata),
            Route(f"{PREFIX}{instance}/metadata", self.metadata),
            Route(f"{PREFIX}{instance}/frames/{{frames}}", self.frames),
            Route(f"{PREFIX}{instance}/rendered", self.rendered),
            Route(f"{PREFIX}{instance}/frames/{{frames}}/rendered", self.rendered),
        ]

    def principal(self, request: Request, permission: str) -> Principal:
        principal = self.auth.identify(request.headers.get("authorization"), client_address(request))
        principal.require(permission)
        return principal

    # /healthz and /metrics

    def healthz(self, _request: Request) -> Response:
        """Open to anyone, as load balancers and orchestrators probe without credentials."""
        result = monitoring.health(self.context, self.queue)
        body = {"status": "ok" if result.healthy else "unhealthy", **result.checks}
        return JSONResponse(body, status_code=200 if result.healthy else 503)

    def metrics(self, request: Request) -> Response:
        self.principal(request, "admin")
        text = monitoring.metrics(self.context, self.queue)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    # QIDO-RS

    def search_studies(self, request: Request) -> Response:
        return self._search(request, "STUDY")

    def search_series(self, request: Request) -> Response:
        return self._search(request, "SERIES")

    def search_instances(self, request: Request) -> Response:
        return self._search(request, "IMAGE")

    def _base_url(self, request: Request) -> str:
        """Where clients reach /dicom-web: http.public_url, else what the request was sent to."""
        return f"{(self.config.public_url or str(request.base_url)).rstrip('/')}{PREFIX}"

    def _search(self, request: Request, level: Level) -> Response:
        self.principal(request, "find")
        _require_json(request.headers.get("accept"))
        scope = {
            keyword: request.path_params[name]
            for keyword, name in (("StudyInstanceUID", "study"), ("SeriesInstanceUID", "series"))
            if name in request.path_params
        }
        search = parse_search(level, list(request.query_params.multi_items()), scope)
        base = self._base_url(request)
        with self.context.sessions() as session:
            found = [_with_retrieve_url(ds, level, base).to_json_dict() for ds in search.results(session)]
        headers = {"Warning": _header_text(", ".join(search.warnings))} if search.warnings else None
        log.info("QIDO-RS %s level from %s: %d matches", level, client_address(request), len(found))
        return JSONResponse(found, media_type=DICOM_JSON, headers=headers)

    # WADO-RS

    def retrieve(self, request: Request) -> Response:
        self.principal(request, "get")
        requested = requested_syntaxes(request.headers.get("accept"), "application/dicom")
        target = _target(request)
        instances = target.instances(self.context)
        parts = instance_parts(instances, self.context, requested)
        first = next(parts)  # a failure of the first is still the response's status
        log.info(
            "WADO-RS %s %s to %s: %d instances",
            target.level,
            target.study,
            client_address(request),
            len(instances),
        )
        writer = RelatedWriter.new("application/dicom")
        return StreamingResponse(writer.encode(chain([first], parts)), media_type=writer.content_type)

    def metadata(self, request: Request) -> Response:
        self.principal(request, "get")
        _require_json(request.headers.get("accept"))
        instances = _target(request).instances(self.context)
        base = self._base_url(request)
        return JSONResponse([metadata(i, self.context, base) for i in instances], media_type=DICOM_JSON)

    def frames(self, request: Request) -> Response:
        self.principal(request, "get")
        syntaxes = frame_syntaxes(request.headers.get("accept"))
        numbers = frame_numbers(request.path_params["frames"])
        (instance,) = _target(request).instances(self.context)
        bodies = encoded_frames(load(instance, self.context), syntaxes, numbers)
        writer = RelatedWriter.new(bodies[0][1].split(";")[0])
        return Response(b"".join(writer.encode(bodies)), media_type=writer.content_type)

    def rendered(self, request: Request) -> Response:
        self.principal(request, "get")
        media_type = rendered_media_type(request.headers.get("accept"))
        numbers = frame_numbers(request.path_params.get("frames", "1"))
        if len(numbers) != 1:
            raise HttpProblem(400, "a rendered frame is one frame")
        fit = viewport(request.query_params.get("viewport"))
        (instance,) = _target(request).instances(self.context)
        image = render(native(instance, self.context), numbers[0], media_type, fit)
        return Response(image, media_type=media_type)

    # STOW-RS

    async def store(self, request: Request) -> Response:
        principal = self.principal(request, "store")
        content_type = request.headers.get("content-type", "")
        part_type = MediaType.parse(content_type).params.get("type", stow.DICOM).lower()
        if part_type != stow.DICOM:
            raise HttpProblem(415, f"type={part_type}: only {stow.DICOM} uploads are stored")
        body = await read_body(request, self.config.max_body_bytes, "http.max_body_bytes")
        parts = split_related(body, content_type)
        stow.check_parts(parts)
        sender = f"HTTP:{principal.name}"[:16] if principal.name else "HTTP"
        study = request.path_params.get("study")
        outcomes = await run_in_threadpool(self._store_all, parts, sender, study)
        status, ds = stow.response(outcomes, self._base_url(request))
        stored = sum(1 for o in outcomes if o.result.status == 0)
        log.info(
            "STOW-RS from %s at %s: %d of %d stored", sender, client_address(request), stored, len(outcomes)
        )
        warnings = stow.warnings(outcomes)
        headers = {"Warning": _header_text(", ".join(warnings))} if warnings else None
        return JSONResponse(ds.to_json_dict(), status_code=status, media_type=DICOM_JSON, headers=headers)

    def _store_all(self, parts: list[Part], sender: str, study: str | None) -> list[stow.Outcome]:
        return [stow.store_part(part, self.context, self.queue, sender=sender, study=study) for part in parts]


def _require_json(accept: str | None) -> None:
    """DICOM JSON is the one encoding served (not dicom+xml); 406 when the client wants neither."""
    if not accept:
        return
    names = {MediaType.parse(entry).name for entry in accept.split(",")}
    if not names & {DICOM_JSON, "application/json", "application/*", "*/*"}:
        raise HttpProblem(406, f"cannot answer {accept!r}: only {DICOM_JSON} is served")


def _target(request: Request) -> Target:
    params = request.path_params
    return Target(params["study"], params.get("series", ""), params.get("instance", ""))


def _with_retrieve_url(ds: Dataset, level: Level, base: str) -> Dataset:
    url = f"{base}/studies/{ds.StudyInstanceUID}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{ds.SeriesInstanceUID}"
    if level == "IMAGE":
        url += f"/instances/{ds.SOPInstanceUID}"
    ds.RetrieveURL = url
    return ds
