"""The admin API and dashboard behind authentication: a bearer token or an API key.

``admin_auth_dependency`` applies to every admin route (keys, clear,
invalidate, stats, metrics, health, dashboard); without it the admin routes
refuse to mount. Tokens are compared with ``secrets.compare_digest`` on bytes
(constant time, and no 500 on a non-ASCII header). A call without a valid
credential gets 401. The dashboard page (``/api/cache/dashboard``) needs the
credential on the page request too (an auth proxy adds it); in the page, enter
header ``X-API-Key`` and the token.

Run it (without ``IC_ADMIN_TOKEN`` a random token is generated and logged)::

    IC_ADMIN_TOKEN=s3cret uvicorn example_app.examples.secured_admin:app

    curl -si localhost:8000/api/cache/stats                              # 401
    curl -s localhost:8000/api/cache/stats -H 'Authorization: Bearer s3cret'
    curl -s -X POST localhost:8000/api/cache/clear -H 'X-API-Key: s3cret'
"""

import logging
import os
import secrets
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from intelligent_cache import CacheBackend, CacheManager, cache_config

logger = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False)
api_key = APIKeyHeader(name="X-API-Key", auto_error=False)


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
    ) -> None:
        given = credentials.credentials if credentials is not None else key
        if given is None or not secrets.compare_digest(given.encode(), expected):
            raise HTTPException(
                status_code=401, detail="admin credentials required", headers={"WWW-Authenticate": "Bearer"}
            )

    app = FastAPI(title="intelligent-cache: secured admin")
    CacheManager(backend, include_admin_routes=True, admin_auth_dependency=require_admin).init_app(app)

    @app.get("/products")
    @cache_config(ttl_seconds=120)
    async def list_products() -> list[dict[str, str]]:
        return [{"sku": "A-1", "name": "Kettle"}, {"sku": "B-2", "name": "Teapot"}]

    return app


app = create_app()
