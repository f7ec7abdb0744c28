"""What an RFC 9111 shared cache computes: freshness lifetime, age, stored and updated fields; byte ranges.

Pure functions over raw ASGI headers, for ``cache_config(mode="http")``
(:mod:`~intelligent_cache.httpmode`): RFC 9111 sections 3.1, 3.2, 4.2 and 4.3.4,
RFC 9110 section 14 for ranges. None raises on what an endpoint or a client
sends, and none is super-linear in it.
"""

import re
from collections.abc import Mapping
from typing import Final, Literal

from ._types import Headers
from .config import HEURISTIC_STATUSES
from .fields import (
    ALREADY_EXPIRED,
    OWS,
    delta_seconds,
    expires_at,
    last_modified,
    parse_age,
    response_date,
    targeted_directives,
)

__all__ = [
    "content_range",
    "current_age",
    "freshness_lifetime",
    "initial_age",
    "parse_range",
    "stored_headers",
    "unsatisfied_content_range",
    "updated_headers",
]


def _lifetime(argument: str | None) -> float:
    """A delta-seconds directive argument as a lifetime: an invalid one means stale (RFC 9111 section 4.2.1)."""
    if argument is not None and argument.startswith('"'):
        argument = argument[1:]  # recipients accept the quoted form too (RFC 9111 section 5.2)
    seconds = delta_seconds(argument)
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
    unit, sep, range_set = value.strip(OWS).partition("=")
    if not sep or unit.lower() != "bytes":
        return None
    specs = [spec for spec in (item.strip(OWS) for item in range_set.split(",")) if spec]
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
