"""How the admin API is mounted and protected: the admin router's own settings."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends

from ..exceptions import ConfigurationError

__all__ = ["AdminOptions"]


@dataclass(frozen=True, slots=True)
class AdminOptions:
    """Settings of the admin router (``CacheManager`` takes them as ``admin_*`` arguments).

    Attributes:
        dependencies: dependencies applied to every admin route.
        auth_dependency: a single auth dependency (callable) for them.
        allow_unauthenticated: mount them without any auth (a warning is logged).
        prefix: where ``init_app`` mounts them.
        include_in_schema: list them in the app's OpenAPI document (``False``:
            they still answer, but ``/openapi.json`` and ``/docs`` do not show them).
    """

    dependencies: Sequence[Any] = field(default_factory=tuple)
    auth_dependency: Callable[..., Any] | None = None
    allow_unauthenticated: bool = False
    prefix: str = "/api/cache"
    include_in_schema: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ConfigurationError("admin_prefix must start with '/' and not end with one")

    def route_dependencies(self) -> list[Any]:
        """Every dependency the admin routes run.

        Raises:
            ConfigurationError: there is none and unauthenticated access was not allowed.
        """
        dependencies = list(self.dependencies)
        if self.auth_dependency is not None:
            dependencies.append(Depends(self.auth_dependency))
        if not dependencies and not self.allow_unauthenticated:
            raise ConfigurationError(
                "admin routes need authentication: pass admin_dependencies=[Depends(...)] or "
                "admin_auth_dependency=..., or allow_unauthenticated_admin=True for a trusted network"
            )
        return dependencies
