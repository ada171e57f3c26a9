"""Which codec stores an instance: config rules by modality and sending AE, first match wins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scp_node.config import CompressionConfig
from scp_node.imaging.codecs import PASSTHROUGH, Codec, CodecUnavailable, SiteCodecs

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
    return default_choice(config)


def default_choice(config: CompressionConfig) -> CodecChoice:
    """The lossless default (validate_policy refuses a lossy one): what an instance that cannot
    have its rule's lossy copy, and a kept original, are stored with."""
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


def validate_policy(config: CompressionConfig, codecs: SiteCodecs) -> None:
    """Create every codec `config` names, so a bad name, missing weights or a lossy catch-all
    fails at start-up, not on an image (and models load once, before the first job).

    Lossy storage must be asked for by name for a modality or a sending AE: the default and a
    rule matching everything must be lossless, so no instance becomes lossy by accident.
    """
    _require_lossless(codecs, config.default_codec, config.default_options, "compression.default_codec")
    for rule in config.rules:
        if rule.modality is None and rule.calling_ae is None:
            _require_lossless(codecs, rule.codec, rule.options, "a rule without modality or calling_ae")
        elif rule.codec != PASSTHROUGH:
            codecs.shared(rule.codec, **rule.options)


def _require_lossless(codecs: SiteCodecs, name: str, options: dict[str, Any], where: str) -> None:
    if name == PASSTHROUGH:
        return
    if not codecs.shared(name, **options).lossless:
        raise CodecUnavailable(
            f"{name} {options} is lossy and may not be {where}: name it in a rule for a modality "
            "or a calling AE, so that only those instances are stored lossy"
        )


def codec_for(codecs: SiteCodecs, choice: CodecChoice) -> Codec | None:
    """The site's codec for `choice`, or None for passthrough (pixels stored as received)."""
    if choice.name == PASSTHROUGH:
        return None
    return codecs.shared(choice.name, **choice.options)
