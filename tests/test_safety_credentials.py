"""Cross-user leaks through the less common credential forms: the siblings of ``test_safety_leaks``.

Black-box, as users build apps (TestClient with lifespan, memory backend), judged by bodies,
``X-Cache``/``Cache-Status`` and how often endpoints ran. What is attacked:

1. Security schemes beyond the common seven: ``Security(scopes=...)``, ``HTTPDigest``,
   ``OAuth2AuthorizationCodeBearer``, plain ``OAuth2``, custom ``SecurityBase`` subclasses and
   subclasses of FastAPI's schemes that read another header or a cookie.
2. A scheme wrapped every way FastAPI allows (class dependency, ``Annotated``, ``yield``,
   ``use_cache=False``, four levels deep, nested include-level and app plus router level).
3. Optional authentication (``auto_error=False``): anonymous and authenticated callers on one route.
4. Credentials read by hand through ``Request`` (``Authorization``, cookies).
5. Header forms: ``alias=``, ``convert_underscores=False``, ``list[str]``, header models (also with
   ``extra="allow"``), credential-like names; credential-like query names are digested in keys.
6. ``request.state`` vary sources: set by a ``yield`` dependency or a pure ASGI middleware, set to
   ``None``/``False``/a dict/an object, set for some callers only; dependencies rejecting callers.
7. ``SessionMiddleware`` (``request.session``) and Starlette's ``AuthenticationMiddleware``.
8. Response side: ``Set-Cookie`` (from the endpoint or from ``SessionMiddleware``), ``Vary``,
   ``Cache-Control: private``/``no-store``, per-caller response headers.
9. WebSocket routes next to cached routes in a ``CachedRoute`` router.
"""

import concurrent.futures
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
import httpx
import pytest
from fastapi import (
    APIRouter,
    Cookie,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Request,
    Response,
    Security,
    WebSocket,
)
from fastapi.openapi.models import APIKey, APIKeyIn
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import (
    APIKeyCookie,
    APIKeyHeader,
    APIKeyQuery,
    HTTPAuthorizationCredentials,
    HTTPBearer,
    HTTPDigest,
    OAuth2,
    OAuth2AuthorizationCodeBearer,
    OAuth2PasswordBearer,
    SecurityScopes,
)
from fastapi.security.base import SecurityBase
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from intelligent_cache import CachedRoute, CacheManager, MemoryBackend, cache_config

SECRETS = {"alice": "tok-alice-SECRET", "bob": "tok-bob-SECRET"}
TOKENS = {token: user for user, token in SECRETS.items()}
USERS = ("alice", "bob", "alice", "bob")


def x_cache(response: httpx.Response) -> str | None:
    return response.headers.get("x-cache")


def cache_status(response: httpx.Response) -> str:
    return response.headers.get("cache-status", "")


def fresh_get(client: TestClient, url: str, **kwargs: Any) -> httpx.Response:
    """A GET carrying only the headers given: the client's cookie jar never adds a cookie."""
    client.cookies.clear()
    response = client.get(url, **kwargs)
    client.cookies.clear()
    return response


def new_app(**options: Any) -> tuple[FastAPI, CacheManager]:
    app = FastAPI(**options)
    manager = CacheManager(MemoryBackend()).init_app(app)
    return app, manager


def user_of_token(token: str | None) -> str:
    user = TOKENS.get((token or "").removeprefix("Bearer ").removeprefix("Digest "))
    if user is None:
        raise HTTPException(status_code=401, detail="unknown credential")
    return user


def stored_keys(client: TestClient, manager: CacheManager) -> list[str]:
    keys: list[str] = client.portal.call(manager.service().list_keys)
    return keys


# -- 1. less common security schemes ---------------------------------------------------------------------


class SessionTokenHeader(SecurityBase):
    """A scheme of the app's own: reads ``X-Session-Token``."""

    def __init__(self) -> None:
        self.model = APIKey(**{"in": APIKeyIn.header}, name="X-Session-Token")
        self.scheme_name = "session-token"

    async def __call__(self, request: Request) -> str | None:
        return request.headers.get("x-session-token")


class SidCookie(SecurityBase):
    """A scheme of the app's own: reads the ``sid`` cookie."""

    def __init__(self) -> None:
        self.model = APIKey(**{"in": APIKeyIn.cookie}, name="sid")
        self.scheme_name = "sid-cookie"

    async def __call__(self, request: Request) -> str | None:
        return request.cookies.get("sid")


class AccessTokenHeaderBearer(HTTPBearer):
    """An ``HTTPBearer`` subclass that takes its token from ``X-Access-Token`` (gateways forward it so)."""

    async def __call__(self, request: Request) -> HTTPAuthorizationCredentials | None:  # type: ignore[override]
        token = request.headers.get("x-access-token")
        if not token:
            raise HTTPException(status_code=401, detail="not authenticated")
        return HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)


class AccessTokenHeaderOAuth2(OAuth2PasswordBearer):
    """The same, as an ``OAuth2PasswordBearer`` subclass."""

    async def __call__(self, request: Request) -> str | None:
        token = request.headers.get("x-access-token")
        if not token:
            raise HTTPException(status_code=401, detail="not authenticated")
        return token


class OAuth2PasswordBearerWithCookie(OAuth2PasswordBearer):
    """The popular tutorial pattern: an OAuth2 bearer token kept in an ``access_token`` cookie."""

    async def __call__(self, request: Request) -> str | None:
        token = request.cookies.get("access_token")
        if not token:
            raise HTTPException(status_code=401, detail="not authenticated")
        return token


class LegacyHeaderAPIKey(APIKeyHeader):
    """An ``APIKeyHeader`` subclass that also accepts the key under a legacy header name."""

    async def __call__(self, request: Request) -> str | None:
        key = request.headers.get("x-legacy-client") or await super().__call__(request)
        return key


def _token(value: Any) -> str | None:
    if isinstance(value, HTTPAuthorizationCredentials):
        return value.credentials
    return None if value is None else str(value)


