"""Cross-user leaks: Bob must never receive what the cache computed for Alice.

Black-box acceptance tests of the request path: apps are built the way users build them (README),
driven through TestClient with their lifespan, and judged only by bodies, ``X-Cache``,
``Cache-Status``, logs and how many times an endpoint ran.

1. ``vary_by=["user_id"]`` where a dependency (route, router, include or app level) sets the user.
2. A declared non-credential cookie or header never unlocks the session cookie or ``Authorization``.
3. FastAPI security schemes anywhere in the dependant tree are credentials.
4. Credentials never appear in plaintext in cache keys (memory and a private Redis), ``key_secret``.
5. Hostile key inputs: the ``~r`` hash collision, separators, very long values.
"""

import base64
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Annotated, Any
from urllib.parse import quote, quote_plus, urlencode

import httpx
import pytest
from fastapi import APIRouter, Cookie, Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.security import (
    APIKeyCookie,
    APIKeyHeader,
    APIKeyQuery,
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
    OAuth2PasswordBearer,
    OpenIdConnect,
)
from fastapi.testclient import TestClient

from intelligent_cache import CachedRoute, CacheManager, ConfigurationError, MemoryBackend, cache_config
from intelligent_cache.keys import escape
from tests.conftest import unique_prefix

SECRETS = {"alice": "tok-alice-SECRET", "bob": "tok-bob-SECRET"}
TOKENS = {token: user for user, token in SECRETS.items()}
PASSWORDS = {"alice": "pw-alice-SECRET", "bob": "pw-bob-SECRET"}
ADMIN_TOKEN = "admin-token-for-listing"


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[user]}"}


def x_cache(response: httpx.Response) -> str | None:
    return response.headers.get("x-cache")


def cache_status(response: httpx.Response) -> str:
    return response.headers.get("cache-status", "")


def fresh_get(client: TestClient, url: str, **kwargs: Any) -> httpx.Response:
    """A GET that carries only the headers given: the client's cookie jar never adds a cookie."""
    client.cookies.clear()
    response = client.get(url, **kwargs)
    client.cookies.clear()
    return response


def intelligent_cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "intelligent_cache" and record.levelno == logging.WARNING
    ]


# Orders in which Alice (A) and Bob (B) send the same request.
INTERLEAVINGS = ["AB", "BA", "ABAB", "AABB", "ABBA", "BAAB", "ABABBA"]
WHO = {"A": "alice", "B": "bob"}


# -- 1. vary_by=["user_id"] set by a dependency ------------------------------------------------------------

http_bearer = HTTPBearer()


def current_user(request: Request, cred: Annotated[HTTPAuthorizationCredentials, Depends(http_bearer)]) -> None:
    user = TOKENS.get(cred.credentials)
    if user is None:
        raise HTTPException(status_code=401, detail="unknown token")
    request.state.user_id = user


def authenticated_only(cred: Annotated[HTTPAuthorizationCredentials, Depends(http_bearer)]) -> None:
    """Checks the token but never sets ``request.state.user_id``."""
    if cred.credentials not in TOKENS:
        raise HTTPException(status_code=401, detail="unknown token")


DEPENDENCY_PLACEMENTS = ["param", "route", "router", "include", "app"]


class MeApp:
    """``GET /me`` with ``vary_by=["user_id"]``, the user set by ``dependency`` placed at one level."""

    def __init__(self, placement: str, dependency: Callable[..., Any] | None = current_user) -> None:
        self.calls: Counter[str] = Counter()
        deps = [Depends(dependency)] if dependency is not None else []

        def at(level: str) -> list[Any]:
            return deps if placement == level else []

        self.app = FastAPI(dependencies=at("app"))
        self.manager = CacheManager(MemoryBackend()).init_app(self.app)
        router = APIRouter(route_class=CachedRoute, dependencies=at("router"))
        calls = self.calls

        if placement == "param":
            assert dependency is not None

            @router.get("/me")
            @cache_config(vary_by=["user_id"])
            def me_param(request: Request, _: Annotated[None, Depends(dependency)]) -> dict[str, Any]:
                calls["/me"] += 1
                return {"user": getattr(request.state, "user_id", None)}

        else:

            @router.get("/me", dependencies=at("route"))
            @cache_config(vary_by=["user_id"])
            def me(request: Request) -> dict[str, Any]:
                calls["/me"] += 1
                return {"user": getattr(request.state, "user_id", None)}

        @router.get("/profile", dependencies=at("route") or at("param"))
        @cache_config(vary_by=["user_id"])
        def profile(request: Request) -> dict[str, Any]:
            calls["/profile"] += 1
            return {"profile_of": getattr(request.state, "user_id", None)}

        self.app.include_router(router, dependencies=at("include"))


