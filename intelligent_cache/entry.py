"""The stored response and its versioned msgpack codec.

An entry is a msgpack array ``["icr", version, status, headers, body,
stored_at, ttl, generations, path, route, tags, vary, origin]``; headers are a list of
``[name, value]`` byte pairs exactly as the response sent them (minus
hop-by-hop fields and ``Date``). A response with ``Vary`` leaves a
``["icx", version, names]`` pointer under its primary key, and the entry
itself under a key extended by those request headers. A value stored through
:class:`~intelligent_cache.CacheService` is ``["icv", version, value]``.
Anything else, or anything truncated, decodes as :class:`CorruptEntryError`.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ._types import Header, Headers
from .exceptions import CorruptEntryError

__all__ = [
    "FORMAT_VERSION",
    "CachedResponse",
    "VaryIndex",
    "decode",
    "encode",
    "encode_value",
    "encode_vary_index",
    "storable_headers",
]

FORMAT_VERSION = 1
_RESPONSE = "icr"
_VALUE = "icv"
_VARY = "icx"

# Fields that describe one connection, not the resource (RFC 9110 section 7.6.1),
# plus Date (the server adds a fresh one) and the cache's own markers.
_NOT_STORED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"date",
        b"age",
        b"x-cache",
        b"cache-status",
    }
)


def storable_headers(raw_headers: Headers) -> tuple[Header, ...]:
    """The end-to-end headers of a response, in order, as the cache keeps them.

    Drops hop-by-hop fields: the fixed ones, every ``Proxy-*`` field, and the
    fields a ``Connection`` header nominates (RFC 9110 section 7.6.1).
    """
    kept: list[Header] = []
    nominated: set[bytes] = set()
    for name, value in raw_headers:
        lowered = name.lower()
        if lowered == b"connection":
            nominated.update(item.strip().lower().encode("latin-1") for item in value.decode("latin-1").split(","))
        elif lowered not in _NOT_STORED and not lowered.startswith(b"proxy-"):
            kept.append((name, value))
    if nominated:
        kept = [(name, value) for name, value in kept if name.lower() not in nominated]
    return tuple(kept)


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A response as the cache stores it.

    Attributes:
        status: the HTTP status code.
        headers: ``(name, value)`` byte pairs, lower-case names.
        body: the body bytes, uncompressed.
        stored_at: wall-clock time of storage (seconds since the epoch).
        ttl: seconds the entry is fresh for.
        generations: the invalidation counters seen when computing started.
        path: the request path it answers.
        route: the route's path template (``/spaces/{space_id}``).
        tags: the invalidation tags of the entry.
        vary: ``(header, value)`` pairs of the request it answered, for the
            headers its ``Vary`` names (``None`` value: header absent).
        origin: ``scheme://host`` of the request it answered.
    """

    status: int
    headers: tuple[Header, ...]
    body: bytes
    stored_at: float
    ttl: float
    generations: tuple[int, ...] = ()
    path: str = ""
    route: str = ""
    tags: tuple[str, ...] = field(default=())
    vary: tuple[tuple[str, str | None], ...] = ()
    origin: str = ""

    def age(self, now: float) -> float:
        """Seconds since storage (never negative)."""
        return max(0.0, now - self.stored_at)

    def is_fresh(self, now: float) -> bool:
        """Whether the entry may still be served as a HIT at ``now``."""
        return now - self.stored_at < self.ttl


def encode(entry: CachedResponse) -> bytes:
    """Serialize an entry to bytes."""
    return msgpack.packb(
        [
            _RESPONSE,
            FORMAT_VERSION,
            entry.status,
            [[name, value] for name, value in entry.headers],
            entry.body,
            entry.stored_at,
            entry.ttl,
            list(entry.generations),
            entry.path,
            entry.route,
            list(entry.tags),
            [[name, value] for name, value in entry.vary],
            entry.origin,
        ],
        use_bin_type=True,
    )


@dataclass(frozen=True, slots=True)
class VaryIndex:
    """Stored under a primary key: the response there varies on these request headers."""

    names: tuple[str, ...]


def encode_vary_index(index: VaryIndex) -> bytes:
    """Serialize a :class:`VaryIndex`."""
    return msgpack.packb([_VARY, FORMAT_VERSION, list(index.names)], use_bin_type=True)


def encode_value(value: Any) -> bytes:
    """Serialize a plain value (anything msgpack can carry)."""
    try:
        return msgpack.packb([_VALUE, FORMAT_VERSION, value], use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"value of type {type(value).__name__} cannot be cached: {exc}") from exc


def decode(data: bytes) -> Any:
    """Deserialize bytes into a :class:`CachedResponse` or a plain value.

    Raises:
        CorruptEntryError: the data is not an entry of a known format.
    """
    try:
        item = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CorruptEntryError("not a msgpack entry") from exc
    if not isinstance(item, list) or len(item) < 3 or type(item[1]) is not int or item[1] != FORMAT_VERSION:
        raise CorruptEntryError("unknown entry format")
    if item[0] == _VALUE and len(item) == 3:
        return item[2]
    if item[0] == _VARY and len(item) == 3:
        names = item[2]
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise CorruptEntryError("malformed vary index")
        return VaryIndex(tuple(names))
    if item[0] != _RESPONSE or len(item) != 13:
        raise CorruptEntryError("unknown entry format")
    try:
        _, _, status, headers, body, stored_at, ttl, generations, path, route, tags, vary, origin = item
        entry = CachedResponse(
            status=_int(status),
            headers=tuple((_bytes(name), _bytes(value)) for name, value in _list(headers)),
            body=_bytes(body),
            stored_at=_number(stored_at),
            ttl=_number(ttl),
            generations=tuple(_int(g) for g in _list(generations)),
            path=_str(path),
            route=_str(route),
            tags=tuple(_str(tag) for tag in _list(tags)),
            vary=tuple((_str(name), None if value is None else _str(value)) for name, value in _list(vary)),
            origin=_str(origin),
        )
    except (TypeError, ValueError) as exc:
        raise CorruptEntryError("malformed entry") from exc
    if not 100 <= entry.status <= 599 or not (math.isfinite(entry.stored_at) and math.isfinite(entry.ttl)):
        raise CorruptEntryError("malformed entry status")
    return entry


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("expected a list")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number")
    return float(value)


def _bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError("expected bytes")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value