RARE_SCHEMES: dict[str, tuple[Callable[[], Any], Callable[[str], dict[str, Any]]]] = {
    "oauth2_scopes": (
        lambda: OAuth2PasswordBearer(tokenUrl="token", scopes={"read": "read items"}),
        lambda token: {"headers": {"Authorization": f"Bearer {token}"}},
    ),
    "http_digest": (HTTPDigest, lambda token: {"headers": {"Authorization": f"Digest {token}"}}),
    "oauth2_authorization_code": (
        lambda: OAuth2AuthorizationCodeBearer(authorizationUrl="https://idp.example/auth", tokenUrl="token"),
        lambda token: {"headers": {"Authorization": f"Bearer {token}"}},
    ),
    "oauth2_plain": (OAuth2, lambda token: {"headers": {"Authorization": f"Bearer {token}"}}),
    "custom_security_base_header": (SessionTokenHeader, lambda token: {"headers": {"X-Session-Token": token}}),
    "custom_security_base_cookie": (SidCookie, lambda token: {"headers": {"Cookie": f"sid={token}"}}),
    "oauth2_subclass_cookie": (
        lambda: OAuth2PasswordBearerWithCookie(tokenUrl="token"),
        lambda token: {"headers": {"Cookie": f"access_token={token}"}},
    ),
    "http_bearer_subclass_custom_header": (
        AccessTokenHeaderBearer,
        lambda token: {"headers": {"X-Access-Token": token}},
    ),
    "api_key_header_subclass_legacy_header": (
        lambda: LegacyHeaderAPIKey(name="X-Client"),
        lambda token: {"headers": {"X-Legacy-Client": token}},
    ),
    "oauth2_subclass_custom_header": (
        lambda: AccessTokenHeaderOAuth2(tokenUrl="token"),
        lambda token: {"headers": {"X-Access-Token": token}},
    ),
}


def rare_scheme_app(name: str, *, public: bool = False) -> tuple[FastAPI, Counter[str]]:
    factory, _ = RARE_SCHEMES[name]
    scheme = factory()
    app, _ = new_app()
    calls = Counter[str]()

    def identify(scopes: SecurityScopes, value: Annotated[Any, Security(scheme, scopes=["read"])]) -> str:
        return user_of_token(_token(value))

    @app.get("/me")
    @cache_config(public=public)
    def me(user: Annotated[str, Security(identify, scopes=["read"])]) -> dict[str, Any]:
        calls["/me"] += 1
        return {"catalog": "same for all"} if public else {"user": user}

    return app, calls


@pytest.mark.parametrize("name", list(RARE_SCHEMES))
def test_rare_security_scheme_credentials_never_share_an_entry(name: str) -> None:
    app, _ = rare_scheme_app(name)
    send = RARE_SCHEMES[name][1]
    with TestClient(app) as client:
        for user in USERS:
            response = fresh_get(client, "/me", **send(SECRETS[user]))
            assert response.status_code == 200, response.text
            assert response.json() == {"user": user}, f"{user} received {response.json()} via {name}"
            assert x_cache(response) != "HIT", cache_status(response)
        stranger = fresh_get(client, "/me", **send("tok-mallory"))
        anonymous = fresh_get(client, "/me")
    assert stranger.status_code == 401, stranger.text
    assert anonymous.status_code in (401, 403), anonymous.text


@pytest.mark.parametrize("name", list(RARE_SCHEMES))
def test_rare_security_scheme_on_public_route_still_authenticates_every_hit(name: str) -> None:
    app, calls = rare_scheme_app(name, public=True)
    send = RARE_SCHEMES[name][1]
    with TestClient(app) as client:
        responses = [fresh_get(client, "/me", **send(SECRETS[user])) for user in USERS]
        stranger = fresh_get(client, "/me", **send("tok-mallory"))
        anonymous = fresh_get(client, "/me")
    assert [response.json() for response in responses] == [{"catalog": "same for all"}] * 4
    assert [x_cache(response) for response in responses] == ["MISS", "HIT", "HIT", "HIT"]
    assert calls["/me"] == 1
    assert stranger.status_code == 401
    assert anonymous.status_code in (401, 403)
    assert "catalog" not in stranger.text + anonymous.text


# -- 2. a scheme wrapped every way FastAPI allows -------------------------------------------------------

# A header name that does not look like a credential: only the scheme says it is one.
client_key = APIKeyHeader(name="X-Client")
ClientKey = Annotated[str, Depends(client_key)]


def remember(request: Request, key: ClientKey) -> None:
    request.state.who = user_of_token(key)


class Caller:
    def __init__(self, request: Request, key: Annotated[str, Security(client_key, scopes=["me"])]) -> None:
        request.state.who = user_of_token(key)


async def remember_yield(request: Request, key: ClientKey) -> AsyncIterator[None]:
    request.state.who = user_of_token(key)
    yield


def level4(key: Annotated[str, Depends(client_key, use_cache=False)]) -> str:
    return user_of_token(key)


def level3(user: Annotated[str, Depends(level4)]) -> str:
    return user


def level2(user: Annotated[str, Depends(level3)]) -> str:
    return user


def level1(request: Request, user: Annotated[str, Depends(level2)]) -> None:
    request.state.who = user


WRAPPINGS = [
    "class_dependency",
    "annotated_alias",
    "yield_dependency",
    "use_cache_false",
    "nested_4_levels",
    "security_in_route_dependencies",
    "nested_include_levels",
    "app_and_router_level",
]


