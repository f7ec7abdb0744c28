"""Reading HTTP fields as a cache must: delta-seconds, dates, ``Age``, ``Cache-Control``, targeted fields.

RFC 9110 section 5.6.7 (dates), RFC 9111 sections 1.2.2, 5.1 and 5.2 (delta-seconds,
``Age``, ``Cache-Control``), RFC 9213 (``CDN-Cache-Control`` and its kind, read as
RFC 8941 dictionaries by :mod:`~intelligent_cache.structured`). Every parser takes
values as clients and endpoints send them, never raises on them, and is never
super-linear in their size.
"""

import math
import re
import time
from collections.abc import Iterable, Sequence
from typing import Final

from ._types import Headers
from .structured import QUOTED_PAIR, parse_dictionary, skip

__all__ = [
    "ALREADY_EXPIRED",
    "DEFAULT_TARGETS",
    "MAX_DELTA_SECONDS",
    "OWS",
    "UNREADABLE_AGE",
    "delta_seconds",
    "expires_at",
    "field_values",
    "last_modified",
    "parse_age",
    "parse_http_date",
    "response_date",
    "targeted_directives",
]

MAX_DELTA_SECONDS = 2**31


def delta_seconds(argument: str | None) -> int | None:
    """A non-negative integer argument, or ``None`` if absent or invalid (RFC 9111 section 1.2.2).

    ASCII digits only (``str.isdigit`` alone accepts superscripts such as
    ``"\\xb2"``, which ``int`` refuses), and anything past 2**31 is 2**31,
    computed without converting thousands of digits (which ``int`` refuses too).
    """
    if argument is None or not (argument.isascii() and argument.isdigit()):
        return None
    digits = argument.lstrip("0")
    if len(digits) > len(str(MAX_DELTA_SECONDS)):
        return MAX_DELTA_SECONDS
    return min(int(digits or "0"), MAX_DELTA_SECONDS)


def field_values(headers: Headers, name: bytes) -> list[str]:
    """Every line of field ``name`` (lower-case bytes, as ASGI spells names), decoded as Latin-1."""
    return [value.decode("latin-1") for key, value in headers if key == name]


_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS: Final = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
_MONTH = "(" + "|".join(_MONTH_NAMES) + ")"
_DAY_NAME = "(?:mon|tue|wed|thu|fri|sat|sun)"
_DAY_NAME_L = "(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
# RFC 9110 section 5.6.7. Case-insensitive, as RFC 9111 section 4.2 asks of caches; ASCII only
# (in a str pattern [0-9] is ASCII anyway, and re.ASCII keeps IGNORECASE from folding non-ASCII letters).
_IMF_FIXDATE = re.compile(rf"{_DAY_NAME}, ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT", re.IGNORECASE | re.ASCII)
_RFC850_DATE = re.compile(rf"{_DAY_NAME_L}, ([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT", re.IGNORECASE | re.ASCII)
_ASCTIME_DATE = re.compile(rf"{_DAY_NAME} {_MONTH} ([0-9]{{2}}| [0-9]) {_TIME} ([0-9]{{4}})", re.IGNORECASE | re.ASCII)
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_LONGEST_DATE = len("Wednesday, 09-Nov-99 08:49:37 GMT")
#: Optional whitespace (RFC 9110 section 5.6.3).
OWS = " \t"


