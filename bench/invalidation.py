"""What one write costs to invalidate, as the cache grows: generation counters vs a pattern scan.

``python -m bench.invalidation`` fills a cache with N entries (1k, 100k, 1M)
spread over ``/spaces/{s}/items/{i}?page={p}`` (100 spaces, 10 pages per item),
then measures, after one ``POST /spaces/7/items``:

- **ours**: what the library does, ``invalidation_keys("/spaces/7/items")`` and
  ``backend.bump(...)``: three counters, whatever N is;
- **scan**: what pattern-based caches do: walk the keys matching
  ``GET:spaces:7:*`` and delete them. On Redis, ``SCAN MATCH <prefix>GET:spaces:7:* COUNT 1000``
  plus one ``UNLINK`` per non-empty page; in memory, the backend's own pattern
  clear (a regex over every key).

Both backends are measured: the in-process :class:`MemoryBackend` and a private
``redis-server`` started with ``tests.redis_servers.RedisServer`` (never a shared
one). Redis is filled with pipelined raw ``SET ... PX`` commands written straight to
the socket, under the cache's physical key layout (``key_prefix`` + logical key),
each value a real ~300-byte encoded :class:`CachedResponse`.

Times are medians of several repetitions, in microseconds; deleted keys are put
back (untimed) between scan repetitions. Operations: for memory, counters
touched vs keys examined plus keys deleted; for Redis, commands the server
executed (``INFO stats`` delta) and client round trips.
"""

import asyncio
import gc
import resource
import socket
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intelligent_cache.backends.memory import MemoryBackend
from intelligent_cache.entry import CachedResponse, encode
from intelligent_cache.invalidation import invalidation_keys
from intelligent_cache.keys import build_key

SIZES = (1_000, 100_000, 1_000_000)
SPACES = 100
PAGES = 10
SPACE = 7
WRITE_PATH = f"/spaces/{SPACE}/items"
PATTERN = f"GET:spaces:{SPACE}:*"
KEY_PREFIX = "bench:"
TTL_SECONDS = 3600
FILL_BATCH = 50_000
SCAN_COUNT = 1000
OURS_REPEAT = 201
SCAN_REPEAT = 5


def shape(n: int) -> int:
    """Items per space, so that SPACES x items x PAGES == n."""
    items, rest = divmod(n, SPACES * PAGES)
    if rest or not items:
        raise ValueError(f"N must be a multiple of {SPACES * PAGES}")
    return items


def logical_keys(n: int, spaces: range | None = None) -> Iterator[str]:
    """The cache keys of ``GET /spaces/{s}/items/{i}?page={p}`` (what ``build_key`` gives)."""
    items = shape(n)
    for s in spaces if spaces is not None else range(SPACES):
        for i in range(items):
            for p in range(PAGES):
                yield f"GET:spaces:{s}:items:{i}:page={p}"


def check_key_layout() -> None:
    assert next(logical_keys(SPACES * PAGES)) == build_key("GET", "/spaces/0/items/0", b"page=0")
    assert build_key("GET", "/spaces/7/items/3", b"page=9") == "GET:spaces:7:items:3:page=9"


def realistic_value() -> bytes:
    """One encoded entry of about 300 bytes, as the cache would store it."""
    body = b'{"id":3,"space":7,"name":"item 3","tags":["a","b"],"owner":{"id":42,"name":"ada"}}'
    entry = CachedResponse(
        status=200,
        headers=[
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"etag", b'"9b2cf535f27731c974343645a3985328"'),
            (b"cache-control", b"max-age=3600"),
        ],
        body=body,
        stored_at=1_700_000_000.0,
        ttl=3600.0,
        generations=(5_123_456_789_012_345, 4_987_654_321_098_765, 6_111_222_333_444_555, 7_000_111_222_333_444),
        path="/spaces/7/items/3",
        route="/spaces/{space_id}/items/{item_id}",
        tags=(),
        vary=(),
    )
    return encode(entry)


@dataclass
class Row:
    backend: str
    n: int
    ours_us: float
    ours_ops: str
    scan_us: float
    scan_ops: str
    deleted: int
    fill_s: float
    notes: list[str] = field(default_factory=list)


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# -- memory -------------------------------------------------------------------------------------------------------


