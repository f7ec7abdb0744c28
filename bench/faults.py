"""Fault run: example_app under uvicorn and mixed traffic while Redis fails.

``python -m bench.faults`` serves ``example_app`` under uvicorn (uvloop,
httptools where installed; pinned to CPU 0 when taskset is there) against a private
``redis-server`` (maxmemory 32mb, allkeys-lru) with short socket timeouts,
and drives it from an asyncio load generator (httpx, keep-alive, 32 workers):
90% GETs over a few hundred keys, 10% writes (PATCH and POST of items).

Phases, each bounded (``duration_per_phase`` seconds of traffic):

    baseline              Redis up
    maxmemory             junk keys (another prefix) fill Redis to maxmemory and keep coming
    redis killed          SIGKILL at the start of the phase (the junk goes with it)
    redis restarted       restarted (empty) at the start; hit-rate recovery measured
    redis paused          SIGSTOP, longer than the socket timeout
    redis resumed         SIGCONT at the start; hit-rate recovery measured
    cluster baseline      a 3-primary Redis Cluster behind RedisClusterBackend
    cluster killed        the primary owning the app's keys (all in the slot of {spaces}) is SIGKILLed
    cluster restart       that primary restarted (empty); hit-rate recovery measured
    cluster peer killed   another primary is SIGKILLed: the app's keys survive, but the cluster
                          stops serving (full slot coverage required) once the node is marked failed
    cluster peer restart  that primary restarted; hit-rate recovery measured
    2x baseline           two uvicorn instances (two CacheManagers, as two workers) on one Redis
                          with ``maxmemory-policy noeviction``; requests alternate between them
    2x maxmemory          junk keys fill that Redis until it refuses writes (OOM): it keeps serving
                          reads and deletions; a write acknowledged by one instance must not be
                          followed by pre-write data from the other
    2x memory freed       the junk is deleted at the start; hit-rate recovery measured

Correctness is checked on every response. Each PATCH renames an item to
``v<n>`` with ``n`` increasing per item (one write in flight per item); the
highest acknowledged ``n`` per item is recorded. A GET sent after an
acknowledgement that returns a lower ``n`` (item or list page), a list page
missing acknowledged POSTed items, or a space whose ``item_count`` is below the
acknowledged count is a stale read. A body that does not match its URL at all
(wrong id, wrong page) counts as wrong. Any 5xx, stale or wrong response makes
the exit status non-zero.

Table columns: requests sent in the phase; responses by status class; ``cli
err``: no response (httpx errors, by kind below the table); latency of the
responses; X-Cache of the GETs; ``be err`` / ``inv err``: failed backend calls
and failed invalidations counted by the server in the phase (read from
``/_faults/state``, a route the app factory adds); ``stale`` / ``wrong``: see
above; ``>4s``: requests slower than 4 s (the cache's lock timeout is 5 s);
``recover``: seconds from Redis answering again until a 1 s rolling window of
GETs has a hit rate of at least half the baseline's.

In the ``2x`` phases requests alternate between the two instances, so most
reads after a write go through the instance that did not take it: the stale
check above is then a cross-instance one, and the server columns add up both.

``main(duration_per_phase, phases=...)`` runs a subset (tests use the
single-node outages with 1 s phases).
"""

import asyncio
import contextlib
import functools
import importlib.util
import itertools
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent

ADMIN_TOKEN = "faults"
KEY_PREFIX = "faults:"
SOCKET_TIMEOUT = 0.25
FAILURE_THRESHOLD = 3
RECOVERY_TIMEOUT = 1.0
MAXMEMORY = "32mb"
WORKERS = 32
WRITE_RATIO = 0.10
# Items of space 2 (it starts with one) grow by POST up to this many.
SPACE2_CAP = 60
SPACE1_ITEMS = 30
LIMITS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 50)
# Hit rate back above this fraction of the baseline's counts as recovered.
RECOVERY_FRACTION = 0.5
RECOVERY_WINDOW = 1.0
RECOVERY_MIN_SAMPLES = 20
# Longer than the cache's lock_timeout (5 s), so that requests waiting that long show as slow, not as errors.
REQUEST_TIMEOUT = 15.0
SLOW_MS = 4000.0
VIOLATION_EXAMPLES = 5  # per phase
JUNK_VALUE = b"j" * 8192
JUNK_MAX_KEYS = 200_000

SINGLE_NODE_PHASES = ("baseline", "maxmemory", "redis killed", "redis restarted", "redis paused", "redis resumed")
CLUSTER_PHASES = (
    "cluster baseline",
    "cluster killed",
    "cluster restart",
    "cluster peer killed",
    "cluster peer restart",
)
TWO_INSTANCE_PHASES = ("2x baseline", "2x maxmemory", "2x memory freed")
ALL_PHASES = SINGLE_NODE_PHASES + CLUSTER_PHASES + TWO_INSTANCE_PHASES
RECOVERY_PHASES = {
    "redis restarted": "baseline",
    "redis resumed": "baseline",
    "cluster restart": "cluster baseline",
    "cluster peer restart": "cluster baseline",
    "2x memory freed": "2x baseline",
}


# -- the served app (uvicorn --factory bench.faults:make_app) ------------------------------------------------------


