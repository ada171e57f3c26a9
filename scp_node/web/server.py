"""uvicorn serving the HTTP app in a thread of the `scp-node serve` process, beside the DICOM
server: one process, one runtime (context, queue), one data-dir lock."""

from __future__ import annotations

import logging
import ssl
import threading
import time

import uvicorn

from scp_node.context import NodeContext
from scp_node.errors import ServiceError
from scp_node.web.app import create_app
from workers.queue import JobQueue

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


class HttpStartFailed(ServiceError):
    """The HTTP server could not listen (address taken, certificate unreadable)."""


class HttpServer:
    def __init__(self, context: NodeContext, queue: JobQueue) -> None:
        http = context.config.http
        tls = context.config.network.tls
        options: dict = {}
        if http.tls:
            options = {"ssl_certfile": str(tls.cert_file), "ssl_keyfile": str(tls.key_file)}
            if tls.ca_file is not None:
                options["ssl_ca_certs"] = str(tls.ca_file)
                options["ssl_cert_reqs"] = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
        config = uvicorn.Config(
            create_app(context, queue),
            host=http.host,
            port=http.port,
            lifespan="off",
            log_config=None,  # the node's logging configuration applies
            access_log=False,
            **options,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="http-server", daemon=True)
        self._scheme = "https" if http.tls else "http"

    def start(self) -> None:
        """Listen, or raise HttpStartFailed; uvicorn leaves signals to the main thread."""
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise HttpStartFailed(f"HTTP server cannot listen on {self._address()} (see the log)")
            time.sleep(0.02)
        log.info("DICOMweb on %s://%s/dicom-web", self._scheme, self._address())

    @property
    def port(self) -> int:
        """The bound port (http.port 0 takes any free one)."""
        sockets = [sock for server in self._server.servers for sock in server.sockets]
        return sockets[0].getsockname()[1] if sockets else self._server.config.port

    def _address(self) -> str:
        return f"{self._server.config.host}:{self.port if self._server.started else self._server.config.port}"

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (uvicorn's graceful shutdown), join."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=START_TIMEOUT_S)
