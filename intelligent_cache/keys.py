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
  with ``/`` gets a ``~n`` part before its segments.

A sensitive value keys the same under the same ``secret`` and differently
under another, so every process sharing a backend needs the same secret to
share entries; :func:`looks_secret` tells names that conventionally carry
credentials. :func:`compile_glob` (formerly :func:`glob_to_regex`) matches
keys against Redis globs in at most ``len(pattern) * len(key)`` steps.
"""

import functools
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable, Collection, Iterable
from urllib.parse import parse_qsl

from .exceptions import ConfigurationError

__all__ = [
    "CREDENTIAL_HEADERS",
    "MAX_KEY_LENGTH",
    "GlobPattern",
    "build_key",
    "canonical_query",
    "compile_glob",
    "escape",
    "extend_key",
    "glob_to_regex",
    "hierarchy",
    "looks_secret",
    "path_segments",
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

Encoder = Callable[[str, str], str]


def looks_secret(name: str) -> bool:
    """Whether a header, query parameter or cookie name conventionally carries a credential.

    Case-insensitive and generous (``api_key``, ``X-Auth-Token``, ``PHPSESSID``,
    ``X-Amz-Signature``, ``password``...): a false positive only hides a value
    in the key, a false negative writes a credential into it. ``page``,
    ``sort``, ``lang``, ``q`` and ``limit`` are not secret.
    """
    folded = unicodedata.normalize("NFKC", name).casefold()
    return folded in CREDENTIAL_HEADERS or any(word in folded for word in _SECRET_WORDS)


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
    pairs = parse_qsl(query_string, keep_blank_values=True)
    pairs.sort(key=lambda pair: pair[0])
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

    Raises:
        ConfigurationError: (a ``ValueError``) ``sensitive`` is not empty and
            ``secret`` is ``None``, or ``sensitive`` is a single string.
    """
    encode = _value_encoder(secret, sensitive)
    head = [_head_part(method)]
    if prefix is not None:
        head.insert(0, _head_part(prefix))
    segments = path_segments(path)
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


# -- globs -----------------------------------------------------------------------------------------------


def _class_char(char: str) -> str:
    # Escape all but ASCII letters and digits: also "&&", "||", "~~" and "--", which Python may
    # one day read as set operations (and warns about today).
    return char if char.isascii() and char.isalnum() else "\\" + char


def _glob_tokens(pattern: str) -> list[str | None]:
    """The pattern as ``None`` (a star) or the regex of one character, following ``stringmatchlen``."""
    tokens: list[str | None] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            tokens.append(None)
        elif char == "?":
            tokens.append(".")
        elif char == "\\" and i + 1 < n:
            i += 1
            tokens.append(re.escape(pattern[i]))
        elif char == "[":
            i += 1
            negate = i < n and pattern[i] == "^"
            if negate:
                i += 1
            members: list[str] = []
            while i < n and pattern[i] != "]":
                if pattern[i] == "\\" and i + 1 < n:
                    members.append(_class_char(pattern[i + 1]))
                    i += 2
                elif i + 2 < n and pattern[i + 1] == "-":
                    low, high = sorted((pattern[i], pattern[i + 2]))
                    members.append(f"{_class_char(low)}-{_class_char(high)}")
                    i += 3
                else:
                    members.append(_class_char(pattern[i]))
                    i += 1
            if members:
                tokens.append(f"[{'^' if negate else ''}{''.join(members)}]")
            else:
                tokens.append("." if negate else "(?!)")  # "[^]" is any character, "[]" none
        else:
            tokens.append(re.escape(char))
        i += 1
    return tokens


def _segment(tokens: list[str]) -> tuple[re.Pattern[str], int]:
    # One character per token, no quantifier: a match attempt is at most len(tokens) steps.
    return re.compile("".join(tokens), re.DOTALL), len(tokens)


class GlobPattern:
    """A Redis-style glob compiled for matching in polynomial time.

    The pattern is cut at its stars into segments of one-character tokens
    (literal, ``?``, class), each a fixed length: the first must match at the
    start, the last at the end, and the ones between are found leftmost-first
    in order, which is optimal since a star absorbs any gap. ``fullmatch``
    therefore costs at most ``len(pattern) * len(text)`` steps, where a
    backtracking regex for ``*a*a*a*a*b`` is exponential.
    """

    __slots__ = ("_exact", "_head", "_middle", "_min_length", "_tail", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        segments: list[list[str]] = [[]]
        for token in _glob_tokens(pattern):
            if token is None:
                segments.append([])
            else:
                segments[-1].append(token)
        self._min_length = sum(len(segment) for segment in segments)
        self._head = _segment(segments[0])
        self._exact = self._head[0] if len(segments) == 1 else None
        self._tail = self._head if len(segments) == 1 else _segment(segments[-1])
        self._middle = [_segment(segment) for segment in segments[1:-1] if segment]

    def fullmatch(self, text: str) -> bool:
        """Whether the whole of ``text`` matches the glob."""
        if len(text) < self._min_length:
            return False
        if self._exact is not None:
            return self._exact.fullmatch(text) is not None
        (head, head_length), (tail, tail_length) = self._head, self._tail
        end = len(text) - tail_length
        if head_length and head.match(text) is None:
            return False
        if tail_length and tail.match(text, end) is None:
            return False
        start = head_length
        for regex, _length in self._middle:
            found = regex.search(text, start, end)
            if found is None:
                return False
            start = found.end()
        return True

    def __repr__(self) -> str:
        return f"GlobPattern({self.pattern!r})"


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: str) -> GlobPattern:
    """Compile a Redis-style glob exactly as Redis matches it (``stringmatchlen``).

    ``*`` and ``?``; ``[abc]``, ``[^abc]``, ``[a-z]`` (reversed ranges swap,
    ``\\x`` escapes inside a class, an unterminated class ends with the
    pattern); ``\\x`` outside a class is a literal ``x``. Never raises, and
    matching takes polynomial time whatever the pattern (see :class:`GlobPattern`).
    """
    return GlobPattern(pattern)


def glob_to_regex(pattern: str) -> GlobPattern:
    """:func:`compile_glob` under its former name: the result has ``fullmatch(text)``, like a regex."""
    return compile_glob(pattern)
