"""What a cached route keeps between requests: its settings and small bounded memos.

One :class:`RouteState` per route (per inclusion on FastAPI >= 0.137), kept on
the object FastAPI builds the handler from, so that rebuilding the handler
(FastAPI 0.137-0.142 does so on every request) loses nothing. Every memo is
bounded in bytes: hostile inputs (a long query string per request) cost a
bounded amount of memory, whatever the traffic.
"""

import logging
from collections.abc import Callable
from typing import Any

from starlette.types import Scope

from .config import CacheConfig, get_config, template_fields
from .inputs import RouteInputs, VaryPlan
from .invalidation import generation_keys
from .keys import build_key
from .lru import ENTRY_OVERHEAD, BoundedLRU
from .policy import RequestDirectives
from .scope import origin_of

__all__ = ["FastNames", "RouteState"]

# What the fast path keys a request with: origin, key, tags, counters.
FastNames = tuple[str, str, tuple[str, ...], list[str]]

logger = logging.getLogger("intelligent_cache")

# Memo bounds per route: inputs longer than this are not memoized at all, and
# each memo holds at most this many bytes of inputs and results.
_MEMO_INPUT_LIMIT = 1024
_MEMO_BYTES = 256 * 1024
_STR_OVERHEAD = 49  # what a str costs besides its characters


class RouteState:
    """Settings and memos of one cached route (one inclusion of it)."""

    def __init__(self, *, endpoint: Callable[..., Any], template: str, inputs: RouteInputs) -> None:
        self.endpoint = endpoint
        self.template = template
        self.inputs = inputs
        self._config: CacheConfig | None = None
        self._plan: VaryPlan | None = None
        self.fast_path_headers: frozenset[bytes] = frozenset()
        # What also sends a request past the edge to the app: those and Origin (CORS middleware answers it).
        self.edge_headers: frozenset[bytes] = frozenset()
        # Whether the fast path may answer: no dependencies to run, no vary source, and
        # not every request credentialed (a security scheme that may read anything).
        self.fast_path = False
        self._keys: BoundedLRU[tuple[Any, ...], str] = BoundedLRU(max_bytes=_MEMO_BYTES)
        self._names: BoundedLRU[tuple[Any, ...], FastNames] = BoundedLRU(max_bytes=_MEMO_BYTES)
        self._counters: BoundedLRU[str, tuple[tuple[str, ...], list[str]]] = BoundedLRU(max_bytes=_MEMO_BYTES)
        self._warned: set[str] = set()

    def settings(self) -> tuple[CacheConfig, VaryPlan] | None:
        """The route's cache settings and key plan, or ``None`` when it is not cached.

        Read at request time: ``@cache_config`` may sit above the route
        decorator, and run after the route was built.
        """
        config = get_config(self.endpoint)
        if config is None or not config.enabled:
            return None
        if config is not self._config or self._plan is None:
            plan = self.inputs.plan(config, where=f"GET {self.template}")
            self._keys.clear()
            self._counters.clear()
            self.fast_path_headers = plan.fast_path_headers() | RequestDirectives.FIELDS
            self.edge_headers = self.fast_path_headers | {b"origin"}
            self.fast_path = not (plan.late or plan.sources or plan.credentialed((), dict))
            self._names.clear()
            self._config, self._plan = config, plan
        return config, self._plan

    def key(self, scope: Scope, vary: tuple[tuple[str, str | None], ...], secret: bytes) -> str:
        """The cache key of a GET of this route (memoized for short inputs)."""
        assert self._config is not None and self._plan is not None
        exact = self._config.mode == "http"
        path, query = _target(scope, exact), scope["query_string"]
        memo_key = (path, query, vary, secret)
        key = self._keys.get(memo_key)
        if key is None:
            key = build_key(
                "GET",
                path,
                query,
                vary,
                self._config.key_prefix,
                secret=secret,
                sensitive=self._plan.sensitive,
                exact_query=exact,
            )
            cost = len(path) + len(query) + sum(len(label) + len(value or "") for label, value in vary)
            if cost <= _MEMO_INPUT_LIMIT:
                self._keys.put(memo_key, key, cost + len(key) + ENTRY_OVERHEAD)
        return key

    def fast_names(self, scope: Scope, host: bytes, key_by_host: bool, secret: bytes) -> FastNames:
        """Origin, key, tags and counters of a request the fast path serves (one memo for them all).

        The full path reuses them through the fast path's lookup, so they are built once per request.
        """
        assert self._config is not None and self._plan is not None
        exact = self._config.mode == "http"
        path: str = scope["path"]
        target, query = _target(scope, exact), scope["query_string"]
        server = scope.get("server")
        memo_key = (
            target,
            query,
            host or (tuple(server) if server else None),
            scope.get("scheme"),
            key_by_host,
            secret,
        )
        found = self._names.get(memo_key)
        if found is None:
            origin = origin_of(scope, host)
            key = build_key(
                "GET",
                target,
                query,
                (("origin", origin),) if key_by_host else (),
                self._config.key_prefix,
                secret=secret,
                sensitive=self._plan.sensitive,
                exact_query=exact,
            )
            tags, counters = self.counters(path, scope.get("path_params", {}))
            found = (origin, key, tags, counters)
            cost = len(target) + len(query) + len(host)
            if cost <= _MEMO_INPUT_LIMIT:
                # The tags and counters too: the counters memo may drop them while this one holds them.
                held = sum(len(name) + _STR_OVERHEAD for name in (*tags, *counters))
                self._names.put(memo_key, found, cost + len(origin) + len(key) + held + ENTRY_OVERHEAD)
        return found

    def counters(self, path: str, params: dict[str, Any]) -> tuple[tuple[str, ...], list[str]]:
        """The entry's tags and the generation counters it depends on."""
        # Tags only use path parameters, which the path determines: memoize by path.
        found: tuple[tuple[str, ...], list[str]] | None = self._counters.get(path)
        if found is None:
            assert self._config is not None
            tags = tuple(fill(tag, params) for tag in self._config.tags)
            found = (tags, generation_keys(path, tags))
            if len(path) <= _MEMO_INPUT_LIMIT:
                held = sum(len(name) + _STR_OVERHEAD for name in (*found[0], *found[1]))
                self._counters.put(path, found, len(path) + held + ENTRY_OVERHEAD)
        return found

    def warn_once(self, code: str, message: str) -> None:
        """Log a warning about this route, once per kind."""
        if code not in self._warned:
            self._warned.add(code)
            logger.warning("route GET %s %s", self.template, message)


def _target(scope: Scope, exact: bool) -> str:
    """The path a key holds: decoded as routed, or (HTTP mode) exactly as the client sent it."""
    raw = scope.get("raw_path") if exact else None
    return raw.decode("latin-1") if isinstance(raw, bytes) and raw else scope["path"]


def fill(template: str, params: dict[str, Any]) -> str:
    """A tag or path template with its ``{name}`` placeholders replaced by path parameters."""
    return template.format_map({name: params.get(name, "") for name in template_fields(template)})
