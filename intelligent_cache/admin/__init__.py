"""The admin API, its dashboard page, and the models of its answers."""

from .models import (
    ClearResult,
    DeleteResult,
    HealthStatus,
    InvalidateRequest,
    InvalidateResult,
    KeyDetail,
    KeysPage,
    StatsDocument,
)
from .options import AdminOptions
from .router import admin_router

__all__ = [
    "AdminOptions",
    "ClearResult",
    "DeleteResult",
    "HealthStatus",
    "InvalidateRequest",
    "InvalidateResult",
    "KeyDetail",
    "KeysPage",
    "StatsDocument",
    "admin_router",
]
