"""The console's form posts: url-encoded fields, or multipart/form-data with one uploaded file
(`codec try`), read under a size limit and checked for the session's CSRF token before any
field is used. The standard library parses both, so the console needs no form library.
"""

from __future__ import annotations

import email.parser
import email.policy
import hmac
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.requests import Request

from scp_node.web.bodies import read_body
from scp_node.web.console.sessions import ConsoleSession
from scp_node.web.errors import HttpProblem
from scp_node.web.multipart import MediaType

MAX_FORM_BYTES = 64 * 1024  # a url-encoded console form is a few hundred bytes
MAX_FIELDS = 100
URLENCODED, FORM_DATA = "application/x-www-form-urlencoded", "multipart/form-data"


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, Upload] = field(default_factory=dict)

    def get(self, name: str) -> str:
        """The field's first value, "" when absent."""
        return self.fields.get(name, [""])[0]

    def get_all(self, name: str) -> list[str]:
        return self.fields.get(name, [])

    def add(self, name: str, value: str) -> None:
        if sum(len(values) for values in self.fields.values()) >= MAX_FIELDS:
            raise HttpProblem(400, f"form has more than {MAX_FIELDS} fields")
        self.fields.setdefault(name, []).append(value)


async def read_form(request: Request, session: ConsoleSession, *, upload_limit: int = 0) -> Form:
    """The posted form, after its CSRF token matched the session's (403 otherwise). With
    `upload_limit`, multipart/form-data bodies up to that many bytes are accepted too."""
    media = MediaType.parse(request.headers.get("content-type", ""))
    if media.name == URLENCODED:
        form = _urlencoded(await read_body(request, MAX_FORM_BYTES, "a console form"))
    elif media.name == FORM_DATA and upload_limit:
        body = await read_body(request, upload_limit, "http.max_body_bytes")
        form = _form_data(body, request.headers["content-type"])
    else:
        allowed = f"{URLENCODED} or {FORM_DATA}" if upload_limit else URLENCODED
        raise HttpProblem(415, f"Content-Type {media.name or 'missing'}: expected {allowed}")
    if not hmac.compare_digest(form.get("csrf").encode(), session.csrf.encode()):
        raise HttpProblem(403, "missing or stale form token (CSRF check): reload the page and try again")
    return form


def _urlencoded(body: bytes) -> Form:
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict"
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise HttpProblem(400, f"malformed form: {exc}") from None
    form = Form()
    for name, value in pairs:
        form.add(name, value)
    return form


def _form_data(body: bytes, content_type: str) -> Form:
    """multipart/form-data (RFC 7578): text fields, and files by their field name."""
    if not MediaType.parse(content_type).params.get("boundary"):
        raise HttpProblem(400, "multipart/form-data without a boundary parameter")
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart() or message.defects:
        raise HttpProblem(400, "malformed multipart/form-data body")
    form = Form()
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name or part.get_content_disposition() != "form-data":
            raise HttpProblem(400, "malformed multipart/form-data: a part without a form-data name")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            form.files[str(name)] = Upload(filename, payload)
            continue
        try:
            form.add(str(name), payload.decode("utf-8"))
        except UnicodeDecodeError:
            raise HttpProblem(400, f"form field {name!r} is not UTF-8 text") from None
    return form
