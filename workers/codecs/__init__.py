"""Pixel codecs: each turns an array of frames into bytes and back, and names its version."""

from workers.codecs.base import Codec, CodecUnavailable, ImageDescription
from workers.codecs.registry import (
    PASSTHROUGH,
    available_codecs,
    configure,
    create_codec,
    lossless_codecs,
    shared_codec,
    unavailable_codecs,
)

__all__ = [
    "PASSTHROUGH",
    "Codec",
    "CodecUnavailable",
    "ImageDescription",
    "available_codecs",
    "configure",
    "create_codec",
    "lossless_codecs",
    "shared_codec",
    "unavailable_codecs",
]
