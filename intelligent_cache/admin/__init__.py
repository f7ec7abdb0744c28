"""The admin API (and, later, its dashboard page)."""

from .options import AdminOptions
from .router import admin_router

__all__ = ["AdminOptions", "admin_router"]
