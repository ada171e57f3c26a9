"""Pixel codecs: each turns an array of frames into bytes and back, and names its version.

The registry (names, options) imports nothing heavy; the interface (`Codec`, numpy) and the
codec modules (torch for some) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from scp_node.imaging.codecs import registry
from scp_node.imaging.codecs.registry import (
    PASSTHROUGH,
    InvalidCodecOption,
    SiteCodecs,
    check_options,
    create_codec,
    lossless_codecs,
)

if TYPE_CHECKING:
    from scp_node.imaging.codecs.base import Codec, CodecUnavailable, ImageDescription

_FROM_BASE = ("Codec", "CodecUnavailable", "ImageDescription")

__all__ = [
    "PASSTHROUGH",
    "Codec",
    "CodecUnavailable",
    "ImageDescription",
    "InvalidCodecOption",
    "SiteCodecs",
    "check_options",
    "create_codec",
    "lossless_codecs",
    "registry",
]


def __getattr__(name: str) -> Any:
    if name in _FROM_BASE:
        value = getattr(importlib.import_module("scp_node.imaging.codecs.base"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
