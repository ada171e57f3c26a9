"""The first lines of a benchmark report: the command that made it, when, and on what machine.

Enough to run it again and to judge its speeds, which depend on the cores and on what else ran.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import datetime


def command(module: str) -> str:
    """This run's command line, in the `python -m` form that runs it again from the repository."""
    return "python " + shlex.join(["-m", module, *sys.argv[1:]])


def run_lines(module: str, started: datetime, load_average: float | None = None) -> list[str]:
    """`load_average`, where given, is the one at the start: other processes compete for the cores."""
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    if load_average is not None:
        machine += f", load average at start {load_average:.2f} (other processes compete for the cores)"
    return [
        f"command: {command(module)}",
        f"date: {started.isoformat(timespec='seconds')}",
        f"machine: {machine}",
    ]
