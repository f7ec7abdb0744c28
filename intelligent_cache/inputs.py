"""What a cached route reads from a request: its key inputs and its credentials.

Built once per route (per inclusion) from FastAPI's dependant tree, then once
per ``CacheConfig``:

- *declared* inputs: ``Header()`` and ``Cookie()`` parameters anywhere in the
  tree are keyed, so two callers who send different values never share;
- *credential* inputs: ``Authorization``, ``Proxy-Authorization``, every cookie,
  and whatever FastAPI's security schemes (``APIKeyHeader``, ``APIKeyCookie``,
  ``APIKeyQuery``, ``HTTPBearer``, ``HTTPBasic``, ``OAuth2*``, ``OpenIdConnect``)
  read. A request carrying one that the key does not cover is *credentialed*:
  it never reads or writes a shared entry unless the response says it may be
  shared (RFC 9111 section 3.5). A key covers a credential when it is keyed
  itself, or when the route keys by identity (a ``request.state`` vary source)
  or says it is ``public``;
- *sensitive* inputs: values of credential-bearing sources are only ever
  stored in keys as a keyed digest (see :func:`intelligent_cache.keys.build_key`).
"""

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.security.api_key import APIKeyBase
from fastapi.security.base import SecurityBase
from fastapi.security.http import HTTPBase
from fastapi.security.oauth2 import OAuth2
from fastapi.security.open_id_connect_url import OpenIdConnect
from pydantic import BaseModel

from ._types import Header
from .config import CacheConfig, VarySource
from .exceptions import ConfigurationError
from .keys import CREDENTIAL_HEADERS, MEMOIZED_NAME_LENGTH, looks_secret

__all__ = ["RouteInputs", "SensitiveNames", "VaryPlan"]

Headers = Iterable[Header]


