"""An association that names UIDs the process has seen runs no UID regular expression: getscu
offers every storage class, and checking the same few hundred UIDs again on each association
held a quarter of the node's interpreter lock during parallel C-GETs. The kept answers are the
ones the checks give."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pydicom.uid
import pydicom.valuerep
import pynetdicom.utils
import pytest
from pynetdicom import AE, AllStoragePresentationContexts, build_role

from scp_node.uid_checks import remember_uid_checks

SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.80"]
UID_PATTERNS = {
    pydicom.uid.RE_VALID_UID,
    pydicom.valuerep.STR_VR_REGEXES["UI"],
    pydicom.valuerep.BYTE_VR_REGEXES["UI"],
}


@pytest.fixture
def uid_regex_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The strings matched against a UID pattern from now on."""
    calls: list[str] = []
    match = re.match

    def counted(pattern: object, string: object, *args: object) -> object:
        if pattern in UID_PATTERNS:
            calls.append(str(string))
        return match(pattern, string, *args)  # type: ignore[call-overload]

    monkeypatch.setattr(re, "match", counted)
    yield calls


def _associate_with_every_storage_class(port: int) -> None:
    """What dcmtk's getscu asks for: 128 storage contexts with three syntaxes and both roles."""
    scu = AE(ae_title="GETSCU")
    roles = []
    for context in AllStoragePresentationContexts[:128]:
        scu.add_requested_context(context.abstract_syntax, SYNTAXES)
        roles.append(build_role(context.abstract_syntax, scp_role=True))
    assoc = scu.associate("127.0.0.1", port, ae_title="NODE", ext_neg=roles)
    assert assoc.is_established
    assoc.release()


def test_a_second_association_checks_no_uid_again(uid_regex_calls: list[str]) -> None:
    remember_uid_checks()
    scp = AE(ae_title="NODE")
    for context in AllStoragePresentationContexts:
        scp.add_supported_context(context.abstract_syntax, SYNTAXES, scu_role=True, scp_role=True)
    server = scp.start_server(("127.0.0.1", 0), block=False)
    try:
        _associate_with_every_storage_class(server.server_address[1])
        first = len(uid_regex_calls)
        _associate_with_every_storage_class(server.server_address[1])
    finally:
        server.shutdown()
    assert first > 0  # the count sees the checks
    assert uid_regex_calls[first:] == []


@pytest.mark.parametrize("value", ["1.2.840.10008.1.2.1", b"1.2.840.10008.1.2.1", "1.2.3.0"])
def test_a_conformant_uid_is_accepted_every_time(value: str | bytes) -> None:
    remember_uid_checks()
    for _ in range(2):
        uid = pynetdicom.utils.set_uid(value, "uid")  # the installed conversion
        assert uid is not None and uid.is_valid


def test_a_uid_longer_than_64_characters_is_refused_every_time() -> None:
    remember_uid_checks()
    for _ in range(2):
        with pytest.raises(ValueError, match="64"):
            pynetdicom.utils.set_uid("1." * 40, "uid")


@pytest.mark.parametrize("value", ["1.02.3", "1.2.abc", "1.2.3."])
def test_a_non_conformant_uid_stays_non_conformant(value: str) -> None:
    remember_uid_checks()
    for _ in range(2):
        assert pydicom.valuerep.VALIDATORS["UI"]("UI", value)[0] is False
        assert not pydicom.uid.UID(value, validation_mode=pydicom.config.IGNORE).is_valid


def test_a_value_that_is_not_a_string_is_checked_as_before() -> None:
    remember_uid_checks()
    assert pydicom.valuerep.VALIDATORS["UI"]("UI", ["1.2", "1.3"])[0] is False  # not a string
