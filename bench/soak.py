"""Soak run: the memory backend's budget and the server's RSS stay flat under an endless key stream.

``python -m bench.soak [minutes]`` serves ``example_app`` under uvicorn (uvloop
and httptools where installed, pinned to CPU 0 like the fault run) with
``MemoryBackend(max_entries=10_000, max_bytes=8 MiB)`` and drives it from an
asyncio load generator for ``minutes`` (default 10): mostly GETs of keys never
seen before (list pages with a fresh query parameter, of
varying size, and item paths that 404 but still create invalidation counters),
some hot keys, and a few writes. Every ~10 s it samples the server's VmRSS
(``/proc/<pid>/status``) and the backend's size (``/_soak/backend``, a route the
factory adds), then prints the series and a verdict.

It fails (exit status 1) if RSS grew by more than 20 MiB over the second half
of the run, if the backend ever held more than ``max_bytes`` (or
``max_entries``), or if any response was a 5xx.
"""

import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.faults import HTTP, LOOP, ROOT, Server

MAX_BYTES = 8 * 1024 * 1024
MAX_ENTRIES = 10_000
WORKERS = 16
RSS_GROWTH_LIMIT_MIB = 20.0
SAMPLE_INTERVAL = 10.0
ADMIN_TOKEN = "soak"
HOT_URLS = (
    "/spaces",
    "/spaces/1",
    "/spaces/2",
    "/spaces/1/items",
    "/spaces/1/items?page=2",
    "/spaces/1/items/3",
    "/spaces/2/items/1",
)


def make_app() -> Any:
    """example_app on a bounded memory backend, plus ``/_soak/backend`` (its size)."""
    from example_app.main import create_app
    from intelligent_cache import MemoryBackend

    backend = MemoryBackend(max_entries=MAX_ENTRIES, max_bytes=MAX_BYTES)
    app = create_app(backend, admin_token=ADMIN_TOKEN)
    manager = app.state.intelligent_cache

    @app.get("/_soak/backend")
    async def size() -> dict[str, Any]:
        return {
            "entries": len(backend),
            "size_bytes": backend.size_bytes,
            "max_bytes": backend.max_bytes,
            "max_entries": backend.max_entries,
            # Private, read for the soak only: the LRU of invalidation counters.
            "generations": len(getattr(backend, "_generations", ())),
            "hits": manager.stats.hits,
            "misses": manager.stats.misses,
        }

    return app


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Sample:
    at: float
    rss_mib: float
    backend: dict[str, Any]
    requests: int


@dataclass
class Traffic:
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    x_cache: Counter[str] = field(default_factory=Counter)
    distinct: int = 0


async def _drive(client: httpx.AsyncClient, deadline: float, traffic: Traffic, seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        roll = rng.random()
        method, body = "GET", None
        if roll < 0.02:
            item = rng.randint(1, 30)
            method, url, body = "PATCH", f"/spaces/1/items/{item}", {"name": f"Spoon {item}", "price": 1.5 * item}
        elif roll < 0.30:
            url = rng.choice(HOT_URLS)
        elif roll < 0.40:
            # A new path every time: a 404 (never stored) that still creates invalidation counters.
            traffic.distinct += 1
            url = f"/spaces/1/items/{1000 + traffic.distinct}"
        else:
            traffic.distinct += 1
            url = f"/spaces/{rng.choice((1, 2))}/items?limit={rng.randint(1, 30)}&u={traffic.distinct}"
        try:
            response = await client.request(method, url, json=body)
        except httpx.HTTPError as exc:
            traffic.errors[type(exc).__name__] += 1
            continue
        traffic.requests += 1
        traffic.statuses[f"{response.status_code // 100}xx"] += 1
        if method == "GET" and "x-cache" in response.headers:
            traffic.x_cache[response.headers["x-cache"]] += 1


def verdict(samples: list[Sample], limit_mib: float = RSS_GROWTH_LIMIT_MIB) -> dict[str, Any]:
    """RSS growth over the second half of the run and whether the backend stayed within its budget."""
    if len(samples) < 2:
        raise RuntimeError("need at least two samples")
    start, end = samples[0].at, samples[-1].at
    half = next(s for s in samples if s.at >= start + (end - start) / 2)
    growth = samples[-1].rss_mib - half.rss_mib
    largest = max(s.backend["size_bytes"] for s in samples)
    most = max(s.backend["entries"] for s in samples)
    within = all(
        s.backend["size_bytes"] <= s.backend["max_bytes"] and s.backend["entries"] <= s.backend["max_entries"]
        for s in samples
    )
    return {
        "rss_start_mib": round(samples[0].rss_mib, 1),
        "rss_half_mib": round(half.rss_mib, 1),
        "rss_end_mib": round(samples[-1].rss_mib, 1),
        "rss_max_mib": round(max(s.rss_mib for s in samples), 1),
        "rss_growth_second_half_mib": round(growth, 1),
        "rss_limit_mib": limit_mib,
        "backend_max_size_bytes": largest,
        "backend_max_entries": most,
        "within_budget": within,
        "rss_ok": growth <= limit_mib,
    }


def render(samples: list[Sample]) -> str:
    lines = [
        f"{'t s':>6} {'RSS MiB':>8} {'entries':>8} {'size MiB':>9} {'budget %':>8} {'counters':>8} {'requests':>9}"
    ]
    for sample in samples:
        backend = sample.backend
        lines.append(
            f"{sample.at - samples[0].at:6.0f} {sample.rss_mib:8.1f} {backend['entries']:8d} "
            f"{backend['size_bytes'] / 2**20:9.2f} {100 * backend['size_bytes'] / backend['max_bytes']:8.1f} "
            f"{backend['generations']:8d} {sample.requests:9d}"
        )
    return "\n".join(lines)


async def _run(minutes: float, workers: int, interval: float) -> tuple[list[Sample], Traffic, list[str]]:
    server = await asyncio.to_thread(Server, {}, "bench.soak:make_app")
    traffic = Traffic()
    samples: list[Sample] = []
    try:
        limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
        async with (
            httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=10) as client,
            httpx.AsyncClient(base_url=server.base_url, timeout=10) as control,
        ):
            started = time.monotonic()
            deadline = started + minutes * 60

            async def sample() -> None:
                response = await control.get("/_soak/backend")
                response.raise_for_status()
                samples.append(Sample(time.monotonic(), rss_mib(server.pid), response.json(), traffic.requests))

            await sample()
            drivers = [asyncio.create_task(_drive(client, deadline, traffic, n)) for n in range(workers)]
            try:
                while time.monotonic() < deadline:
                    await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
                    await sample()
            finally:
                await asyncio.gather(*drivers, return_exceptions=True)
            if samples[-1].at < deadline:
                await sample()
    finally:
        await asyncio.to_thread(server.stop)
        problems = server.problems()
        server.cleanup()
    return samples, traffic, problems


