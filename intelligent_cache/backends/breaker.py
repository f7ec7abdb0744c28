"""A circuit breaker for backends that talk to a server."""

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from ..exceptions import BackendUnavailable, ConfigurationError

__all__ = ["CircuitBreaker", "probing"]

logger = logging.getLogger("intelligent_cache")

_PROBING: ContextVar[bool] = ContextVar("intelligent_cache_probing", default=False)


@contextlib.contextmanager
def probing() -> Iterator[None]:
    """Calls made inside go through an open breaker (and close it when they succeed).

    For the replay of failed invalidations: it already runs at most once per
    interval, and every lookup of the process waits for it, so holding it back
    until ``recovery_timeout`` would only keep pre-write data around longer.
    """
    token = _PROBING.set(True)
    try:
        yield
    finally:
        _PROBING.reset(token)


class CircuitBreaker:
    """Stops calling a failing backend for a while, then probes it.

    ``closed``: calls go through. ``open``: calls fail at once with
    :class:`BackendUnavailable` until ``recovery_timeout`` has passed.
    ``half-open``: one probe call goes through; success closes the breaker,
    failure opens it again. State changes are logged once each.

    What counts as a failure is the caller's call: the Redis backends report
    only failures to reach Redis (connection errors, timeouts, ``CLUSTERDOWN``),
    not error replies such as ``OOM``, which a reachable server sends.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        recovery_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "redis",
    ) -> None:
        if failure_threshold < 1:
            raise ConfigurationError("failure_threshold must be at least 1")
        if recovery_timeout <= 0:
            raise ConfigurationError("recovery_timeout must be positive")
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self._clock = clock
        self._name = name
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.last_error = ""
        self.times_opened = 0

    def before_call(self) -> None:
        """Raise :class:`BackendUnavailable` if the call must not be made."""
        if self.state == "closed" or _PROBING.get():
            return
        if self.state == "open" and self._clock() - self.opened_at >= self.recovery_timeout:
            self.state = "half-open"
            return
        raise BackendUnavailable(f"{self._name} circuit is {self.state}: {self.last_error}")

    def succeeded(self) -> None:
        if self.state != "closed":
            logger.warning("%s answers again: circuit closed", self._name)
        self.state = "closed"
        self.failures = 0

    def abandoned(self) -> None:
        """The call was cancelled: it proved nothing, so let the next call probe."""
        if self.state == "half-open":
            self.state = "open"
            self.opened_at = self._clock() - self.recovery_timeout

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = repr(exc)
        if self.state == "half-open" or (self.state == "closed" and self.failures >= self.failure_threshold):
            if self.state == "closed":
                logger.warning(
                    "%s failed %d times in a row, circuit opened for %.1fs: %r",
                    self._name,
                    self.failures,
                    self.recovery_timeout,
                    exc,
                )
                self.times_opened += 1
            self.state = "open"
            self.opened_at = self._clock()

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "consecutive_failures": self.failures,
            "times_opened": self.times_opened,
            "last_error": self.last_error,
        }
