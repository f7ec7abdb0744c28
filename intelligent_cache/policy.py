"""What may be served from the cache and what may be stored in it (RFC 9110/9111).

Decisions come back as *reason* strings (``None`` meaning "go ahead"), so the
same value explains the outcome in stats and in ``Cache-Status``.

Header values come from clients (and from endpoints): every parser here takes
them as they are, never raises on them, and is never super-linear in their size.
"""

import hashlib
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Literal

from ._types import Headers
from .config import HEURISTIC_STATUSES

__all__ = [
    "ALREADY_EXPIRED",
    "DEFAULT_TARGETS",
    "SAFE_METHODS",
    "RequestDirectives",
    "compute_etag",
    "content_range",
    "current_age",
    "etag_matches",
    "expires_at",
    "forbids_stale",
    "freshness_lifetime",
    "initial_age",
    "last_modified",
    "parse_age",
    "parse_cache_control",
    "parse_http_date",
    "parse_range",
    "response_date",
    "response_ttl",
    "response_vary",
    "shareable_with_credentials",
    "store_refusal",
    "stored_headers",
    "targeted_directives",
    "unsatisfied_content_range",
    "updated_headers",
]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def parse_cache_control(values: Iterable[str]) -> dict[str, str | None]:
    """Parse ``Cache-Control`` field values into ``{directive: argument}``.

    Directive names are lower-cased; commas inside quotes do not split; the
    first occurrence of a directive wins. A quoted argument keeps its opening
    quote (``max-age="5"`` gives ``'"5'``) so that delta-seconds written as a
    quoted string read as invalid, as RFC 9111 requires.
    """
    directives: dict[str, str | None] = {}
    for value in values:
        for item in _split_commas(value):
            name, sep, argument = item.partition("=")
            name = name.strip().lower()
            if not name:
                continue
            arg: str | None = None
            if sep:
                arg = argument.strip()
                if len(arg) >= 2 and arg[0] == arg[-1] == '"':
                    arg = '"' + arg[1:-1]  # keep a marker: quoted delta-seconds are invalid
            directives.setdefault(name, arg)
    return directives


def _split_commas(value: str) -> list[str]:
    if '"' not in value:
        return value.split(",")
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items


_MAX_DELTA_SECONDS = 2**31


def _delta_seconds(argument: str | None) -> int | None:
    """A non-negative integer argument, or ``None`` if absent or invalid (RFC 9111 section 1.2.2).

    ASCII digits only (``str.isdigit`` alone accepts superscripts such as
    ``"\\xb2"``, which ``int`` refuses), and anything past 2**31 is 2**31,
    computed without converting thousands of digits (which ``int`` refuses too).
    """
    if argument is None or not (argument.isascii() and argument.isdigit()):
        return None
    digits = argument.lstrip("0")
    if len(digits) > len(str(_MAX_DELTA_SECONDS)):
        return _MAX_DELTA_SECONDS
    return min(int(digits or "0"), _MAX_DELTA_SECONDS)


def _values(headers: Headers, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in headers if key == name]


