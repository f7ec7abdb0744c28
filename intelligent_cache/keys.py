"""Cache keys: readable, deterministic, injective and bounded; and the globs that select them.

A key reads ``[prefix:]METHOD:seg1:seg2:...:name=value:...:@vary=value``::

    GET /items?sort=name&page=1        ->  GET:items:page=1:sort=name
    GET /spaces/1/items?tag=a&tag=b   ->  GET:spaces:1:items:tag=a:tag=b

so ``GET:items:*`` matches every cached query of ``/items``.

What :func:`build_key` guarantees, for inputs of any length:

- Two calls give the same key if and only if they have the same method,
  prefix, decoded path (``scope["path"]``), canonical query (what
  :func:`canonical_query` gives: ``parse_qsl`` decoding, stable sort by name,
  so repeated parameters keep their relative order) and vary pairs (label,
  value or ``None``, in order), for a given ``secret`` and ``sensitive``. Two
  caveats: hashed parts are compared through 128 bits of SHA-256 (or
  HMAC-SHA-256), so "different" holds up to a hash collision; and a prefix
  must not be spelled like a method, as ``x:GET:a`` is prefix ``x`` with
  method ``GET`` or method ``x`` with path ``/GET/a`` (the cache only keys
  ``GET``, and ``key_prefix`` rejects ``"GET"``).
- A key is at most 448 characters, and :func:`extend_key` keeps it within
  :data:`MAX_KEY_LENGTH` (512); ``extend_key(build_key(...), pairs)`` is as
  injective in ``pairs`` (name, value or ``None``, in order) and never equals
  a key :func:`build_key` makes, unless ``pairs`` is empty.
- A key never starts with ``~`` (the cache's counters and locks do) and never
  contains glob or Redis hash-tag characters (``* ? [ ] { }``).
- The value of a ``sensitive`` query parameter or vary pair never appears in
  the key, in any form but a keyed digest.

How:

- Every literal part is percent-escaped (``: = @ ~ % * ? [ ] \\ { }``, spaces,
  control characters, lone surrogates), so ``:`` always separates parts and a
  literal part never contains ``~``. Path segments carry no ``=``, query parts
  always do (``?a`` reads ``a=``, as ``parse_qsl`` gives it an empty value),
  vary parts start with ``@`` (an absent value is ``@label``, an empty one
  ``@label=``), :func:`extend_key` parts with ``@v.`` (so a vary label that
  starts with ``v.`` is written ``v%2E...``).
- What the cache makes rather than copies carries a ``~``: a part longer than
  64 characters becomes ``~`` and 32 hex digits of the SHA-256 of its text; a
  sensitive value ``~h`` and 32 hex digits of its HMAC-SHA-256 under
  ``secret``; past 448 characters, the parts after the head and the leading
  path segments that fit (up to eight, so path patterns still match) become
  ``~r`` and a hash of those parts joined by ``:``, which no part contains;
  :func:`extend_key` past 512 characters appends ``~v`` and a hash of its
  parts; a method or prefix longer than 64 characters becomes ``h~`` and a
  hash, since a key may not start with ``~``; a path that does not start
  with ``/`` gets a ``~n`` part before its segments; a query keyed byte for
  byte (``exact_query``) is one ``~q`` part.

A sensitive value keys the same under the same ``secret`` and differently
under another, so every process sharing a backend needs the same secret to
share entries; :func:`looks_secret` tells names that conventionally carry
credentials.

Every other name the cache writes into a namespace is internal and starts
with ``~`` (:data:`INTERNAL_PREFIX`), which no entry key can: the counters
(``~g:``), locks (``~l:``), hit counts (``~hits:``), the shared stats hash, the key secret, the ping
probe and the invalidation channel are all spelled here, and so is the rule
that puts an entry and its counters in one Redis Cluster slot
(:func:`slot_tag`).
"""

import functools
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable, Collection, Iterable
from operator import itemgetter
from urllib.parse import parse_qsl, unquote_plus

from .exceptions import ConfigurationError

# Formerly defined here (custom backends imported them): re-exported, import them from globs.
from .globs import GlobPattern as GlobPattern
from .globs import compile_glob as compile_glob
from .globs import glob_to_regex as glob_to_regex