async def bench_memory(n: int, value: bytes) -> Row:
    backend = MemoryBackend(max_entries=n + 1, max_bytes=1 << 40)
    started = time.perf_counter()
    for key in logical_keys(n):
        await backend.set(key, value, TTL_SECONDS)  # one shared value object: RAM goes to keys and slots
    fill = time.perf_counter() - started
    assert len(backend) == n

    counters = invalidation_keys(WRITE_PATH)
    samples = []
    for _ in range(OURS_REPEAT):
        started = time.perf_counter()
        await backend.bump(invalidation_keys(WRITE_PATH))
        samples.append(time.perf_counter() - started)
    ours = median_us(samples)

    doomed = list(logical_keys(n, range(SPACE, SPACE + 1)))
    samples = []
    deleted = 0
    examined = 0
    for _ in range(SCAN_REPEAT):
        examined = len(backend)
        started = time.perf_counter()
        deleted = await backend.clear(PATTERN)
        samples.append(time.perf_counter() - started)
        assert deleted == len(doomed)
        for key in doomed:
            await backend.set(key, value, TTL_SECONDS)
    scan = median_us(samples)
    row = Row("memory", n, ours, f"{len(counters)} counters", scan, f"{examined + deleted:,} keys", deleted, fill)
    row.notes.append(f"python peak RSS {peak_rss_mb():,.0f} MB")
    del backend
    gc.collect()
    return row


# -- redis --------------------------------------------------------------------------------------------------------