@pytest.mark.parametrize("placement", DEPENDENCY_PLACEMENTS)
@pytest.mark.parametrize("order", INTERLEAVINGS)
def test_vary_by_user_id_set_by_a_dependency_keys_each_user(placement: str, order: str) -> None:
    site = MeApp(placement)
    seen: set[str] = set()
    with TestClient(site.app) as client:
        for letter in order:
            user = WHO[letter]
            response = fresh_get(client, "/me", headers=bearer(user))
            assert response.status_code == 200, response.text
            assert response.json() == {"user": user}, f"{user} received {response.json()} ({order}, {placement})"
            expected = "HIT" if user in seen else "MISS"
            assert x_cache(response) == expected, (user, order, placement, cache_status(response))
            seen.add(user)
    assert site.calls["/me"] == len(seen)


@pytest.mark.parametrize("placement", DEPENDENCY_PLACEMENTS)
def test_vary_by_user_id_dependency_still_rejects_strangers_once_cached(placement: str) -> None:
    site = MeApp(placement)
    with TestClient(site.app) as client:
        for user in ("alice", "bob", "alice", "bob"):
            assert fresh_get(client, "/me", headers=bearer(user)).json() == {"user": user}
        stranger = fresh_get(client, "/me", headers={"Authorization": "Bearer tok-mallory"})
        anonymous = fresh_get(client, "/me")
    assert stranger.status_code == 401
    assert anonymous.status_code in (401, 403)
    assert "alice" not in stranger.text + anonymous.text
    assert "bob" not in stranger.text + anonymous.text


@pytest.mark.parametrize("placement", ["param", "route", "router", "include", "app", "none"])
def test_vary_value_missing_is_served_uncached_and_warned_once_per_route(
    placement: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="intelligent_cache")
    dependency = None if placement == "none" else authenticated_only
    site = MeApp("route" if placement == "none" else placement, dependency=dependency)
    # Without any dependency nobody authenticates: send no credentials, so only the vary value is missing.
    credentials: Callable[[str], dict[str, str]] = (lambda user: {}) if placement == "none" else bearer
    with TestClient(site.app) as client:
        for user in ("alice", "bob", "alice"):
            response = fresh_get(client, "/me", headers=credentials(user))
            assert response.status_code == 200, response.text
            assert response.json() == {"user": None}
            assert x_cache(response) == "SKIP", cache_status(response)
            assert "detail=vary-missing" in cache_status(response)
        warned_me = [message for message in intelligent_cache_warnings(caplog) if "/me" in message]
        assert len(warned_me) == 1, intelligent_cache_warnings(caplog)
        # A second route with the same mistake gets its own (single) warning.
        for user in ("alice", "bob"):
            response = fresh_get(client, "/profile", headers=credentials(user))
            assert x_cache(response) == "SKIP"
            assert "detail=vary-missing" in cache_status(response)
    warnings = intelligent_cache_warnings(caplog)
    assert len([message for message in warnings if "/profile" in message]) == 1, warnings
    assert len([message for message in warnings if "/me" in message and "/profile" not in message]) == 1, warnings
    # Served uncached: every request ran the endpoint.
    assert site.calls == Counter({"/me": 3, "/profile": 2})


def test_vary_by_user_id_set_by_middleware_keys_each_user_and_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """The README's per-user pattern (a middleware sets the user) keeps working, without a warning."""
    caplog.set_level(logging.WARNING, logger="intelligent_cache")
    app = FastAPI()
    CacheManager(MemoryBackend()).init_app(app)
    calls = Counter[str]()

    @app.middleware("http")
    async def identify(request: Request, call_next: Any) -> Response:
        request.state.user_id = request.headers.get("x-user")
        return await call_next(request)  # type: ignore[no-any-return]

    @app.get("/me")
    @cache_config(vary_by=["user_id"])
    def me(request: Request) -> dict[str, Any]:
        calls["/me"] += 1
        return {"user": request.state.user_id}

    with TestClient(app) as client:
        outcomes = []
        for user in ("alice", "bob", "alice", "bob"):
            response = fresh_get(client, "/me", headers={"X-User": user})
            assert response.json() == {"user": user}
            outcomes.append(x_cache(response))
    assert outcomes == ["MISS", "MISS", "HIT", "HIT"]
    assert calls["/me"] == 2
    assert intelligent_cache_warnings(caplog) == []