__all__ = [
    "CREDENTIAL_HEADERS",
    "INTERNAL_PREFIX",
    "INVALIDATION_CHANNEL",
    "MAX_KEY_LENGTH",
    "NAMESPACE_PREFIXES",
    "PING_KEY",
    "SECRET_KEY",
    "STATS_KEY",
    "build_key",
    "canonical_query",
    "counter_name",
    "escape",
    "extend_key",
    "fill_lock_name",
    "hierarchy",
    "hits_name",
    "is_internal",
    "looks_secret",
    "path_segments",
    "refresh_lock_name",
    "slot_tag",
    "tag_counter_name",
]

MAX_PART_LENGTH = 64
MAX_KEY_LENGTH = 512
# build_key leaves room for the suffix extend_key may add.
_BASE_KEY_LENGTH = MAX_KEY_LENGTH - 64
_KEPT_SEGMENTS = 8

CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})

_ESCAPED = re.compile(r"[%:=@~*?\[\]\\{}\x00-\x20\x7f\ud800-\udfff]")

# Substrings of header, query and cookie names that conventionally carry credentials.
_SECRET_WORDS = (
    "token",
    "auth",
    "key",
    "secret",
    "sess",  # session
    "pass",  # passw(ord), passphrase, passcode
    "pwd",
    "sig",  # signature
    "cred",  # credential
    "jwt",
    "sid",
    "csrf",
    "xsrf",
    "bearer",
    "cert",
    "nonce",
    "otp",
    "mfa",
    "hmac",
    "saml",
    "ticket",
    "code",
    "login",
    "remember",
    "sso",
)

_SECRET_WORD = re.compile("|".join(map(re.escape, _SECRET_WORDS)))

Encoder = Callable[[str, str], str]
_name_of = itemgetter(0)


def looks_secret(name: str) -> bool:
    """Whether a header, query parameter or cookie name conventionally carries a credential.

    Case-insensitive and generous (``api_key``, ``X-Auth-Token``, ``PHPSESSID``,
    ``X-Amz-Signature``, ``password``...): a false positive only hides a value
    in the key, a false negative writes a credential into it. ``page``,
    ``sort``, ``lang``, ``q`` and ``limit`` are not secret.
    """
    # Names come from clients: only short ones are memoized, so the memo stays small.
    return _judge_name(name) if len(name) > MEMOIZED_NAME_LENGTH else _judged_name(name)


# Names longer than this are judged every time rather than memoized.
MEMOIZED_NAME_LENGTH = 64


def _judge_name(name: str) -> bool:
    folded = unicodedata.normalize("NFKC", name).casefold()
    return folded in CREDENTIAL_HEADERS or _SECRET_WORD.search(folded) is not None


_judged_name = functools.lru_cache(maxsize=4096)(_judge_name)


def _escape_char(match: re.Match[str]) -> str:
    return f"%{ord(match.group()):02X}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def escape(text: str) -> str:
    """Percent-escape the characters that have a meaning inside keys."""
    return _ESCAPED.sub(_escape_char, text)


def _part(text: str) -> str:
    escaped = _ESCAPED.sub(_escape_char, text)
    if len(escaped) > MAX_PART_LENGTH:
        return "~" + _digest(text)
    return escaped


def _head_part(text: str) -> str:
    escaped = _ESCAPED.sub(_escape_char, text)
    if len(escaped) > MAX_PART_LENGTH:
        return "h~" + _digest(text)  # not "~...": a key never starts with "~"
    return escaped


def _vary_label(label: str) -> str:
    escaped = _ESCAPED.sub(_escape_char, label)
    if escaped.startswith("v."):
        escaped = "v%2E" + escaped[2:]  # "@v." starts the parts extend_key adds
    if len(escaped) > MAX_PART_LENGTH:
        return "~" + _digest(label)
    return escaped


def _value_encoder(secret: bytes | None, sensitive: Collection[str]) -> Encoder:
    """``encode(name, value)``: the key part of a value, a keyed digest when ``name`` is sensitive."""
    try:
        return _memoized_encoder(secret, sensitive)  # type: ignore[arg-type]  # TypeError if unhashable
    except TypeError:  # an unhashable collection: built for this call
        return _make_encoder(secret, sensitive)


def _make_encoder(secret: bytes | None, sensitive: Collection[str]) -> Encoder:
    if isinstance(sensitive, str):
        raise ConfigurationError("sensitive takes a collection of names, not a single string")
    if not sensitive:
        return lambda name, value: _part(value)
    if secret is None:
        raise ConfigurationError("sensitive names need a secret to digest their values")
    key = secret
    # The collection's own membership (it may hold more than it lists), and its names in any case.
    listed = frozenset(name.lower() for name in sensitive)

    def encode(name: str, value: str) -> str:
        if name not in sensitive and name.lower() not in listed:
            return _part(value)
        mac = hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return "~h" + mac.hexdigest()[:32]

    return encode


