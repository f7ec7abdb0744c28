"""Per-route cache settings: the frozen :class:`CacheConfig` and the ``@cache_config`` decorator.

The decorator only attaches metadata to the endpoint function and returns the
same function, so FastAPI still sees the original signature and the decorator
works whichever side of ``@app.get(...)`` it is written on.
"""

import datetime
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

from .exceptions import ConfigurationError

__all__ = [
    "CONFIG_ATTRIBUTE",
    "HEURISTIC_STATUSES",
    "INVALIDATION_ATTRIBUTE",
    "CacheConfig",
    "InvalidationConfig",
    "Mode",
    "Seconds",
    "VarySource",
    "as_seconds",
    "cache_config",
    "get_config",
    "get_invalidation",
    "invalidates",
]

CONFIG_ATTRIBUTE = "__intelligent_cache_config__"
INVALIDATION_ATTRIBUTE = "__intelligent_cache_invalidates__"

# Statuses RFC 9110 section 15.1 calls heuristically cacheable: a route may opt into these.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})

_TEMPLATE_FIELD = re.compile(r"{([^{}]*)}")
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

F = TypeVar("F", bound=Callable[..., Any])

#: A duration: seconds, or a :class:`datetime.timedelta`.
Seconds = float | datetime.timedelta


def as_seconds(value: Any) -> Any:
    """``value`` in seconds if it is a :class:`datetime.timedelta`, else unchanged (validated by the caller)."""
    return value.total_seconds() if isinstance(value, datetime.timedelta) else value


#: Where a vary source reads its value: ``request.state``, a header or a cookie.
VaryKind = Literal["state", "header", "cookie"]
#: How a route's freshness is decided: by the route (``app``) or by the response, as RFC 9111 says (``http``).
Mode = Literal["app", "http"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True, slots=True)
class VarySource:
    """One input the cache key varies on, parsed from a ``vary_by`` item.

    ``"user_id"`` reads ``request.state.user_id``; ``"header:X-Tenant"`` reads a
    request header; ``"cookie:session"`` reads a cookie.
    """

    kind: "VaryKind"
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
            return cls("header", name.lower())
        return cls("cookie" if kind == "cookie" else "state", name)


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """What ``@cache_config`` attached to an endpoint. Immutable.

    See :func:`cache_config` for the meaning of each field.
    """

    ttl_seconds: float | None = None
    vary_by: tuple[VarySource, ...] = ()
    enabled: bool = True
    key_prefix: str | None = None
    tags: tuple[str, ...] = ()
    public: bool = False
    stale_while_revalidate: float = 0
    stale_if_error: float = 0
    ttl_from_headers: bool = False
    skip_dependencies_on_hit: bool = False
    cacheable_statuses: frozenset[int] = frozenset({200})
    mode: "Mode" = "app"
    heuristic_freshness: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("app", "http"):
            raise ConfigurationError(f"mode must be 'app' or 'http', got {self.mode!r}")
        _check_seconds("heuristic_freshness", self.heuristic_freshness, allow_zero=True)
        if self.heuristic_freshness > 1:
            raise ConfigurationError(
                f"heuristic_freshness is a fraction of at most 1, got {self.heuristic_freshness!r}"
            )
        if self.heuristic_freshness and self.mode != "http":
            raise ConfigurationError("heuristic_freshness only applies with mode='http'")
        if self.ttl_seconds is not None:
            _check_seconds("ttl_seconds", self.ttl_seconds, allow_zero=False)
        _check_seconds("stale_while_revalidate", self.stale_while_revalidate, allow_zero=True)
        _check_seconds("stale_if_error", self.stale_if_error, allow_zero=True)
        unknown = set(self.cacheable_statuses) - HEURISTIC_STATUSES
        if unknown or not self.cacheable_statuses:
            raise ConfigurationError(
                f"cacheable_statuses must be a non-empty subset of {sorted(HEURISTIC_STATUSES)}, got {sorted(unknown)}"
            )
        for tag in self.tags:
            _check_template("tag", tag)
        prefix = self.key_prefix
        if prefix is not None:
            if not isinstance(prefix, str) or not _KEY_PREFIX.match(prefix):
                raise ConfigurationError(
                    "key_prefix must be 1 to 64 characters among letters, digits, '_', '.' and '-'"
                )
            # Cached keys start with "GET:", so a prefix spelled GET could collide with a path.
            if prefix == "GET":
                raise ConfigurationError(f"key_prefix {prefix!r} is reserved")


