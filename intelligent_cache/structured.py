"""RFC 8941 Structured Field Dictionaries, as far as targeted cache fields need them.

:func:`parse_dictionary` reads a whole field value or gives ``None`` on any
syntax error (RFC 9213 section 2.1: an invalid targeted field is ignored as if
absent). Linear in the input, never raises.
"""

import re

__all__ = ["QUOTED_PAIR", "parse_dictionary", "skip"]

#: A backslash escape inside a quoted string (RFC 9110 section 5.6.4, RFC 8941 section 3.3.3).
QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)

_SF_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_SF_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_SF_NUMBER = re.compile(r"-?([0-9]+)(\.[0-9]*)?")
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_SF_BYTES = re.compile(r":[A-Za-z0-9+/=]*:")
_SF_BOOLEAN = re.compile(r"\?[01]")
_SF_SP = re.compile(r" *")
_SF_OWS = re.compile(r"[ \t]*")

#: A parsed Structured Field value: its type ("integer", "decimal", "string", "token",
#: "byte-sequence", "boolean", "inner-list"), the value, and where its text ends.
_SFValue = tuple[str, int | str | bool, int]


def skip(pattern: re.Pattern[str], text: str, position: int) -> int:
    """Where a match of ``pattern`` (one that may be empty) at ``position`` ends."""
    match = pattern.match(text, position)
    return position if match is None else match.end()


def _sf_bare_item(text: str, position: int) -> _SFValue | None:
    """An RFC 8941 section 4.2.3.1 bare item at ``position``, or ``None`` on a syntax error."""
    if position >= len(text):
        return None
    char = text[position]
    if char == "-" or "0" <= char <= "9":
        number = _SF_NUMBER.match(text, position)
        if number is None:
            return None
        digits, fraction = number.groups()
        if fraction is None:
            return ("integer", int(number.group()), number.end()) if len(digits) <= 15 else None
        if len(digits) > 12 or not 2 <= len(fraction) <= 4:
            return None
        return "decimal", number.group(), number.end()
    if char == '"':
        string = _SF_STRING.match(text, position)
        return None if string is None else ("string", QUOTED_PAIR.sub(r"\1", string.group(1)), string.end())
    if char == "?":
        boolean = _SF_BOOLEAN.match(text, position)
        return None if boolean is None else ("boolean", boolean.group() == "?1", boolean.end())
    pattern, kind = (_SF_BYTES, "byte-sequence") if char == ":" else (_SF_TOKEN, "token")
    found = pattern.match(text, position)
    return None if found is None else (kind, found.group(), found.end())


def _sf_parameters(text: str, position: int) -> int | None:
    """Skip RFC 8941 parameters (they are ignored in a targeted field); where they end, or ``None``."""
    while position < len(text) and text[position] == ";":
        key = _SF_KEY.match(text, skip(_SF_SP, text, position + 1))
        if key is None:
            return None
        position = key.end()
        if position < len(text) and text[position] == "=":
            item = _sf_bare_item(text, position + 1)
            if item is None:
                return None
            position = item[2]
    return position


def _sf_member_value(text: str, position: int) -> _SFValue | None:
    """An item or an inner list (its type, its text, where it ends) with its parameters skipped."""
    if position < len(text) and text[position] == "(":
        start, position = position, position + 1
        while True:
            position = skip(_SF_SP, text, position)
            if position < len(text) and text[position] == ")":
                end = _sf_parameters(text, position + 1)
                return None if end is None else ("inner-list", text[start : position + 1], end)
            item = _sf_bare_item(text, position)
            if item is None:
                return None
            after = _sf_parameters(text, item[2])
            if after is None or (after < len(text) and text[after] not in " )"):
                return None
            position = after
    item = _sf_bare_item(text, position)
    if item is None:
        return None
    end = _sf_parameters(text, item[2])
    return None if end is None else (item[0], item[1], end)


def parse_dictionary(text: str) -> dict[str, tuple[str, int | str | bool]] | None:
    """An RFC 8941 section 4.2.2 Dictionary (``{key: (type, value)}``), or ``None`` on a syntax error."""
    if not text.isascii():
        return None
    members: dict[str, tuple[str, int | str | bool]] = {}
    position, length = skip(_SF_SP, text, 0), len(text)
    while position < length:
        key = _SF_KEY.match(text, position)
        if key is None:
            return None
        position = key.end()
        value: _SFValue | None
        if position < length and text[position] == "=":
            value = _sf_member_value(text, position + 1)
        else:
            end = _sf_parameters(text, position)
            value = None if end is None else ("boolean", True, end)
        if value is None:
            return None
        members.pop(key.group(), None)  # a repeated key: the last one wins
        members[key.group()] = (value[0], value[1])
        position = skip(_SF_OWS, text, value[2])
        if position == length:
            break
        if text[position] != ",":
            return None
        position = skip(_SF_OWS, text, position + 1)
        if position == length:
            return None  # a trailing comma
    return members