def wrapped_app(wrapping: str, *, vary: bool = False) -> tuple[FastAPI, Counter[str], CacheManager]:
    """``GET /who`` answering the caller named by ``X-Client``; ``vary`` keys the route by both key headers."""
    cached = cache_config(vary_by=["header:X-Client", "header:X-App"]) if vary else cache_config()
    app_key = APIKeyHeader(name="X-App")  # the same for every caller
    app, manager = new_app(dependencies=[Depends(app_key)] if wrapping == "app_and_router_level" else None)
    calls = Counter[str]()
    router_deps = [Depends(remember)] if wrapping == "app_and_router_level" else []
    router = APIRouter(route_class=CachedRoute, dependencies=router_deps)

    def answer(request: Request) -> dict[str, Any]:
        calls["/who"] += 1
        return {"user": request.state.who}

    if wrapping == "class_dependency":

        @router.get("/who")
        @cached
        def who_class(request: Request, _: Annotated[Caller, Depends()]) -> dict[str, Any]:
            return answer(request)

    elif wrapping == "annotated_alias":

        @router.get("/who")
        @cached
        def who_annotated(key: ClientKey) -> dict[str, Any]:
            calls["/who"] += 1
            return {"user": user_of_token(key)}

    elif wrapping == "yield_dependency":

        @router.get("/who", dependencies=[Depends(remember_yield)])
        @cached
        def who_yield(request: Request) -> dict[str, Any]:
            return answer(request)

    elif wrapping == "use_cache_false":

        @router.get("/who")
        @cached
        def who_uncached_dependency(key: Annotated[str, Depends(client_key, use_cache=False)]) -> dict[str, Any]:
            calls["/who"] += 1
            return {"user": user_of_token(key)}

    elif wrapping == "nested_4_levels":

        @router.get("/who", dependencies=[Depends(level1)])
        @cached
        def who_nested(request: Request) -> dict[str, Any]:
            return answer(request)

    elif wrapping == "security_in_route_dependencies":

        @router.get("/who", dependencies=[Security(remember, scopes=["me"])])
        @cached
        def who_security(request: Request) -> dict[str, Any]:
            return answer(request)

    else:

        @router.get("/who")
        @cached
        def who_level(request: Request) -> dict[str, Any]:
            return answer(request)

    if wrapping == "nested_include_levels":
        middle = APIRouter(route_class=CachedRoute)
        middle.include_router(router, prefix="/inner", dependencies=[Depends(remember)])
        outer = APIRouter(route_class=CachedRoute, dependencies=[Depends(app_key)])
        outer.include_router(middle, prefix="/middle")
        app.include_router(outer, prefix="/outer")
    else:
        app.include_router(router)
    return app, calls, manager


def wrapped_url(wrapping: str) -> str:
    return "/outer/middle/inner/who" if wrapping == "nested_include_levels" else "/who"


@pytest.mark.parametrize("wrapping", WRAPPINGS)
def test_wrapped_security_scheme_is_a_credential(wrapping: str) -> None:
    app, _, _ = wrapped_app(wrapping)
    url = wrapped_url(wrapping)
    with TestClient(app) as client:
        for user in USERS:
            response = fresh_get(client, url, headers={"X-Client": SECRETS[user], "X-App": "shared-app-key"})
            assert response.status_code == 200, response.text
            assert response.json() == {"user": user}, f"{user} received {response.json()} ({wrapping})"
            assert x_cache(response) == "SKIP", cache_status(response)
            assert "detail=credentials" in cache_status(response)
        stranger = fresh_get(client, url, headers={"X-Client": "tok-mallory", "X-App": "shared-app-key"})
    assert stranger.status_code == 401


@pytest.mark.parametrize("wrapping", WRAPPINGS)
def test_wrapped_security_scheme_with_vary_on_the_key_header_caches_each_caller(wrapping: str) -> None:
    """Covering the scheme's header in the key lets each caller be cached, under its own key."""
    app, calls, manager = wrapped_app(wrapping, vary=True)
    url = wrapped_url(wrapping)
    with TestClient(app) as client:
        responses = [
            fresh_get(client, url, headers={"X-Client": SECRETS[user], "X-App": "shared-app-key"}) for user in USERS
        ]
        keys = stored_keys(client, manager)
    assert [response.json()["user"] for response in responses] == list(USERS)
    assert [x_cache(response) for response in responses] == ["MISS", "MISS", "HIT", "HIT"]
    assert calls["/who"] == 2
    # X-Client (and X-App where a scheme reads it) are credentials: the key holds them only as digests.
    app_key_is_a_scheme = wrapping in ("app_and_router_level", "nested_include_levels")
    assert len(keys) == 2
    for key in keys:
        assert "tok-" not in key and "SECRET" not in key, key
        assert ("shared-app-key" in key) is not app_key_is_a_scheme, key


# -- 3. optional authentication: anonymous and authenticated callers on one route ---------------------

OPTIONAL_SCHEMES: dict[str, tuple[Callable[[], Any], Callable[[str], dict[str, str]]]] = {
    "oauth2_password_bearer": (
        lambda: OAuth2PasswordBearer(tokenUrl="token", auto_error=False),
        lambda token: {"Authorization": f"Bearer {token}"},
    ),
    "http_bearer": (lambda: HTTPBearer(auto_error=False), lambda token: {"Authorization": f"Bearer {token}"}),
    "api_key_header": (lambda: APIKeyHeader(name="X-Client", auto_error=False), lambda token: {"X-Client": token}),
    "api_key_cookie": (
        lambda: APIKeyCookie(name="member", auto_error=False),
        lambda token: {"Cookie": f"member={token}"},
    ),
}


@pytest.mark.parametrize("name", list(OPTIONAL_SCHEMES))
def test_optional_auth_shares_only_the_anonymous_page(name: str) -> None:
    factory, send = OPTIONAL_SCHEMES[name]
    scheme = factory()
    app, _ = new_app()
    calls = Counter[str]()

    @app.get("/home")
    @cache_config
    def home(value: Annotated[Any, Depends(scheme)]) -> dict[str, Any]:
        calls["/home"] += 1
        token = _token(value)
        return {"user": TOKENS.get(token or ""), "greeting": "welcome"}

    sequence = [None, "alice", None, "bob", "alice", None]
    with TestClient(app) as client:
        responses = [fresh_get(client, "/home", headers=send(SECRETS[user]) if user else {}) for user in sequence]
    for user, response in zip(sequence, responses, strict=True):
        assert response.json() == {"user": user, "greeting": "welcome"}, f"{user} received {response.json()}"
    assert [x_cache(response) for response in responses] == ["MISS", "SKIP", "HIT", "SKIP", "SKIP", "HIT"]
    assert calls["/home"] == 4


# -- 4. credentials read by hand through Request -----------------------------------------------------


@pytest.mark.parametrize("source", ["authorization", "proxy-authorization", "cookie"])
def test_dependency_reading_credentials_from_request_keeps_callers_apart(source: str) -> None:
    app, _ = new_app()

    def caller(request: Request) -> str | None:
        if source == "cookie":
            return TOKENS.get(request.cookies.get("sid", ""))
        return TOKENS.get(request.headers.get(source, "").removeprefix("Bearer "))

    @app.get("/me")
    @cache_config
    def me(user: Annotated[str | None, Depends(caller)]) -> dict[str, Any]:
        return {"user": user}

    def send(user: str) -> dict[str, str]:
        if source == "cookie":
            return {"Cookie": f"sid={SECRETS[user]}"}
        return {source: f"Bearer {SECRETS[user]}"}

    with TestClient(app) as client:
        first_anonymous = fresh_get(client, "/me")
        for user in USERS:
            response = fresh_get(client, "/me", headers=send(user))
            assert response.json() == {"user": user}, f"{user} received {response.json()} ({source})"
            assert x_cache(response) == "SKIP", cache_status(response)
        anonymous = fresh_get(client, "/me")
    assert first_anonymous.json() == anonymous.json() == {"user": None}
    assert x_cache(anonymous) == "HIT"


