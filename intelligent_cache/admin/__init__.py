"""The admin API (and, later, its dashboard page)."""

from .router import admin_router

__all__ = ["admin_router"]
