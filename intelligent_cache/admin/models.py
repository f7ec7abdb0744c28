"""The shapes of the admin API: what OpenAPI shows, and what every route's answer is checked against.

Routes return plain dicts serialized with ``response_model_exclude_unset``: a
field a route leaves out (``kind`` without ``with_state``, ``hidden``...) stays
out of the JSON rather than turning up as null. Such fields are the ones with a
default. Backends describe themselves, so the stats and health documents accept
extra fields; the others do not.
"""

# No "from __future__ import annotations" here: FastAPI and pydantic introspect these annotations.

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "NOT_FOUND",
    "UNAUTHORIZED",
    "UNAVAILABLE",
    "ClearResult",
    "DeleteResult",
    "ErrorDetail",
    "HealthStatus",
    "InvalidateRequest",
    "InvalidateResult",
    "KeyDetail",
    "KeysPage",
    "StatsDocument",
    "ValidationErrors",
]


class InvalidateRequest(BaseModel):
    """What ``POST /invalidate`` takes: a path, tags, or both."""

    path: str | None = Field(default=None, min_length=1, max_length=2048, pattern=r"^/")
    tags: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(default_factory=list, max_length=100)


# -- response models: what OpenAPI shows, and what every route's answer is checked against ----------------
#
# Routes return plain dicts serialized with ``response_model_exclude_unset``: a field a
# route leaves out (``kind`` without ``with_state``, ``hidden``...) stays out of the JSON
# rather than turning up as null. Such fields are the ones with a default.


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    # Backends describe themselves (``CacheBackend.info``) and stats may grow counters.
    model_config = ConfigDict(extra="allow")


EntryKind = Literal["response", "vary", "value", "corrupt"]
EntryState = Literal["fresh", "expired", "invalidated", "stale"]


class KeyItem(_Closed):
    """One key of a listing; the fields after ``ttl`` come with ``with_state=true`` only."""

    key: str
    ttl: float | None = Field(description="seconds the backend keeps the key; null: no expiry")
    kind: EntryKind | None = None
    valid: bool | None = Field(default=None, description="no write invalidated it; null: unknown, or not a response")
    state: EntryState | None = Field(default=None, description="null for other kinds than response")
    expires_in: float | None = Field(default=None, description="seconds of freshness left (0 unless fresh)")
    size: int | None = Field(default=None, description="bytes: the body of a response, the stored value otherwise")
    hits: int | None = Field(default=None, description="answers served from a response's entry while its key is kept")


class KeysPage(_Closed):
    """``GET /keys``: one page of keys; ``cursor`` 0 means the walk is done."""

    keys: list[KeyItem]
    cursor: int
    hidden: int | None = Field(default=None, description="invalidated entries left out (include_invalidated=false)")


class ResponseEntry(_Closed):
    """``GET /keys/{key}`` of a stored response (never its body)."""

    key: str
    kind: Literal["response"]
    route: str
    path: str
    status: int
    size: int = Field(description="bytes of the body")
    hits: int = Field(description="answers served from this entry (HIT or STALE) while its key is kept")
    stored_at: float = Field(description="seconds since the epoch")
    age: float
    ttl: float
    valid: bool | None
    state: EntryState
    expires_in: float
    tags: list[str]
    headers: list[tuple[str, str]]


class VaryEntry(_Closed):
    """``GET /keys/{key}`` of a pointer to per-header variants."""

    key: str
    kind: Literal["vary"]
    size: int
    vary: list[str]


class ValueEntry(_Closed):
    """``GET /keys/{key}`` of a value set through ``CacheService``, or of undecodable bytes."""

    key: str
    kind: Literal["value", "corrupt"]
    size: int


KeyDetail = Annotated[ResponseEntry | VaryEntry | ValueEntry, Field(discriminator="kind")]


class DeleteResult(_Closed):
    """``DELETE /keys/{key}``."""

    deleted: str


class ClearResult(_Closed):
    """``POST /clear``: how many entries were deleted, and the pattern (null: all)."""

    deleted: int
    pattern: str | None


class InvalidateResult(_Closed):
    """``POST /invalidate``: what was invalidated."""

    path: str | None
    tags: list[str]


class BackendInfo(_Open):
    """What the backend says of itself; the memory backend adds its use of its budget."""

    backend: str
    key_prefix: str | None = None
    breaker: dict[str, Any] | None = Field(
        default=None, description="state, consecutive_failures, times_opened, last_error"
    )
    near_cache: dict[str, Any] | None = None
    entries: int | None = Field(default=None, description="memory backend: entries held")
    max_entries: int | None = None
    bytes: int | None = Field(default=None, description="memory backend: bytes budgeted (keys, values, overhead)")
    max_bytes: int | None = None


class RouteCounts(_Open):
    """Counters of one route."""

    hits: int
    misses: int
    skips: int
    stale: int
    hit_rate: float


class StatsDocument(_Open):
    """``GET /stats``: lifetime counters (every process sharing a Redis backend, or this one)."""

    hits: int
    misses: int
    skips: int
    stale: int
    collapsed: int
    stores: int
    errors: int
    corrupt: int
    invalidations: int
    invalidation_errors: int
    refresh_errors: int
    hit_rate: float
    skip_reasons: dict[str, int]
    routes: dict[str, RouteCounts]
    scope: Literal["shared", "process"]
    backend: BackendInfo
    enabled: bool
    degraded: bool


class HealthStatus(BackendInfo):
    """``GET /health``: 200 with the ping's latency, 503 with the reason it failed."""

    status: Literal["ok", "unavailable"]
    latency_ms: float | None = Field(default=None, description="only when ok")
    reason: str | None = Field(default=None, description="only when unavailable")
    last_error: str | None = Field(description="the last failed backend call, 'Type: message'; null if none yet")


class ErrorDetail(_Closed):
    """An error with a message."""

    detail: str


class ValidationErrors(BaseModel):
    """FastAPI's answer to input that does not match the schema."""

    detail: list[dict[str, Any]]


UNAUTHORIZED = {"model": ErrorDetail, "description": "No valid admin credentials (as the auth dependency decides)"}
NOT_FOUND = {"model": ErrorDetail, "description": "No such key (absent, expired, or internal)"}
UNAVAILABLE = {"model": ErrorDetail, "description": "The cache backend failed"}