@pytest.mark.parametrize("decorator_order", ["cache_config-inside", "cache_config-outside"])
def test_vary_by_user_id_with_skip_dependencies_on_hit_is_a_configuration_error(decorator_order: str) -> None:
    app = FastAPI()
    CacheManager(MemoryBackend()).init_app(app)
    config = {"vary_by": ["user_id"], "skip_dependencies_on_hit": True}
    with pytest.raises(ConfigurationError):
        if decorator_order == "cache_config-inside":

            @app.get("/me", dependencies=[Depends(current_user)])
            @cache_config(**config)
            def me_inside(request: Request) -> dict[str, Any]:
                return {"user": request.state.user_id}

        else:

            @cache_config(**config)
            @app.get("/me", dependencies=[Depends(current_user)])
            def me_outside(request: Request) -> dict[str, Any]:
                return {"user": request.state.user_id}

        with TestClient(app) as client:
            client.get("/me", headers=bearer("alice"))


# -- 2. a declared non-credential cookie or header does not unlock credentials ----------------------------


def session_app() -> tuple[FastAPI, Counter[str]]:
    # Imported here: it needs itsdangerous, which only these tests use (not in the test extra yet).
    from starlette.middleware.sessions import SessionMiddleware

    app = FastAPI()
    CacheManager(MemoryBackend()).init_app(app)
    app.add_middleware(SessionMiddleware, secret_key="session-signing-key-for-tests")
    calls = Counter[str]()

    @app.post("/login")
    def login(request: Request, user: str) -> dict[str, str]:
        request.session["user"] = user
        return {"logged_in": user}

    @app.get("/page")
    @cache_config
    def page(request: Request, lang: Annotated[str, Cookie()] = "en") -> dict[str, Any]:
        calls["/page"] += 1
        return {"user": request.session.get("user"), "lang": lang}

    return app, calls


def login(client: TestClient, user: str) -> str:
    client.cookies.clear()
    response = client.post("/login", params={"user": user})
    assert response.status_code == 200
    session = response.cookies.get("session")
    assert session, "SessionMiddleware set no session cookie"
    client.cookies.clear()
    return session


@pytest.mark.parametrize("cookie_order", ["lang-first", "session-first"])
@pytest.mark.parametrize("order", INTERLEAVINGS)
def test_declared_lang_cookie_does_not_share_the_session_page(order: str, cookie_order: str) -> None:
    app, _ = session_app()
    with TestClient(app) as client:
        sessions = {user: login(client, user) for user in ("alice", "bob")}
        for letter in order:
            user = WHO[letter]
            parts = ["lang=en", f"session={sessions[user]}"]
            if cookie_order == "session-first":
                parts.reverse()
            response = fresh_get(client, "/page", headers={"Cookie": "; ".join(parts)})
            assert response.status_code == 200, response.text
            assert response.json() == {"user": user, "lang": "en"}, f"{user} received {response.json()} ({order})"


@pytest.mark.parametrize("order", INTERLEAVINGS)
def test_declared_cookie_keys_only_that_cookie_other_cookies_stay_per_caller(order: str) -> None:
    app = FastAPI()
    CacheManager(MemoryBackend()).init_app(app)

    @app.get("/page")
    @cache_config
    def page(request: Request, lang: Annotated[str, Cookie()] = "en") -> dict[str, Any]:
        # Reads an undeclared cookie by hand: the cache must not let it be shared.
        return {"sid": request.cookies.get("sid"), "lang": lang}

    with TestClient(app) as client:
        for letter in order:
            user = WHO[letter]
            response = fresh_get(client, "/page", headers={"Cookie": f"lang=en; sid={SECRETS[user]}"})
            assert response.json() == {"sid": SECRETS[user], "lang": "en"}, f"{user} received {response.json()}"


def test_declared_cookie_alone_is_cached_and_keyed_by_its_value() -> None:
    """Declaring a cookie makes it part of the key: callers with only that cookie share per value."""
    app = FastAPI()
    CacheManager(MemoryBackend()).init_app(app)
    calls = Counter[str]()

    @app.get("/page")
    @cache_config
    def page(lang: Annotated[str, Cookie()] = "en") -> dict[str, str]:
        calls[lang] += 1
        return {"lang": lang}

    with TestClient(app) as client:
        responses = [
            fresh_get(client, "/page", headers={"Cookie": f"lang={lang}"}) for lang in ("en", "en", "fr", "fr")
        ]
    assert [response.json()["lang"] for response in responses] == ["en", "en", "fr", "fr"]
    assert [x_cache(response) for response in responses] == ["MISS", "HIT", "MISS", "HIT"]
    assert calls == Counter({"en": 1, "fr": 1})


