"""HTTP benchmark: each variant under uvicorn on one core, loaded from the other.

Every variant serves the same ~1.1 KB JSON page at ``/items?page=1&limit=20``.
uvicorn (uvloop, httptools, no access log) is pinned to CPU 0 with taskset;
the load generator (wrk if installed, else a small asyncio client) and the
Redis servers run on CPU 1. Only ratios measured in one run mean anything.
"""

import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
URL_PATH = "/items?page=1&limit=20"
CASHEWS = "7.4.1"  # the peers venv's version (Makefile)
PEER_NAMES = ("fastapi-intelligent-cache 0.1.5", "fastapi-cache2", "cashews")


@dataclass
class Variant:
    name: str
    app: str
    python: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    x_cache: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def _get(port: int, path: str) -> tuple[int, dict[str, str]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # The same Host as the load generator sends: entries answer only their own host.
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(head[0].split()[1]), headers


def _start(variant: Variant, port: int) -> subprocess.Popen[bytes]:
    command = [
        *_pin(0),
        variant.python,
        "-m",
        "uvicorn",
        variant.app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **variant.env}
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{variant.name}: server exited with {process.returncode}") from None
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{variant.name}: server did not start")


def _wrk(port: int, seconds: float, connections: int) -> tuple[float, float, float]:
    output = subprocess.run(
        [
            *_pin(1),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            f"http://127.0.0.1:{port}{URL_PATH}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]

    def percentile(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    if re.search(r"Non-2xx or 3xx responses", output):
        raise RuntimeError("non-2xx responses under load:\n" + output)
    return rps, percentile("50"), percentile("99")


async def _python_load(port: int, seconds: float, connections: int) -> tuple[float, float, float]:
    request = f"GET {URL_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, quantiles[49] * 1000, quantiles[98] * 1000


def _load(port: int, seconds: float, connections: int) -> tuple[float, float, float]:
    if shutil.which("wrk"):
        return _wrk(port, seconds, connections)
    return asyncio.run(_python_load(port, seconds, connections))


def run_variant(variant: Variant, seconds: float, connections: int) -> Result:
    port = _free_port()
    process = _start(variant, port)
    try:
        status, _ = _get(port, URL_PATH)  # first request: the MISS that stores the entry
        if status != 200:
            raise RuntimeError(f"{variant.name}: status {status}")
        _, headers = _get(port, URL_PATH)
        if variant.name.startswith("ours") and headers.get("x-cache") != "HIT":  # never a number for a non-HIT
            raise RuntimeError(f"{variant.name}: not a HIT: {headers.get('cache-status')}")
        _load(port, min(2.0, seconds), connections)  # warm up
        rps, p50, p99 = _load(port, seconds, connections)
        return Result(variant.name, rps, p50, p99, headers.get("x-cache", "-"))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def variants(peers_python: str | None, redis_url: str | None, cluster_nodes: str | None) -> list[Variant]:
    python = sys.executable
    found = [
        Variant("raw ASGI", "bench.apps.raw_asgi:app", python),
        Variant("FastAPI floor (constant Response)", "bench.apps.floor:app", python),
        Variant("FastAPI uncached endpoint", "bench.apps.uncached:app", python),
        Variant("ours HIT, memory", "bench.apps.ours:app", python, {"IC_BACKEND": "memory"}),
        Variant("ours edge HIT, memory", "bench.apps.ours:app", python, {"IC_BACKEND": "memory", "IC_EDGE": "1"}),
    ]
    if redis_url:
        for name, kind, edge in (
            ("ours HIT, Redis", "redis", "0"),
            ("ours HIT, Redis + near cache", "redis-near", "0"),
            ("ours edge HIT, Redis", "redis", "1"),
            ("ours edge HIT, Redis + near cache", "redis-near", "1"),
        ):
            env = {"IC_BACKEND": kind, "IC_REDIS_URL": redis_url, "IC_EDGE": edge}
            found.append(Variant(name, "bench.apps.ours:app", python, env))
    if cluster_nodes:
        found.append(
            Variant(
                "ours HIT, Redis Cluster",
                "bench.apps.ours:app",
                python,
                {"IC_BACKEND": "cluster", "IC_CLUSTER_NODES": cluster_nodes},
            )
        )
    if peers_python:
        found.append(Variant("fastapi-intelligent-cache 0.1.5, memory", "bench.apps.peer_fic:app", peers_python))
        found.append(Variant("fastapi-cache2 0.2.2, memory", "bench.apps.peer_fc2:app", peers_python))
        found.append(Variant(f"cashews {CASHEWS}, memory", "bench.apps.peer_cashews:app", peers_python))
        if redis_url:
            env = {"PEER_BACKEND": "redis", "IC_REDIS_URL": redis_url}
            found.append(
                Variant("fastapi-intelligent-cache 0.1.5, Redis", "bench.apps.peer_fic:app", peers_python, env)
            )
            found.append(Variant("fastapi-cache2 0.2.2, Redis", "bench.apps.peer_fc2:app", peers_python, env))
            found.append(Variant(f"cashews {CASHEWS}, Redis", "bench.apps.peer_cashews:app", peers_python, env))
    return found


def report(results: list[Result]) -> str:
    by_name = {result.name: result for result in results}
    floor = by_name["FastAPI floor (constant Response)"].rps
    peers = [result for result in results if result.name.startswith(PEER_NAMES)]
    lines = [f"{'variant':42} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'x-cache':>7} {'vs floor':>8}"]
    for result in results:
        lines.append(
            f"{result.name:42} {result.rps:8.0f} {result.p50_ms:7.2f} {result.p99_ms:7.2f} {result.x_cache:>7} "
            f"{result.rps / floor:7.2f}x"
        )
    ours = [result for result in results if result.name.startswith("ours") and "edge" not in result.name]
    if peers and ours:
        lines.append("")
        lines.append("ours vs peers (same backend kind):")
        for mine in ours:
            kind = mine.name.split(", ")[-1].replace("Redis Cluster", "Redis").replace("Redis + near cache", "Redis")
            for peer in peers:
                if peer.name.endswith(kind):
                    lines.append(f"  {mine.name} / {peer.name}: {mine.rps / peer.rps:.2f}x")
    return "\n".join(lines)


def main(seconds: float = 10.0, connections: int = 32, peers_python: str | None = None) -> str:
    sys.path.insert(0, str(ROOT))
    from tests.redis_servers import RedisCluster, RedisServer, redis_server_binary

    servers: list[RedisServer | RedisCluster] = []
    redis_url = cluster_nodes = None
    try:
        if redis_server_binary():
            server = RedisServer().start()
            servers.append(server)
            redis_url = server.url
            cluster = RedisCluster(primaries=3).start()
            servers.append(cluster)
            cluster_nodes = ",".join(f"{host}:{port}" for host, port in cluster.startup_nodes)
            # Keep Redis beside the load generator, off the server's core.
            for node in [server, *cluster.nodes]:
                if node.pid and _pin(1):
                    subprocess.run(["taskset", "-p", "-c", "1", str(node.pid)], capture_output=True, check=False)
        results = []
        for variant in variants(peers_python, redis_url, cluster_nodes):
            print(f"  measuring {variant.name} ...", file=sys.stderr, flush=True)
            results.append(run_variant(variant, seconds, connections))
    finally:
        for item in servers:
            item.stop()
    table = report(results)
    load = "wrk -t1" if shutil.which("wrk") else "asyncio client"
    setup = f"uvicorn (uvloop, httptools) on CPU 0, {load} -c{connections} for {seconds:.0f} s on CPU 1"
    print(f"{setup}; {os.cpu_count()} CPUs")
    print(table)
    return table


if __name__ == "__main__":
    main()