# -- 5. header forms and credential-like names ---------------------------------------------------------


def test_header_with_alias_is_keyed_and_digested() -> None:
    app, manager = new_app()

    @app.get("/me")
    @cache_config
    def me(token: Annotated[str, Header(alias="X-Auth")]) -> dict[str, Any]:
        return {"user": user_of_token(token)}

    with TestClient(app) as client:
        responses = [fresh_get(client, "/me", headers={"X-Auth": SECRETS[user]}) for user in USERS]
        keys = stored_keys(client, manager)
    assert [response.json()["user"] for response in responses] == list(USERS)
    assert [x_cache(response) for response in responses] == ["MISS", "MISS", "HIT", "HIT"]
    assert len(keys) == 2
    for key in keys:
        assert "SECRET" not in key and "tok-" not in key, key


def test_header_without_underscore_conversion_is_keyed_by_its_literal_name() -> None:
    app, _ = new_app()
    calls = Counter[str]()

    @app.get("/tenant")
    @cache_config
    def tenant(x_tenant: Annotated[str | None, Header(convert_underscores=False)] = None) -> dict[str, Any]:
        calls[str(x_tenant)] += 1
        return {"tenant": x_tenant}

    with TestClient(app) as client:
        sequence = ["acme", "globex", "acme", "globex", None]
        responses = [
            fresh_get(client, "/tenant", headers={"x_tenant": tenant} if tenant else {}) for tenant in sequence
        ]
        # The dashed spelling is another header: FastAPI does not read it, so it shares the absent entry.
        dashed = fresh_get(client, "/tenant", headers={"x-tenant": "acme"})
    assert [response.json()["tenant"] for response in responses] == sequence
    assert [x_cache(response) for response in responses] == ["MISS", "MISS", "HIT", "HIT", "MISS"]
    assert dashed.json() == {"tenant": None}
    assert calls == Counter({"acme": 1, "globex": 1, "None": 1})


def test_list_header_one_line_and_two_lines_are_different_requests() -> None:
    """``list[str]`` headers: FastAPI gives ``["a, b"]`` for one line and ``["a", "b"]`` for two."""
    app, _ = new_app()

    @app.get("/tags")
    @cache_config
    def tags(x_tag: Annotated[list[str], Header()]) -> dict[str, Any]:
        return {"tags": x_tag}

    with TestClient(app) as client:
        one_line = client.get("/tags", headers=[("X-Tag", "a, b")])
        two_lines = client.get("/tags", headers=[("X-Tag", "a"), ("X-Tag", "b")])
        two_lines_again = client.get("/tags", headers=[("X-Tag", "a"), ("X-Tag", "b")])
    assert one_line.json() == {"tags": ["a, b"]}
    assert two_lines.json() == {"tags": ["a", "b"]}, f"two header lines were answered {two_lines.json()}"
    assert two_lines_again.json() == {"tags": ["a", "b"]}


class TenantHeaders(BaseModel):
    x_tenant: str = "public"


class AllHeaders(BaseModel):
    model_config = ConfigDict(extra="allow")
    x_tenant: str = "public"


def test_header_model_fields_are_keyed() -> None:
    app, _ = new_app()
    calls = Counter[str]()

    @app.get("/tenant")
    @cache_config
    def tenant(headers: Annotated[TenantHeaders, Header()]) -> dict[str, Any]:
        calls[headers.x_tenant] += 1
        return {"tenant": headers.x_tenant}

    with TestClient(app) as client:
        responses = [fresh_get(client, "/tenant", headers={"X-Tenant": t}) for t in ("acme", "globex", "acme")]
    assert [response.json()["tenant"] for response in responses] == ["acme", "globex", "acme"]
    assert [x_cache(response) for response in responses] == ["MISS", "MISS", "HIT"]


def test_header_model_with_extra_allow_reads_every_header_so_none_may_be_shared() -> None:
    """``extra="allow"``: FastAPI hands every request header to the model, so the endpoint can echo any."""
    app, _ = new_app()

    @app.get("/echo")
    @cache_config
    def echo(headers: Annotated[AllHeaders, Header()]) -> dict[str, Any]:
        extra = headers.model_extra or {}
        return {"user": extra.get("x-user"), "forwarded_for": extra.get("x-forwarded-for")}

    with TestClient(app) as client:
        for user, address in (("alice", "10.0.0.1"), ("bob", "10.0.0.2")):
            response = fresh_get(client, "/echo", headers={"X-User": user, "X-Forwarded-For": address})
            assert response.json() == {"user": user, "forwarded_for": address}, (
                f"{user} received {response.json()} ({cache_status(response)})"
            )


def test_credential_like_header_name_is_keyed_as_a_digest() -> None:
    app, manager = new_app()

    @app.get("/me")
    @cache_config
    def me(x_api_token: Annotated[str, Header()]) -> dict[str, Any]:
        return {"user": user_of_token(x_api_token)}

    with TestClient(app) as client:
        responses = [fresh_get(client, "/me", headers={"X-Api-Token": SECRETS[user]}) for user in USERS]
        keys = stored_keys(client, manager)
    assert [response.json()["user"] for response in responses] == list(USERS)
    assert [x_cache(response) for response in responses] == ["MISS", "MISS", "HIT", "HIT"]
    assert len(keys) == 2
    for key in keys:
        assert "SECRET" not in key and "tok-" not in key and "~h" in key, key


CREDENTIAL_QUERY_NAMES = [
    "token",
    "access_token",
    "api_key",
    "apiKey",
    "password",
    "session",
    "sessionid",
    "auth",
    "code",
    "signature",
]