@pytest.mark.parametrize("order", INTERLEAVINGS)
def test_declared_accept_language_header_does_not_share_authorized_pages(order: str) -> None:
    app = FastAPI()
    CacheManager(MemoryBackend()).init_app(app)

    @app.get("/page")
    @cache_config
    def page(request: Request, accept_language: Annotated[str, Header()] = "en") -> dict[str, Any]:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        return {"user": TOKENS.get(token), "lang": accept_language}

    with TestClient(app) as client:
        for letter in order:
            user = WHO[letter]
            response = fresh_get(client, "/page", headers={**bearer(user), "Accept-Language": "en"})
            assert response.json() == {"user": user, "lang": "en"}, f"{user} received {response.json()}"


# -- 3. FastAPI security schemes are credentials ---------------------------------------------------------

SCHEMES: dict[str, Callable[[], Any]] = {
    "api_key_header": lambda: APIKeyHeader(name="X-API-Key"),
    "api_key_cookie": lambda: APIKeyCookie(name="key"),
    "api_key_query": lambda: APIKeyQuery(name="api_key"),
    "http_bearer": HTTPBearer,
    "http_basic": HTTPBasic,
    "oauth2_password_bearer": lambda: OAuth2PasswordBearer(tokenUrl="token"),
    "openid_connect": lambda: OpenIdConnect(openIdConnectUrl="https://idp.example/.well-known/openid-configuration"),
}
SCHEME_PLACEMENTS = ["direct", "nested", "router", "include", "app"]


def credential(scheme: str, user: str, token: str | None = None) -> dict[str, Any]:
    """The request arguments carrying ``user``'s credential for ``scheme``."""
    token = SECRETS.get(user, "tok-mallory") if token is None else token
    if scheme == "api_key_header":
        return {"headers": {"X-API-Key": token}}
    if scheme == "api_key_cookie":
        return {"headers": {"Cookie": f"key={token}"}}
    if scheme == "api_key_query":
        return {"params": {"api_key": token}}
    if scheme == "http_basic":
        basic = base64.b64encode(f"{user}:{PASSWORDS.get(user, 'nope')}".encode()).decode()
        return {"headers": {"Authorization": f"Basic {basic}"}}
    return {"headers": {"Authorization": f"Bearer {token}"}}


def user_of(value: Any) -> str:
    """The user a scheme's credential names; 401 for anybody else."""
    if isinstance(value, HTTPBasicCredentials):
        if PASSWORDS.get(value.username) != value.password:
            raise HTTPException(status_code=401, detail="bad password")
        return value.username
    token = value.credentials if isinstance(value, HTTPAuthorizationCredentials) else str(value)
    user = TOKENS.get(token.removeprefix("Bearer "))  # OpenIdConnect hands over the whole header
    if user is None:
        raise HTTPException(status_code=401, detail="unknown credential")
    return user


class SchemeApp:
    """``GET /me`` protected by one security scheme used as ``Depends(scheme)`` at one place.

    ``mode``: ``"private"`` (``@cache_config``, no vary_by, not public), ``"public"`` or ``"vary"``
    (``vary_by=["user_id"]``, the user set from the credential).
    """

    def __init__(self, scheme_name: str, placement: str, mode: str) -> None:
        scheme = SCHEMES[scheme_name]()
        self.calls: Counter[str] = Counter()
        calls = self.calls

        def identify(request: Request, cred: Annotated[Any, Depends(scheme)]) -> str:
            user = user_of(cred)
            request.state.user_id = user
            return user

        level_deps = [Depends(scheme), Depends(identify)]

        def at(level: str) -> list[Any]:
            return level_deps if placement == level else []

        config: dict[str, Any] = {"public": True} if mode == "public" else {}
        if mode == "vary":
            config["vary_by"] = ["user_id"]

        self.app = FastAPI(dependencies=at("app"))
        CacheManager(MemoryBackend()).init_app(self.app)
        router = APIRouter(route_class=CachedRoute, dependencies=at("router"))

        def body(user: str) -> dict[str, Any]:
            calls["/me"] += 1
            return {"public": "catalog"} if mode == "public" else {"user": user}

        if placement == "direct":

            @router.get("/me", dependencies=[Depends(identify)])
            @cache_config(**config)
            def me_direct(cred: Annotated[Any, Depends(scheme)]) -> dict[str, Any]:
                return body(user_of(cred))

        elif placement == "nested":

            @router.get("/me")
            @cache_config(**config)
            def me_nested(user: Annotated[str, Depends(identify)]) -> dict[str, Any]:
                return body(user)

        else:

            @router.get("/me")
            @cache_config(**config)
            def me_level(request: Request) -> dict[str, Any]:
                return body(request.state.user_id)

        self.app.include_router(router, dependencies=at("include"))


