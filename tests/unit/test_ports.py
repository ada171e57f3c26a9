"""Ports for servers under test: outside the kernel's ephemeral range, one slice per test worker.

CI lost a test to a port chosen by binding to 0: an outgoing connection of the other test worker
took it before Orthanc could listen on it."""

from __future__ import annotations

import pytest

from bench.loopback import LOWEST_PORT, free_port, lowest_ephemeral_port


def test_ports_are_below_the_range_outgoing_connections_draw_from() -> None:
    low = lowest_ephemeral_port()
    ports = [free_port() for _ in range(50)]
    assert all(LOWEST_PORT <= port < low for port in ports)
    assert len(set(ports)) == len(ports)


def test_each_test_worker_draws_from_its_own_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    drawn: dict[str, set[int]] = {}
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        drawn[worker] = {free_port() for _ in range(200)}
    assert not drawn["gw0"] & drawn["gw1"]
    assert max(drawn["gw0"]) < min(drawn["gw1"])
