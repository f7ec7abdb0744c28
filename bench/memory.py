"""Memory benchmark: RSS cost of cached entries, and the byte budget's accuracy.

Runs in a fresh interpreter so the numbers are not polluted by other work:

1. 10,000 cached 1 KiB responses stored through a real app (in-process ASGI
   calls): RSS after minus RSS before, against the 20 MiB target.
2. A MemoryBackend with ``max_bytes`` filled far past its budget: the
   budgeted bytes stay within it, and the real RSS growth is compared with it.
"""

import asyncio
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def _entries_cost(count: int, size: int) -> dict[str, Any]:
    from fastapi import FastAPI, Response

    from intelligent_cache import CacheManager, MemoryBackend, cache_config

    backend = MemoryBackend(max_entries=count * 2, max_bytes=1 << 40)
    app = FastAPI()
    CacheManager(backend, default_ttl=3600).init_app(app)
    payload = b"x" * size

    @app.get("/items/{item_id}")
    @cache_config
    async def item(item_id: int) -> Response:
        return Response(payload, media_type="application/octet-stream")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    def scope(item_id: int) -> dict[str, Any]:
        path = f"/items/{item_id}"
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"bench")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }

    for item_id in range(-200, 0):  # warm every code path and memo before measuring
        await app(scope(item_id), receive, send)
    await backend.clear()
    gc.collect()
    before = _rss()
    for item_id in range(count):
        await app(scope(item_id), receive, send)
    gc.collect()
    after = _rss()
    return {
        "entries": len(backend),
        "rss_growth_mib": (after - before) / 2**20,
        "budgeted_mib": backend.size_bytes / 2**20,
    }


async def _budget(max_bytes: int, size: int) -> dict[str, Any]:
    from intelligent_cache import MemoryBackend

    backend = MemoryBackend(max_entries=10**9, max_bytes=max_bytes)
    gc.collect()
    before = _rss()
    peak_budgeted = 0
    for index in range(max_bytes // size * 3):
        await backend.set(f"GET:blob:{index}", bytes(size), 3600)
        peak_budgeted = max(peak_budgeted, backend.size_bytes)
    gc.collect()
    after = _rss()
    return {
        "max_mib": max_bytes / 2**20,
        "peak_budgeted_mib": peak_budgeted / 2**20,
        "rss_growth_mib": (after - before) / 2**20,
        "entries_kept": len(backend),
    }


def _child() -> None:
    sys.path.insert(0, str(ROOT))
    result = {
        "entries": asyncio.run(_entries_cost(10_000, 1024)),
        "budget_small": asyncio.run(_budget(16 * 2**20, 1024)),
        "budget_large": asyncio.run(_budget(16 * 2**20, 64 * 1024)),
    }
    print(json.dumps(result))


def main() -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-c", "import bench.memory as m; m._child()"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    entries = result["entries"]
    print(
        f"10,000 cached 1 KiB responses: RSS +{entries['rss_growth_mib']:.1f} MiB (target <= 20 MiB), "
        f"budgeted {entries['budgeted_mib']:.1f} MiB"
    )
    for name in ("budget_small", "budget_large"):
        budget = result[name]
        error = budget["rss_growth_mib"] / budget["max_mib"] - 1
        print(
            f"max_bytes {budget['max_mib']:.0f} MiB ({name.split('_')[1]} values): peak budgeted "
            f"{budget['peak_budgeted_mib']:.2f} MiB, RSS growth {budget['rss_growth_mib']:.2f} MiB "
            f"({error:+.1%} vs budget), {budget['entries_kept']} entries kept"
        )
    return result


if __name__ == "__main__":
    main()
