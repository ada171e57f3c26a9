"""Servers under test stay on loopback: free ports on 127.0.0.1, an LD_PRELOAD library for a
server that always binds the wildcard address (Orthanc 1.10 has no listen-address option) whose
bind() turns 0.0.0.0 / :: into 127.0.0.1 / ::1, and what a port really listens on.

Used by `bench.network` and by the tests that run Orthanc as a peer.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import random
import shutil
import socket
import subprocess
from pathlib import Path

BIND_LOOPBACK_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

/* bind() on the wildcard address binds to loopback instead: the servers stay local. */
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    if (!real_bind) real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in copy;
        memcpy(&copy, addr, sizeof copy);
        if (copy.sin_addr.s_addr == htonl(INADDR_ANY)) {
            copy.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (const struct sockaddr *)&copy, sizeof copy);
        }
    }
    if (addr && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 copy;
        memcpy(&copy, addr, sizeof copy);
        if (IN6_IS_ADDR_UNSPECIFIED(&copy.sin6_addr)) {
            copy.sin6_addr = in6addr_loopback;
            return real_bind(fd, (const struct sockaddr *)&copy, sizeof copy);
        }
    }
    return real_bind(fd, addr, len);
}
"""


class ShimUnavailable(RuntimeError):
    """No C compiler, or the library did not build."""


def build_bind_shim(workdir: Path) -> Path:
    """Compile the library into `workdir`; set LD_PRELOAD to the returned path."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise ShimUnavailable("no C compiler to build the loopback bind() shim")
    source, library = workdir / "bind_loopback.c", workdir / "bind_loopback.so"
    source.write_text(BIND_LOOPBACK_C)
    result = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ShimUnavailable(f"cannot build the loopback bind() shim:\n{result.stderr}")
    return library


LOWEST_PORT = 10000
_ports_tried = itertools.count(random.randrange(1 << 16))


def lowest_ephemeral_port() -> int:
    """Where the ports the kernel hands to outgoing connections begin (Linux's default where
    unreadable)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on, below the kernel's ephemeral range.

    A port bound to 0 and released comes from the range outgoing connections draw from: in CI
    another test's connection took one before Orthanc could listen on it. Each pytest-xdist
    worker draws from its own slice of the range below, so two workers never pick the same port.
    """
    low = lowest_ephemeral_port()
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    slice_size = (low - LOWEST_PORT) // workers
    if slice_size < 256:
        raise OSError(f"ephemeral ports start at {low}: too few ports below it for {workers} test workers")
    first = LOWEST_PORT + worker * slice_size
    for _ in range(slice_size):
        port = first + next(_ports_tried) % slice_size
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise OSError(f"no free loopback port in {first}-{first + slice_size - 1}")


def listen_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on `port`, from /proc/net/tcp{,6}: what a
    server really bound, whatever its configuration says."""
    found: set[str] = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(_proc_address(address))
    return found


def _proc_address(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]  # four host-order 32-bit words
    return str(ipaddress.IPv6Address(b"".join(words)))
