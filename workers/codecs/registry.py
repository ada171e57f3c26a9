"""Codec names as config and the CLI use them, mapped to implementations."""

from __future__ import annotations

import threading
from typing import Any

from workers.codecs.base import Codec, CodecUnavailable
from workers.codecs.learned.codec import LearnedCodec
from workers.codecs.standard import DeflateCodec, Jpeg2000Codec, JpegLsCodec, JpegXlCodec
from workers.codecs.upscale.bicubic import BicubicCodec

# Policy name for "store the pixel data exactly as received, without re-encoding".
PASSTHROUGH = "passthrough"

_CODECS: dict[str, type[Codec]] = {
    cls.name: cls
    for cls in (JpegLsCodec, JpegXlCodec, Jpeg2000Codec, DeflateCodec, LearnedCodec, BicubicCodec)
}


def available_codecs() -> list[str]:
    return [name for name, cls in _CODECS.items() if getattr(cls, "available", True)]


def lossless_codecs() -> list[str]:
    """Available codecs that are lossless with their default options."""
    return [name for name in available_codecs() if _CODECS[name].lossless]


def create_codec(name: str, **options: Any) -> Codec:
    try:
        cls = _CODECS[name]
    except KeyError:
        known = ", ".join([*_CODECS, PASSTHROUGH])
        raise CodecUnavailable(f"unknown codec {name!r} (known: {known})") from None
    if not getattr(cls, "available", True):
        raise CodecUnavailable(f"codec {name!r} is not available on this machine")
    return cls(**options)


_shared: dict[tuple, Codec] = {}
_shared_lock = threading.Lock()


def shared_codec(name: str, **options: Any) -> Codec:
    """One codec per (name, options) in this process, for compress jobs and retrievals alike:
    a learned codec loads its weights once, not once per instance served."""
    key = (name, tuple(sorted(options.items())))
    with _shared_lock:
        if key not in _shared:
            _shared[key] = create_codec(name, **options)
        return _shared[key]