@pytest.mark.parametrize("name", CREDENTIAL_QUERY_NAMES)
def test_credential_like_query_parameter_is_keyed_as_a_digest(name: str) -> None:
    app, manager = new_app()

    @app.get("/me")
    @cache_config
    def me(request: Request) -> dict[str, Any]:
        return {"user": TOKENS.get(request.query_params.get(name, ""))}

    with TestClient(app) as client:
        responses = [fresh_get(client, "/me", params={name: SECRETS[user], "page": "1"}) for user in USERS]
        keys = stored_keys(client, manager)
    assert [response.json()["user"] for response in responses] == list(USERS)
    assert [x_cache(response) for response in responses] == ["MISS", "MISS", "HIT", "HIT"]
    assert len(keys) == 2
    for key in keys:
        assert "SECRET" not in key and "tok-" not in key, key
        assert "page=1" in key, key  # ordinary parameters stay readable


# -- 6. request.state vary sources --------------------------------------------------------------------


async def user_from_token_yield(request: Request, token: Annotated[str, Depends(client_key)]) -> AsyncIterator[None]:
    request.state.user_id = user_of_token(token)
    yield
    request.state.user_id = "changed-after-the-response"


def test_vary_by_state_set_by_a_yield_dependency_keys_each_user() -> None:
    app, _ = new_app()
    calls = Counter[str]()

    @app.get("/me", dependencies=[Depends(user_from_token_yield)])
    @cache_config(vary_by=["user_id"])
    def me(request: Request) -> dict[str, Any]:
        calls[request.state.user_id] += 1
        return {"user": request.state.user_id}

    with TestClient(app) as client:
        responses = [fresh_get(client, "/me", headers={"X-Client": SECRETS[user]}) for user in USERS]
        stranger = fresh_get(client, "/me", headers={"X-Client": "tok-mallory"})
    assert [response.json()["user"] for response in responses] == list(USERS)
    assert [x_cache(response) for response in responses] == ["MISS", "MISS", "HIT", "HIT"]
    assert calls == Counter({"alice": 1, "bob": 1})
    assert stranger.status_code == 401 and "alice" not in stranger.text and "bob" not in stranger.text


