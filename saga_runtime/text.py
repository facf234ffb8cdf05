"""Text every API accepts: strings PostgreSQL and JSON can store, and e-mail addresses the
mailer can deliver. Written once, used for every body field, path, query and header.

PostgreSQL refuses a NUL in ``text`` and ``jsonb``, and a lone UTF-16 surrogate (which JSON's
``\\ud800`` escape can smuggle into a Python ``str``) cannot be encoded as UTF-8 at all: such a
string reaching the database or a response is a 500. The types below refuse it at the edge
with a field error instead, and their JSON schema says exactly what they accept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import idna
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

__all__ = [
    "EMAIL_DESCRIPTION",
    "EMAIL_PATTERN",
    "NON_BLANK",
    "NON_BLANK_PATTERN",
    "PRINTABLE",
    "PRINTABLE_PATTERN",
    "WHOLE_NUMBER",
    "Email",
    "Printable",
    "Text",
    "check_email",
    "check_non_blank",
    "check_printable",
]

# C0 controls (NUL, tab, newline...), DEL and C1 controls: the same class is the JSON schema's
# pattern and the validator's check, so they cannot disagree. Lone surrogates are refused too,
# but stay out of the pattern: JSON Schema strings are Unicode text, which has none, and
# regex engines of schema tools (Rust's) cannot even express them.
_CONTROLS = "\\u0000-\\u001f\\u007f-\\u009f"
PRINTABLE_PATTERN = f"^[^{_CONTROLS}]*$"
# Printable, and at least one character that is not whitespace.
NON_BLANK_PATTERN = f"^[^{_CONTROLS}]*[^{_CONTROLS}\\s][^{_CONTROLS}]*$"
_FORBIDDEN_CHAR = re.compile(f"[{_CONTROLS}\\ud800-\\udfff]")
_NON_BLANK = re.compile(NON_BLANK_PATTERN)


def check_printable(value: Any) -> Any:
    """Refuse a string with a control character or a lone surrogate (other input is left to
    the type's own validation, so a number still gets "should be a valid string")."""
    if isinstance(value, str) and (found := _FORBIDDEN_CHAR.search(value)):
        char = found.group()
        what = "a lone UTF-16 surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
        raise ValueError(f"must not contain {what} (U+{ord(char):04X} at {found.start()})")
    return value


def check_non_blank(value: Any) -> Any:
    """``check_printable``, and refuse a string of whitespace only (``NON_BLANK_PATTERN``)."""
    check_printable(value)
    if isinstance(value, str) and not _NON_BLANK.fullmatch(value):
        raise ValueError("must contain a character that is not whitespace")
    return value


@dataclass(frozen=True)
class _TextMark:
    """Runs its check before any other validation of the field (so a surrogate never reaches
    a length or pattern check) and puts its pattern into the JSON schema, unless the field
    declares a stricter pattern of its own: the schema says what the check accepts."""

    check: Callable[[Any], Any]
    pattern: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault("pattern", self.pattern)
        return json_schema


# Put a mark last in an ``Annotated``, after the bounds, so that they stay plain string
# constraints: ``Annotated[str, Field(max_length=20), NON_BLANK]``. Text is kept as sent, never
# stripped: what the schema describes is exactly what is accepted and stored.
PRINTABLE = _TextMark(check_printable, PRINTABLE_PATTERN)
NON_BLANK = _TextMark(check_non_blank, NON_BLANK_PATTERN)

# Any printable string, the empty one included.
Printable = Annotated[str, PRINTABLE]
# The common case: a required piece of single-line text of 1-200 characters, not all blank.
Text = Annotated[str, Field(min_length=1, max_length=200), NON_BLANK]


# --- whole numbers -------------------------------------------------------------------------------


def _whole_float_as_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# JSON Schema's ``integer`` is any number without a fraction, so ``1.0`` is one: put this mark
# last on a strict ``int`` (``Annotated[int, Field(ge=0, strict=True), WHOLE_NUMBER]``) and it
# accepts exactly that, while strings and booleans stay refused.
WHOLE_NUMBER = BeforeValidator(_whole_float_as_int)


# --- e-mail addresses ----------------------------------------------------------------------------

# The shape, as a JSON schema pattern and as the validator's first check: a local part without
# whitespace, controls or the RFC 5322 specials that would need quoting (the mailer does not
# quote), one "@", then dot-separated labels. Whether the labels convert to an ASCII hostname
# cannot be a pattern: that part of the rule is in the description and in ``check_email``.
_LOCAL_SPECIALS = '"(),:;<>[\\]'
_NOT_IN_LOCAL = _CONTROLS + '\\s@"(),:;<>\\[\\\\\\]'
_NOT_IN_LABEL = _CONTROLS + "\\s@."
EMAIL_PATTERN = (
    f"^[^{_NOT_IN_LOCAL}]{{1,64}}@[^{_NOT_IN_LABEL}]{{1,63}}(?:\\.[^{_NOT_IN_LABEL}]{{1,63}})+$"
)
_EMAIL_SHAPE = re.compile(EMAIL_PATTERN)
_HOSTNAME_LABEL = re.compile("[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
EMAIL_DESCRIPTION = (
    "An e-mail address `local@domain`, at most 254 characters, without whitespace or control "
    "characters, with exactly one `@`. The local part has 1-64 characters and may be non-ASCII "
    '(UTF-8, delivered with SMTPUTF8) but none of `"(),:;<>[\\]`. The domain must convert '
    "with IDNA (2008, or Python's IDNA 2003 codec) to an ASCII hostname with at least one "
    "dot, each label 1-63 letters, digits or hyphens, not starting or ending with a hyphen."
)


def _ascii_hostname(domain: str) -> str | None:
    for encode in (
        lambda d: idna.encode(d, uts46=True).decode("ascii"),
        lambda d: d.encode("idna").decode("ascii"),
    ):
        try:
            hostname: str = encode(domain)
        except (idna.IDNAError, UnicodeError, ValueError):
            continue
        labels = hostname.split(".")
        if len(labels) >= 2 and all(_HOSTNAME_LABEL.fullmatch(label) for label in labels):
            return hostname
    return None


def check_email(value: str) -> str:
    """Refuse an address the mailer cannot deliver (the rule: ``EMAIL_DESCRIPTION``).

    The address is kept as sent (a Unicode domain included): the mailer converts the domain.
    """
    if len(value) > 254:
        raise ValueError("must be at most 254 characters")
    if not _EMAIL_SHAPE.fullmatch(value):
        raise ValueError(
            "must be local@domain: one '@', no whitespace or control characters, a local part "
            f"of 1-64 characters without any of {_LOCAL_SPECIALS}, a domain with a dot"
        )
    if _ascii_hostname(value.partition("@")[2]) is None:
        raise ValueError("the domain must convert with IDNA to an ASCII hostname")
    return value


Email = Annotated[
    str,
    Field(
        max_length=254,
        description=EMAIL_DESCRIPTION,
        json_schema_extra={"pattern": EMAIL_PATTERN},
    ),
    AfterValidator(check_email),
    PRINTABLE,
]
