"""Medians and the way a figure is printed, the same in every table, line and plot."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def median(values: Iterable[float | None]) -> float:
    """The median of the values present; NaN where there are none (a phase not run)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else float("nan")


def number(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN != NaN


def ratio(a: float, b: float) -> str:
    return "-" if a != a or b != b or not b else f"{a / b:.2f}"