class UserFromHeader:
    """A pure ASGI middleware that sets ``scope["state"]["user_id"]`` from a (trusted, internal) header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-user":
                    scope.setdefault("state", {})["user_id"] = value.decode()
        await self.app(scope, receive, send)


def test_vary_by_state_set_by_a_pure_asgi_middleware_keys_each_user_and_skips_the_unset() -> None:
    app, _ = new_app()
    app.add_middleware(UserFromHeader)
    calls = Counter[str]()

    @app.get("/me")
    @cache_config(vary_by=["user_id"])
    def me(request: Request) -> dict[str, Any]:
        user = getattr(request.state, "user_id", None)
        calls[str(user)] += 1
        return {"user": user}

    with TestClient(app) as client:
        responses = [fresh_get(client, "/me", headers={"X-User": user}) for user in USERS]
        unset = [fresh_get(client, "/me") for _ in range(2)]
    assert [response.json()["user"] for response in responses] == list(USERS)
    assert [x_cache(response) for response in responses] == ["MISS", "MISS", "HIT", "HIT"]
    for response in unset:
        assert response.json() == {"user": None}
        assert x_cache(response) == "SKIP" and "detail=vary-missing" in cache_status(response)
    assert calls == Counter({"alice": 1, "bob": 1, "None": 2})


class Account:
    def __init__(self, name: str) -> None:
        self.name = name


STATE_VALUES: dict[str, tuple[Callable[[str], Any], str]] = {
    "none": (lambda user: None, "vary-missing"),
    "false": (lambda user: False, "vary-unreadable"),
    "true": (lambda user: True, "vary-unreadable"),
    "dict": (lambda user: {"id": user}, "vary-unreadable"),
    "object": (Account, "vary-unreadable"),
    "list": (lambda user: [user], "vary-unreadable"),
}


@pytest.mark.parametrize("kind", list(STATE_VALUES))
def test_vary_by_state_that_is_not_a_string_or_number_never_shares(kind: str) -> None:
    make, detail = STATE_VALUES[kind]
    app, _ = new_app()
    calls = Counter[str]()

    def identify(request: Request, token: Annotated[str, Depends(client_key)]) -> str:
        user = user_of_token(token)
        request.state.user_id = make(user)
        return user

    @app.get("/me")
    @cache_config(vary_by=["user_id"])
    def me(user: Annotated[str, Depends(identify)]) -> dict[str, Any]:
        calls[user] += 1
        return {"user": user}

    with TestClient(app) as client:
        for user in USERS:
            response = fresh_get(client, "/me", headers={"X-Client": SECRETS[user]})
            assert response.json() == {"user": user}, f"{user} received {response.json()} ({kind})"
            assert x_cache(response) == "SKIP", cache_status(response)
            assert f"detail={detail}" in cache_status(response)
    assert calls == Counter({"alice": 2, "bob": 2})


def test_vary_by_state_numbers_key_each_user_zero_included() -> None:
    app, _ = new_app()
    calls = Counter[str]()
    ids = {"alice": 0, "bob": 1}

    def identify(request: Request, token: Annotated[str, Depends(client_key)]) -> None:
        request.state.user_id = ids[user_of_token(token)]

    @app.get("/me", dependencies=[Depends(identify)])
    @cache_config(vary_by=["user_id"])
    def me(request: Request) -> dict[str, Any]:
        calls[str(request.state.user_id)] += 1
        return {"user_id": request.state.user_id}

    with TestClient(app) as client:
        responses = [fresh_get(client, "/me", headers={"X-Client": SECRETS[user]}) for user in USERS]
    assert [response.json()["user_id"] for response in responses] == [0, 1, 0, 1]
    assert [x_cache(response) for response in responses] == ["MISS", "MISS", "HIT", "HIT"]
    assert calls == Counter({"0": 1, "1": 1})


def test_vary_by_state_set_for_some_users_only_never_hands_their_entry_to_the_others() -> None:
    app, _ = new_app()

    def maybe_identify(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
        user = TOKENS.get((authorization or "").removeprefix("Bearer "))
        if user == "alice":  # only some users get a user_id (say, members of one tenant)
            request.state.user_id = user

    @app.get("/me", dependencies=[Depends(maybe_identify)])
    @cache_config(vary_by=["user_id"])
    def me(request: Request) -> dict[str, Any]:
        authorization = request.headers.get("authorization", "")
        return {"user": TOKENS.get(authorization.removeprefix("Bearer "))}

    with TestClient(app) as client:
        for user in ("alice", "bob", "alice", "bob"):
            response = fresh_get(client, "/me", headers={"Authorization": f"Bearer {SECRETS[user]}"})
            assert response.json() == {"user": user}, f"{user} received {response.json()}"
            if user == "bob":
                assert x_cache(response) == "SKIP" and "detail=vary-missing" in cache_status(response)
        anonymous = fresh_get(client, "/me")
    assert anonymous.json() == {"user": None}


@pytest.mark.parametrize("public", [False, True], ids=["vary_by_user_id", "public"])
def test_dependency_rejecting_some_callers_never_stores_for_nor_serves_them(public: bool) -> None:
    app, _ = new_app()
    calls = Counter[str]()
    banned = {"bob"}

    def identify(request: Request, token: Annotated[str, Depends(client_key)]) -> None:
        user = user_of_token(token)
        request.state.user_id = user
        if user in banned:
            raise HTTPException(status_code=403, detail="banned")

    config: dict[str, Any] = {"public": True} if public else {"vary_by": ["user_id"]}

    @app.get("/report", dependencies=[Depends(identify)])
    @cache_config(**config)
    def report(request: Request) -> dict[str, Any]:
        calls["/report"] += 1
        return {"report": "q3", "for": "everyone" if public else request.state.user_id}

    with TestClient(app) as client:
        alice = [fresh_get(client, "/report", headers={"X-Client": SECRETS["alice"]}) for _ in range(2)]
        bob = [fresh_get(client, "/report", headers={"X-Client": SECRETS["bob"]}) for _ in range(2)]
        banned.clear()
        bob_allowed = fresh_get(client, "/report", headers={"X-Client": SECRETS["bob"]})
    assert [x_cache(response) for response in alice] == ["MISS", "HIT"]
    for response in bob:
        assert response.status_code == 403, response.text
        assert "q3" not in response.text and "alice" not in response.text
        assert x_cache(response) == "SKIP"
    assert bob_allowed.status_code == 200
    assert bob_allowed.json()["for"] == ("everyone" if public else "bob")
    assert calls["/report"] == (1 if public else 2)


# -- 7. SessionMiddleware and Starlette's AuthenticationMiddleware --------------------------------------


def session_app(form_config: dict[str, Any] | None = None) -> tuple[FastAPI, Counter[str]]:
    # Imported here, as in test_safety_leaks: it needs itsdangerous.
    from starlette.middleware.sessions import SessionMiddleware

    app, _ = new_app()
    app.add_middleware(SessionMiddleware, secret_key="session-signing-key-for-tests")
    calls = Counter[str]()

    @app.post("/login")
    def login(request: Request, user: str) -> dict[str, str]:
        request.session["user"] = user
        return {"logged_in": user}

    def session_user(request: Request) -> str | None:
        user: str | None = request.session.get("user")
        return user

    @app.get("/dashboard")
    @cache_config
    def dashboard(user: Annotated[str | None, Depends(session_user)]) -> dict[str, Any]:
        calls["/dashboard"] += 1
        return {"user": user}

    @app.get("/login-form", response_class=HTMLResponse)
    @cache_config(**(form_config or {}))
    def login_form(request: Request) -> str:
        # A per-visitor CSRF token, kept in the session (SessionMiddleware sets the cookie on the way out).
        token = request.session.setdefault("csrf", secrets.token_hex(16))
        calls["/login-form"] += 1
        return f'<form method="post"><input type="hidden" name="csrf" value="{token}"></form>'

    return app, calls


def session_cookie(client: TestClient, user: str) -> str:
    client.cookies.clear()
    response = client.post("/login", params={"user": user})
    session = response.cookies.get("session")
    assert session
    client.cookies.clear()
    return session


def test_session_read_in_a_dependency_keeps_each_session_apart() -> None:
    app, _ = session_app()
    with TestClient(app) as client:
        sessions = {user: session_cookie(client, user) for user in ("alice", "bob")}
        anonymous = [fresh_get(client, "/dashboard") for _ in range(2)]
        for user in USERS:
            response = fresh_get(client, "/dashboard", headers={"Cookie": f"session={sessions[user]}"})
            assert response.json() == {"user": user}, f"{user} received {response.json()}"
            assert x_cache(response) == "SKIP"
    assert [response.json() for response in anonymous] == [{"user": None}] * 2
    assert [x_cache(response) for response in anonymous] == ["MISS", "HIT"]


@pytest.mark.parametrize(
    "form_config",
    [{}, {"vary_by": ["cookie:session"]}],
    ids=["plain", "vary_by_session_cookie"],
)
def test_session_written_by_the_endpoint_is_never_replayed_to_another_visitor(form_config: dict[str, Any]) -> None:
    """A GET that writes the session gets a ``Set-Cookie`` from SessionMiddleware, after the cache saw it.

    Keying by the session cookie does not help: first visitors have none, so they all share one key.
    """
    app, calls = session_app(form_config)
    with TestClient(app) as client:
        first = fresh_get(client, "/login-form")
        second = fresh_get(client, "/login-form")
    assert first.headers.get("set-cookie", "").startswith("session=")
    first_token = first.text.split('value="')[1].split('"')[0]
    assert first_token not in second.text, (
        f"the second visitor received the first visitor's CSRF token ({x_cache(second)}, {cache_status(second)})"
    )
    assert x_cache(second) != "HIT"
    assert calls["/login-form"] == 2
    # Each visitor's page matches the session cookie it was given.
    assert second.headers.get("set-cookie", "").startswith("session=")


class HeaderTokenBackend(AuthenticationBackend):
    """Starlette authentication from a header named by the app."""

    def __init__(self, header: str) -> None:
        self.header = header

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        value = conn.cookies.get("sid") if self.header == "cookie" else conn.headers.get(self.header)
        user = TOKENS.get((value or "").removeprefix("Bearer "))
        if user is None:
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(user)


def authentication_app(header: str) -> tuple[FastAPI, Counter[str]]:
    app, _ = new_app()
    app.add_middleware(AuthenticationMiddleware, backend=HeaderTokenBackend(header))
    calls = Counter[str]()

    @app.get("/me")
    @cache_config
    def me(request: Request) -> dict[str, Any]:
        calls["/me"] += 1
        return {"user": request.user.display_name if request.user.is_authenticated else None}

    return app, calls


def auth_headers(header: str, user: str) -> dict[str, str]:
    if header == "cookie":
        return {"Cookie": f"sid={SECRETS[user]}"}
    return {header: f"Bearer {SECRETS[user]}"}


@pytest.mark.parametrize("header", ["authorization", "cookie", "x-api-key"])
def test_authentication_middleware_user_is_never_served_to_another_caller(header: str) -> None:
    """``request.user`` set by Starlette's AuthenticationMiddleware is the caller's identity."""
    app, _ = authentication_app(header)
    with TestClient(app) as client:
        for user in USERS:
            response = fresh_get(client, "/me", headers=auth_headers(header, user))
            assert response.json() == {"user": user}, f"{user} received {response.json()} ({cache_status(response)})"
        anonymous = fresh_get(client, "/me")
        anonymous_again = fresh_get(client, "/me")
    assert anonymous.json() == anonymous_again.json() == {"user": None}


# -- 8. response side ------------------------------------------------------------------------------


def test_endpoint_set_cookie_is_never_stored_nor_replayed() -> None:
    app, _ = new_app()
    calls = Counter[str]()

    @app.get("/welcome")
    @cache_config
    def welcome(response: Response) -> dict[str, Any]:
        calls["/welcome"] += 1
        visitor = secrets.token_hex(8)
        response.set_cookie("visitor", visitor)
        return {"visitor": visitor}

    @app.get("/login-page")
    @cache_config
    def login_page() -> JSONResponse:
        calls["/login-page"] += 1
        visitor = secrets.token_hex(8)
        response = JSONResponse({"csrf": visitor})
        response.set_cookie("csrf", visitor)
        return response

    with TestClient(app) as client:
        for url in ("/welcome", "/login-page"):
            first, second = fresh_get(client, url), fresh_get(client, url)
            assert first.json() != second.json()
            assert first.cookies.get("visitor" if url == "/welcome" else "csrf") != second.cookies.get(
                "visitor" if url == "/welcome" else "csrf"
            )
            for response in (first, second):
                assert x_cache(response) == "SKIP" and "detail=set-cookie" in cache_status(response)
    assert calls == Counter({"/welcome": 2, "/login-page": 2})


@pytest.mark.parametrize("directive", ["private", "no-store", "private, max-age=60", "no-cache"])
def test_endpoint_private_or_no_store_is_never_stored(directive: str) -> None:
    app, _ = new_app()

    @app.get("/me")
    @cache_config(public=True)
    def me(request: Request) -> JSONResponse:
        user = TOKENS.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        return JSONResponse({"user": user}, headers={"Cache-Control": directive})

    with TestClient(app) as client:
        for user in USERS:
            response = fresh_get(client, "/me", headers={"Authorization": f"Bearer {SECRETS[user]}"})
            assert response.json() == {"user": user}, f"{user} received {response.json()} ({directive})"
            assert x_cache(response) == "SKIP"


@pytest.mark.parametrize("vary", ["Cookie", "Authorization", "X-User"])
def test_response_vary_keeps_each_caller_apart(vary: str) -> None:
    app, _ = new_app()
    calls = Counter[str]()

    def send(user: str) -> dict[str, str]:
        if vary == "Cookie":
            return {"Cookie": f"sid={SECRETS[user]}"}
        if vary == "Authorization":
            return {"Authorization": f"Bearer {SECRETS[user]}"}
        return {"X-User": user}

    @app.get("/me")
    @cache_config
    def me(request: Request) -> JSONResponse:
        if vary == "Cookie":
            user = TOKENS.get(request.cookies.get("sid", ""))
        elif vary == "Authorization":
            user = TOKENS.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        else:
            user = request.headers.get("x-user")
        calls[str(user)] += 1
        return JSONResponse({"user": user}, headers={"Vary": vary, "Cache-Control": "public, max-age=60"})

    with TestClient(app) as client:
        responses = [fresh_get(client, "/me", headers=send(user)) for user in USERS]
        anonymous = [fresh_get(client, "/me") for _ in range(2)]
    assert [response.json()["user"] for response in responses] == list(USERS)
    assert [x_cache(response) for response in responses] == ["MISS", "MISS", "HIT", "HIT"]
    assert [response.json()["user"] for response in anonymous] == [None, None]
    assert [x_cache(response) for response in anonymous] == ["MISS", "HIT"]


def test_per_caller_response_headers_stay_with_their_caller() -> None:
    app, _ = new_app()

    def identify(request: Request, token: Annotated[str, Depends(client_key)]) -> str:
        request.state.user_id = user_of_token(token)
        return str(request.state.user_id)

    @app.get("/me")
    @cache_config(vary_by=["user_id"])
    def me(user: Annotated[str, Depends(identify)], response: Response) -> dict[str, Any]:
        response.headers["X-Account"] = user
        return {"user": user}

    @app.get("/raw")
    @cache_config(vary_by=["user_id"])
    def raw(user: Annotated[str, Depends(identify)]) -> Response:
        return Response(user, headers={"X-Account": user})

    with TestClient(app) as client:
        for url in ("/me", "/raw"):
            outcomes = []
            for user in USERS:
                response = fresh_get(client, url, headers={"X-Client": SECRETS[user]})
                assert response.headers["x-account"] == user, (url, user)
                assert user in response.text
                assert "private" in response.headers.get("cache-control", "")
                outcomes.append(x_cache(response))
            assert outcomes == ["MISS", "MISS", "HIT", "HIT"], url


# -- 9. WebSockets next to cached routes ---------------------------------------------------------------


def test_websocket_routes_in_a_cached_router_keep_working() -> None:
    app, _ = new_app()
    router = APIRouter(route_class=CachedRoute)

    def ws_user(websocket: WebSocket) -> str:
        return user_of_token(websocket.query_params.get("token"))

    @router.websocket("/ws")
    async def ws(websocket: WebSocket, user: Annotated[str, Depends(ws_user)]) -> None:
        await websocket.accept()
        await websocket.send_json({"user": user})
        await websocket.close()

    @router.get("/items")
    @cache_config
    def items() -> dict[str, Any]:
        return {"items": [1, 2]}

    outer = APIRouter(route_class=CachedRoute, dependencies=[Depends(lambda: None)])
    outer.include_router(router, prefix="/v1")
    app.include_router(outer)

    @app.websocket("/ws-app")
    async def ws_app(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    with TestClient(app) as client:
        for user in ("alice", "bob"):
            with client.websocket_connect(f"/v1/ws?token={SECRETS[user]}") as socket:
                assert socket.receive_json() == {"user": user}
        with client.websocket_connect("/ws-app") as socket:
            assert socket.receive_text() == "hello"
        assert [x_cache(client.get("/v1/items")) for _ in range(2)] == ["MISS", "HIT"]


@pytest.mark.parametrize("declared", ["Cookie()", "vary_by"])
def test_declared_cookie_covers_only_itself_under_optional_auth(declared: str) -> None:
    """A declared ``theme`` cookie next to an optional ``APIKeyCookie``: the member cookie stays per caller."""
    member = APIKeyCookie(name="member", auto_error=False)
    app, _ = new_app()

    if declared == "Cookie()":

        @app.get("/home")
        @cache_config
        def home(token: Annotated[str | None, Depends(member)], theme: Annotated[str, Cookie()] = "light") -> Any:
            return {"user": TOKENS.get(token or ""), "theme": theme}

    else:

        @app.get("/home")
        @cache_config(vary_by=["cookie:theme"])
        def home_vary(request: Request, token: Annotated[str | None, Depends(member)]) -> Any:
            return {"user": TOKENS.get(token or ""), "theme": request.cookies.get("theme", "light")}

    with TestClient(app) as client:
        themed = [fresh_get(client, "/home", headers={"Cookie": "theme=dark"}) for _ in range(2)]
        for user in USERS:
            response = fresh_get(client, "/home", headers={"Cookie": f"theme=dark; member={SECRETS[user]}"})
            assert response.json() == {"user": user, "theme": "dark"}, f"{user} received {response.json()}"
            assert x_cache(response) == "SKIP"
    assert [response.json() for response in themed] == [{"user": None, "theme": "dark"}] * 2
    assert [x_cache(response) for response in themed] == ["MISS", "HIT"]


# -- 10. more siblings: concurrency, HTTP mode, dependency cookies, APIKeyQuery names -------------------


@pytest.mark.parametrize("mode", ["app", "http"])
def test_concurrent_anonymous_and_authenticated_callers_each_get_their_own_page(mode: str) -> None:
    """Concurrent misses of one key are coalesced: never across callers whose credentials differ."""
    scheme = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)
    app, _ = new_app()
    calls = Counter[str]()

    @app.get("/home")
    @cache_config(mode=mode)
    async def home(token: Annotated[str | None, Depends(scheme)]) -> JSONResponse:
        user = TOKENS.get(token or "")
        calls[str(user)] += 1
        await anyio.sleep(0.2)
        return JSONResponse({"user": user}, headers={"Cache-Control": "max-age=60"})

    callers = [None, "alice", "bob", None, "alice", "bob"]
    with TestClient(app) as client:

        def get(user: str | None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {SECRETS[user]}"} if user else {}
            return client.get("/home", headers=headers)

        with concurrent.futures.ThreadPoolExecutor(len(callers)) as pool:
            responses = list(pool.map(get, callers))
        anonymous_later = get(None)
    for user, response in zip(callers, responses, strict=True):
        assert response.json() == {"user": user}, f"{user} received {response.json()} ({cache_status(response)})"
    assert anonymous_later.json() == {"user": None}
    assert x_cache(anonymous_later) == "HIT"
    assert calls["alice"] == 2 and calls["bob"] == 2


def test_cookie_set_by_a_dependency_is_never_stored_nor_replayed() -> None:
    app, _ = new_app()
    calls = Counter[str]()

    def track(response: Response, visitor: Annotated[str | None, Cookie()] = None) -> str:
        if visitor is None:
            visitor = secrets.token_hex(8)
            response.set_cookie("visitor", visitor)
        return visitor

    @app.get("/catalog")
    @cache_config
    def catalog(visitor: Annotated[str, Depends(track)]) -> dict[str, Any]:
        calls["/catalog"] += 1
        return {"visitor": visitor}

    with TestClient(app) as client:
        first, second = fresh_get(client, "/catalog"), fresh_get(client, "/catalog")
    assert first.json() != second.json()
    assert first.cookies.get("visitor") == first.json()["visitor"]
    assert second.cookies.get("visitor") == second.json()["visitor"]
    assert calls["/catalog"] == 2


def test_api_key_query_with_an_ordinary_name_is_digested_in_keys() -> None:
    key_scheme = APIKeyQuery(name="k")
    app, manager = new_app()

    @app.get("/feed")
    @cache_config
    def feed(key: Annotated[str, Depends(key_scheme)]) -> dict[str, Any]:
        return {"user": user_of_token(key)}

    with TestClient(app) as client:
        responses = [fresh_get(client, "/feed", params={"k": SECRETS[user]}) for user in USERS]
        keys = stored_keys(client, manager)
    assert [response.json()["user"] for response in responses] == list(USERS)
    assert [x_cache(response) for response in responses] == ["MISS", "MISS", "HIT", "HIT"]
    assert len(keys) == 2
    for key in keys:
        assert "tok-" not in key and "SECRET" not in key and "k=~h" in key, key


@pytest.mark.parametrize(
    "directive",
    ["max-age=0, must-revalidate", "must-revalidate, max-age=0", "s-maxage=0", "public, max-age=0, must-revalidate"],
)
def test_credentialed_response_that_may_not_be_reused_is_never_served_to_another_caller(directive: str) -> None:
    """``must-revalidate``/``s-maxage`` let a shared cache store a response to a credentialed request
    (RFC 9111 section 3.5), but ``max-age=0``/``s-maxage=0`` make it stale at once, and a stale
    ``must-revalidate`` response may not be served without revalidation (section 4.2.4): Bob must
    never receive Alice's page, whatever TTL the route has."""
    app, _ = new_app()
    calls = Counter[str]()

    @app.get("/me")
    @cache_config(ttl_seconds=60)
    def me(request: Request) -> JSONResponse:
        user = TOKENS.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        calls[str(user)] += 1
        return JSONResponse({"user": user}, headers={"Cache-Control": directive})

    with TestClient(app) as client:
        for user in USERS:
            response = fresh_get(client, "/me", headers={"Authorization": f"Bearer {SECRETS[user]}"})
            assert response.json() == {"user": user}, f"{user} received {response.json()} ({cache_status(response)})"
    assert calls == Counter({"alice": 2, "bob": 2})