@dataclass(slots=True)
class RequestDirectives:
    """What a request asks of the cache.

    Attributes:
        no_store: do not store the response (and do not serve from the cache).
        revalidate: compute a fresh response (``no-cache``, ``max-age=0``, ``Pragma: no-cache``).
        max_age: the oldest entry (seconds) the client accepts.
        only_if_cached: answer from the cache or with 504.
        authorization: the request carries ``Authorization``.
        cookie: the request carries ``Cookie``.
        if_none_match: the raw ``If-None-Match`` value.
        min_fresh: seconds of freshness the client wants left (``min-fresh``).
        max_stale: seconds past its lifetime the client accepts (``max-stale``;
            without a value, any staleness: ``math.inf``).
        if_modified_since: the ``If-Modified-Since`` date (ignored with ``If-None-Match``).
        range: the raw ``Range`` value; ``if_range`` the raw ``If-Range`` value.
    """

    no_store: bool = False
    revalidate: bool = False
    max_age: int | None = None
    only_if_cached: bool = False
    authorization: bool = False
    cookie: bool = False
    if_none_match: str | None = None
    min_fresh: int | None = None
    max_stale: float | None = None
    if_modified_since: float | None = None
    range: str | None = None
    if_range: str | None = None

    #: The request fields these directives come from. A request carrying none of
    #: them asks nothing (the fast path relies on it: add a field here, not elsewhere).
    FIELDS: ClassVar[frozenset[bytes]] = frozenset(
        {
            b"cache-control",
            b"pragma",
            b"authorization",
            b"cookie",
            b"if-none-match",
            b"if-modified-since",
            b"range",
            b"if-range",
        }
    )

    @classmethod
    def parse(cls, headers: Headers) -> "RequestDirectives":
        lines: dict[bytes, list[str]] = {}
        for key, value in headers:
            if key in cls.FIELDS:
                lines.setdefault(key, []).append(value.decode("latin-1"))
        result = cls(authorization=b"authorization" in lines, cookie=b"cookie" in lines)
        cache_control = lines.get(b"cache-control")
        pragma = lines.get(b"pragma")
        if_none_match = lines.get(b"if-none-match")
        if if_none_match:
            # Joined once: appending line by line is quadratic in the number of lines.
            result.if_none_match = ", ".join(if_none_match)
        elif len(lines.get(b"if-modified-since", ())) == 1:
            result.if_modified_since = parse_http_date(lines[b"if-modified-since"][0])
        if len(lines.get(b"range", ())) == 1:
            result.range = lines[b"range"][0]
            if len(lines.get(b"if-range", ())) == 1:
                result.if_range = lines[b"if-range"][0]
        if cache_control:
            directives = parse_cache_control(cache_control)
            result.no_store = "no-store" in directives
            result.only_if_cached = "only-if-cached" in directives
            if "no-cache" in directives:
                result.revalidate = True
            if "max-age" in directives:
                max_age = _delta_seconds(directives["max-age"])
                if max_age == 0:
                    result.revalidate = True
                result.max_age = max_age
            if "min-fresh" in directives:
                result.min_fresh = _delta_seconds(directives["min-fresh"])
            if "max-stale" in directives:
                argument = directives["max-stale"]
                result.max_stale = math.inf if argument is None else _delta_seconds(argument)
        elif pragma and "no-cache" in parse_cache_control(pragma):
            result.revalidate = True
        return result


def response_vary(headers: Headers) -> tuple[str, ...] | None:
    """The request header names a response varies on, sorted; ``None`` for ``Vary: *``."""
    names: set[str] = set()
    for value in _values(headers, b"vary"):
        for item in value.split(","):
            name = item.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


def store_refusal(
    status: int,
    headers: Headers,
    body_length: int,
    *,
    max_size: int,
    statuses: frozenset[int],
    credentials: bool,
) -> str | None:
    """Why a computed response must not be stored, or ``None``.

    Args:
        credentials: the request carried credentials the key does not cover, so
            only a response marked shareable (RFC 9111 section 3.5) may be stored.
    """
    if status not in statuses:
        return "status"
    if body_length > max_size:
        return "too-large"
    cache_control: list[str] = []
    for key, value in headers:
        if key == b"set-cookie":
            return "set-cookie"
        if key == b"cache-control":
            cache_control.append(value.decode("latin-1"))
    if response_vary(headers) is None:
        return "vary-star"
    directives = parse_cache_control(cache_control) if cache_control else {}
    if "no-store" in directives:
        return "no-store"
    # An unqualified private (or a qualified one: treated alike) keeps it out of a shared cache.
    if "private" in directives:
        return "private"
    if "no-cache" in directives and directives["no-cache"] is None:
        return "no-cache"
    if credentials and not _shareable(directives):
        return "credentials"
    return None


def _shareable(directives: dict[str, str | None]) -> bool:
    return "public" in directives or "s-maxage" in directives or "must-revalidate" in directives


def shareable_with_credentials(headers: Headers) -> bool:
    """Whether a stored response may answer a request with credentials."""
    values = _values(headers, b"cache-control")
    return bool(values) and _shareable(parse_cache_control(values))


def forbids_stale(headers: Headers) -> bool:
    """Whether a stored response must not be served stale (RFC 9111 section 4.2.4)."""
    values = _values(headers, b"cache-control")
    if not values:
        return False
    directives = parse_cache_control(values)
    return any(name in directives for name in ("must-revalidate", "proxy-revalidate", "no-cache", "s-maxage"))


