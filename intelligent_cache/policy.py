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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from ._types import Headers
from .fields import delta_seconds, field_values, parse_http_date

__all__ = [
    "SAFE_METHODS",
    "RequestDirectives",
    "compute_etag",
    "etag_matches",
    "forbids_stale",
    "must_revalidate",
    "parse_cache_control",
    "response_ttl",
    "response_vary",
    "shareable_with_credentials",
    "store_refusal",
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
                max_age = delta_seconds(directives["max-age"])
                if max_age == 0:
                    result.revalidate = True
                result.max_age = max_age
            if "min-fresh" in directives:
                result.min_fresh = delta_seconds(directives["min-fresh"])
            if "max-stale" in directives:
                argument = directives["max-stale"]
                result.max_stale = math.inf if argument is None else delta_seconds(argument)
        elif pragma and "no-cache" in parse_cache_control(pragma):
            result.revalidate = True
        return result


def response_vary(headers: Headers) -> tuple[str, ...] | None:
    """The request header names a response varies on, sorted; ``None`` for ``Vary: *``."""
    names: set[str] = set()
    for value in field_values(headers, b"vary"):
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
    values = field_values(headers, b"cache-control")
    return bool(values) and _shareable(parse_cache_control(values))


def forbids_stale(headers: Headers) -> bool:
    """Whether a stored response must not be served stale (RFC 9111 section 4.2.4)."""
    values = field_values(headers, b"cache-control")
    if not values:
        return False
    directives = parse_cache_control(values)
    return any(name in directives for name in ("must-revalidate", "proxy-revalidate", "no-cache", "s-maxage"))


def must_revalidate(headers: Headers) -> bool:
    """Whether a stored response demands revalidation (a failing origin then gives 504)."""
    values = field_values(headers, b"cache-control")
    return bool(values) and "must-revalidate" in parse_cache_control(values)


def response_ttl(headers: Headers) -> float | None:
    """The freshness lifetime a response gives itself, s-maxage > max-age > Expires - Date.

    Returns ``None`` when the response says nothing about it, ``0.0`` when what
    it says is zero or invalid ("not reusable").
    """
    values = field_values(headers, b"cache-control")
    if values:
        directives = parse_cache_control(values)
        for name in ("s-maxage", "max-age"):
            if name in directives:
                seconds = delta_seconds(directives[name])
                return float(seconds) if seconds else 0.0
    expires = field_values(headers, b"expires")
    if expires:
        expires_at = parse_http_date(expires[0])
        dates = field_values(headers, b"date")
        base = parse_http_date(dates[0]) if dates else time.time()
        if expires_at is None or base is None:
            return 0.0  # an invalid Expires means "already expired" (RFC 9111 section 5.3)
        lifetime = expires_at - base
        return lifetime if math.isfinite(lifetime) and lifetime > 0 else 0.0
    return None


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