# A route keys every request with the same secret and names: built once per pair.
_memoized_encoder = functools.lru_cache(maxsize=256)(_make_encoder)


def _exact_query(raw: str, encode: Encoder) -> str:
    """The raw query escaped, or the keyed digest of all of it if one of its names is sensitive."""
    for part in raw.split("&"):
        name = unquote_plus(part.partition("=")[0])
        if encode(name, "").startswith("~h"):  # the encoder digests this name's values
            return encode(name, raw)
    return _part(raw)


def path_segments(path: str) -> list[str]:
    """Escaped key parts of a path, one per segment (empty segments kept).

    A path that does not start with ``/`` (never a routed request) gets a
    ``~n`` part first, so that ``a/b`` and ``/b`` differ.
    """
    segments = path.split("/")
    if segments[0]:
        return ["~n", *(_part(segment) for segment in segments)]
    return [_part(segment) for segment in segments[1:]]


def canonical_query(query_string: bytes | str) -> list[tuple[str, str]]:
    """The query as the endpoint sees it, ordered by name (stable)."""
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    if not query_string:
        return []
    if "%" in query_string or "+" in query_string:
        pairs = parse_qsl(query_string, keep_blank_values=True)
    else:  # nothing to decode: what parse_qsl gives, without its per-part unquoting
        pairs = [(name, value) for name, _, value in (part.partition("=") for part in query_string.split("&") if part)]
    pairs.sort(key=_name_of)
    return pairs


def build_key(
    method: str,
    path: str,
    query_string: bytes | str = b"",
    vary: Iterable[tuple[str, str | None]] = (),
    prefix: str | None = None,
    *,
    secret: bytes | None = None,
    sensitive: Collection[str] = (),
    exact_query: bool = False,
) -> str:
    """Build the cache key of a request (see the module docstring for its guarantees).

    Args:
        method: the request method (the cache stores GET).
        path: the decoded request path, as in ``scope["path"]``.
        query_string: the raw query string.
        vary: ``(label, value)`` pairs; ``None`` means the input was absent.
        prefix: the route's ``key_prefix``.
        secret: the HMAC key for the values of ``sensitive`` names.
        sensitive: vary labels (``"header.authorization"``) and query
            parameter names (``"api_key"``) whose values the key carries as
            ``~h`` and a keyed digest: a name is sensitive if it is ``in``
            the collection, or if the collection lists it in another case.
        exact_query: key the query string byte for byte (one ``~q`` part) instead
            of as the endpoint reads it: what a proxy forwards is the target as
            sent. If any of its names is sensitive, the part is a keyed digest
            of the whole query.

    Raises:
        ConfigurationError: (a ``ValueError``) ``sensitive`` is not empty and
            ``secret`` is ``None``, or ``sensitive`` is a single string.
    """
    encode = _value_encoder(secret, sensitive)
    head = [_head_part(method)]
    if prefix is not None:
        head.insert(0, _head_part(prefix))
    segments = path_segments(path)
    if exact_query:
        raw = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
        rest = ["~q" + _exact_query(raw, encode)] if raw else []
    else:
        rest = [f"{_part(name)}={encode(name, value)}" for name, value in canonical_query(query_string)]
    for label, value in vary:
        part = "@" + _vary_label(label)
        rest.append(part if value is None else f"{part}={encode(label, value)}")
    key = ":".join([*head, *segments, *rest])
    if len(key) <= _BASE_KEY_LENGTH:
        return key
    # Keep as many leading segments as fit (at most eight) so path patterns still match.
    kept: list[str] = []
    length = len(":".join(head)) + 35
    for segment in segments[:_KEPT_SEGMENTS]:
        if length + len(segment) + 1 > _BASE_KEY_LENGTH:
            break
        kept.append(segment)
        length += len(segment) + 1
    # No part contains ":", so joining with it keeps the tail's parts apart.
    tail = segments[len(kept) :] + rest
    return ":".join([*head, *kept, "~r" + _digest(":".join(tail))])


