"""The modality groups a codec report is broken down by, in one order for every report."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

# The groups `scp_node.research.image_corpus` files images under, then all images together.
GROUP_ORDER = ("CR/DX", "MG", "CT", "MR", "US", "OT")
OVERALL = "all"


class OfAnImage(Protocol):
    """A measurement on one image (a result row of any codec benchmark)."""

    @property
    def path(self) -> str: ...

    @property
    def modality(self) -> str: ...


def in_group(group: str, modality: str) -> bool:
    return group in (OVERALL, modality)


def groups_present(modalities: Iterable[str]) -> list[str]:
    """The groups with images, in GROUP_ORDER, and OVERALL last: empty groups get no table."""
    present = set(modalities)
    return [g for g in GROUP_ORDER if g in present] + [OVERALL]


def group_title(group: str, results: Sequence[OfAnImage]) -> str:
    """The group and its number of images, which is not its number of result rows."""
    count = len({r.path for r in results if in_group(group, r.modality)})
    return f"{group} ({count} images)"