def _timegm(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float | None:
    """Seconds since the epoch of a UTC civil time, or ``None`` if the fields are out of range."""
    if not 1 <= month <= 12 or hour > 23 or minute > 59 or second > 60:
        return None
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= (_DAYS_IN_MONTH[month] if month != 2 or leap else 28):
        return None
    # RFC 9111 section 4.2: a time finer than we can hold is read as the nearest earlier one;
    # a leap second (:60) is therefore :59.
    second = min(second, 59)
    # Days from civil (proleptic Gregorian), as calendar.timegm computes it, without a date object.
    y = year - (month <= 2)
    era = y // 400
    year_of_era = y - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    return float(days * 86400 + hour * 3600 + minute * 60 + second)


def parse_http_date(value: str, *, now: float | None = None) -> float | None:
    """The timestamp of an HTTP-date (RFC 9110 section 5.6.7), or ``None`` if it is not one.

    Accepted: IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``), the obsolete
    RFC 850 form (``Sunday, 06-Nov-94 08:49:37 GMT``) and asctime
    (``Sun Nov  6 08:49:37 1994``, read as GMT), with exactly the spacing,
    punctuation and digit counts of the grammar: a 1-digit hour, a 2-digit year
    or dashes in the IMF form, a zone other than ``GMT`` (``UTC``, ``+0000``,
    ``-0000``), a missing comma, doubled spaces, trailing text or an impossible
    date (``31 Apr``, hour 24) all give ``None``. Names are matched
    case-insensitively (RFC 9111 section 4.2 asks that of caches), the day name
    is not checked against the date, and leading or trailing OWS is not part of
    a field value (RFC 9110 section 5.5), so it is ignored.

    A two-digit RFC 850 year is the year with those last digits at most 50 years
    in the future of ``now`` (default: the current time), else the century
    before (RFC 9110 section 5.6.7).
    """
    value = value.strip(OWS)
    if len(value) > _LONGEST_DATE or len(value) < 4:
        return None
    if value[3] == ",":
        match = _IMF_FIXDATE.fullmatch(value)
        if match is None:
            return None
        day, month, year, hour, minute, second = match.groups()
    elif value[3] == " ":
        match = _ASCTIME_DATE.fullmatch(value)
        if match is None:
            return None
        month, day, hour, minute, second, year = match.groups()
    else:
        match = _RFC850_DATE.fullmatch(value)
        if match is None:
            return None
        day, month, short_year, hour, minute, second = match.groups()
        current = time.gmtime(time.time() if now is None else now).tm_year
        candidate = current - current % 100 + int(short_year)
        if candidate > current + 50:
            candidate -= 100
        elif candidate <= current - 50:
            candidate += 100
        year = str(candidate)
    return _timegm(int(year), _MONTHS[month.lower()], int(day), int(hour), int(minute), int(second))


def _single_date(headers: Headers, name: bytes) -> float | None:
    values = field_values(headers, name)
    return parse_http_date(values[0]) if len(values) == 1 else None


def response_date(headers: Headers) -> float | None:
    """The response's ``Date`` (RFC 9110 section 6.6.1); ``None`` if absent, repeated or invalid.

    A cache treats a response without a valid ``Date`` as dated when it was
    received (RFC 9110 section 6.6.1), which callers do by falling back to that time.
    """
    return _single_date(headers, b"date")


def last_modified(headers: Headers) -> float | None:
    """The response's ``Last-Modified`` (RFC 9110 section 8.8.2); ``None`` if absent, repeated or invalid."""
    return _single_date(headers, b"last-modified")


#: What :func:`expires_at` returns for an ``Expires`` that means "already expired".
ALREADY_EXPIRED: Final[float] = -math.inf


def expires_at(headers: Headers) -> float | None:
    """When the response expires by its ``Expires`` field (RFC 9111 section 5.3).

    Returns ``None`` when there is no ``Expires``; :data:`ALREADY_EXPIRED`
    (``-inf``, earlier than any time) when there are several ``Expires`` lines
    or the value is not a valid HTTP-date (``"0"``, ``UTC``, a 2-digit year...),
    which a cache must read as "already expired"; else the timestamp.
    """
    values = field_values(headers, b"expires")
    if not values:
        return None
    if len(values) > 1:
        return ALREADY_EXPIRED
    timestamp = parse_http_date(values[0])
    return ALREADY_EXPIRED if timestamp is None else timestamp


#: The age of a response whose ``Age`` cannot be read: the oldest there is, so it is stale.
UNREADABLE_AGE: Final = 2**31


def parse_age(headers: Headers) -> int | None:
    """The ``Age`` a response arrives with (RFC 9111 section 5.1); ``None`` without one.

    Of a list its first member counts (``Age: 7200, 0`` is 7200, ``0, 7200`` is
    0), as RFC 9111 says. The value is delta-seconds: ASCII digits, leading
    zeros allowed, capped at 2**31; parameters after the number
    (``7200;foo=bar``) are ignored, the number kept. Where the RFC says to
    ignore an invalid value, this cache is more careful: a negative, fractional,
    signed or non-numeric value, or ``Age`` on several lines (hops that
    disagree), reads as :data:`UNREADABLE_AGE`, so the response counts as stale
    rather than as brand new.
    """
    lines = [line for line in field_values(headers, b"age") if line.strip(OWS)]
    if not lines:
        return None
    if len(lines) > 1:
        return UNREADABLE_AGE
    for member in lines[0].split(","):
        member = member.strip(OWS)
        if member:
            value = delta_seconds(member.partition(";")[0].rstrip(OWS))
            return UNREADABLE_AGE if value is None else value
    return UNREADABLE_AGE


# -- targeted Cache-Control fields (RFC 9213) and a strict Cache-Control parser ---------------------

_TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_CC_DIRECTIVE = re.compile(rf'({_TCHAR}+)(?:=(?:({_TCHAR}+)|"((?:[^"\\]|\\.)*)"))?', re.ASCII | re.DOTALL)
_CC_NAME = re.compile(rf"{_TCHAR}+", re.ASCII)
# One list element: anything but commas, quoted strings (which may hold commas) included. Never fails.
_CC_ELEMENT = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*"?)*', re.DOTALL)


def _strict_cache_control(values: Iterable[str]) -> dict[str, str | None]:
    """``Cache-Control`` parsed to the RFC 9111 section 5.2 grammar, in the format of :func:`parse_cache_control`.

    ``token [ "=" ( token / quoted-string ) ]`` exactly: an element that does
    not match (``max-age =5``, ``max-age= 5``, ``max-age='5'``) keeps its
    directive name with no argument, which makes an argument-taking directive
    invalid (stale) and leaves a flag in force. Quoted arguments are unescaped
    and marked with a leading ``"``. The first occurrence of a directive wins.
    """
    directives: dict[str, str | None] = {}
    for value in values:
        position, length = 0, len(value)
        while position <= length:
            end = skip(_CC_ELEMENT, value, position)
            element = value[position:end].strip(OWS)
            position = end + 1
            if not element:
                continue
            directive = _CC_DIRECTIVE.fullmatch(element)
            argument: str | None
            if directive is not None:
                name, token, quoted = directive.groups()
                argument = token if quoted is None else '"' + QUOTED_PAIR.sub(r"\1", quoted)
            else:
                leading = _CC_NAME.match(element)
                if leading is None:
                    continue
                name, argument = leading.group(), None
            directives.setdefault(name.lower(), argument)
    return directives


# The types RFC 9213 section 2.1 gives the RFC 9111 response directives in a targeted field.
_SF_INTEGER_DIRECTIVES = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})
_SF_FLAG_DIRECTIVES = frozenset(
    {"no-store", "no-transform", "must-revalidate", "proxy-revalidate", "must-understand", "public", "immutable"}
)
_SF_FIELD_LIST_DIRECTIVES = frozenset({"no-cache", "private"})


