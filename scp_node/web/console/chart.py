"""Bar charts as inline SVG, laid out here and drawn by a template: nothing to download, no
script, and the page shows its figures even with JavaScript off.

`paired_bars` draws received against stored bytes per group (codec, modality), one scale for
all, with each group's ratio; `stacked_bar` draws the parts of a whole (compression progress).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scp_node.web.console.figures import Group
from scp_node.web.console.pages import human_bytes

WIDTH = 640
LABEL_WIDTH = 110  # the group names, left of the bars
NOTE_WIDTH = 90  # the ratios, right of the bars
ROW_HEIGHT = 34
BAR_HEIGHT = 12


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    kind: str  # a CSS class: received, stored, pending, compressed, failed
    title: str  # shown on hover


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    anchor: str = "start"


@dataclass(frozen=True)
class Chart:
    title: str
    width: int
    height: int
    rects: tuple[Rect, ...]
    texts: tuple[Text, ...]


def paired_bars(title: str, groups: Sequence[Group]) -> Chart:
    """Two bars per group on one scale: bytes received, bytes stored; the ratio beside them."""
    span = WIDTH - LABEL_WIDTH - NOTE_WIDTH
    largest = max((max(g.received_bytes, g.stored_bytes) for g in groups), default=0) or 1
    rects: list[Rect] = []
    texts: list[Text] = []
    for row, group in enumerate(groups):
        top = row * ROW_HEIGHT + 4
        texts.append(Text(LABEL_WIDTH - 8, top + BAR_HEIGHT + 2, group.name, "end"))
        for offset, kind, size in (
            (0, "received", group.received_bytes),
            (BAR_HEIGHT + 1, "stored", group.stored_bytes),
        ):
            width = max(span * size / largest, 1.0)
            hover = f"{group.name}: {human_bytes(size)} {kind} ({group.instances} instances)"
            rects.append(Rect(LABEL_WIDTH, top + offset, width, BAR_HEIGHT, kind, hover))
        ratio = f"{group.ratio:.2f}:1" if group.stored_bytes else "-"
        texts.append(Text(WIDTH - NOTE_WIDTH + 8, top + BAR_HEIGHT + 2, ratio))
    return Chart(title, WIDTH, max(len(groups), 1) * ROW_HEIGHT + 8, tuple(rects), tuple(texts))


def stacked_bar(title: str, parts: Sequence[tuple[str, int]]) -> Chart:
    """One bar split into `parts` (kind, count) in proportion, and a legend with the counts."""
    total = sum(count for _, count in parts) or 1
    span, legend_step = WIDTH - 2, WIDTH / max(len(parts), 1)
    rects: list[Rect] = []
    texts: list[Text] = []
    x = 1.0
    for index, (kind, count) in enumerate(parts):
        width = span * count / total
        if count:
            rects.append(Rect(x, 4, width, 22, kind, f"{kind}: {count}"))
        x += width
        rects.append(Rect(index * legend_step + 1, 34, 10, 10, kind, kind))
        texts.append(Text(index * legend_step + 16, 43, f"{kind} {count}"))
    return Chart(title, WIDTH, 50, tuple(rects), tuple(texts))