class SensitiveNames:
    """The names whose values a key only holds as a digest: listed ones, and any name that looks like a secret."""

    __slots__ = ("_names",)

    def __init__(self, names: Iterable[str]) -> None:
        self._names = frozenset(names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._names or _looks_secret_label(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        # Never empty: any name may look like a secret, so a secret is always needed.
        return max(1, len(self._names))


def _looks_secret_label(label: str) -> bool:
    # "header.x-api-key" is judged by its name part; client-sent names may be long: memoize short ones only.
    return _judge_label(label) if len(label) > MEMOIZED_NAME_LENGTH else _judged_label(label)


def _judge_label(label: str) -> bool:
    return looks_secret(label.rpartition(".")[2])


_judged_label = functools.lru_cache(maxsize=4096)(_judge_label)


def _field_names(fields: Iterable[Any], *, header: bool) -> Iterator[str]:
    for field in fields:
        annotation = getattr(field.field_info, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for name, info in annotation.model_fields.items():
                # Every name FastAPI may read the field under (aliases, alias choices, the field's
                # own name, with and without convert_underscores): keying one it does not read
                # only splits the cache, missing one would share it.
                choices = getattr(info.validation_alias, "choices", None) or [info.validation_alias]
                spellings = {name, info.alias, *(choice for choice in choices if isinstance(choice, str))}
                for spelling in filter(None, spellings):
                    if header:
                        yield spelling.lower()
                        yield spelling.replace("_", "-").lower()
                    else:
                        yield spelling
        else:
            yield str(field.alias).lower() if header else str(field.alias)


@dataclass(frozen=True, slots=True)
class RouteInputs:
    """What a route's dependant tree reads, independent of its cache settings.

    Attributes:
        headers: declared ``Header()`` names (lower case).
        cookies: declared ``Cookie()`` names.
        credential_headers: headers that carry credentials (lower case).
        credential_cookies: cookies a security scheme reads.
        credential_queries: query parameters a security scheme reads.
        opaque_security: a security scheme whose inputs are unknown: every
            request counts as credentialed unless the key covers identity.
        has_dependencies: the route has dependencies that must run on a HIT.
        body: the declared request body parameters (``Body``, ``Form``, ``File``)
            anywhere in the tree, which no key can cover.
    """

    headers: frozenset[str] = frozenset()
    cookies: frozenset[str] = frozenset()
    credential_headers: frozenset[str] = frozenset(CREDENTIAL_HEADERS - {"cookie"})
    credential_cookies: frozenset[str] = frozenset()
    credential_queries: frozenset[str] = frozenset()
    opaque_security: bool = False
    has_dependencies: bool = False
    body: tuple[str, ...] = ()

    @classmethod
    def of(cls, dependant: Any) -> "RouteInputs":
        headers: set[str] = set()
        cookies: set[str] = set()
        credential_headers = set(CREDENTIAL_HEADERS - {"cookie"})
        credential_cookies: set[str] = set()
        credential_queries: set[str] = set()
        opaque = False
        body: list[str] = []
        stack = [dependant]
        while stack:
            current = stack.pop()
            body.extend(str(field.alias) for field in current.body_params)
            # A header model that allows extra fields is handed every header: no key can cover them.
            opaque = opaque or any(_allows_extra(field) for field in current.header_params)
            headers.update(_field_names(current.header_params, header=True))
            cookies.update(_field_names(current.cookie_params, header=False))
            scheme = current.call
            if isinstance(scheme, SecurityBase) and not _fastapis_own_call(scheme):
                opaque = True  # a scheme of its own making may read anything
            elif isinstance(scheme, APIKeyBase):
                place, name = str(getattr(scheme.model.in_, "value", scheme.model.in_)), scheme.model.name
                if place == "header":
                    credential_headers.add(name.lower())
                elif place == "cookie":
                    credential_cookies.add(name)
                elif place == "query":
                    credential_queries.add(name)
                else:
                    opaque = True
            elif isinstance(scheme, SecurityBase):
                # HTTP (Bearer, Basic, Digest), OAuth2 and OpenID Connect read Authorization;
                # a scheme of another kind could read anything.
                opaque = opaque or not _reads_authorization(scheme)
            stack.extend(current.dependencies)
        return cls(
            headers=frozenset(headers),
            cookies=frozenset(cookies),
            credential_headers=frozenset(credential_headers),
            credential_cookies=frozenset(credential_cookies),
            credential_queries=frozenset(credential_queries),
            opaque_security=opaque,
            has_dependencies=bool(dependant.dependencies),
            body=tuple(dict.fromkeys(body)),
        )

    def plan(self, config: CacheConfig, *, where: str) -> "VaryPlan":
        """What the key of this route varies on under ``config``.

        Raises:
            ConfigurationError: the settings cannot work for this route.
        """
        return VaryPlan.build(self, config, where=where)


def _reads_authorization(scheme: SecurityBase) -> bool:
    return isinstance(scheme, HTTPBase | OAuth2 | OpenIdConnect)


def _allows_extra(field: Any) -> bool:
    annotation = getattr(field.field_info, "annotation", None)
    return (
        isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
        and annotation.model_config.get("extra") == "allow"
    )


def _fastapis_own_call(scheme: SecurityBase) -> bool:
    """Whether the scheme reads its input with FastAPI's code (not a subclass's own ``__call__``)."""
    owner = next((cls for cls in type(scheme).__mro__ if "__call__" in vars(cls)), object)
    return owner.__module__.startswith("fastapi.")


@dataclass(frozen=True, slots=True)
class VaryPlan:
    """The key inputs of a route under one ``CacheConfig``, and how credentials are covered.

    Attributes:
        sources: every vary source, in key order (``vary_by`` first, then
            declared headers and cookies).
        late: some source is only known once dependencies ran (``request.state``),
            or dependencies must run on a HIT anyway: look up after solving them.
        identity: the key covers the caller (a state source) or the route is public.
        keyed_headers: header names the key holds.
        keyed_cookies: cookie names the key holds.
        sensitive: labels and query names whose values the key holds as a digest.
        per_caller: responses are per caller: sent with ``Cache-Control: private``.
        inputs: what the route's dependant tree reads.
        unkeyed_credential_headers: credential headers the key does not hold
            (as ASGI spells names: lowercase bytes).
    """

    sources: tuple[VarySource, ...]
    late: bool
    identity: bool
    keyed_headers: frozenset[str]
    keyed_cookies: frozenset[str]
    sensitive: SensitiveNames
    per_caller: bool
    inputs: RouteInputs
    unkeyed_credential_headers: frozenset[bytes]

    @classmethod
    def build(cls, inputs: RouteInputs, config: CacheConfig, *, where: str) -> "VaryPlan":
        sources = list(config.vary_by)
        labels = {source.label for source in sources}
        sources += [VarySource("header", name) for name in sorted(inputs.headers) if f"header.{name}" not in labels]
        sources += [VarySource("cookie", name) for name in sorted(inputs.cookies) if f"cookie.{name}" not in labels]
        state = any(source.kind == "state" for source in sources)
        if inputs.body:
            raise ConfigurationError(
                f"{where}: the route reads a request body ({', '.join(inputs.body)}), which no cache key "
                "covers, so requests with different bodies would share one entry: read the inputs from the "
                "query string, or drop @cache_config"
            )
        if state and config.skip_dependencies_on_hit:
            raise ConfigurationError(
                f"{where}: vary_by reads request.state, which only dependencies set, but "
                "skip_dependencies_on_hit=True answers HITs without running them; drop one of the two"
            )
        keyed_headers = frozenset(source.name for source in sources if source.kind == "header")
        keyed_cookies = frozenset(source.name for source in sources if source.kind == "cookie")
        sensitive = {
            source.label
            for source in sources
            if source.kind == "cookie"
            or source.name in inputs.credential_headers
            or source.name in CREDENTIAL_HEADERS
            or (source.kind == "header" and looks_secret(source.name))
        }
        sensitive |= inputs.credential_queries
        return cls(
            sources=tuple(sources),
            late=state or (inputs.has_dependencies and not config.skip_dependencies_on_hit),
            identity=state or config.public,
            keyed_headers=keyed_headers,
            keyed_cookies=keyed_cookies,
            sensitive=SensitiveNames(sensitive),
            per_caller=bool(config.vary_by) or bool(keyed_cookies) or "authorization" in keyed_headers,
            inputs=inputs,
            unkeyed_credential_headers=frozenset(
                name.encode("latin-1", "replace")
                for name in inputs.credential_headers - keyed_headers
                if name != "cookie"
            ),
        )

    def credentialed(self, headers: Headers, cookies: Callable[[], Mapping[str, str]]) -> bool:
        """Whether a request carries credentials this key does not cover (``cookies()`` parses the jar)."""
        if self.identity:
            return False
        if self.inputs.opaque_security:
            return True
        unkeyed = self.unkeyed_credential_headers
        for name, _ in headers:
            if name == b"cookie":
                jar = cookies()
                if not jar or any(cookie not in self.keyed_cookies for cookie in jar):
                    return True
            elif name in unkeyed:
                return True
        return False

    def fast_path_headers(self) -> frozenset[bytes]:
        """Request headers whose presence sends a request to the full path."""
        names = {*self.inputs.credential_headers, "cookie", *self.keyed_headers}
        return frozenset(name.encode("latin-1") for name in names)