def must_revalidate(headers: Headers) -> bool:
    """Whether a stored response demands revalidation (a failing origin then gives 504)."""
    values = _values(headers, b"cache-control")
    return bool(values) and "must-revalidate" in parse_cache_control(values)


def response_ttl(headers: Headers) -> float | None:
    """The freshness lifetime a response gives itself, s-maxage > max-age > Expires - Date.

    Returns ``None`` when the response says nothing about it, ``0.0`` when what
    it says is zero or invalid ("not reusable").
    """
    values = _values(headers, b"cache-control")
    if values:
        directives = parse_cache_control(values)
        for name in ("s-maxage", "max-age"):
            if name in directives:
                seconds = _delta_seconds(directives[name])
                return float(seconds) if seconds else 0.0
    expires = _values(headers, b"expires")
    if expires:
        expires_at = _http_date(expires[0])
        dates = _values(headers, b"date")
        base = _http_date(dates[0]) if dates else time.time()
        if expires_at is None or base is None:
            return 0.0  # an invalid Expires means "already expired" (RFC 9111 section 5.3)
        lifetime = expires_at - base
        return lifetime if math.isfinite(lifetime) and lifetime > 0 else 0.0
    return None


def _http_date(value: str) -> float | None:
    """The timestamp of an HTTP-date, or ``None`` if it is not one (see :func:`parse_http_date`)."""
    return parse_http_date(value)


# -- HTTP mode: RFC 9111 building blocks ---------------------------------------------------------------
#
# Pure functions over raw ASGI headers for the standards-following "HTTP mode" (a shared cache per
# RFC 9111, measured by the http-tests/cache-tests suite). None of them raises on what an endpoint
# or a client sends, and none is super-linear in it.

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
_OWS = " \t"


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
    value = value.strip(_OWS)
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
    values = _values(headers, name)
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
    values = _values(headers, b"expires")
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
    lines = [line for line in _values(headers, b"age") if line.strip(_OWS)]
    if not lines:
        return None
    if len(lines) > 1:
        return UNREADABLE_AGE
    for member in lines[0].split(","):
        member = member.strip(_OWS)
        if member:
            value = _delta_seconds(member.partition(";")[0].rstrip(_OWS))
            return UNREADABLE_AGE if value is None else value
    return UNREADABLE_AGE


# -- targeted Cache-Control fields (RFC 9213) and a strict Cache-Control parser ---------------------

_TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_CC_DIRECTIVE = re.compile(rf'({_TCHAR}+)(?:=(?:({_TCHAR}+)|"((?:[^"\\]|\\.)*)"))?', re.ASCII | re.DOTALL)
_CC_NAME = re.compile(rf"{_TCHAR}+", re.ASCII)
# One list element: anything but commas, quoted strings (which may hold commas) included. Never fails.
_CC_ELEMENT = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*"?)*', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


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
            end = _skip(_CC_ELEMENT, value, position)
            element = value[position:end].strip(_OWS)
            position = end + 1
            if not element:
                continue
            directive = _CC_DIRECTIVE.fullmatch(element)
            argument: str | None
            if directive is not None:
                name, token, quoted = directive.groups()
                argument = token if quoted is None else '"' + _QUOTED_PAIR.sub(r"\1", quoted)
            else:
                leading = _CC_NAME.match(element)
                if leading is None:
                    continue
                name, argument = leading.group(), None
            directives.setdefault(name.lower(), argument)
    return directives


_SF_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_SF_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_SF_NUMBER = re.compile(r"-?([0-9]+)(\.[0-9]*)?")
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_SF_BYTES = re.compile(r":[A-Za-z0-9+/=]*:")
_SF_BOOLEAN = re.compile(r"\?[01]")
_SF_SP = re.compile(r" *")
_SF_OWS = re.compile(r"[ \t]*")

# The types RFC 9213 section 2.1 gives the RFC 9111 response directives in a targeted field.
_SF_INTEGER_DIRECTIVES = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})
_SF_FLAG_DIRECTIVES = frozenset(
    {"no-store", "no-transform", "must-revalidate", "proxy-revalidate", "must-understand", "public", "immutable"}
)
_SF_FIELD_LIST_DIRECTIVES = frozenset({"no-cache", "private"})

