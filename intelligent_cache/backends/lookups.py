"""The lookups of a :class:`~intelligent_cache.backends.redis.RedisBackend`: auto-pipelined on one connection.

Every request's lookup is one ``MGET`` (the entry and its counters). Through
redis-py's pool each costs a pool checkout and release, a task for the write
timeout and a read on its own connection: at a few thousand lookups a second,
41% of the server's CPU went there. This module sends them the way ioredis and
valkey-glide do: the lookups of one event-loop iteration are written together,
in one system call, on one connection per loop, and the replies, which Redis
sends in order, are handed back in order. hiredis parses them.

It is deliberately small: RESP2, ``AUTH`` and ``SELECT`` on connect, ``MGET``
only. Everything else (stores, bumps, scans, locks, pub/sub) stays on
redis-py. Failures raise redis-py's own exceptions, so the backend's breaker
treats them the same: a lost connection fails the lookups in flight with
``ConnectionError`` (the next lookup reconnects), no reply within
``socket_timeout`` fails them with ``TimeoutError`` and drops the connection,
an error reply raises ``ResponseError`` for that lookup only.
"""

import asyncio
import collections
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["LookupConnection", "pack"]


def pack(*args: bytes) -> bytes:
    """One RESP command."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)


class _Link(asyncio.Protocol):
    """One connection: commands written once per loop iteration, replies matched to waiters in order.

    Redis answers the commands of a connection in the order it receives them,
    so the n-th reply belongs to the n-th waiter. A link that fails (lost,
    timed out, out of step) fails all its waiters and is never used again.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.replies = 0  # progress, for the watchdog
        self._outgoing: list[bytes] = []
        self._watchdog: asyncio.TimerHandle | None = None
        self._reader = hiredis.Reader(replyError=ResponseError)

    @property
    def usable(self) -> bool:
        return self.transport is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's or uvloop's (which is no subclass of asyncio.Transport): both write and abort.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, command: bytes) -> "asyncio.Future[Any]":
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        if not self._outgoing:
            self.loop.call_soon(self._flush)
        self._outgoing.append(command)
        if self._watchdog is None:
            self._watchdog = self.loop.call_later(self.timeout, self._check, self.replies)
        return waiter

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self.transport is not None and outgoing:
            self.transport.write(b"".join(outgoing))

    def _check(self, replies_then: int) -> None:
        self._watchdog = None
        if not self.waiters:
            return
        if self.replies == replies_then:  # nothing answered for a whole timeout
            self.fail(RedisTimeoutError(f"no reply from Redis within {self.timeout} s"))
            return
        self._watchdog = self.loop.call_later(self.timeout, self._check, self.replies)

    def data_received(self, data: bytes) -> None:
        reader, waiters = self._reader, self.waiters
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(RedisConnectionError(f"unparseable reply from Redis: {exc}"))
                return
            if reply is False:
                return
            self.replies += 1
            if not waiters:  # a reply nobody asked for: out of step
                self.fail(RedisConnectionError("unexpected reply from Redis"))
                return
            waiter = waiters.popleft()
            if waiter.done():  # its request was cancelled: the reply is read and dropped
                continue
            if isinstance(reply, ResponseError):
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to Redis lost: {exc!r}" if exc else "Redis closed the connection"))

    def fail(self, error: Exception) -> None:
        """Fail every waiter and close for good."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._outgoing = []
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()


class LookupConnection:
    """The lookup connection of one event loop, carrying every ``MGET`` issued on it.

    Args:
        host, port: the server (TCP), or ``path`` for a Unix socket.
        db, username, password: sent with ``SELECT`` and ``AUTH`` on connect.
        socket_timeout: seconds the oldest lookup in flight may wait for a reply.
        socket_connect_timeout: seconds a connect (and its handshake) may take.
    """

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        socket_timeout: float = 0.5,
        socket_connect_timeout: float = 0.5,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.socket_timeout = socket_timeout
        self.socket_connect_timeout = socket_connect_timeout
        handshake: list[bytes] = []
        if password is not None:
            auth = (b"AUTH", username.encode(), password.encode()) if username else (b"AUTH", password.encode())
            handshake.append(pack(*auth))
        if db:
            handshake.append(pack(b"SELECT", str(db).encode()))
        self._handshake = handshake
        self._link: _Link | None = None
        self._connecting: asyncio.Future[None] | None = None

    async def mget(self, names: Sequence[str]) -> list[Any]:
        """``MGET names``: the values, ``None`` where absent."""
        command = pack(b"MGET", *(name.encode("utf-8", "surrogateescape") for name in names))
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            link = self._link
            fresh = link is None or not link.usable or link.loop is not loop
            if fresh:
                link = await self._connect()
            assert link is not None
            try:
                return list(await link.send(command))
            except RedisConnectionError:
                # A connection the server closed (restart, idle timeout) fails once:
                # retry on a fresh one rather than fail the request.
                if fresh or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _connect(self) -> _Link:
        while self._connecting is not None:  # another lookup is connecting: use its link
            await asyncio.shield(self._connecting)
            if self._link is not None and self._link.usable:
                return self._link
        loop = asyncio.get_running_loop()
        self.close()  # a link of another loop (or a broken one) is closed before it is replaced
        self._connecting = loop.create_future()
        link: _Link | None = None
        try:
            async with asyncio.timeout(self.socket_connect_timeout):
                link = await self._open(loop)
                for command in self._handshake:
                    await link.send(command)
        except BaseException as exc:
            if link is not None:
                link.fail(RedisConnectionError("the handshake failed"))
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError(f"connecting to Redis timed out after {self.socket_connect_timeout} s") from exc
            if isinstance(exc, OSError):  # worded as redis-py words it, so logs and /health read alike
                where = self.path or f"{self.host}:{self.port}"
                raise RedisConnectionError(f"Error {exc.errno} connecting to {where}. {exc.strerror or exc}.") from exc
            raise
        finally:
            self._connecting.set_result(None)
            self._connecting = None
        self._link = link
        return link

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Link:
        def make() -> _Link:
            return _Link(loop, self.socket_timeout)

        if self.path is not None:
            _, link = await loop.create_unix_connection(make, self.path)
        else:
            _, link = await loop.create_connection(make, self.host, self.port)
        return link

    def close(self) -> None:
        """Drop the connection; lookups in flight fail with ``ConnectionError``.

        A link belongs to the loop that opened it, and is closed on that loop.
        """
        link, self._link = self._link, None
        if link is None or link.loop.is_closed():
            return
        error = RedisConnectionError("the lookup connection was closed")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is link.loop:
            link.fail(error)
        else:
            link.loop.call_soon_threadsafe(link.fail, error)
