"""How a serve process stops: SIGTERM or Ctrl-C, then the associations in flight finish (the
first serve process and the others it started, `association_processes.py`, alike)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from scp_node.config import NetworkConfig

log = logging.getLogger("scp_node.cli")  # the name the log lines have always shown


class ShutdownSignals:
    """SIGTERM and Ctrl-C, while installed: the first asks to stop, the second to hurry."""

    def __init__(self) -> None:
        self.stop, self.hurry = threading.Event(), threading.Event()
        self.received = "a signal"
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> ShutdownSignals:
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, number: int, _frame: Any) -> None:
        if not self.stop.is_set():
            self.received = signal.Signals(number).name
        (self.hurry if self.stop.is_set() else self.stop).set()


def serve_until_stopped(
    server: Any,
    network: NetworkConfig,
    signals: ShutdownSignals,
    also_stop: Callable[[], None] = lambda: None,
) -> None:
    """Serve until SIGTERM or Ctrl-C; then let the associations in flight finish (at most the
    longest network timeout; a second signal cuts the wait short) and close. `also_stop`: tell
    the other serve processes at the same moment."""
    try:
        while not signals.stop.wait(1.0):
            pass
        log.info("%s: shutting down", signals.received)
        also_stop()
        server.stop_accepting()
        server.drain(longest_timeout(network), signals.hurry)
    finally:
        server.shutdown()  # closes the socket, releases the data-dir lock
    log.info("stopping compress workers (unfinished jobs resume at the next start)")


def longest_timeout(network: NetworkConfig) -> float:
    return max(network.acse_timeout_s, network.dimse_timeout_s, network.network_timeout_s)
