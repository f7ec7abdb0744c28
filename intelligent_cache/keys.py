"""Cache keys: readable, deterministic, collision-free.

A key reads ``[prefix:]METHOD:seg1:seg2:...:name=value:...:@vary=value``::

    GET /items?sort=name&page=1        ->  GET:items:page=1:sort=name
    GET /spaces/1/items?tag=a&tag=b   ->  GET:spaces:1:items:tag=a:tag=b

so ``GET:items:*`` matches every cached query of ``/items``. How no two
requests share a key:

- ``: = @ ~ % * ? [ ] \\ { }``, spaces and control characters inside a part are
  percent-escaped, so a separator in a key is always a separator, and keys never
  contain glob or Redis hash-tag characters that the cache did not put there.
- Path segments carry no ``=``, query parts always do, vary parts start with
  ``@``. Query parameters are ordered by name with a stable sort: ``?b=1&a=2``
  and ``?a=2&b=1`` share a key, while repeated parameters keep their relative
  order (FastAPI hands them to the endpoint as an ordered list).
- A part longer than 64 characters becomes ``~`` plus 32 hex digits of its
  SHA-256; a key longer than 448 characters keeps its leading path segments (up to eight)
  and replaces the rest by ``~r`` plus a hash; with the parts a response's
  ``Vary`` adds, no key exceeds :data:`MAX_KEY_LENGTH` (512).
"""

import hashlib
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl

__all__ = [
    "MAX_KEY_LENGTH",
    "build_key",
    "canonical_query",
    "escape",
    "extend_key",
    "glob_to_regex",
    "hierarchy",
    "path_segments",
]

MAX_PART_LENGTH = 64
MAX_KEY_LENGTH = 512
# build_key leaves room for the suffix extend_key may add.
_BASE_KEY_LENGTH = MAX_KEY_LENGTH - 64
_KEPT_SEGMENTS = 8

_ESCAPED = re.compile(r"[%:=@~*?\[\]\\{}\x00-\x20\x7f\ud800-\udfff]")


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


def path_segments(path: str) -> list[str]:
    """Escaped key parts of a path, one per segment (empty segments kept)."""
    return [_part(segment) for segment in path.split("/")[1:]]


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
) -> str:
    """Build the cache key of a request.

    Args:
        method: the request method (the cache stores GET).
        path: the decoded request path, as in ``scope["path"]``.
        query_string: the raw query string.
        vary: ``(label, value)`` pairs; ``None`` means the input was absent.
        prefix: the route's ``key_prefix``.
    """
    head = [method]
    if prefix is not None:
        head.insert(0, escape(prefix))
    segments = path_segments(path)
    rest = [f"{_part(name)}={_part(value)}" for name, value in canonical_query(query_string)]
    for label, value in vary:
        rest.append(f"@{_part(label)}" if value is None else f"@{_part(label)}={_part(value)}")
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
    tail = segments[len(kept) :] + rest
    return ":".join([*head, *kept, "~r" + _digest("/".join(tail))])


def extend_key(key: str, pairs: Iterable[tuple[str, str | None]]) -> str:
    """Append ``@name=value`` parts to a key (for response ``Vary`` headers), bounded like build_key."""
    parts = [f"@v.{_part(name)}" if value is None else f"@v.{_part(name)}={_part(value)}" for name, value in pairs]
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


def _class_char(char: str) -> str:
    return "\\" + char if char in "\\]^-[" else char


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Redis-style glob exactly as Redis matches it (``stringmatchlen``).

    ``*`` and ``?``; ``[abc]``, ``[^abc]``, ``[a-z]`` (reversed ranges swap,
    ``\\x`` escapes inside a class, an unterminated class ends with the
    pattern); ``\\x`` outside a class is a literal ``x``. Never raises.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
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
                out.append(f"[{'^' if negate else ''}{''.join(members)}]")
            else:
                out.append("." if negate else "(?!)")
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)