#: A parsed Structured Field value: its type ("integer", "decimal", "string", "token",
#: "byte-sequence", "boolean", "inner-list"), the value, and where its text ends.
_SFValue = tuple[str, int | str | bool, int]


def _skip(pattern: re.Pattern[str], text: str, position: int) -> int:
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
        return None if string is None else ("string", _QUOTED_PAIR.sub(r"\1", string.group(1)), string.end())
    if char == "?":
        boolean = _SF_BOOLEAN.match(text, position)
        return None if boolean is None else ("boolean", boolean.group() == "?1", boolean.end())
    pattern, kind = (_SF_BYTES, "byte-sequence") if char == ":" else (_SF_TOKEN, "token")
    found = pattern.match(text, position)
    return None if found is None else (kind, found.group(), found.end())


def _sf_parameters(text: str, position: int) -> int | None:
    """Skip RFC 8941 parameters (they are ignored in a targeted field); where they end, or ``None``."""
    while position < len(text) and text[position] == ";":
        key = _SF_KEY.match(text, _skip(_SF_SP, text, position + 1))
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
            position = _skip(_SF_SP, text, position)
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


def _sf_dictionary(text: str) -> dict[str, tuple[str, int | str | bool]] | None:
    """An RFC 8941 section 4.2.2 Dictionary (``{key: (type, value)}``), or ``None`` on a syntax error."""
    if not text.isascii():
        return None
    members: dict[str, tuple[str, int | str | bool]] = {}
    position, length = _skip(_SF_SP, text, 0), len(text)
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
        position = _skip(_SF_OWS, text, value[2])
        if position == length:
            break
        if text[position] != ",":
            return None
        position = _skip(_SF_OWS, text, position + 1)
        if position == length:
            return None  # a trailing comma
    return members


def _targeted_field(values: list[str]) -> dict[str, str | None] | None:
    """A targeted field's directives, or ``None`` if it is empty or invalid (RFC 9213 section 2.1)."""
    members = _sf_dictionary(", ".join(values))
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
    return _strict_cache_control(_values(headers, b"cache-control")), False


def _lifetime(argument: str | None) -> float:
    """A delta-seconds directive argument as a lifetime: an invalid one means stale (RFC 9111 section 4.2.1)."""
    if argument is not None and argument.startswith('"'):
        argument = argument[1:]  # recipients accept the quoted form too (RFC 9111 section 5.2)
    seconds = _delta_seconds(argument)
    return 0.0 if seconds is None else float(seconds)


def freshness_lifetime(
    headers: Headers,
    *,
    received: float,
    status: int = 200,
    shared: bool = True,
    heuristic_fraction: float = 0.0,
    directives: tuple[Mapping[str, str | None], bool] | None = None,
) -> float | None:
    """How long (seconds) a response stays fresh (RFC 9111 section 4.2.1), or ``None`` if it does not say.

    In order: ``s-maxage`` (if ``shared``), then ``max-age``, then
    ``Expires - Date`` (``Date`` absent or invalid: ``received``, the time the
    response arrived), then a heuristic. An argument that is not delta-seconds
    (``max-age=-1``, ``max-age=abc``, ``max-age=3600.0``, no argument) makes the
    lifetime 0 (stale), as RFC 9111 section 4.2.1 encourages; the quoted form
    (``max-age="3600"``) is accepted (section 5.2); values cap at 2**31; of
    repeated directives the first counts. An invalid or repeated ``Expires``
    means 0 (already expired); a past one gives 0, never a negative lifetime.

    Heuristic freshness (RFC 9111 section 4.2.2) applies only when none of these
    is present, ``heuristic_fraction`` is positive, and ``status`` is
    heuristically cacheable (:data:`~intelligent_cache.config.HEURISTIC_STATUSES`)
    or the response has ``public``: it is ``heuristic_fraction * (Date -
    Last-Modified)`` when ``Last-Modified`` is valid and earlier than ``Date``
    (or ``received``). ``None`` means no freshness information at all: the
    response is not to be reused without revalidation.

    Args:
        directives: the result of :func:`targeted_directives` for ``headers``
            if the caller has it already (computed otherwise). With a targeted
            field in force, ``Expires`` is ignored (RFC 9213 section 2.2).
    """
    control, targeted = targeted_directives(headers) if directives is None else directives
    if shared and "s-maxage" in control:
        return _lifetime(control["s-maxage"])
    if "max-age" in control:
        return _lifetime(control["max-age"])
    date: float | None = None
    if not targeted:
        expires = expires_at(headers)
        if expires is not None:
            if expires == ALREADY_EXPIRED:
                return 0.0
            date = response_date(headers)
            lifetime = expires - (received if date is None else date)
            return lifetime if lifetime > 0 else 0.0
    if not heuristic_fraction > 0 or (status not in HEURISTIC_STATUSES and "public" not in control):
        return None
    modified = last_modified(headers)
    if modified is None:
        return None
    date = response_date(headers)
    interval = (received if date is None else date) - modified
    return heuristic_fraction * interval if interval > 0 else None


