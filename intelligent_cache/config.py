"""Per-route cache settings: the frozen :class:`CacheConfig` and the ``@cache_config`` decorator.

The decorator only attaches metadata to the endpoint function and returns the
same function, so FastAPI still sees the original signature and the decorator
works whichever side of ``@app.get(...)`` it is written on.
"""

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from .exceptions import ConfigurationError

__all__ = ["CONFIG_ATTRIBUTE", "CacheConfig", "VarySource", "cache_config", "get_config"]

CONFIG_ATTRIBUTE = "__intelligent_cache_config__"

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True, slots=True)
class VarySource:
    """One input the cache key varies on, parsed from a ``vary_by`` item.

    ``"user_id"`` reads ``request.state.user_id``; ``"header:X-Tenant"`` reads a
    request header; ``"cookie:session"`` reads a cookie.
    """

    kind: str  # "state", "header" or "cookie"
    name: str

    @property
    def label(self) -> str:
        return self.name if self.kind == "state" else f"{self.kind}.{self.name}"

    @classmethod
    def parse(cls, spec: str) -> "VarySource":
        if not isinstance(spec, str):
            raise ConfigurationError(f"vary_by items must be strings, got {spec!r}")
        kind, sep, name = spec.partition(":")
        if not sep:
            kind, name = "state", spec
        kind = kind.strip().lower()
        name = name.strip()
        if kind not in ("state", "header", "cookie") or not _NAME.match(name):
            raise ConfigurationError(
                f"invalid vary_by item {spec!r}: use 'attribute' (request.state), 'header:Name' or 'cookie:name'"
            )
        if kind == "header":
            name = name.lower()
        return cls(kind, name)


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """What ``@cache_config`` attached to an endpoint. Immutable.

    Args:
        ttl_seconds: lifetime of a stored response; ``None`` takes the manager's
            ``default_ttl``.
        vary_by: inputs besides method, path and query that the key varies on.
        enabled: ``False`` leaves the route completely uncached.
        key_prefix: a label put in front of the route's keys.
    """

    ttl_seconds: float | None = None
    vary_by: tuple[VarySource, ...] = ()
    enabled: bool = True
    key_prefix: str | None = None

    def __post_init__(self) -> None:
        ttl = self.ttl_seconds
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, int | float):
                raise ConfigurationError(f"ttl_seconds must be a number, got {ttl!r}")
            if not math.isfinite(ttl) or ttl <= 0:
                raise ConfigurationError(f"ttl_seconds must be a positive number, got {ttl!r}")
        prefix = self.key_prefix
        if prefix is not None:
            if not isinstance(prefix, str) or not prefix or len(prefix) > 64:
                raise ConfigurationError("key_prefix must be a non-empty string of at most 64 characters")
            # Cached keys start with "GET:", so a prefix spelled GET could collide with a path.
            if prefix.upper() == "GET" or prefix.startswith("~"):
                raise ConfigurationError(f"key_prefix {prefix!r} is reserved")


@overload
def cache_config(func: F, /) -> F: ...


@overload
def cache_config(
    *,
    ttl_seconds: float | None = None,
    vary_by: Iterable[str] | None = None,
    enabled: bool = True,
    key_prefix: str | None = None,
) -> Callable[[F], F]: ...


def cache_config(
    func: F | None = None,
    /,
    *,
    ttl_seconds: float | None = None,
    vary_by: Iterable[str] | None = None,
    enabled: bool = True,
    key_prefix: str | None = None,
) -> F | Callable[[F], F]:
    """Mark an endpoint as cacheable and say how.

    Returns the function itself (no wrapper), so it can sit above or below the
    FastAPI route decorator. Usable bare (``@cache_config``) or with options::

        @router.get("/items")
        @cache_config(ttl_seconds=300, vary_by=["user_id"])
        async def list_items(page: int = 1): ...

    Args:
        ttl_seconds: seconds a stored response stays fresh (default: the
            manager's ``default_ttl``).
        vary_by: extra key inputs: ``"user_id"`` reads ``request.state.user_id``,
            ``"header:X-Tenant"`` a header, ``"cookie:session"`` a cookie.
            Declaring it also lets requests with ``Authorization`` or ``Cookie``
            use the cache, each caller under its own key.
        enabled: ``False`` switches caching off for this route.
        key_prefix: label prepended to this route's keys (``"catalog"`` gives
            ``catalog:GET:items:...``).

    Raises:
        ConfigurationError: an option is invalid.
    """
    if isinstance(vary_by, str):
        raise ConfigurationError("vary_by takes a list of names, not a single string")
    sources = tuple(VarySource.parse(spec) for spec in (vary_by or ()))
    labels = [source.label for source in sources]
    if len(set(labels)) != len(labels):
        raise ConfigurationError(f"vary_by lists a source twice: {labels}")
    config = CacheConfig(
        ttl_seconds=ttl_seconds,
        vary_by=sources,
        enabled=bool(enabled),
        key_prefix=key_prefix,
    )

    def decorate(endpoint: F) -> F:
        if not callable(endpoint):
            raise ConfigurationError("@cache_config decorates an endpoint function")
        setattr(endpoint, CONFIG_ATTRIBUTE, config)
        return endpoint

    if func is not None:
        return decorate(func)
    return decorate


def get_config(endpoint: Callable[..., Any]) -> CacheConfig | None:
    """The :class:`CacheConfig` attached to ``endpoint``, or ``None``."""
    config = getattr(endpoint, CONFIG_ATTRIBUTE, None)
    return config if isinstance(config, CacheConfig) else None
