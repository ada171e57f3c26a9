"""Which codec stores an instance: config rules by modality and sending AE, first match wins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scp_node.config import CompressionConfig
from workers.codecs import PASSTHROUGH, Codec, CodecUnavailable, shared_codec

# Used when the chosen codec fails or does not verify: a standard codec, then verbatim storage.
STANDARD_FALLBACKS = ("jpegxl", "jpegls")


@dataclass(frozen=True)
class CodecChoice:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


def choose_codec(config: CompressionConfig, *, modality: str, calling_ae: str) -> CodecChoice:
    for rule in config.rules:
        if rule.modality not in (None, modality):
            continue
        if rule.calling_ae not in (None, calling_ae):
            continue
        return CodecChoice(rule.codec, dict(rule.options))
    return CodecChoice(config.default_codec, dict(config.default_options))


def fallback_chain(choice: CodecChoice) -> list[CodecChoice]:
    """The choice, then standard lossless codecs, ending with passthrough which cannot fail."""
    chain = [choice]
    chain += [CodecChoice(name) for name in STANDARD_FALLBACKS if name != choice.name]
    if choice.name != PASSTHROUGH:
        chain.append(CodecChoice(PASSTHROUGH))
    return chain


def rivals(codec: Codec) -> list[CodecChoice]:
    """Codecs this one must beat on each image to be stored (a learned codec names the
    standard ones; where they code an image smaller, theirs is the blob kept)."""
    return [CodecChoice(name) for name in getattr(codec, "competes_with", ())]


def validate_policy(config: CompressionConfig) -> None:
    """Create every codec config names, so a bad name fails at start-up, not on an image."""
    for choice in [CodecChoice(config.default_codec, config.default_options)] + [
        CodecChoice(rule.codec, rule.options) for rule in config.rules
    ]:
        if choice.name == PASSTHROUGH:
            continue
        codec = shared_codec(choice.name, **choice.options)  # also loads models once, at start-up
        if not codec.lossless:
            raise CodecUnavailable(
                f"{choice.name} {choice.options} is lossy: the node stores instances losslessly only "
                "(lossy storage with new SOP Instance UIDs is not implemented yet)"
            )


def codec_for(choice: CodecChoice) -> Codec | None:
    """The process's codec for `choice`, or None for passthrough (pixels stored as received)."""
    if choice.name == PASSTHROUGH:
        return None
    return shared_codec(choice.name, **choice.options)