def initial_age(headers: Headers, request_time: float, response_time: float) -> float:
    """The corrected initial age of a response (RFC 9111 section 4.2.3), to store with it.

    ``request_time`` is when the cache sent the request, ``response_time`` when
    the response arrived. The larger of the apparent age (``response_time -
    Date``, 0 without a valid ``Date``, never negative) and the ``Age`` the
    response carries plus the response delay. The response's current age is
    then ``initial_age + (now - response_time)`` (see :func:`current_age`).
    """
    date = response_date(headers)
    apparent_age = 0.0 if date is None else max(0.0, response_time - date)
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = (parse_age(headers) or 0) + response_delay
    return max(apparent_age, corrected_age_value)


def current_age(headers: Headers, *, request_time: float, response_time: float, now: float) -> float:
    """The current age of a stored response (RFC 9111 section 4.2.3): its initial age plus its resident time."""
    return initial_age(headers, request_time, response_time) + max(0.0, now - response_time)


# Never stored (RFC 9111 section 3.1): connection-specific fields (RFC 9110 section 7.6.1), those
# specific to the proxy the cache talks through, and what this cache writes itself on the way out.
_NEVER_STORED: Final = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authentication-info",
        b"proxy-authorization",
        b"age",
        b"x-cache",
        b"cache-status",
    }
)
# Not updated from a 304: what describes the stored bytes themselves (RFC 9111 section 3.2 names
# Content-Length; a 304 cannot change the content's coding, digest or range either) and the
# validator that selected the stored response (section 4.3.4).
_NOT_UPDATED: Final = frozenset({b"content-length", b"content-encoding", b"content-md5", b"content-range", b"etag"})


def stored_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    """The header fields of a response as a cache stores them (RFC 9111 section 3.1).

    Drops ``Connection`` and the fields it lists, the other connection-specific
    fields (``Proxy-Connection``, ``Keep-Alive``, ``TE``, ``Transfer-Encoding``,
    ``Upgrade``), the proxy-specific ones (``Proxy-Authenticate``,
    ``Proxy-Authentication-Info``, ``Proxy-Authorization``) and those this cache
    generates when it serves (``Age``, ``X-Cache``, ``Cache-Status``). Keeps
    everything else, in order, ``Set-Cookie`` and ``Date`` included.
    """
    excluded = set(_NEVER_STORED)
    for key, value in headers:
        if key == b"connection":
            excluded.update(name.strip(b" \t").lower() for name in value.split(b","))
    return [(key, value) for key, value in headers if key not in excluded]


def updated_headers(stored: Headers, not_modified: Headers) -> list[tuple[bytes, bytes]]:
    """A stored response's header fields freshened with a ``304 Not Modified`` (RFC 9111 sections 3.2, 4.3.4).

    Every field of the 304 replaces all stored lines of that name (in the place
    of the first of them; new names go last), except ``Content-Length`` and
    the fields never stored (see :func:`stored_headers`). The stored fields the
    304 does not mention are kept. ``Date`` is updated like any other field, so
    the caller recomputes the entry's age and freshness from the result (and the
    304's ``Age``).
    """
    updates: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for key, value in stored_headers(not_modified):
        if key not in _NOT_UPDATED:
            updates.setdefault(key, []).append((key, value))
    result: list[tuple[bytes, bytes]] = []
    for key, value in stored_headers(stored):
        replacement = updates.get(key)
        if replacement is None:
            result.append((key, value))
        elif replacement:
            result.extend(replacement)
            replacement.clear()  # placed once, where the first stored line was
    for replacement in updates.values():
        result.extend(replacement)
    return result