def extend_key(
    key: str,
    pairs: Iterable[tuple[str, str | None]],
    *,
    secret: bytes | None = None,
    sensitive: Collection[str] = (),
) -> str:
    """Append ``@v.name=value`` parts to a key (for response ``Vary`` headers), bounded by MAX_KEY_LENGTH.

    Args:
        key: a key :func:`build_key` made.
        pairs: ``(request header name, value)``; ``None`` means the header was absent.
        secret: the HMAC key for the values of ``sensitive`` headers.
        sensitive: header names (``"authorization"``, ``"cookie"``) whose
            values the key carries as a keyed digest, matched as in :func:`build_key`.

    Raises:
        ConfigurationError: (a ``ValueError``) ``sensitive`` is not empty and
            ``secret`` is ``None``, or ``sensitive`` is a single string.
    """
    encode = _value_encoder(secret, sensitive)
    parts = [
        f"@v.{_part(name)}" if value is None else f"@v.{_part(name)}={encode(name, value)}" for name, value in pairs
    ]
    extended = ":".join([key, *parts])
    if len(extended) <= MAX_KEY_LENGTH:
        return extended
    return f"{key}:~v{_digest(':'.join(parts))}"


def hierarchy(path: str, max_depth: int = 16) -> list[str]:
    """Escaped non-empty segments of a path, for invalidation.

    Empty segments are dropped (``/items/`` and ``/items`` are one node) and a
    path deeper than ``max_depth`` folds its tail into one hashed segment.
    """
    segments = [_part(segment) for segment in path.split("/") if segment]
    if len(segments) > max_depth:
        segments = [*segments[: max_depth - 1], "~" + _digest(":".join(segments[max_depth - 1 :]))]
    return segments


# -- internal names ------------------------------------------------------------------------------------

INTERNAL_PREFIX = "~"
STATS_KEY = "~s:stats"
SECRET_KEY = "~k:secret"
PING_KEY = "~ping"
INVALIDATION_CHANNEL = "~invalidations"
# Keys of the namespace itself, not of its entries: clears keep them.
NAMESPACE_PREFIXES = ("~s:", "~k:")
_COUNTER = "~g:"
_TAG_COUNTER = _COUNTER + "t:"
_HITS = "~hits:"
_SECRET_HEAD = SECRET_KEY.split(":", 1)[0]


def is_internal(key: str) -> bool:
    """Whether ``key`` is one of the cache's own names rather than an entry or a stored value."""
    return key.startswith(INTERNAL_PREFIX)


def counter_name(kind: str, segments: Iterable[str]) -> str:
    """The invalidation counter of kind ``kind`` (``s`` subtree, ``n`` node) for escaped ``segments``."""
    return f"{_COUNTER}{kind}" + "".join(f":{segment}" for segment in segments)


def tag_counter_name(tag: str) -> str:
    """The invalidation counter of ``tag`` (a tag longer than 64 escaped characters is hashed)."""
    return _TAG_COUNTER + _part(tag)


def fill_lock_name(key: str, generations: Iterable[int]) -> str:
    """The cross-process lock of one computation of ``key`` at the counters ``generations``.

    The counters are part of the name, so a request that follows a write never
    waits behind a computation that started before it.
    """
    digest = hashlib.blake2b(",".join(map(str, generations)).encode(), digest_size=8).hexdigest()
    return f"~l:f:{key}:{digest}"


def hits_name(key: str) -> str:
    """Where a shared backend keeps the number of answers from ``key``'s entry (it expires with the entry)."""
    return _HITS + key


def refresh_lock_name(key: str) -> str:
    """The cross-process lock of the background refresh of ``key``."""
    return f"~l:r:{key}"


def slot_tag(key: str) -> str | None:
    """The Redis Cluster hash tag that keeps an entry and its path counters in one slot.

    It is the first path segment: ``GET:spaces:1:items`` and ``~g:s:spaces:1``
    both map to ``spaces`` (the root path maps to ``/``). Tag counters get
    ``t:<tag>``; the namespace's secret gets ``k:secret``, a slot of its own
    that depends on nothing but the prefix; an entry's hit count gets the
    entry's; other keys (locks, manual values, the stats hash) get none.
    """
    if key.startswith(_HITS):
        return slot_tag(key[len(_HITS) :])
    parts = key.split(":", 3)
    tag: str | None = None
    if parts[0] == _SECRET_HEAD:
        tag = key[1:]
    elif key.startswith(_TAG_COUNTER):
        tag = key[len(_COUNTER) :]
    elif key.startswith(_COUNTER):
        tag = (parts[2] if len(parts) > 2 else "") or "/"
    elif parts[0] == "GET":
        tag = (parts[1] if len(parts) > 1 else "") or "/"
    elif len(parts) > 2 and parts[1] == "GET":
        tag = parts[2] or "/"
    # Keys the cache builds escape braces; a hand-made key with braces keeps its own hashing.
    if tag is None or "{" in tag or "}" in tag:
        return None
    return tag