def make_app() -> Any:
    """example_app with a Redis backend on short timeouts, plus ``/_faults/state`` (process counters)."""
    from fastapi import FastAPI

    from example_app.main import create_app
    from intelligent_cache.backends import RedisBackend, RedisClusterBackend

    options: dict[str, Any] = {
        "key_prefix": os.environ.get("IC_KEY_PREFIX", KEY_PREFIX),
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_TIMEOUT,
        "failure_threshold": FAILURE_THRESHOLD,
        "recovery_timeout": RECOVERY_TIMEOUT,
    }
    backend: RedisBackend | RedisClusterBackend
    if os.environ.get("IC_BACKEND") == "cluster":
        nodes = [
            (host, int(port))
            for host, _, port in (n.rpartition(":") for n in os.environ["IC_CLUSTER_NODES"].split(","))
        ]
        backend = RedisClusterBackend(startup_nodes=nodes, **options)
    else:
        backend = RedisBackend(os.environ["IC_REDIS_URL"], **options)
    app: FastAPI = create_app(backend, admin_token=ADMIN_TOKEN)
    manager = app.state.intelligent_cache

    @app.get("/_faults/state")
    async def state() -> dict[str, Any]:
        return {"counters": manager.stats.snapshot(), "breaker": backend.breaker.snapshot()}

    return app


def make_twins() -> tuple[Any, Any]:
    """Two instances of the app (each its own CacheManager and RedisBackend) sharing one Store.

    As two workers of a deployment: they share Redis and the database, nothing else.
    """
    import example_app.main as example

    shared = example.Store()
    original = example.Store
    setattr(example, "Store", lambda: shared)  # noqa: B010 - both apps get the one "database"
    try:
        return make_app(), make_app()
    finally:
        setattr(example, "Store", original)  # noqa: B010


