"""The error tree of intelligent-cache.

::

    IntelligentCacheError
     +-- ConfigurationError      bad settings, raised at set-up time (also a ValueError)
     +-- BackendError            a backend call failed; the cache fails open on it
     |    +-- BackendUnavailable the circuit breaker is open, the backend was not called
     +-- CorruptEntryError       a stored value is not a readable entry; read as a miss
     +-- NoCacheManager          the app has no CacheManager (also a LookupError)
"""


class IntelligentCacheError(Exception):
    """Root of every error this package raises."""


class ConfigurationError(IntelligentCacheError, ValueError):
    """A setting is invalid. Raised when the object is built, never per request."""


class BackendError(IntelligentCacheError):
    """A backend operation failed (connection, timeout, protocol)."""


class BackendUnavailable(BackendError):
    """The backend is considered down and was not called (circuit breaker open)."""


class CorruptEntryError(IntelligentCacheError):
    """A stored value could not be decoded as an intelligent-cache entry."""


class NoCacheManager(IntelligentCacheError, LookupError):
    """The app asked about has no :class:`~intelligent_cache.CacheManager`: call ``init_app`` first."""
