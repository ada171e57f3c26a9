"""UID checks and conversions made once per string, for the whole process.

An association request names every SOP class the requester offers, each with its transfer
syntaxes and often a role selection, and pynetdicom turns each of those UIDs into a pydicom UID
several times over: pydicom checks the string by regular expression as it builds the UID (its
UI validator), pynetdicom checks it with its own validator and asks `UID.is_valid` (another
regular expression) once or twice more. An association offering 128 storage classes with three
syntaxes each, as dcmtk's getscu does, ran 8,662 such matches, for the same few hundred UIDs
every time: about 10 ms of the node's CPU per association (sequential getscu of the bench
corpus, 21 associations and 92 instances: 1,015 -> 805 ms).

Each of these is a pure function of the string, so its answer is kept, for at most
MOST_REMEMBERED strings each (the least recently used go first: instance UIDs pass through too
and must not crowd out the class and syntax UIDs every association names).
"""

from __future__ import annotations

import functools
from typing import Any

import pydicom.uid
import pydicom.valuerep
import pynetdicom.ae
import pynetdicom.dimse_primitives
import pynetdicom.pdu_items
import pynetdicom.pdu_primitives
import pynetdicom.presentation
import pynetdicom.utils
from pydicom.uid import UID
from pynetdicom import _config
from pynetdicom._validators import validate_ui as _pynetdicom_ui

MOST_REMEMBERED = 16384

_pydicom_ui = pydicom.valuerep.VALIDATORS["UI"]
_is_conformant = pydicom.uid.UID.is_valid.fget


@functools.lru_cache(maxsize=MOST_REMEMBERED)
def _pydicom_ui_of_string(vr: str, value: str | bytes) -> tuple[bool, str]:
    return _pydicom_ui(vr, value)


def _pydicom_ui_check(vr: str, value: Any) -> tuple[bool, str]:
    """pydicom's UI check, kept for strings (any other value is checked, and refused, as before)."""
    if isinstance(value, (str, bytes)):
        return _pydicom_ui_of_string(vr, value)
    return _pydicom_ui(vr, value)


@functools.lru_cache(maxsize=MOST_REMEMBERED)
def _conformant(uid: pydicom.uid.UID) -> bool:
    return _is_conformant(uid)


_pynetdicom_ui_check = functools.lru_cache(maxsize=MOST_REMEMBERED)(_pynetdicom_ui)

_set_uid = pynetdicom.utils.set_uid
_SET_UID_USERS = (
    pynetdicom.utils,
    pynetdicom.ae,
    pynetdicom.dimse_primitives,
    pynetdicom.pdu_items,
    pynetdicom.pdu_primitives,
    pynetdicom.presentation,
)


@functools.lru_cache(maxsize=MOST_REMEMBERED)
def _kept_uid(
    value: str | bytes | UID | None, name: str, allow_empty: bool, allow_none: bool, validate: bool
) -> UID | None:
    return _set_uid(value, name, allow_empty, allow_none, validate)


def _set_kept_uid(
    value: str | bytes | UID | None,
    name: str,
    allow_empty: bool = True,
    allow_none: bool = True,
    validate: bool = True,
) -> UID | None:
    """pynetdicom's conversion of a received or given value to a checked UID, made once per
    value: it built a new UID, and checked it, for every one of the thousands an association
    names (pynetdicom uses the UIDs it gets, never changes them). A refused value raises each
    time; a non-conformant one is logged the first time only."""
    return _kept_uid(value, name, allow_empty, allow_none, validate)


def remember_uid_checks() -> None:
    """Install the kept checks in pydicom and pynetdicom (idempotent)."""
    pydicom.valuerep.VALIDATORS["UI"] = _pydicom_ui_check
    pydicom.uid.UID.is_valid = property(_conformant)  # type: ignore[method-assign, assignment]
    _config.VALIDATORS["UI"] = _pynetdicom_ui_check
    for module in _SET_UID_USERS:
        module.set_uid = _set_kept_uid  # type: ignore[attr-defined]
