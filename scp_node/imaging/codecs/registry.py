"""Codec names as config and the CLI use them, mapped to implementations.

Codec modules are imported only when a codec is created or its availability is asked for:
the learned and LDM codecs pull in torch (seconds), which an admin's `scp-node ae list` must
not wait for. What a codec accepts as options is declared here, with types and ranges, so that
config rules and `scp-node codec try` are checked in one place before a codec is built.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scp_node.imaging.codecs.settings import CodecSettings, LdmConfig
from scp_node.imaging.errors import ImagingError

if TYPE_CHECKING:
    from scp_node.imaging.codecs.base import Codec

# Policy name for "store the pixel data exactly as received, without re-encoding".
PASSTHROUGH = "passthrough"


class InvalidCodecOption(ImagingError):
    """A codec option that the codec does not have, or a value outside what it accepts; the
    message names the option and the allowed values (one line for the admin)."""


@dataclass(frozen=True)
class CodecOption:
    """One option a codec accepts: its type, range or choices, and what it does."""

    name: str
    kind: type  # int, float, bool or str
    help: str
    default: str  # as the admin reads it (some defaults come from the site's config)
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    multiple_of: int | None = None
    nullable: bool = False  # None (YAML null, JSON null) means "the default"

    @property
    def allowed(self) -> str:
        """The values this option accepts, in words."""
        if self.choices:
            text = "one of " + ", ".join(str(choice) for choice in self.choices)
        elif self.kind is bool:
            text = "true or false"
        elif self.kind is str:
            text = "a path" if self.name == "weights" else "text"
        else:
            text = "an integer" if self.kind is int else "a number"
            if self.multiple_of is not None:
                text = f"a multiple of {self.multiple_of}"
                if self.minimum == self.multiple_of:
                    return f"a positive multiple of {self.multiple_of}" + (
                        " or null" if self.nullable else ""
                    )
            if self.minimum is not None and self.maximum is not None:
                text += f" from {_number(self.minimum)} to {_number(self.maximum)}"
            elif self.minimum is not None:
                text += f" >= {_number(self.minimum)}"
        return text + (" or null" if self.nullable else "")

    def check(self, codec: str, value: Any) -> None:
        if value is None and self.nullable:
            return
        if not self._accepts(value):
            raise InvalidCodecOption(f"{codec} option {self.name} must be {self.allowed}, not {value!r}")

    def _accepts(self, value: Any) -> bool:
        if self.kind is bool:
            return isinstance(value, bool)
        if self.kind is str:
            return isinstance(value, str) and value != ""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if self.choices:
            return value in self.choices
        if self.minimum is not None and value < self.minimum:
            return False
        if self.maximum is not None and value > self.maximum:
            return False
        return self.multiple_of is None or value % self.multiple_of == 0


@dataclass(frozen=True)
class CodecEntry:
    """A codec by name: where its class lives (imported on first use), and its options."""

    name: str
    module: str
    class_name: str
    summary: str
    options: tuple[CodecOption, ...] = ()

    @property
    def option_names(self) -> list[str]:
        return [option.name for option in self.options]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_UPSCALE_OPTIONS = (
    CodecOption("scale", int, "downscale factor of the stored image", "2", choices=(2, 4)),
    CodecOption(
        "delta",
        int,
        "every sample within delta of the original, 0: lossless",
        "unset, plain lossy",
        minimum=0,
        nullable=True,
    ),
)

_STANDARD = "scp_node.imaging.codecs.standard"  # JPEG-LS, JPEG XL, JPEG 2000, deflate

CODECS: dict[str, CodecEntry] = {
    entry.name: entry
    for entry in (
        CodecEntry("jpegls", _STANDARD, "JpegLsCodec", "lossless JPEG-LS (CharLS)"),
        CodecEntry(
            "jpegxl",
            _STANDARD,
            "JpegXlCodec",
            "lossless JPEG XL (the default)",
            (CodecOption("effort", int, "encode time against size", "7", minimum=1, maximum=9),),
        ),
        CodecEntry("jpeg2000", _STANDARD, "Jpeg2000Codec", "reversible JPEG 2000"),
        CodecEntry("deflate", _STANDARD, "DeflateCodec", "zlib over the raw samples"),
        CodecEntry(
            "learned",
            "scp_node.imaging.codecs.learned.codec",
            "LearnedCodec",
            "learned lossless codec (Seed B model, torch)",
            (
                CodecOption("weights", str, "weight file", "the shipped weights", nullable=True),
                CodecOption("tile", int, "tile side in pixels", "256", minimum=8, multiple_of=8),
                CodecOption("compete", bool, "keep a standard codec's blob where it is smaller", "true"),
                CodecOption("threads", int, "tiles coded at once", "2", minimum=1, maximum=64),
                CodecOption(
                    "series_depth",
                    int,
                    "CT/MR/PT slices coded against a stored neighbour, at most this many in a chain (0: off)",
                    "4",
                    minimum=0,
                    maximum=16,
                ),
            ),
        ),
        CodecEntry(
            "bicubic",
            "scp_node.imaging.codecs.upscale.bicubic",
            "BicubicCodec",
            "downscale + exact bicubic upscale (lossy, or bounded with delta)",
            _UPSCALE_OPTIONS,
        ),
        CodecEntry(
            "ldm",
            "scp_node.imaging.codecs.upscale.ldm",
            "LdmCodec",
            "downscale + latent diffusion upscale (lossy, or bounded with delta; needs weights)",
            (
                *_UPSCALE_OPTIONS,
                CodecOption("steps", int, "denoising steps per x2 pass", "compression.ldm.steps", minimum=1),
                CodecOption(
                    "guidance", float, "classifier-free guidance scale", "compression.ldm.guidance", minimum=0
                ),
            ),
        ),
    )
}

_classes: dict[str, type[Codec]] = {}  # codec modules imported so far (an import cache only)


@dataclass(frozen=True)
class _BuiltinSettings:
    ldm: LdmConfig


class SiteCodecs:
    """The codecs as one site's settings build them (weights the `ldm` codec loads, ...).

    A node holds one (NodeContext.codecs) for its compress jobs and retrievals alike, so a
    learned codec loads its weights once, not once per instance served. Without settings it
    is the built-in configuration: every codec that needs no site files.
    """

    def __init__(self, settings: CodecSettings | None = None) -> None:
        self.settings: CodecSettings = settings or _BuiltinSettings(ldm=LdmConfig())
        self._shared: dict[tuple, Codec] = {}
        self._lock = threading.Lock()

    def unavailable(self) -> dict[str, str]:
        """Codec name -> why it cannot run with these settings (logged at start-up)."""
        reasons = {name: codec_class(name).unavailable_reason(self.settings) for name in CODECS}
        return {name: reason for name, reason in reasons.items() if reason is not None}

    def available(self) -> list[str]:
        unavailable = self.unavailable()
        return [name for name in CODECS if name not in unavailable]

    def lossless(self) -> list[str]:
        """Available codecs that are lossless with their default options."""
        return [name for name in self.available() if codec_class(name).lossless]

    def create(self, name: str, **options: Any) -> Codec:
        """A new codec `name` with `options`, checked against what it declares."""
        check_options(name, options)
        cls = codec_class(name)
        reason = cls.unavailable_reason(self.settings)
        if reason is not None:
            from scp_node.imaging.codecs.base import CodecUnavailable

            raise CodecUnavailable(reason)
        return cls.from_config(self.settings, **options)

    def shared(self, name: str, **options: Any) -> Codec:
        """The one codec per (name, options) of these settings."""
        key = (name, tuple(sorted(options.items())))
        with self._lock:
            if key not in self._shared:
                self._shared[key] = self.create(name, **options)
            return self._shared[key]


def codec_class(name: str) -> type[Codec]:
    """The implementation of codec `name`, importing its module on first use."""
    if name not in _classes:
        entry = _entry(name)
        _classes[name] = getattr(importlib.import_module(entry.module), entry.class_name)
    return _classes[name]


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raise InvalidCodecOption unless every option is one codec `name` has, with a value it
    accepts (without importing the codec)."""
    entry = _entry(name)
    declared = {option.name: option for option in entry.options}
    for key, value in options.items():
        if key not in declared:
            has = f"its options: {', '.join(declared)}" if declared else "it takes no options"
            raise InvalidCodecOption(f"{name} has no option {key!r} ({has})")
        declared[key].check(name, value)


def create_codec(name: str, **options: Any) -> Codec:
    """A codec with the built-in settings (tools and tests; a node uses its SiteCodecs)."""
    return SiteCodecs().create(name, **options)


def lossless_codecs() -> list[str]:
    """Codecs lossless with their default options that run with the built-in settings."""
    return SiteCodecs().lossless()


def _entry(name: str) -> CodecEntry:
    try:
        return CODECS[name]
    except KeyError:
        from scp_node.imaging.codecs.base import CodecUnavailable

        known = ", ".join([*CODECS, PASSTHROUGH])
        raise CodecUnavailable(f"unknown codec {name!r} (known: {known})") from None