def main(minutes: float = 10.0, *, workers: int = WORKERS, quiet: bool = False) -> dict[str, Any]:
    """Run the soak; print the series and the verdict (unless ``quiet``); return them.

    ``ok`` in the result is false if RSS grew beyond the limit over the second
    half, the backend exceeded its budget, or a response was a 5xx.
    """
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    interval = min(SAMPLE_INTERVAL, max(0.5, minutes * 60 / 6))
    started = time.monotonic()
    samples, traffic, problems = asyncio.run(_run(minutes, workers, interval))
    result = verdict(samples)
    result.update(
        {
            "minutes": minutes,
            "samples": [
                {"t_s": round(s.at - samples[0].at, 1), "rss_mib": round(s.rss_mib, 1), **s.backend} for s in samples
            ],
            "requests": traffic.requests,
            "distinct_keys": traffic.distinct,
            "status": dict(traffic.statuses),
            "client_errors": dict(traffic.errors),
            "x_cache": dict(traffic.x_cache),
            "server_errors_5xx": traffic.statuses.get("5xx", 0),
            "server_log_problems": problems[:20],
            "elapsed_s": round(time.monotonic() - started, 1),
        }
    )
    result["ok"] = result["rss_ok"] and result["within_budget"] and result["server_errors_5xx"] == 0
    if not quiet:
        print(
            f"example_app under uvicorn ({LOOP}, {HTTP}), "
            f"MemoryBackend(max_entries={MAX_ENTRIES}, max_bytes={MAX_BYTES // 2**20} MiB), "
            f"{workers} workers for {minutes:g} min; {traffic.requests} requests, {traffic.distinct} distinct keys, "
            f"status {dict(traffic.statuses)}, X-Cache {dict(traffic.x_cache)}"
            + (f", client errors {dict(traffic.errors)}" if traffic.errors else "")
        )
        print(render(samples))
        print(
            f"RSS {result['rss_start_mib']} -> {result['rss_half_mib']} (half) -> {result['rss_end_mib']} MiB; "
            f"growth over the second half {result['rss_growth_second_half_mib']:+.1f} MiB "
            f"(limit +{RSS_GROWTH_LIMIT_MIB:g}); backend peak {result['backend_max_size_bytes'] / 2**20:.2f} MiB "
            f"in {result['backend_max_entries']} entries, within budget: {result['within_budget']}"
        )
        for line in problems[:20]:
            print("  server log: " + line)
        print(f"{'OK' if result['ok'] else 'FAIL'} ({result['elapsed_s']} s)")
    return result


if __name__ == "__main__":
    sys.exit(0 if main(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0)["ok"] else 1)
