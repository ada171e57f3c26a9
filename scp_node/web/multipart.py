"""multipart/related (RFC 2387) as PS3.18 uses it: split a STOW-RS request body into its parts,
write WADO-RS responses part by part, and read the media types of Content-Type and Accept.

A request body is checked whole before any part is stored, so a malformed message stores
nothing: every part must be delimited by the boundary, have its header block, and the message
must end with the closing delimiter.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message

from scp_node.web.errors import HttpProblem


@dataclass(frozen=True)
class MediaType:
    """A Content-Type or one Accept entry: `type/subtype` (lower case) and its parameters."""

    name: str
    params: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> MediaType:
        message = Message()
        message["content-type"] = text
        params = {key.lower(): value for key, value in message.get_params(failobj=[])[1:]}
        name = text.split(";", 1)[0].strip().lower()
        return cls(name, params)

    @property
    def quality(self) -> float:
        """An Accept entry's q (1 when absent); 400 when it is not a number."""
        try:
            return float(self.params.get("q", "1"))
        except ValueError as exc:
            raise HttpProblem(400, f"bad q value in Accept: {self.params.get('q')!r}") from exc


def covers(media_range: str, media_type: str) -> bool:
    """Whether a media range (`*/*`, `application/*`, or a type) covers `media_type`."""
    media_range = media_range.lower()
    return media_range in ("*/*", media_type) or (
        media_range.endswith("/*") and media_type.startswith(media_range[:-1])
    )


@dataclass(frozen=True)
class Part:
    content_type: str  # lower case, without parameters; "" when the part has none
    body: bytes


def split_related(body: bytes, content_type: str) -> list[Part]:
    """The parts of a multipart/related body; 400 when it is not one, or is cut or malformed."""
    media = MediaType.parse(content_type)
    if media.name != "multipart/related":
        raise HttpProblem(415, f"Content-Type {media.name or 'missing'}: expected multipart/related")
    boundary = media.params.get("boundary", "")
    if not boundary or len(boundary) > 70:
        raise HttpProblem(400, "multipart/related without a valid boundary parameter")
    delimiter = b"--" + boundary.encode("latin-1")
    start = _first_delimiter(body, delimiter)
    if start < 0:
        raise HttpProblem(400, "malformed multipart: no boundary delimiter in the body")
    parts = []
    position = start + len(delimiter)
    while True:
        if body.startswith(b"--", position):
            break  # the closing delimiter
        if not body.startswith(b"\r\n", position):
            raise HttpProblem(400, "malformed multipart: boundary delimiter not followed by CRLF")
        end = body.find(b"\r\n" + delimiter, position)
        if end < 0:
            raise HttpProblem(400, f"malformed multipart: part {len(parts) + 1} has no closing delimiter")
        parts.append(_part(body[position + 2 : end], len(parts) + 1))
        position = end + 2 + len(delimiter)
    if not parts:
        raise HttpProblem(400, "multipart message has no parts")
    return parts


def _first_delimiter(body: bytes, delimiter: bytes) -> int:
    """Where the first delimiter line starts, after any preamble (RFC 2046); -1 when none."""
    if body.startswith(delimiter):
        return 0
    found = body.find(b"\r\n" + delimiter)
    return found + 2 if found >= 0 else -1


def _part(raw: bytes, number: int) -> Part:
    header_end = raw.find(b"\r\n\r\n")
    if raw.startswith(b"\r\n"):  # no header fields: the part's type is the message's `type`
        return Part("", raw[2:])
    if header_end < 0:
        raise HttpProblem(400, f"malformed multipart: part {number} has no header block")
    content_type = ""
    for line in raw[:header_end].decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon:
            raise HttpProblem(400, f"malformed multipart: part {number} has a bad header line {line[:60]!r}")
        if name.strip().lower() == "content-type":
            content_type = MediaType.parse(value).name
    return Part(content_type, raw[header_end + 4 :])


@dataclass(frozen=True)
class RelatedWriter:
    """Writes a multipart/related response whose parts all have one media type."""

    part_type: str
    boundary: str

    @classmethod
    def new(cls, part_type: str) -> RelatedWriter:
        return cls(part_type, secrets.token_hex(16))

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="{self.part_type}"; boundary={self.boundary}'

    def encode(self, bodies: Iterable[tuple[bytes, str]]) -> Iterator[bytes]:
        """Each (body, full content type) as one part, then the closing delimiter."""
        for body, part_content_type in bodies:
            yield f"--{self.boundary}\r\nContent-Type: {part_content_type}\r\n\r\n".encode()
            yield body
            yield b"\r\n"
        yield f"--{self.boundary}--\r\n".encode()