_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)", re.ASCII)


def _position(digits: str, cap: int) -> int:
    """ASCII digits as an int no larger than ``cap``, without converting thousands of digits."""
    digits = digits.lstrip("0")
    return cap if len(digits) > len(str(cap)) else min(int(digits or "0"), cap)


def parse_range(value: str, length: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """A single byte range of ``Range`` resolved against a representation of ``length`` bytes (RFC 9110 section 14).

    Returns ``(first, last)`` (inclusive, ``0 <= first <= last < length``) for
    ``bytes=first-last`` (``last`` past the end is the end), ``bytes=first-``
    or ``bytes=-suffix`` (the last ``suffix`` bytes, the whole representation
    if longer); ``"unsatisfiable"`` when the range starts at or past the end or
    is ``-0`` (answer 416 with :func:`unsatisfied_content_range`); ``None``
    when ``Range`` is to be ignored (answer 200 with the whole representation):
    another unit than ``bytes`` (case-insensitive), a malformed value (``last <
    first``, spaces inside a range, no ``=``), several ranges, or a suffix range
    of an empty representation. Empty list elements are skipped (RFC 9110 section 5.6.1).
    """
    unit, sep, range_set = value.strip(_OWS).partition("=")
    if not sep or unit.lower() != "bytes":
        return None
    specs = [spec for spec in (item.strip(_OWS) for item in range_set.split(",")) if spec]
    if len(specs) != 1:
        return None
    match = _RANGE_SPEC.fullmatch(specs[0])
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text:
            return None
        if not last_text.strip("0"):
            return "unsatisfiable"  # bytes=-0
        if length == 0:
            return None  # nothing to send but nothing wrong either: the (empty) whole
        return length - _position(last_text, length), length - 1
    first_key, last_key = first_text.lstrip("0"), last_text.lstrip("0")
    if last_text and (len(last_key), last_key) < (len(first_key), first_key):
        return None
    first = _position(first_text, length)
    if first >= length:
        return "unsatisfiable"
    last = _position(last_text, length - 1) if last_text else length - 1
    return first, last


def content_range(first: int, last: int, length: int) -> bytes:
    """The ``Content-Range`` value of a 206 for bytes ``first`` to ``last`` (inclusive) of ``length``."""
    return b"bytes %d-%d/%d" % (first, last, length)


def unsatisfied_content_range(length: int) -> bytes:
    """The ``Content-Range`` value of a 416 for a representation of ``length`` bytes."""
    return b"bytes */%d" % length


_REPRESENTATION = (b"content-type", b"content-encoding", b"content-language")


def compute_etag(status: int, headers: Headers, body: bytes) -> bytes:
    """A strong validator: a stable hash of the body and the metadata describing it.

    Identical across processes and machines (no ``hash()``, no per-process salt).
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(b"%d\n" % status)
    for name, value in headers:
        if name in _REPRESENTATION:
            digest.update(name + b":" + value + b"\n")
    digest.update(b"\n")
    digest.update(body)
    return b'"' + digest.hexdigest().encode() + b'"'


_ENTITY_TAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')


def etag_matches(if_none_match: str, etag: bytes) -> bool | None:
    """Weak comparison of ``If-None-Match`` against ``etag`` (RFC 9110 section 13.1.2).

    Returns ``None`` when the header is malformed: it is then ignored.
    """
    value = if_none_match.strip()
    if value == "*":
        return True
    opaque = etag.decode("latin-1")
    if opaque.startswith("W/"):
        opaque = opaque[2:]
    position, matched = 0, False
    while position < len(value):
        match = _ENTITY_TAG.match(value, position)
        if match is None or match.end() == position:
            return None
        if match.group(2) == opaque:
            matched = True
        position = match.end()
    return matched
