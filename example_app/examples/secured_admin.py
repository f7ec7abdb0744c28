"""The admin API and dashboard behind authentication: a bearer token, an API key, or a sign-in cookie.

``admin_auth_dependency`` applies to every admin route (keys, clear,
invalidate, stats, metrics, health, dashboard); without it the admin routes
refuse to mount. Tokens are compared with ``secrets.compare_digest`` on bytes
(constant time, and no 500 on a non-ASCII header). A call without a valid
credential gets 401. Scripts send the token in a header; a browser signs in at
``/admin/login``: the form POSTs the token (never in a URL), which comes back
as an HttpOnly, SameSite=Strict cookie sent to the admin prefix only, and the
dashboard's calls carry it.

Run it (without ``IC_ADMIN_TOKEN`` a random token is generated and logged)::

    IC_ADMIN_TOKEN=s3cret uvicorn example_app.examples.secured_admin:app

    curl -si localhost:8000/api/cache/stats                              # 401
    curl -s localhost:8000/api/cache/stats -H 'Authorization: Bearer s3cret'
    curl -s -X POST localhost:8000/api/cache/clear -H 'X-API-Key: s3cret'
    # in a browser: http://localhost:8000/admin/login
"""

import logging
import os
import secrets
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from intelligent_cache import CacheBackend, CacheManager, cache_config

logger = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False)
api_key = APIKeyHeader(name="X-API-Key", auto_error=False)
COOKIE = "ic_admin_token"
session = APIKeyCookie(name=COOKIE, auto_error=False)

LOGIN_PAGE = """<!doctype html>
<title>Cache admin: sign in</title>
<form method="post" action="/admin/login">
  <!--error-->
  <label>Admin token <input type="password" name="token" autocomplete="current-password" autofocus required></label>
  <button>Open the dashboard</button>
</form>
"""


def create_app(backend: CacheBackend | None = None, *, admin_token: str | None = None) -> FastAPI:
    """The app; the token defaults to ``IC_ADMIN_TOKEN``, else a random one (logged)."""
    token = admin_token or os.environ.get("IC_ADMIN_TOKEN")
    if not token:
        token = secrets.token_urlsafe(24)
        logger.warning("IC_ADMIN_TOKEN is not set; admin token for this process: %s", token)
    expected = token.encode()

    def require_admin(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        key: Annotated[str | None, Depends(api_key)],
        cookie: Annotated[str | None, Depends(session)],
    ) -> None:
        given = credentials.credentials if credentials is not None else key or cookie
        if given is None or not secrets.compare_digest(given.encode(), expected):
            raise HTTPException(
                status_code=401, detail="admin credentials required", headers={"WWW-Authenticate": "Bearer"}
            )

    app = FastAPI(title="intelligent-cache: secured admin")
    manager = CacheManager(backend, include_admin_routes=True, admin_auth_dependency=require_admin).init_app(app)
    prefix = manager.admin.prefix

    @app.get("/admin/login", include_in_schema=False)
    async def login_form() -> HTMLResponse:
        return HTMLResponse(LOGIN_PAGE, headers={"cache-control": "no-store"})

    @app.post("/admin/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        """Check the token and keep it in a cookie that only the admin routes receive."""
        body = await request.body()
        given = (parse_qs(body[:4096].decode("latin-1"), max_num_fields=4).get("token") or [""])[0]
        if not secrets.compare_digest(given.encode(), expected):
            return HTMLResponse(LOGIN_PAGE.replace("<!--error-->", "<p>Wrong token.</p>"), status_code=401)
        response = RedirectResponse(f"{prefix}/dashboard", status_code=303)
        secure = request.url.scheme == "https"
        response.set_cookie(COOKIE, given, path=prefix, httponly=True, samesite="strict", secure=secure)
        return response

    @app.post("/admin/logout", include_in_schema=False)
    async def logout() -> RedirectResponse:
        response = RedirectResponse("/admin/login", status_code=303)
        response.delete_cookie(COOKIE, path=prefix, httponly=True, samesite="strict")
        return response

    @app.get("/products")
    @cache_config(ttl_seconds=120)
    async def list_products() -> list[dict[str, str]]:
        return [{"sku": "A-1", "name": "Kettle"}, {"sku": "B-2", "name": "Teapot"}]

    return app


app = create_app()