def _check_seconds(name: str, value: object, *, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigurationError(
            f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}"
        )


def _check_template(kind: str, template: object) -> None:
    if not isinstance(template, str) or not template or len(template) > 256:
        raise ConfigurationError(f"a {kind} is a non-empty string of at most 256 characters, got {template!r}")
    try:
        template.format_map(dict.fromkeys(template_fields(template), ""))
    except (ValueError, IndexError, KeyError) as exc:
        raise ConfigurationError(f"invalid {kind} template {template!r}: {exc}") from exc


def template_fields(template: str) -> list[str]:
    """The ``{name}`` placeholders of a tag or path template."""
    fields = _TEMPLATE_FIELD.findall(template)
    for name in fields:
        if not name.isidentifier():
            raise ConfigurationError(f"placeholder {{{name}}} in {template!r} is not a path parameter name")
    return fields


@overload
def cache_config(func: F, /) -> F: ...


@overload
def cache_config(
    *,
    ttl_seconds: Seconds | None = None,
    vary_by: Iterable[str] | None = None,
    enabled: bool = True,
    key_prefix: str | None = None,
    tags: Iterable[str] = (),
    public: bool = False,
    stale_while_revalidate: Seconds = 0,
    stale_if_error: Seconds = 0,
    ttl_from_headers: bool = False,
    skip_dependencies_on_hit: bool = False,
    cacheable_statuses: Iterable[int] | None = None,
    mode: "Mode" = "app",
    heuristic_freshness: float = 0.0,
) -> Callable[[F], F]: ...