@pytest.mark.parametrize("placement", SCHEME_PLACEMENTS)
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_security_scheme_credentials_never_share_an_entry(scheme: str, placement: str) -> None:
    site = SchemeApp(scheme, placement, "private")
    with TestClient(site.app) as client:
        for order in ("AB", "ABAB", "BBAA"):
            for letter in order:
                user = WHO[letter]
                response = fresh_get(client, "/me", **credential(scheme, user))
                assert response.status_code == 200, response.text
                assert response.json() == {"user": user}, f"{user} received {response.json()} via {scheme}"


@pytest.mark.parametrize("placement", SCHEME_PLACEMENTS)
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_security_scheme_on_public_route_shares_the_entry_and_still_authenticates(scheme: str, placement: str) -> None:
    site = SchemeApp(scheme, placement, "public")
    with TestClient(site.app) as client:
        first = fresh_get(client, "/me", **credential(scheme, "alice"))
        again = fresh_get(client, "/me", **credential(scheme, "alice"))
        other = fresh_get(client, "/me", **credential(scheme, "bob"))
        stranger = fresh_get(client, "/me", **credential(scheme, "mallory"))
        anonymous = fresh_get(client, "/me")
    for response in (first, again, other):
        assert response.status_code == 200, response.text
        assert response.json() == {"public": "catalog"}
    assert (x_cache(first), x_cache(again)) == ("MISS", "HIT")
    if scheme != "api_key_query":  # its credential is in the URL: Bob's request is another URL
        assert x_cache(other) == "HIT", cache_status(other)
        assert site.calls["/me"] == 1
    # Dependencies still run on a HIT: the cached entry does not open the route.
    assert stranger.status_code == 401, stranger.text
    assert anonymous.status_code in (401, 403), anonymous.text


@pytest.mark.parametrize("placement", SCHEME_PLACEMENTS)
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_security_scheme_with_vary_by_user_id_caches_each_user(scheme: str, placement: str) -> None:
    site = SchemeApp(scheme, placement, "vary")
    outcomes = []
    with TestClient(site.app) as client:
        for letter in "ABAB":
            user = WHO[letter]
            response = fresh_get(client, "/me", **credential(scheme, user))
            assert response.status_code == 200, response.text
            assert response.json() == {"user": user}, f"{user} received {response.json()} via {scheme}"
            outcomes.append(x_cache(response))
    assert outcomes == ["MISS", "MISS", "HIT", "HIT"]
    assert site.calls["/me"] == 2


# -- 4. credentials are never stored in plaintext keys ---------------------------------------------------

BASIC_ALICE = base64.b64encode(b"alice:pw-alice-SECRET").decode()
CREDENTIAL_CASES = [
    "vary-header-authorization",
    "vary-header-authorization-basic",
    "vary-cookie-session",
    "declared-authorization-header",
    "declared-session-cookie",
    "api-key-query",
    "response-vary-authorization",
    "response-vary-cookie",
]


def forbidden_fragments(case: str) -> list[str]:
    """What must never be found in any key after Alice's request (compared case-insensitively)."""
    values = [SECRETS["alice"], f"Bearer {SECRETS['alice']}", f"session={SECRETS['alice']}"]
    if case == "vary-header-authorization-basic":
        values = [BASIC_ALICE, BASIC_ALICE.rstrip("="), f"Basic {BASIC_ALICE}"]
    fragments = set()
    for value in values:
        fragments.update({value, quote(value, safe=""), quote(value), quote_plus(value), escape(value)})
    return sorted(fragments)


def alice_request(case: str, user: str = "alice") -> dict[str, Any]:
    if case in ("vary-header-authorization-basic",):
        basic = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
        return {"headers": {"Authorization": f"Basic {basic}"}}
    if case in ("vary-cookie-session", "declared-session-cookie", "response-vary-cookie"):
        return {"headers": {"Cookie": f"session={SECRETS[user]}"}}
    if case == "api-key-query":
        return {"params": {"api_key": SECRETS[user]}}
    return {"headers": bearer(user)}


def require_admin(x_admin_token: Annotated[str | None, Header()] = None) -> None:
    if x_admin_token != ADMIN_TOKEN:
        raise HTTPException(status_code=401, detail="admin token required")


