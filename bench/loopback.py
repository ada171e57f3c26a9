"""Keep a server that always binds the wildcard address (Orthanc 1.10 has no listen-address
option) on loopback: an LD_PRELOAD library whose bind() turns 0.0.0.0 / :: into 127.0.0.1 / ::1.

Used by bench/network_bench.py and by the tests that run Orthanc as a peer.
"""

from __future__ import annotations

import shutil
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
