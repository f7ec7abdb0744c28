"""What may be served from the cache and what may be stored in it.

Both questions are answered with a *reason* string (``None`` meaning "yes"),
so the same value explains the decision in logs, stats and ``Cache-Status``.
"""

from collections.abc import Iterable, Sequence

from .config import CacheConfig

__all__ = ["CACHEABLE_STATUSES", "parse_cache_control", "request_bypass", "store_refusal"]

CACHEABLE_STATUSES = frozenset({200})

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def parse_cache_control(values: Iterable[str]) -> dict[str, str | None]:
    """Parse ``Cache-Control`` field values into ``{directive: argument}``.

    Directive names are lower-cased; quoted arguments are unquoted; commas
    inside quotes do not split. The first occurrence of a directive wins.
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
                    arg = arg[1:-1]
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


def _values(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in headers if key == name]


def request_bypass(headers: Sequence[tuple[bytes, bytes]], config: CacheConfig) -> str | None:
    """Why this request must neither read nor write the cache, or ``None``.

    Args:
        headers: the raw ASGI request headers (lower-case names).
        config: the route's settings.
    """
    cache_control: list[str] = []
    pragma: list[str] = []
    credentials: str | None = None
    for key, value in headers:
        if key == b"cache-control":
            cache_control.append(value.decode("latin-1"))
        elif key == b"pragma":
            pragma.append(value.decode("latin-1"))
        elif key == b"authorization" or key == b"cookie":
            credentials = credentials or key.decode()
    if cache_control:
        directives = parse_cache_control(cache_control)
        if "no-store" in directives:
            return "no-store"
        if "no-cache" in directives:
            return "no-cache"
    elif pragma and "no-cache" in parse_cache_control(pragma):
        return "no-cache"
    # Without a declared way to vary, one caller's entry could reach another.
    if credentials is not None and not config.vary_by:
        return credentials
    return None


def store_refusal(
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    body_length: int,
    max_size: int,
) -> str | None:
    """Why a computed response must not be stored, or ``None``."""
    if status not in CACHEABLE_STATUSES:
        return "status"
    if body_length > max_size:
        return "too-large"
    cache_control: list[str] = []
    for key, value in headers:
        if key == b"set-cookie":
            return "set-cookie"
        if key == b"vary":
            # Keying on response Vary is not supported yet: never store under a key that ignores it.
            return "vary"
        if key == b"cache-control":
            cache_control.append(value.decode("latin-1"))
    if cache_control:
        directives = parse_cache_control(cache_control)
        if "no-store" in directives:
            return "no-store"
        if "private" in directives:
            return "private"
    return None
