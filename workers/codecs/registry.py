"""Codec names as config and the CLI use them, mapped to implementations."""

from __future__ import annotations

import threading
from typing import Any

from scp_node.config import CompressionConfig
from workers.codecs.base import Codec, CodecUnavailable
from workers.codecs.learned.codec import LearnedCodec
from workers.codecs.standard import DeflateCodec, Jpeg2000Codec, JpegLsCodec, JpegXlCodec
from workers.codecs.upscale.bicubic import BicubicCodec
from workers.codecs.upscale.ldm import LdmCodec

# Policy name for "store the pixel data exactly as received, without re-encoding".
PASSTHROUGH = "passthrough"

_CODECS: dict[str, type[Codec]] = {
    cls.name: cls
    for cls in (JpegLsCodec, JpegXlCodec, Jpeg2000Codec, DeflateCodec, LearnedCodec, BicubicCodec, LdmCodec)
}

_shared: dict[tuple, Codec] = {}
_shared_lock = threading.Lock()
# The site's compression settings, which codecs needing weights read; set once per process.
_config = CompressionConfig()


def configure(config: CompressionConfig) -> None:
    """Adopt a node's settings (NodeContext.open, validate_policy and `codec try` call this;
    the same settings again keep the codecs already built)."""
    global _config
    with _shared_lock:
        if config == _config:
            return
        _config = config
        _shared.clear()


def unavailable_codecs() -> dict[str, str]:
    """Codec name -> why it cannot run with this process's settings (logged at start-up)."""
    reasons = {name: cls.unavailable_reason(_config) for name, cls in _CODECS.items()}
    return {name: reason for name, reason in reasons.items() if reason is not None}


def available_codecs() -> list[str]:
    return [name for name in _CODECS if name not in unavailable_codecs()]


def lossless_codecs() -> list[str]:
    """Available codecs that are lossless with their default options."""
    return [name for name in available_codecs() if _CODECS[name].lossless]


def create_codec(name: str, **options: Any) -> Codec:
    try:
        cls = _CODECS[name]
    except KeyError:
        known = ", ".join([*_CODECS, PASSTHROUGH])
        raise CodecUnavailable(f"unknown codec {name!r} (known: {known})") from None
    reason = cls.unavailable_reason(_config)
    if reason is not None:
        raise CodecUnavailable(reason)
    return cls.from_config(_config, **options)


def shared_codec(name: str, **options: Any) -> Codec:
    """One codec per (name, options) in this process, for compress jobs and retrievals alike:
    a learned codec loads its weights once, not once per instance served."""
    key = (name, tuple(sorted(options.items())))
    with _shared_lock:
        if key not in _shared:
            _shared[key] = create_codec(name, **options)
        return _shared[key]