def credential_app(case: str, manager: CacheManager, name: str = "A") -> tuple[FastAPI, Counter[str]]:
    """``GET /whoami`` whose response depends on Alice's or Bob's credential, cached per caller by ``case``."""
    app = FastAPI()
    manager.init_app(app)
    calls = Counter[str]()

    def who(request: Request) -> str | None:
        authorization = request.headers.get("authorization", "")
        if authorization.startswith("Basic "):
            return base64.b64decode(authorization[6:]).decode().partition(":")[0]
        token = authorization.removeprefix("Bearer ") or request.cookies.get("session") or ""
        return TOKENS.get(token) or TOKENS.get(request.query_params.get("api_key", ""))

    def answer(request: Request) -> dict[str, Any]:
        calls["/whoami"] += 1
        return {"user": who(request), "by": name}

    if case.startswith("vary-header-authorization"):

        @app.get("/whoami")
        @cache_config(vary_by=["header:Authorization"])
        def whoami_header(request: Request) -> dict[str, Any]:
            return answer(request)

    elif case == "vary-cookie-session":

        @app.get("/whoami")
        @cache_config(vary_by=["cookie:session"])
        def whoami_cookie(request: Request) -> dict[str, Any]:
            return answer(request)

    elif case == "declared-authorization-header":

        @app.get("/whoami")
        @cache_config
        def whoami_declared_header(
            request: Request, authorization: Annotated[str | None, Header()] = None
        ) -> dict[str, Any]:
            return answer(request)

    elif case == "declared-session-cookie":

        @app.get("/whoami")
        @cache_config
        def whoami_declared_cookie(request: Request, session: Annotated[str | None, Cookie()] = None) -> dict[str, Any]:
            return answer(request)

    elif case == "api-key-query":
        api_key = APIKeyQuery(name="api_key")

        @app.get("/whoami")
        @cache_config
        def whoami_query(request: Request, key: Annotated[str, Depends(api_key)]) -> dict[str, Any]:
            return answer(request)

    else:
        vary = "Authorization" if case == "response-vary-authorization" else "Cookie"

        @app.get("/whoami")
        @cache_config
        def whoami_vary(request: Request) -> Response:
            body = answer(request)
            return Response(
                f'{{"user": "{body["user"]}", "by": "{name}"}}',
                media_type="application/json",
                headers={"Vary": vary, "Cache-Control": "public, max-age=60"},
            )

    return app, calls


BACKENDS = [pytest.param("memory", id="memory"), pytest.param("redis", id="redis", marks=pytest.mark.redis)]


@pytest.fixture
def raw_redis_keys(request: pytest.FixtureRequest) -> Iterator[Callable[[], list[str]]]:
    """Every raw key of the session's private redis-server (never the shared one on 6379)."""
    server = request.getfixturevalue("redis_server")
    client = server.client()
    yield lambda: [key.decode("latin-1") if isinstance(key, bytes) else key for key in client.keys("*")]
    client.close()


def make_manager(kind: str, request: pytest.FixtureRequest, prefix: str | None = None, **options: Any) -> CacheManager:
    if kind == "memory":
        return CacheManager(MemoryBackend(), **options)
    from intelligent_cache.backends.redis import RedisBackend

    server = request.getfixturevalue("redis_server")
    return CacheManager(RedisBackend(server.url, key_prefix=prefix or unique_prefix()), **options)


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("case", CREDENTIAL_CASES)
def test_credentials_never_appear_in_cache_keys(case: str, kind: str, request: pytest.FixtureRequest) -> None:
    manager = make_manager(kind, request, include_admin_routes=True, admin_auth_dependency=require_admin)
    app, calls = credential_app(case, manager)
    with TestClient(app) as client:
        first = fresh_get(client, "/whoami", **alice_request(case))
        second = fresh_get(client, "/whoami", **alice_request(case))
        bob = fresh_get(client, "/whoami", **alice_request(case, "bob"))
        admin = fresh_get(client, "/api/cache/keys", params={"limit": 1000}, headers={"X-Admin-Token": ADMIN_TOKEN})
        service_keys = client.portal.call(manager.service().list_keys)
    assert first.json()["user"] == "alice"
    assert second.json()["user"] == "alice"
    assert bob.json()["user"] == "bob", f"Bob received {bob.json()}"
    assert (x_cache(first), x_cache(second)) == ("MISS", "HIT"), cache_status(second)
    assert calls["/whoami"] == 2
    assert admin.status_code == 200, admin.text
    listings = {
        "service().list_keys()": service_keys,
        "GET /api/cache/keys": [item["key"] for item in admin.json()["keys"]],
    }
    if kind == "redis":
        listings["redis KEYS *"] = request.getfixturevalue("raw_redis_keys")()
    assert listings["service().list_keys()"], "nothing was stored"
    for where, keys in listings.items():
        for key in keys:
            for fragment in forbidden_fragments(case):
                assert fragment.lower() not in key.lower(), f"{where} has {key!r}, which contains {fragment!r}"


def test_key_secret_is_a_manager_option() -> None:
    CacheManager(MemoryBackend(), key_secret="k" * 32)