def _targeted_field(values: list[str]) -> dict[str, str | None] | None:
    """A targeted field's directives, or ``None`` if it is empty or invalid (RFC 9213 section 2.1)."""
    members = parse_dictionary(", ".join(values))
    if not members:
        return None
    directives: dict[str, str | None] = {}
    for name, (kind, value) in members.items():
        argument: str | None
        if value is True:
            argument = None
        elif kind == "string":
            argument = '"' + str(value)
        else:
            argument = str(value)
        # A known directive with a value of the wrong type makes the whole field invalid.
        if name in _SF_INTEGER_DIRECTIVES:
            if kind != "integer" or int(value) < 0:
                return None
        elif name in _SF_FLAG_DIRECTIVES:
            if value is not True:
                return None
        elif name in _SF_FIELD_LIST_DIRECTIVES:
            if value is not True and kind != "string":
                return None
        elif kind == "boolean" and value is False:
            argument = "?0"
        directives[name] = argument
    return directives


#: The targeted fields (RFC 9213) this cache obeys, most specific first.
#: ``Surrogate-Control`` (the W3C Edge Architecture field, which CDNs read) comes after the RFC 9213 ones.
DEFAULT_TARGETS: Final[tuple[bytes, ...]] = (
    b"intelligent-cache-control",
    b"cdn-cache-control",
    b"surrogate-control",
)


def targeted_directives(
    headers: Headers, targets: Sequence[bytes] = DEFAULT_TARGETS
) -> tuple[dict[str, str | None], bool]:
    """The response directives this cache obeys, and whether they come from a targeted field.

    RFC 9213 section 2.2: the first field of ``targets`` (lower-case names, in
    order) that is present with a valid, non-empty value wins, and
    ``Cache-Control`` and ``Expires`` are then ignored by this cache (so
    ``CDN-Cache-Control: max-age=10`` with ``Cache-Control: no-store`` is
    storable for 10 seconds). A targeted field is a Structured Field Dictionary
    (RFC 8941): one with a syntax error (``max-age =10``, ``MaX-aGe=10``,
    ``&&&``, a trailing comma), with a known directive of the wrong type
    (``max-age="10"``, ``max-age=1.5``, ``max-age=-1``, ``no-store=5``), or
    empty is ignored as if absent. Its parameters are ignored and a repeated key
    keeps its last value.

    Otherwise the directives are those of ``Cache-Control``, parsed strictly to
    the RFC 9111 grammar (see :func:`freshness_lifetime` for how arguments then
    read). Either way the mapping has the format of
    :func:`parse_cache_control`: lower-case names; ``None`` for no argument;
    the argument's text, with a leading ``"`` for a string.
    """
    if targets:
        lines: dict[bytes, list[str]] = {}
        for key, value in headers:
            if key in targets:
                lines.setdefault(key, []).append(value.decode("latin-1"))
        for target in targets:
            if target in lines:
                directives = _targeted_field(lines[target])
                if directives is not None:
                    return directives, True
    return _strict_cache_control(field_values(headers, b"cache-control")), False