def serve_twins(port_a: int, port_b: int) -> None:
    """Serve :func:`make_twins` under two uvicorn servers in one process (until SIGTERM)."""
    import uvicorn

    class Twin(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield  # one handler for both servers, below

    servers = [
        Twin(uvicorn.Config(app, host="127.0.0.1", port=port, http=HTTP, access_log=False, log_level="warning"))
        for app, port in zip(make_twins(), (port_a, port_b), strict=True)
    ]

    async def run() -> None:
        def stop() -> None:
            for server in servers:
                server.should_exit = True

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        await asyncio.gather(*(server.serve() for server in servers))

    if LOOP == "uvloop":
        importlib.import_module("uvloop").run(run())
    else:
        asyncio.run(run())


# -- processes -----------------------------------------------------------------------------------------------------


# uvloop and httptools as in production; the asyncio loop and h11 where they are not installed
# (the test-oldest environment), so that the harness still runs.
LOOP = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
HTTP = "httptools" if importlib.util.find_spec("httptools") else "h11"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def _pin_pid(pid: int | None, cpu: int) -> None:
    if pid and _pin(cpu):
        subprocess.run(["taskset", "-p", "-c", str(cpu), str(pid)], capture_output=True, check=False)


class Server:
    """uvicorn serving an app factory (``module:function``) in a subprocess; its output goes to a log file.

    With ``twins``, the process serves two instances of the app on two ports instead (see :func:`serve_twins`).
    """

    def __init__(self, env: dict[str, str], factory: str = "bench.faults:make_app", *, twins: bool = False) -> None:
        self.ports = [_free_port() for _ in range(2 if twins else 1)]
        self.port = self.ports[0]
        self.log = Path(tempfile.mkstemp(prefix="faults-uvicorn-", suffix=".log")[1])
        self._read_to = 0
        if twins:
            code = f"import bench.faults as f; f.serve_twins({self.ports[0]}, {self.ports[1]})"
            command = [*_pin(0), sys.executable, "-c", code]
        else:
            command = [
                *_pin(0),
                sys.executable,
                "-m",
                "uvicorn",
                factory,
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--loop",
                LOOP,
                "--http",
                HTTP,
                "--no-access-log",
                "--log-level",
                "warning",
            ]
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        waiting = list(self.ports)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.2):
                    waiting.pop(0)
                    if not waiting:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("uvicorn did not start within 30 s:\n" + self.log_text())

    @property
    def base_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    @property
    def pid(self) -> int:
        """The uvicorn process (taskset execs it, so the pid is the same)."""
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def new_lines(self) -> list[str]:
        """Log lines written since the last call."""
        with open(self.log, "rb") as log:
            log.seek(self._read_to)
            data = log.read()
        self._read_to += len(data)
        return data.decode(errors="replace").splitlines()

    def problems(self) -> list[str]:
        """Tracebacks and ERROR lines the server logged (warnings about Redis are expected)."""
        lines = self.log_text().splitlines()
        return [line for line in lines if "Traceback" in line or line.startswith("ERROR") or " ERROR " in line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            self.log.unlink()


# -- correctness tracking ------------------------------------------------------------------------------------------

_VERSION = re.compile(r"v(\d+)")


def _version(name: str) -> int:
    match = _VERSION.fullmatch(name)
    return int(match.group(1)) if match else 0


@dataclass
class Tracker:
    """What the server acknowledged; what a later read must not contradict."""

    acked: dict[tuple[int, int], int] = field(default_factory=dict)
    issued: dict[tuple[int, int], int] = field(default_factory=dict)
    count: dict[int, int] = field(default_factory=lambda: {1: SPACE1_ITEMS, 2: 1})
    busy: set[tuple[int, int]] = field(default_factory=set)
    posting: bool = False
    stale: int = 0
    wrong: int = 0
    five_xx: int = 0
    responses: int = 0
    examples: list[str] = field(default_factory=list)
    _per_phase: Counter[str] = field(default_factory=Counter)

    def floors(self, space: int, first: int, last: int) -> dict[int, int]:
        acked = self.acked
        return {item: acked.get((space, item), 0) for item in range(first, last + 1)}

    def report(self, kind: str, phase: str, text: str) -> None:
        if kind == "stale":
            self.stale += 1
        else:
            self.wrong += 1
        self._per_phase[phase] += 1
        if self._per_phase[phase] <= VIOLATION_EXAMPLES:
            self.examples.append(f"[{phase}] {kind}: {text}")


# -- per-phase records ---------------------------------------------------------------------------------------------


@dataclass
class Record:
    started: float
    ended: float
    kind: str  # "get" or "write"
    status: int  # 0: no response
    error: str | None
    x_cache: str | None
    request: str = ""


@dataclass
class Phase:
    name: str
    records: list[Record] = field(default_factory=list)
    stale: int = 0
    wrong: int = 0
    event_at: float | None = None  # when Redis came back (recovery phases)
    ended: float = 0.0
    started: float = 0.0
    stale_at: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    server_before: dict[str, Any] = field(default_factory=dict)
    server_after: dict[str, Any] = field(default_factory=dict)
    server_log: list[str] = field(default_factory=list)


class Load:
    """The load generator: ``workers`` tasks sharing one keep-alive client until stopped.

    With several ``clients`` (one per app instance) requests alternate between them.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        workers: int,
        seed: int,
        *,
        clients: Sequence[httpx.AsyncClient] = (),
    ) -> None:
        self.client = client
        self.clients = list(clients) or [client]
        self._turn = itertools.count()
        self.workers = workers
        self.seed = seed
        self.tracker = Tracker()
        self.phase = Phase("warm-up")
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(n)) for n in range(self.workers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _worker(self, number: int) -> None:
        rng = random.Random(self.seed * 1000 + number)
        while not self._stop.is_set():
            if rng.random() < WRITE_RATIO:
                await self._write(rng)
            else:
                await self._get(rng)

    async def _request(self, method: str, url: str, body: Any = None) -> tuple[Record, Any]:
        phase = self.phase
        started = time.monotonic()
        client = self.clients[next(self._turn) % len(self.clients)]
        try:
            response = await client.request(method, url, json=body)
        except httpx.HTTPError as exc:
            record = Record(started, time.monotonic(), "", 0, type(exc).__name__, None, f"{method} {url}")
            phase.records.append(record)
            return record, None
        ended = time.monotonic()
        self.tracker.responses += 1
        if response.status_code >= 500:
            self.tracker.five_xx += 1
        record = Record(
            started, ended, "", response.status_code, None, response.headers.get("x-cache"), f"{method} {url}"
        )
        phase.records.append(record)
        try:
            payload = response.json() if response.content else None
        except ValueError:
            payload = None
        return record, payload

    # -- reads --

    async def _get(self, rng: random.Random) -> None:
        tracker = self.tracker
        roll = rng.random()
        if roll < 0.15:
            which = rng.choice((None, 1, 2))
            counts = dict(tracker.count)
            url = "/spaces" if which is None else f"/spaces/{which}"
            record, payload = await self._request("GET", url)
            record.kind = "get"
            if record.status == 200:
                self._check_spaces(url, which, payload, counts, record)
        elif roll < 0.60:
            space = rng.choice((1, 2))
            size = SPACE1_ITEMS if space == 1 else SPACE2_CAP
            limit = rng.choice(LIMITS)
            page = rng.randint(1, -(-size // limit))
            first = (page - 1) * limit + 1
            known = tracker.count[space]
            last = min(page * limit, known)
            floors = tracker.floors(space, first, last)
            url = f"/spaces/{space}/items?page={page}&limit={limit}"
            record, payload = await self._request("GET", url)
            record.kind = "get"
            if record.status == 200:
                self._check_page(url, space, first, limit, floors, known, payload, record)
        else:
            space = rng.choice((1, 2))
            known = tracker.count[space]
            item = rng.randint(1, SPACE1_ITEMS if space == 1 else min(known + 3, SPACE2_CAP))
            floor = tracker.acked.get((space, item), 0)
            url = f"/spaces/{space}/items/{item}"
            record, payload = await self._request("GET", url)
            record.kind = "get"
            if record.status == 200:
                if not isinstance(payload, dict) or payload.get("id") != item or payload.get("space_id") != space:
                    tracker.report("wrong", self.phase.name, f"GET {url} -> {payload!r:.120}")
                    self.phase.wrong += 1
                elif _version(payload["name"]) < floor:
                    self._stale(f"GET {url} name={payload['name']!r}, acknowledged v{floor}", record)
            elif record.status == 404 and item <= known:
                self._stale(f"GET {url} -> 404 after its creation was acknowledged", record)

    def _stale(self, text: str, record: Record) -> None:
        self.tracker.report("stale", self.phase.name, f"{text} (X-Cache {record.x_cache})")
        self.phase.stale += 1
        self.phase.stale_at.append(record.ended)

    def _wrong(self, text: str) -> None:
        self.tracker.report("wrong", self.phase.name, text)
        self.phase.wrong += 1

    def _check_spaces(self, url: str, which: int | None, payload: Any, counts: dict[int, int], record: Record) -> None:
        spaces = payload if which is None else [payload]
        if not isinstance(spaces, list) or not all(isinstance(s, dict) for s in spaces):
            self._wrong(f"GET {url} -> {payload!r:.120}")
            return
        ids = [s.get("id") for s in spaces]
        if ids != ([1, 2] if which is None else [which]):
            self._wrong(f"GET {url} -> ids {ids}")
            return
        for space in spaces:
            if space["item_count"] < counts[space["id"]]:
                self._stale(
                    f"GET {url}: space {space['id']} item_count={space['item_count']}, "
                    f"acknowledged {counts[space['id']]}",
                    record,
                )
                return

    def _check_page(
        self,
        url: str,
        space: int,
        first: int,
        limit: int,
        floors: dict[int, int],
        known: int,
        payload: Any,
        record: Record,
    ) -> None:
        if not isinstance(payload, list) or len(payload) > limit:
            self._wrong(f"GET {url} -> {payload!r:.120}")
            return
        ids = [item.get("id") if isinstance(item, dict) else None for item in payload]
        if ids != list(range(first, first + len(ids))) or any(item.get("space_id") != space for item in payload):
            self._wrong(f"GET {url} -> ids {ids}")
            return
        expected = max(0, min(limit, known - first + 1))
        if len(ids) < expected:
            self._stale(f"GET {url}: {len(ids)} items, acknowledged at least {expected}", record)
            return
        for item in payload:
            floor = floors.get(item["id"], 0)
            if _version(item["name"]) < floor:
                self._stale(f"GET {url}: item {item['id']} name={item['name']!r}, acknowledged v{floor}", record)
                return

    # -- writes --

    async def _write(self, rng: random.Random) -> None:
        tracker = self.tracker
        if not tracker.posting and tracker.count[2] < SPACE2_CAP and rng.random() < 0.2:
            tracker.posting = True
            try:
                record, payload = await self._request("POST", "/spaces/2/items", {"name": "v1", "price": 1.0})
                record.kind = "write"
                if record.status == 201 and isinstance(payload, dict) and isinstance(payload.get("id"), int):
                    tracker.acked[(2, payload["id"])] = 1
                    tracker.issued[(2, payload["id"])] = 1
                    tracker.count[2] = max(tracker.count[2], payload["id"])
                elif record.status == 201:
                    self._wrong(f"POST /spaces/2/items -> {payload!r:.120}")
            finally:
                tracker.posting = False
            return
        for _ in range(10):
            space = 1 if rng.random() < 0.7 else 2
            target = (space, rng.randint(1, tracker.count[space]))
            if target not in tracker.busy:
                break
        else:
            return
        tracker.busy.add(target)
        try:
            version = tracker.issued.get(target, 0) + 1
            tracker.issued[target] = version
            url = f"/spaces/{target[0]}/items/{target[1]}"
            record, payload = await self._request("PATCH", url, {"name": f"v{version}", "price": float(version % 1000)})
            record.kind = "write"
            if record.status == 200:
                if (
                    isinstance(payload, dict)
                    and payload.get("name") == f"v{version}"
                    and payload.get("id") == target[1]
                ):
                    tracker.acked[target] = max(tracker.acked.get(target, 0), version)
                else:
                    self._wrong(f"PATCH {url} v{version} -> {payload!r:.120}")
        finally:
            tracker.busy.discard(target)


# -- summaries -----------------------------------------------------------------------------------------------------


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[round(q * 100) - 1]


def _hit_rate(records: Sequence[Record]) -> float | None:
    gets = [r for r in records if r.kind == "get" and r.x_cache]
    if not gets:
        return None
    return sum(1 for r in gets if r.x_cache == "HIT") / len(gets)


def recovery_time(records: Sequence[Record], event_at: float, target: float) -> float | None:
    """Seconds from ``event_at`` until the GET hit rate of a rolling window reaches ``target``."""
    gets = sorted(
        (r.ended, r.x_cache == "HIT") for r in records if r.kind == "get" and r.x_cache and r.ended >= event_at
    )
    window: deque[tuple[float, bool]] = deque()
    hits = 0
    for ended, hit in gets:
        window.append((ended, hit))
        hits += hit
        while window[0][0] < ended - RECOVERY_WINDOW:
            hits -= window.popleft()[1]
        if len(window) >= RECOVERY_MIN_SAMPLES and hits / len(window) >= target:
            return ended - event_at
    return None


def summarize(phase: Phase, duration: float, baseline: float | None) -> dict[str, Any]:
    records = phase.records
    statuses = Counter(f"{r.status // 100}xx" for r in records if r.status)
    errors = Counter(r.error for r in records if r.error)
    x_cache = Counter(r.x_cache for r in records if r.kind == "get" and r.x_cache)
    latencies = sorted((r.ended - r.started) * 1000 for r in records if r.status)
    result: dict[str, Any] = {
        "phase": phase.name,
        "seconds": round(duration, 2),
        "requests": len(records),
        "gets": sum(1 for r in records if r.kind == "get"),
        "writes": sum(1 for r in records if r.kind == "write"),
        "status": dict(sorted(statuses.items())),
        "server_errors_5xx": statuses.get("5xx", 0),
        "client_errors": dict(errors),
        "p50_ms": round(_quantile(latencies, 0.50), 2),
        "p99_ms": round(_quantile(latencies, 0.99), 2),
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "slow": sum(1 for r in records if (r.ended - r.started) * 1000 > SLOW_MS),
        "x_cache": dict(sorted(x_cache.items())),
        "hit_rate": _hit_rate(records),
        "stale_reads": phase.stale,
        # Seconds from the phase's event (or start) to its last stale read.
        "last_stale_s": round(max(phase.stale_at) - (phase.event_at or phase.started), 2) if phase.stale_at else None,
        "wrong_responses": phase.wrong,
        "slowest": [
            f"{r.request} {(r.ended - r.started) * 1000:.0f} ms {r.x_cache or r.error}"
            for r in sorted(records, key=lambda r: r.started - r.ended)[:3]
        ],
        "notes": phase.notes,
        # What the server logged (the cache logs each backend state change once).
        "server_log": list(dict.fromkeys(phase.server_log))[:6],
        "recovery_s": None,
    }
    before = phase.server_before.get("counters", {})
    after = phase.server_after.get("counters", {})
    if before and after:
        result["server"] = {
            name: after.get(name, 0) - before.get(name, 0)
            for name in ("errors", "invalidations", "invalidation_errors", "stores")
        }
        result["server"]["breaker_opened"] = (
            phase.server_after["breaker"]["times_opened"] - phase.server_before["breaker"]["times_opened"]
        )
    if phase.event_at is not None and baseline:
        result["recovery_target"] = round(RECOVERY_FRACTION * baseline, 3)
        result["observed_after_event_s"] = round(phase.ended - phase.event_at, 2)
        found = recovery_time(records, phase.event_at, RECOVERY_FRACTION * baseline)
        result["recovery_s"] = None if found is None else round(found, 2)
    return result


def lost_invalidation_suspects(results: Sequence[dict[str, Any]]) -> list[str]:
    """Phases with stale reads that follow a phase whose writes failed to invalidate (the backend was down)."""
    suspects = []
    for previous, row in itertools.pairwise(results):
        if row["stale_reads"] and previous.get("server", {}).get("invalidation_errors", 0) > 0:
            suspects.append(row["phase"])
    return suspects


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}" if whole else "-"


def table(results: list[dict[str, Any]]) -> str:
    header = (
        f"{'phase':20} {'reqs':>6} {'2xx':>6} {'4xx':>4} {'5xx':>4} {'cli err':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'HIT%':>5} {'MISS%':>5} {'SKIP%':>5} {'STALE%':>6} {'be err':>6} {'inv err':>7} {'stale':>5} "
        f"{'wrong':>5} {'>4s':>4} {'recover':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in results:
        gets = sum(row["x_cache"].values())
        server = row.get("server", {})
        recovery = row["recovery_s"]
        if "recovery_target" not in row:
            recovered = "-"
        else:
            recovered = f"{recovery:.2f}s" if recovery is not None else f">{row['observed_after_event_s']:.0f}s"
        lines.append(
            f"{row['phase']:20} {row['requests']:6d} {row['status'].get('2xx', 0):6d} {row['status'].get('4xx', 0):4d} "
            f"{row['server_errors_5xx']:4d} {sum(row['client_errors'].values()):7d} {row['p50_ms']:7.2f} "
            f"{row['p99_ms']:7.2f} {_percent(row['x_cache'].get('HIT', 0), gets):>5} "
            f"{_percent(row['x_cache'].get('MISS', 0), gets):>5} {_percent(row['x_cache'].get('SKIP', 0), gets):>5} "
            f"{_percent(row['x_cache'].get('STALE', 0), gets):>6} {server.get('errors', '-')!s:>6} "
            f"{server.get('invalidation_errors', '-')!s:>7} {row['stale_reads']:5d} {row['wrong_responses']:5d} "
            f"{row['slow']:4d} {recovered:>8}"
        )
    return "\n".join(lines)


# -- the run -------------------------------------------------------------------------------------------------------


class Filler:
    """Writes junk keys (prefix ``junk:``) into Redis from a thread: fast until full, then steadily."""

    def __init__(self, client: Any, deadline: float) -> None:
        self.client = client
        self.deadline = deadline
        self.written = 0
        self.full_after: float | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="junk-filler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        started = time.monotonic()
        try:
            while not self._stop.is_set() and time.monotonic() < self.deadline and self.written < JUNK_MAX_KEYS:
                pipe = self.client.pipeline(transaction=False)
                for _ in range(100):
                    pipe.set(f"junk:{self.written}", JUNK_VALUE)
                    self.written += 1
                pipe.execute()
                if self.full_after is None:
                    if int(self.client.info("stats")["evicted_keys"]) > 0:
                        self.full_after = time.monotonic() - started
                else:
                    self._stop.wait(0.1)  # ~1000 keys (8 MB) a second once full
        except Exception as exc:
            self.error = repr(exc)


class Run:
    def __init__(self, duration: float, workers: int, seed: int) -> None:
        self.duration = duration
        self.workers = workers
        self.seed = seed
        self.results: list[dict[str, Any]] = []
        self.hit_rates: dict[str, float | None] = {}
        self.examples: list[str] = []
        self.server_problems: list[str] = []
        self.servers: list[Server] = []
        # Over all traffic, warm-up and phase boundaries included.
        self.totals: Counter[str] = Counter()

    async def _state(self, control: "httpx.AsyncClient | Sequence[httpx.AsyncClient]") -> dict[str, Any]:
        """``/_faults/state`` of the instance (of every instance, added up)."""
        controls = [control] if isinstance(control, httpx.AsyncClient) else list(control)
        states: list[dict[str, Any]] = []
        for one in controls:
            try:
                response = await one.get("/_faults/state")
            except httpx.HTTPError:
                return {}
            if response.status_code != 200:
                return {}
            states.append(response.json())
        if len(states) == 1:
            return dict(states[0])
        counters: Counter[str] = Counter()
        for state in states:
            counters.update({k: v for k, v in state["counters"].items() if isinstance(v, int)})
        opened = sum(state["breaker"]["times_opened"] for state in states)
        return {"counters": dict(counters), "breaker": {"times_opened": opened}}

    async def _phase(
        self,
        load: Load,
        control: "httpx.AsyncClient | Sequence[httpx.AsyncClient]",
        name: str,
        action: Callable[[], Any] | None = None,
        *,
        recovery: bool = False,
        during: Callable[[Phase], Any] | None = None,
    ) -> Phase:
        phase = Phase(name)
        for server in self.servers:
            server.new_lines()
        phase.server_before = await self._state(control)
        load.phase = phase
        started = phase.started = time.monotonic()
        if action is not None:
            # A restart blocks until Redis (or the cluster) answers; the phase's traffic time starts then.
            await asyncio.to_thread(action)
            if recovery:
                phase.event_at = time.monotonic()
            action_s = time.monotonic() - started
            if action_s > 0.05:
                phase.notes.append(f"fault action took {action_s:.2f}s (traffic kept flowing)")
        traffic_from = time.monotonic()
        if during is not None:
            await during(phase)
        await asyncio.sleep(max(0.0, traffic_from + self.duration - time.monotonic()))
        load.phase = Phase(f"after {name}")  # still checked: the tracker's totals count it
        phase.ended = time.monotonic()
        elapsed = time.monotonic() - started
        phase.server_after = await self._state(control)
        for server in self.servers:
            phase.server_log.extend(server.new_lines())
        baseline = self.hit_rates.get(RECOVERY_PHASES.get(name, ""))
        row = summarize(phase, elapsed, baseline)
        self.hit_rates[name] = row["hit_rate"]
        self.results.append(row)
        print(f"  {name}: {row['requests']} requests, hit rate {row['hit_rate'] or 0:.2f}", file=sys.stderr, flush=True)
        return phase

    async def _with_server(self, env: dict[str, str], body: Callable[[Load, httpx.AsyncClient], Any]) -> None:
        await self._with_servers(env, lambda load, controls: body(load, controls[0]))

    async def _with_servers(
        self, env: dict[str, str], body: Callable[[Load, list[httpx.AsyncClient]], Any], count: int = 1
    ) -> None:
        """Serve ``count`` (1 or 2) instances of the app and run ``body`` under load."""
        limits = httpx.Limits(max_connections=self.workers, max_keepalive_connections=self.workers)
        self.servers = []
        try:
            # Two instances are two uvicorn servers of one process sharing the example's Store
            # (its "database"); each has its own CacheManager, RedisBackend and lifespan.
            server = await asyncio.to_thread(functools.partial(Server, env, twins=count == 2))
            self.servers.append(server)
            async with contextlib.AsyncExitStack() as stack:
                # One Host for every instance, as behind a load balancer: the cache serves an entry
                # only to requests for the host it was computed for.
                host = {"host": f"127.0.0.1:{server.port}"}
                clients = [
                    await stack.enter_async_context(
                        httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT, headers=host)
                    )
                    for url in server.base_urls
                ]
                controls = [
                    await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT))
                    for url in server.base_urls
                ]
                load = Load(clients[0], self.workers, self.seed, clients=clients)
                load.start()
                try:
                    await asyncio.sleep(min(2.0, self.duration))  # warm-up, not recorded
                    await body(load, controls)
                finally:
                    await load.stop()
                self.examples.extend(load.tracker.examples)
                for name in ("responses", "five_xx", "stale", "wrong"):
                    self.totals[name] += getattr(load.tracker, name)
        finally:
            for server in self.servers:
                await asyncio.to_thread(server.stop)
                self.server_problems.extend(server.problems())
                server.cleanup()
            self.servers = []

    async def single_node(self, phases: Sequence[str]) -> None:
        from tests.redis_servers import RedisServer

        redis_server = RedisServer(config={"maxmemory": MAXMEMORY, "maxmemory-policy": "allkeys-lru"})
        await asyncio.to_thread(redis_server.start)
        _pin_pid(redis_server.pid, 1)

        def restart() -> None:
            redis_server.restart()
            _pin_pid(redis_server.pid, 1)

        def resume() -> None:
            if redis_server.is_paused:
                redis_server.resume()

        async def body(load: Load, control: httpx.AsyncClient) -> None:
            # maxmemory comes before the outages, so that stale reads it may cause are its own
            # (the kill then empties Redis of the junk).
            steps: dict[str, tuple[Any, ...]] = {
                "baseline": (None, False, None),
                "maxmemory": (None, False, fill),
                "redis killed": (redis_server.kill, False, None),
                "redis restarted": (restart, True, None),
                "redis paused": (redis_server.pause, False, None),
                "redis resumed": (resume, True, None),
            }
            for name in SINGLE_NODE_PHASES:
                if name in phases:
                    action, recovery, during = steps[name]
                    await self._phase(load, control, name, action, recovery=recovery, during=during)

        async def fill(phase: Phase) -> None:
            client = redis_server.client(socket_timeout=5)
            filler = Filler(client, time.monotonic() + self.duration)
            filler.start()
            await asyncio.sleep(self.duration)
            await asyncio.to_thread(filler.stop)
            memory = client.info("memory")
            stats = client.info("stats")
            ours = sum(1 for _ in client.scan_iter(match=KEY_PREFIX + "*", count=1000))
            client.close()
            full = f"{filler.full_after:.2f}s" if filler.full_after is not None else "never"
            phase.notes.append(
                f"{filler.written} junk keys written (full after {full}), used_memory {memory['used_memory_human']}"
                f" of {MAXMEMORY}, evicted_keys {stats['evicted_keys']}, {ours} cache keys left"
                + (f", filler error {filler.error}" if filler.error else "")
            )

        try:
            await self._with_server({"IC_REDIS_URL": redis_server.url, "IC_KEY_PREFIX": KEY_PREFIX}, body)
        finally:
            if redis_server.is_paused:
                redis_server.resume()
            await asyncio.to_thread(redis_server.stop)

    async def two_instances(self, phases: Sequence[str]) -> None:
        """Two uvicorn instances of the app on one ``noeviction`` Redis that fills up."""
        import redis.exceptions

        from tests.redis_servers import RedisServer

        redis_server = RedisServer(config={"maxmemory": MAXMEMORY, "maxmemory-policy": "noeviction"})
        await asyncio.to_thread(redis_server.start)
        _pin_pid(redis_server.pid, 1)
        client = redis_server.client(socket_timeout=5)
        filler = OomFill(client)

        async def body(load: Load, controls: list[httpx.AsyncClient]) -> None:
            if "2x baseline" in phases:
                await self._phase(load, controls, "2x baseline")
            if "2x maxmemory" in phases:
                full = await self._phase(load, controls, "2x maxmemory", filler.fill)
                stats = client.info("stats")
                try:
                    client.set("junk:probe", b"x")
                    refused = "not refused"
                except redis.exceptions.OutOfMemoryError:
                    refused = "refused (OOM)"
                full.notes.append(
                    f"{filler.written} junk keys filled {MAXMEMORY} in {filler.seconds:.2f}s, then pinned just "
                    f"under used_memory {client.info('memory')['used_memory_human']}; writes {refused} at the end, "
                    f"evicted_keys {stats['evicted_keys']}"
                )
            if "2x memory freed" in phases:
                await self._phase(load, controls, "2x memory freed", filler.free, recovery=True)

        try:
            env = {"IC_REDIS_URL": redis_server.url, "IC_KEY_PREFIX": KEY_PREFIX}
            await self._with_servers(env, body, count=2)
        finally:
            client.close()
            await asyncio.to_thread(redis_server.stop)

    async def cluster(self, phases: Sequence[str]) -> None:
        from redis.cluster import ClusterNode

        from tests.redis_servers import RedisCluster

        cluster = RedisCluster(primaries=3, node_timeout_ms=1000)
        await asyncio.to_thread(cluster.start)
        try:
            for node in cluster.nodes:
                _pin_pid(node.pid, 1)
            # Every key of the app hashes with the tag {spaces}: kill the primary that owns it.
            client = cluster.client()
            owner: ClusterNode = client.get_node_from_key("{spaces}")  # type: ignore[no-untyped-call]
            client.close()
            victim = next(i for i, node in enumerate(cluster.nodes) if node.port == owner.port)
            peer = next(i for i in range(len(cluster.nodes)) if i != victim)

            def restart(index: int) -> None:
                cluster.restart_node(index, wait=True, timeout=30)
                _pin_pid(cluster.nodes[index].pid, 1)

            async def body(load: Load, control: httpx.AsyncClient) -> None:
                if "cluster baseline" in phases:
                    await self._phase(load, control, "cluster baseline")
                for name, index, role in (
                    ("cluster", victim, "owner of slot {spaces}"),
                    ("cluster peer", peer, "not holding the app's keys"),
                ):
                    port = cluster.nodes[index].port
                    if f"{name} killed" in phases:
                        kill = functools.partial(cluster.kill_node, index)
                        killed = await self._phase(load, control, f"{name} killed", kill)
                        killed.notes.append(f"killed primary {index} (port {port}), {role}")
                    if f"{name} restart" in phases:
                        back = functools.partial(restart, index)
                        await self._phase(load, control, f"{name} restart", back, recovery=True)

            nodes = ",".join(f"{host}:{port}" for host, port in cluster.startup_nodes)
            await self._with_server({"IC_BACKEND": "cluster", "IC_CLUSTER_NODES": nodes}, body)
        finally:
            await asyncio.to_thread(cluster.stop)


class OomFill:
    """Fills a ``noeviction`` Redis with junk keys (prefix ``junk:``) until it refuses writes, then keeps it full."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.written = 0
        self.seconds = 0.0

    def fill(self) -> None:
        import redis.exceptions

        started = time.monotonic()
        while self.written < JUNK_MAX_KEYS:
            try:
                self.client.set(f"junk:{self.written}", JUNK_VALUE)
            except redis.exceptions.OutOfMemoryError:
                break
            self.written += 1
        # Pin maxmemory just under what is used, so that the deletions the app itself
        # makes (invalidations, expiring entries) cannot bring Redis back under it.
        used = int(self.client.info("memory")["used_memory"])
        self.client.config_set("maxmemory", max(1024 * 1024, used - 256 * 1024))
        self.seconds = time.monotonic() - started

    def free(self) -> None:
        for start in range(0, self.written, 1000):
            self.client.unlink(*(f"junk:{n}" for n in range(start, min(start + 1000, self.written))))
        self.client.config_set("maxmemory", MAXMEMORY)


def main(
    duration_per_phase: float = 8.0,
    *,
    phases: Sequence[str] = ALL_PHASES,
    workers: int = WORKERS,
    seed: int = 1,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run ``phases`` (in their fixed order); print the table (unless ``quiet``) and return the results.

    ``ok`` in the result is false if any response was a 5xx, a stale read or wrong.
    The cluster phases are skipped (and listed in ``skipped``) without redis-cli.
    """
    unknown = set(phases) - set(ALL_PHASES)
    if unknown:
        raise ValueError(f"unknown phases {sorted(unknown)}; known: {ALL_PHASES}")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.redis_servers import redis_cli_binary, redis_server_binary

    if redis_server_binary() is None:
        raise RuntimeError("redis-server not found on PATH")
    run = Run(duration_per_phase, workers, seed)
    started = time.monotonic()

    skipped: list[str] = []
    single = [name for name in phases if name in SINGLE_NODE_PHASES]
    clustered = [name for name in phases if name in CLUSTER_PHASES]
    twin = [name for name in phases if name in TWO_INSTANCE_PHASES]
    if clustered and redis_cli_binary() is None:
        skipped, clustered = clustered, []

    async def go() -> None:
        if single:
            await run.single_node(single)
        if clustered:
            await run.cluster(clustered)
        if twin:
            await run.two_instances(twin)

    asyncio.run(go())
    five_xx, stale, wrong = run.totals["five_xx"], run.totals["stale"], run.totals["wrong"]
    result = {
        "duration_per_phase": duration_per_phase,
        "workers": workers,
        "phases": run.results,
        "skipped": skipped,
        "server_errors_5xx": five_xx,
        "stale_reads": stale,
        "wrong_responses": wrong,
        "responses_checked": run.totals["responses"],
        "violations": run.examples,
        "server_log_problems": run.server_problems[:20],
        "elapsed_s": round(time.monotonic() - started, 1),
        "ok": five_xx == 0 and stale == 0 and wrong == 0,
    }
    if not quiet:
        print(
            f"example_app under uvicorn ({LOOP}, {HTTP}), {workers} keep-alive workers, "
            f"{WRITE_RATIO:.0%} writes, {duration_per_phase:g} s per phase; socket timeout {SOCKET_TIMEOUT}s, "
            f"breaker {FAILURE_THRESHOLD} failures / {RECOVERY_TIMEOUT}s; recovery = {RECOVERY_WINDOW:g}s window "
            f"back to {RECOVERY_FRACTION:.0%} of the baseline hit rate"
        )
        print(table(run.results))
        for row in run.results:
            if row["client_errors"]:
                print(f"  {row['phase']}: client errors {row['client_errors']}")
            if row["slow"]:
                print(f"  {row['phase']}: {row['slow']} requests over {SLOW_MS / 1000:g}s, slowest {row['slowest']}")
            for note in row["notes"]:
                print(f"  {row['phase']}: {note}")
            if row["stale_reads"]:
                print(f"  {row['phase']}: {row['stale_reads']} stale reads, the last {row['last_stale_s']}s in")
            for line in row["server_log"]:
                print(f"  {row['phase']}: server log: {line}")
        if run.examples:
            print(f"stale/wrong responses (first {VIOLATION_EXAMPLES} of each phase):")
            for text in run.examples:
                print("  " + text)
        for name in lost_invalidation_suspects(run.results):
            print(
                f"  {name}: stale reads right after an outage in which acknowledged writes failed to invalidate "
                "(server invalidation_errors > 0): the entries they should have invalidated survived it"
            )
        if run.server_problems:
            print("server log problems:")
            for line in run.server_problems[:20]:
                print("  " + line)
        verdict = "OK" if result["ok"] else "FAIL"
        print(
            f"{verdict}: {five_xx} 5xx, {stale} stale reads, {wrong} wrong responses in {run.totals['responses']} "
            f"responses, warm-up and phase boundaries included ({result['elapsed_s']} s)"
        )
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