class Instance:
    """One app instance (a worker, in production) on a shared Redis namespace."""

    def __init__(self, name: str, request: pytest.FixtureRequest, prefix: str, **options: Any) -> None:
        manager = make_manager("redis", request, prefix, **options)
        self.app, self.calls = credential_app("vary-header-authorization", manager, name)


@pytest.mark.redis
@pytest.mark.parametrize(
    ("secret_a", "secret_b", "shared"),
    [
        pytest.param("same-secret-0123456789abcdef", "same-secret-0123456789abcdef", True, id="same-secret"),
        pytest.param("secret-a-0123456789abcdef", "secret-b-0123456789abcdef", False, id="different-secrets"),
        pytest.param(None, None, True, id="default-secret-kept-in-backend"),
    ],
)
def test_instances_share_credential_keyed_entries_exactly_when_their_key_secret_matches(
    secret_a: str | None, secret_b: str | None, shared: bool, request: pytest.FixtureRequest
) -> None:
    prefix = unique_prefix()
    options_a = {} if secret_a is None else {"key_secret": secret_a}
    options_b = {} if secret_b is None else {"key_secret": secret_b}
    a = Instance("A", request, prefix, **options_a)
    b = Instance("B", request, prefix, **options_b)
    with TestClient(a.app) as client_a, TestClient(b.app) as client_b:
        stored = fresh_get(client_a, "/whoami", headers=bearer("alice"))
        again_a = fresh_get(client_a, "/whoami", headers=bearer("alice"))
        via_b = fresh_get(client_b, "/whoami", headers=bearer("alice"))
        bob_via_b = fresh_get(client_b, "/whoami", headers=bearer("bob"))
    assert (stored.json(), x_cache(stored)) == ({"user": "alice", "by": "A"}, "MISS")
    assert (again_a.json(), x_cache(again_a)) == ({"user": "alice", "by": "A"}, "HIT")
    assert bob_via_b.json() == {"user": "bob", "by": "B"}
    if shared:
        assert (via_b.json(), x_cache(via_b)) == ({"user": "alice", "by": "A"}, "HIT"), cache_status(via_b)
        assert b.calls["/whoami"] == 1
    else:
        assert (via_b.json(), x_cache(via_b)) == ({"user": "alice", "by": "B"}, "MISS"), cache_status(via_b)
        assert b.calls["/whoami"] == 2
    raw_keys = request.getfixturevalue("raw_redis_keys")()
    assert [key for key in raw_keys if "tok-alice-secret" in key.lower()] == []


# -- 5. hostile key inputs ----------------------------------------------------------------------------------


def echo_app(cached: bool) -> tuple[FastAPI, Counter[str]]:
    """Endpoints that echo every input they are keyed on. ``cached=False`` is the oracle twin."""
    app = FastAPI()
    decorate: Callable[[Any], Any] = cache_config(vary_by=["header:X-Tenant"]) if cached else (lambda f: f)
    plain: Callable[[Any], Any] = cache_config if cached else (lambda f: f)
    if cached:
        CacheManager(MemoryBackend()).init_app(app)
    calls = Counter[str]()

    @app.get("/search")
    @plain
    def search(request: Request) -> dict[str, Any]:
        calls["/search"] += 1
        return {"query": request.query_params.multi_items()}

    @app.get("/echo/{rest:path}")
    @plain
    def echo(rest: str, request: Request) -> dict[str, Any]:
        calls["/echo"] += 1
        return {"rest": rest, "query": request.query_params.multi_items()}

    @app.get("/tenant")
    @decorate
    def tenant(request: Request) -> dict[str, Any]:
        calls["/tenant"] += 1
        # Repeated field lines mean the same as one comma-joined line (RFC 9110 section 5.3).
        tenant = request.headers.getlist("x-tenant")
        return {"tenant": ", ".join(tenant) if tenant else None, "query": request.query_params.multi_items()}

    return app, calls


LONG_PARAMS = "&".join(f"z{index}=" + "v" * 50 for index in range(10))


def test_long_keys_do_not_collide_when_separators_move_between_query_parts() -> None:
    app, calls = echo_app(cached=True)
    first_url = f"/search?a=1/b&c=2&{LONG_PARAMS}"
    second_url = f"/search?a=1&b/c=2&{LONG_PARAMS}"
    with TestClient(app) as client:
        first = fresh_get(client, first_url)
        second = fresh_get(client, second_url)
        first_again = fresh_get(client, first_url)
    assert first.json()["query"][:2] == [["a", "1/b"], ["c", "2"]]
    assert second.json()["query"][:3] == [["a", "1"], ["b/c", "2"], ["z0", "v" * 50]]
    assert x_cache(second) != "HIT", "a different query was answered with another query's entry"
    assert first_again.json() == first.json()
    assert x_cache(first_again) == "HIT"
    assert calls["/search"] == 2