def cache_config(
    func: F | None = None,
    /,
    *,
    ttl_seconds: Seconds | None = None,
    vary_by: Iterable[str] | None = None,
    enabled: bool = True,
    key_prefix: str | None = None,
    tags: Iterable[str] = (),
    public: bool = False,
    stale_while_revalidate: Seconds = 0,
    stale_if_error: Seconds = 0,
    ttl_from_headers: bool = False,
    skip_dependencies_on_hit: bool = False,
    cacheable_statuses: Iterable[int] | None = None,
    mode: "Mode" = "app",
    heuristic_freshness: float = 0.0,
) -> F | Callable[[F], F]:
    """Mark an endpoint as cacheable and say how.

    Returns the function itself (no wrapper), so it can sit above or below the
    FastAPI route decorator. Usable bare (``@cache_config``) or with options::

        @router.get("/items")
        @cache_config(ttl_seconds=300, vary_by=["user_id"])
        async def list_items(page: int = 1): ...

    Args:
        ttl_seconds: seconds a stored response stays fresh (default: the
            manager's ``default_ttl``). Every duration here may also be a
            :class:`datetime.timedelta`.
        vary_by: extra key inputs: ``"user_id"`` reads ``request.state.user_id``,
            ``"header:X-Tenant"`` a header, ``"cookie:session"`` a cookie.
            Declaring it also lets requests with ``Authorization`` or ``Cookie``
            use the cache, each caller under its own key.
        enabled: ``False`` switches caching off for this route.
        key_prefix: label prepended to this route's keys (``"catalog"`` gives
            ``catalog:GET:items:...``).
        tags: invalidation tags of the route's entries; ``{name}`` is replaced
            by the path parameter (``"user:{user_id}"``).
        public: the response is the same for every caller, so requests with
            ``Authorization`` or ``Cookie`` may use the shared entry.
        stale_while_revalidate: seconds past expiry during which the stale
            entry is served (``X-Cache: STALE``) while one refresh runs in the background.
        stale_if_error: seconds past expiry during which the stale entry is
            served if the endpoint raises or answers 500, 502, 503 or 504.
        ttl_from_headers: take the TTL from the response's ``s-maxage``,
            ``max-age`` or ``Expires`` when present.
        skip_dependencies_on_hit: answer HITs without running the route's
            dependencies. By default a route with dependencies (authentication,
            for instance) still runs them on a HIT; set this only when none of
            them authorizes the caller.
        cacheable_statuses: statuses that may be stored (a subset of
            :data:`HEURISTIC_STATUSES`); default ``{200}``.
        mode: ``"app"`` (the default): the route says how long its responses
            are fresh. ``"http"``: the cache behaves as an RFC 9111 shared cache
            in front of the endpoint (a proxy, say): freshness only from the
            response (``Intelligent-Cache-Control`` > ``CDN-Cache-Control`` >
            ``Cache-Control`` ``s-maxage`` > ``max-age`` > ``Expires``), its
            ``Age`` counted, stale entries revalidated with a conditional
            request, ``Range`` answered from the entry, the request target
            keyed byte for byte. ``ttl_seconds``, ``ttl_from_headers``, the
            ``stale_*`` windows and ``cacheable_statuses`` are the response's
            to say in this mode, and setting them is an error.
        heuristic_freshness: in ``"http"`` mode, the fraction of ``Date -
            Last-Modified`` a response without explicit freshness stays fresh
            (RFC 9111 section 4.2.2; 0.1 is customary); 0, the default, never
            guesses.

    Raises:
        ConfigurationError: an option is invalid.
    """
    if isinstance(vary_by, str):
        raise ConfigurationError("vary_by takes a list of names, not a single string")
    sources = tuple(VarySource.parse(spec) for spec in (vary_by or ()))
    labels = [source.label for source in sources]
    if len(set(labels)) != len(labels):
        raise ConfigurationError(f"vary_by lists a source twice: {labels}")
    if isinstance(tags, str):
        raise ConfigurationError("tags takes a list of strings, not a single string")
    if mode == "http":
        fixed = {
            "ttl_seconds": ttl_seconds is not None,
            "ttl_from_headers": bool(ttl_from_headers),
            "stale_while_revalidate": bool(as_seconds(stale_while_revalidate)),
            "stale_if_error": bool(as_seconds(stale_if_error)),
            "cacheable_statuses": cacheable_statuses is not None,
        }
        given = [name for name, set_ in fixed.items() if set_]
        if given:
            raise ConfigurationError(
                f"mode='http' takes freshness and what may be stored from the response; drop {', '.join(given)}"
            )
    config = CacheConfig(
        ttl_seconds=as_seconds(ttl_seconds),
        vary_by=sources,
        enabled=bool(enabled),
        key_prefix=key_prefix,
        tags=tuple(tags),
        public=bool(public),
        stale_while_revalidate=as_seconds(stale_while_revalidate),
        stale_if_error=as_seconds(stale_if_error),
        ttl_from_headers=bool(ttl_from_headers),
        skip_dependencies_on_hit=bool(skip_dependencies_on_hit),
        cacheable_statuses=frozenset((200,) if cacheable_statuses is None else cacheable_statuses),
        mode=mode,
        heuristic_freshness=heuristic_freshness,
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


@dataclass(frozen=True, slots=True)
class InvalidationConfig:
    """What ``@invalidates`` attached to a write endpoint."""

    tags: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    hierarchy: bool = True


def invalidates(*tags: str, paths: Iterable[str] = (), hierarchy: bool = True) -> Callable[[F], F]:
    """Declare what a write endpoint invalidates besides its own path.

    ::

        @router.post("/users/{user_id}/posts")
        @invalidates("feed", "user:{user_id}", paths=["/timeline"])
        async def create_post(user_id: int, post: Post): ...

    Args:
        tags: tags to invalidate; ``{name}`` is replaced by the path parameter
            or, failing one, the query parameter of that name.
        paths: more paths to invalidate as if written to (templates allowed).
        hierarchy: ``False`` turns off the automatic invalidation of the
            request path and its ancestors for this route.

    Raises:
        ConfigurationError: a tag or path is invalid.
    """
    for tag in tags:
        _check_template("tag", tag)
    if isinstance(paths, str):
        raise ConfigurationError("paths takes a list of strings, not a single string")
    path_list = tuple(paths)
    for path in path_list:
        _check_template("path", path)
        if not path.startswith("/"):
            raise ConfigurationError(f"invalidated paths start with '/', got {path!r}")
    config = InvalidationConfig(tags=tuple(tags), paths=path_list, hierarchy=bool(hierarchy))

    def decorate(endpoint: F) -> F:
        setattr(endpoint, INVALIDATION_ATTRIBUTE, config)
        return endpoint

    return decorate


def get_invalidation(endpoint: Callable[..., Any]) -> InvalidationConfig | None:
    """The :class:`InvalidationConfig` attached to ``endpoint``, or ``None``."""
    config = getattr(endpoint, INVALIDATION_ATTRIBUTE, None)
    return config if isinstance(config, InvalidationConfig) else None