def _resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def raw_fill(port: int, keys: Iterator[str], value: bytes, prefix: str = KEY_PREFIX) -> int:
    """Pipelined ``SET key value PX ttl`` written to the socket in batches; the number of keys set."""
    head = b"$%d\r\n%s\r\n" % (len(value), value) + _resp(b"PX", str(TTL_SECONDS * 1000).encode())[4:]
    total = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        done = False
        while not done:
            batch: list[bytes] = []
            for key in keys:
                physical = (prefix + key).encode()
                batch.append(b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n%s" % (len(physical), physical, head))
                if len(batch) >= FILL_BATCH:
                    break
            else:
                done = True
            if not batch:
                break
            sock.sendall(b"".join(batch))
            expected = b"+OK\r\n" * len(batch)
            received = bytearray()
            while len(received) < len(expected):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("redis-server closed the connection during the fill")
                received += chunk
            if bytes(received) != expected:
                raise RuntimeError(f"unexpected replies during the fill: {bytes(received[:200])!r}")
            total += len(batch)
    return total


def commands_processed(client: Any) -> int:
    return int(client.info("stats")["total_commands_processed"])


class CountingPipelines:
    """Counts the round trips of a redis.asyncio client: single commands and ``pipeline().execute()`` calls."""

    def __init__(self, client: Any) -> None:
        self.round_trips = 0
        original = client.pipeline
        command = client.execute_command

        async def counted_command(*args: Any, **kwargs: Any) -> Any:
            self.round_trips += 1
            return await command(*args, **kwargs)

        client.execute_command = counted_command

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = original(*args, **kwargs)
            execute = pipe.execute

            async def counted_execute(*a: Any, **k: Any) -> Any:
                self.round_trips += 1
                return await execute(*a, **k)

            pipe.execute = counted_execute
            return pipe

        client.pipeline = pipeline


async def scan_unlink(client: Any, pattern: str) -> tuple[int, int, int]:
    """SCAN MATCH + UNLINK per page: (keys deleted, SCAN calls, UNLINK calls)."""
    cursor = 0
    deleted = scans = unlinks = 0
    while True:
        cursor, keys = await client.scan(cursor=cursor, match=pattern, count=SCAN_COUNT)
        scans += 1
        if keys:
            deleted += await client.unlink(*keys)
            unlinks += 1
        if int(cursor) == 0:
            return deleted, scans, unlinks


async def bench_redis(n: int, value: bytes, server: Any) -> Row:
    import redis.asyncio as aioredis

    from intelligent_cache.backends.redis import RedisBackend

    sync = server.client()
    sync.flushall()
    started = time.perf_counter()
    filled = raw_fill(server.port, logical_keys(n), value)
    fill = time.perf_counter() - started
    assert filled == n and sync.dbsize() == n

    backend = RedisBackend(server.url, key_prefix=KEY_PREFIX, socket_timeout=30)
    counting = CountingPipelines(backend._client)
    counters = invalidation_keys(WRITE_PATH)
    await backend.bump(counters)  # connect, create the counters
    counting.round_trips = 0
    before = commands_processed(sync)
    samples = []
    for _ in range(OURS_REPEAT):
        started = time.perf_counter()
        await backend.bump(invalidation_keys(WRITE_PATH))
        samples.append(time.perf_counter() - started)
    ours = median_us(samples)
    ours_commands = (commands_processed(sync) - before - 1) / OURS_REPEAT  # minus the INFO of `before`
    ours_trips = counting.round_trips / OURS_REPEAT
    pings = []
    for _ in range(OURS_REPEAT):
        started = time.perf_counter()
        await backend._client.ping()
        pings.append(time.perf_counter() - started)
    await backend.aclose()

    client = aioredis.Redis.from_url(server.url, socket_timeout=60)
    doomed = list(logical_keys(n, range(SPACE, SPACE + 1)))
    samples = []
    deleted = scans = unlinks = commands = 0
    for _ in range(SCAN_REPEAT):
        before = commands_processed(sync)
        started = time.perf_counter()
        deleted, scans, unlinks = await scan_unlink(client, KEY_PREFIX + PATTERN)
        samples.append(time.perf_counter() - started)
        commands = commands_processed(sync) - before - 1
        assert deleted == len(doomed), (deleted, len(doomed))
        raw_fill(server.port, iter(doomed), value)
    await client.aclose()
    scan = median_us(samples)
    memory = server.info("memory")
    row = Row(
        "redis",
        n,
        ours,
        f"{ours_commands:g} cmds / {ours_trips:g} RTT",
        scan,
        f"{commands:,} cmds / {scans + unlinks:,} RTT",
        deleted,
        fill,
    )
    row.notes.append(f"one PING round trip (redis-py asyncio): {median_us(pings):.1f} us")
    row.notes.append(
        f"redis used_memory {memory['used_memory_human']}, peak {memory['used_memory_peak_human']}, "
        f"RSS {int(memory['used_memory_rss']) / 2**20:,.0f}M"
    )
    sync.close()
    return row


def vm_hwm_mb(pid: int | None) -> float | None:
    """Peak resident set of a process (Linux /proc), in MB."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- report -------------------------------------------------------------------------------------------------------


def render(rows: list[Row], extra: list[str]) -> str:
    head = (
        f"{'backend':8} {'N':>9} {'fill s':>7} | {'ours us':>9} {'ours ops':>22} | "
        f"{'scan us':>12} {'scan ops':>26} {'deleted':>8} | {'scan/ours':>10}"
    )
    lines = [
        f"Invalidation after POST {WRITE_PATH}: ours = invalidation_keys + bump; "
        f"scan = SCAN MATCH {KEY_PREFIX}{PATTERN} COUNT {SCAN_COUNT} + UNLINK (memory: regex over all keys)",
        f"median of {OURS_REPEAT} (ours) / {SCAN_REPEAT} (scan) repetitions",
        "",
        head,
        "-" * len(head),
    ]
    for row in rows:
        lines.append(
            f"{row.backend:8} {row.n:>9,} {row.fill_s:>7.1f} | {row.ours_us:>9.1f} {row.ours_ops:>22} | "
            f"{row.scan_us:>12,.1f} {row.scan_ops:>26} {row.deleted:>8,} | {row.scan_us / row.ours_us:>9,.0f}x"
        )
    lines.append("")
    for backend in dict.fromkeys(row.backend for row in rows):
        mine = [row for row in rows if row.backend == backend]
        if len(mine) >= 2:
            first, last = mine[0], mine[-1]
            lines.append(
                f"growth {backend} {first.n:,} -> {last.n:,} entries: ours x{last.ours_us / first.ours_us:.2f}, "
                f"scan x{last.scan_us / first.scan_us:,.0f}"
            )
    for row in rows:
        for note in row.notes:
            lines.append(f"{row.backend} N={row.n:,}: {note}")
    lines.extend(extra)
    return "\n".join(lines)


async def _run(sizes: tuple[int, ...]) -> str:
    from tests.redis_servers import RedisServer, redis_server_binary

    check_key_layout()
    value = realistic_value()
    rows: list[Row] = []
    extra = [f"value size {len(value)} bytes; memory entries share one value object (cost is in keys and slots)"]
    for n in sizes:
        rows.append(await bench_memory(n, value))
    if redis_server_binary() is None:
        extra.append("redis: skipped (no redis-server on PATH)")
        return render(rows, extra)
    with RedisServer() as server:
        for n in sizes:
            rows.append(await bench_redis(n, value, server))
        hwm = vm_hwm_mb(server.pid)
        if hwm is not None:
            extra.append(f"redis-server peak RSS (VmHWM) {hwm:,.0f} MB")
    return render(rows, extra)


def main(sizes: tuple[int, ...] = SIZES) -> str:
    started = time.perf_counter()
    text = asyncio.run(_run(sizes))
    text += f"\ntotal time {time.perf_counter() - started:.0f} s"
    print(text)
    return text


if __name__ == "__main__":
    main()