SEPARATORS = [":", "=", "@", "~", "%", "*", "?", "[", "]", "{", "}", "\\", "/", "&", "#", " ", "+", ";", ",", "%3A"]


def hostile_requests() -> list[tuple[str, dict[str, Any]]]:
    """Distinct requests built to collide under a naive key: pairs that differ only by where a separator sits."""
    requests: list[tuple[str, dict[str, Any]]] = []
    for sep in SEPARATORS:
        encoded = quote(sep, safe="")
        requests += [
            (f"/echo/a{encoded}b", {}),
            (f"/echo/a/{encoded}b", {}),
            (f"/echo/a{encoded}/b", {}),
            ("/search?" + urlencode([(f"a{sep}b", "c")]), {}),
            ("/search?" + urlencode([("a", f"b{sep}c")]), {}),
            ("/search?" + urlencode([(f"a{sep}", f"{sep}c")]), {}),
            ("/search?" + urlencode([("a", sep), ("b", "c")]), {}),
            ("/search?" + urlencode([("a", f"{sep}b=c")]), {}),
            ("/tenant", {"headers": {"X-Tenant": f"a{sep}b"}}),
            ("/tenant", {"headers": {"X-Tenant": f"a{sep}"}}),
            ("/tenant?" + urlencode([("q", sep)]), {"headers": {"X-Tenant": sep}}),
        ]
    requests += [
        ("/search?a=1&b=2", {}),
        ("/search?a=1%26b%3D2", {}),
        ("/search?a=1:b=2", {}),
        ("/search?a%3D1=b", {}),
        ("/search?a=1=b", {}),
        ("/echo/a:b=c", {}),
        ("/echo/a/b=c", {}),
        ("/echo/a:b/c", {}),
        ("/echo/~r" + "0" * 32, {}),
        ("/echo/@user_id", {}),
        ("/tenant", {}),
        ("/tenant", {"headers": {"X-Tenant": ""}}),
        ("/tenant", {"headers": [("X-Tenant", "a"), ("X-Tenant", "b")]}),
        ("/tenant", {"headers": {"X-Tenant": "a, b"}}),
        ("/tenant", {"headers": {"X-Tenant": "a:@v.x=b"}}),
        ("/tenant?x=1", {"headers": {"X-Tenant": "@x=1"}}),
    ]
    long_value = "x" * 10_240
    long_header = "h" * 8_192
    requests += [
        ("/search?" + urlencode([("q", long_value)]), {}),
        ("/search?" + urlencode([("q", long_value + "y")]), {}),
        ("/search?" + urlencode([("q", "y" + long_value)]), {}),
        ("/search?" + urlencode([("q", long_value), ("r", "1")]), {}),
        ("/search?" + urlencode([(long_value, "1")]), {}),
        ("/echo/" + long_value, {}),
        ("/echo/" + long_value + "y", {}),
        ("/tenant", {"headers": {"X-Tenant": long_header}}),
        ("/tenant", {"headers": {"X-Tenant": long_header + "y"}}),
        ("/tenant", {"headers": {"X-Tenant": "y" + long_header}}),
    ]
    return requests


def test_hostile_key_inputs_each_get_their_own_body() -> None:
    requests = hostile_requests()
    oracle_app, _ = echo_app(cached=False)
    with TestClient(oracle_app) as oracle:
        expected = [fresh_get(oracle, url, **kwargs) for url, kwargs in requests]
    app, _ = echo_app(cached=True)
    with TestClient(app) as client:
        for round_ in range(2):  # the first round stores, the second is answered from the cache
            for (url, kwargs), want in zip(requests, expected, strict=True):
                got = fresh_get(client, url, **kwargs)
                assert got.status_code == want.status_code, (url, kwargs)
                assert got.json() == want.json(), f"round {round_}: {url!r} {kwargs!r} got {got.json()!r}"[:2000]


def test_hostile_key_inputs_are_cached_and_keys_stay_bounded() -> None:
    app, calls = echo_app(cached=True)
    manager: CacheManager = app.state.intelligent_cache
    requests = hostile_requests()
    with TestClient(app) as client:
        for url, kwargs in requests:
            fresh_get(client, url, **kwargs)
        ran = sum(calls.values())
        again = [x_cache(fresh_get(client, url, **kwargs)) for url, kwargs in requests]
        keys = client.portal.call(manager.service().list_keys)
    assert sum(calls.values()) == ran, "a repeated request ran its endpoint again"
    assert set(again) == {"HIT"}
    assert keys and max(len(key) for key in keys) <= 512
    # No key holds a glob character the cache did not put there.
    assert not [key for key in keys if any(char in key for char in "*?[]")]
