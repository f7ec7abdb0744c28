"""Throwaway ``redis-server`` processes (single node and cluster) for tests.

Plain helpers, no pytest fixtures.  Every server listens on 127.0.0.1 only,
on a free port, in its own temporary directory, without persistence.
Servers still running when the interpreter exits are stopped by an
``atexit`` hook; on Linux they also get SIGTERM if the process that
started them dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

import redis
import redis.cluster

__all__ = [
    "HOST",
    "RedisCluster",
    "RedisServer",
    "RedisServerError",
    "redis_cli_binary",
    "redis_server_binary",
    "require_redis_server",
]

HOST = "127.0.0.1"
CLUSTER_SLOTS = 16384
_CLUSTER_BUS_OFFSET = 10000
_LOG_TAIL_LINES = 30


class RedisServerError(RuntimeError):
    """A test Redis server or cluster could not be started or controlled."""


# --------------------------------------------------------------------------
# Binaries and the pytest guard
# --------------------------------------------------------------------------


def redis_server_binary() -> str | None:
    """Return the path of ``redis-server`` on PATH, or None."""
    return shutil.which("redis-server")


def redis_cli_binary() -> str | None:
    """Return the path of ``redis-cli`` (PATH, then next to redis-server)."""
    found = shutil.which("redis-cli")
    if found is not None:
        return found
    server = redis_server_binary()
    if server is not None:
        sibling = Path(server).with_name("redis-cli")
        if sibling.is_file() and os.access(sibling, os.X_OK):
            return str(sibling)
    return None


def require_redis_server(*, cli: bool = False) -> str:
    """Return the redis-server path, else skip the test (fail if CI=true).

    With ``cli=True`` redis-cli (needed for clusters) is required too.
    """
    binary = redis_server_binary()
    missing = None
    if binary is None:
        missing = "redis-server"
    elif cli and redis_cli_binary() is None:
        missing = "redis-cli"
    if binary is not None and missing is None:
        return binary

    import pytest

    reason = f"{missing} not found on PATH"
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason} (required because CI=true)", pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------

_port_lock = threading.Lock()
_handed_out: set[int] = set()


def _can_bind(port: int, *, reuse_addr: bool = False) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse_addr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port(*, with_bus_port: bool = False) -> int:
    """Pick a free loopback port not handed out before by this process.

    With ``with_bus_port`` the cluster bus port (port + 10000) must be free
    too.  Without SO_REUSEADDR, ports in TIME_WAIT count as busy.
    """
    with _port_lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((HOST, 0))
                port = int(sock.getsockname()[1])
            wanted = [port]
            if with_bus_port:
                bus = port + _CLUSTER_BUS_OFFSET
                if bus > 65535:
                    continue
                wanted.append(bus)
            if any(p in _handed_out for p in wanted):
                continue
            if with_bus_port and not _can_bind(wanted[1]):
                continue
            _handed_out.update(wanted)
            return port
    raise RedisServerError("could not find a free loopback port")


# --------------------------------------------------------------------------
# Minimal RESP over a raw socket (used while waiting for startup)
# --------------------------------------------------------------------------


def _encode(args: Sequence[str]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _raw_command(port: int, *args: str, timeout: float = 1.0) -> bytes:
    """Send one command; return the reply payload (simple/bulk/error).

    Errors are returned with their leading ``-`` so callers can tell.
    """
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(_encode(args))
        buf = b""
        while b"\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by server")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n")
        kind, value = head[:1], head[1:]
        if kind in (b"+", b":"):
            return value
        if kind == b"-":
            return head
        if kind == b"$":
            size = int(value)
            if size < 0:
                return b""
            while len(rest) < size + 2:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed by server")
                rest += chunk
            return rest[:size]
        raise ConnectionError(f"unexpected reply {head!r}")


def _parse_info(text: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            result[key.strip()] = value.strip()
    return result


# --------------------------------------------------------------------------
# Process-death signal and atexit safety net
# --------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(Exception):
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _prctl = _libc.prctl


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


_live: set[RedisServer] = set()
_live_lock = threading.Lock()


def _stop_all_servers() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(_stop_all_servers)


# --------------------------------------------------------------------------
# Single server
# --------------------------------------------------------------------------


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1 with no persistence.

    ``config`` entries become ``--key value`` arguments, ``extra_args`` are
    appended verbatim.  ``cluster=True`` enables cluster mode with the node
    config file inside the temp dir.  The port is chosen at construction
    (unless given) and kept across ``kill()``/``restart()``.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        config: Mapping[str, str | int] | None = None,
        extra_args: Sequence[str] = (),
        cluster: bool = False,
        cluster_node_timeout_ms: int = 2000,
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        binary: str | None = None,
    ) -> None:
        self._binary = binary
        self._port_fixed = port is not None
        self._port = port if port is not None else _free_port(with_bus_port=cluster)
        self._config = dict(config or {})
        self._extra_args = list(extra_args)
        self._cluster = cluster
        self._cluster_node_timeout_ms = cluster_node_timeout_ms
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: Path | None = None
        self._paused = False
        self._ever_started = False
        self._log_offsets: dict[str, int] = {}

    # -- properties -------------------------------------------------------

    @property
    def host(self) -> str:
        """Always ``127.0.0.1``."""
        return HOST

    @property
    def port(self) -> int:
        """TCP port (stable across kill/restart)."""
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{HOST}:{self._port}/0"

    @property
    def pid(self) -> int | None:
        """PID of the running process, or None."""
        return self._proc.pid if self.is_running and self._proc else None

    @property
    def is_running(self) -> bool:
        """True if the process exists (paused counts as running)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_paused(self) -> bool:
        """True between ``pause()`` and ``resume()``."""
        return self.is_running and self._paused

    @property
    def tmpdir(self) -> Path | None:
        """Working directory of the server (None once stopped)."""
        return self._tmpdir

    @property
    def log_path(self) -> Path | None:
        """The server's log file."""
        return self._tmpdir / "redis.log" if self._tmpdir else None

    # -- lifecycle --------------------------------------------------------

    def command_line(self) -> list[str]:
        """The full argv used to launch the server."""
        binary = self._binary or redis_server_binary()
        if binary is None:
            raise RedisServerError("redis-server not found on PATH")
        assert self._tmpdir is not None
        args = [
            binary,
            "--port", str(self._port),
            "--bind", HOST,
            "--protected-mode", "no",
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "no",
            "--repl-diskless-sync-delay", "0",  # replicas sync at once
            "--dir", str(self._tmpdir),
            "--logfile", str(self._tmpdir / "redis.log"),
        ]  # fmt: skip
        if self._cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self._tmpdir / "nodes.conf"),
                "--cluster-node-timeout", str(self._cluster_node_timeout_ms),
            ]  # fmt: skip
        for key, value in self._config.items():
            args += [f"--{key.lstrip('-')}", str(value)]
        return args + self._extra_args

    def start(self) -> Self:
        """Start (no-op if running) and wait until it answers PING."""
        if self.is_running:
            return self
        if self._tmpdir is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        deadline = time.monotonic() + self.startup_timeout
        while True:
            keep_port = self._ever_started or self._port_fixed
            failure: str | None
            if keep_port and not self._wait_port_free(deadline):
                failure = f"port {self._port} is already in use by another process"
            else:
                self._launch()
                failure = self._wait_ready(deadline)
            if failure is None:
                self._ever_started = True
                return self
            if "already in use" in failure and time.monotonic() < deadline:
                if not keep_port:
                    self._port = _free_port(with_bus_port=self._cluster)
                time.sleep(0.05)
                continue
            message = (
                f"redis-server on port {self._port} did not come up: {failure}\n"
                f"command: {self._command_str()}\n"
                f"--- log tail ---\n{self.log_tail()}"
            )
            # Never started: nothing worth keeping.  Otherwise keep the temp
            # dir (cluster nodes.conf) so a later restart() can still work.
            self._reap(signal.SIGKILL)
            if not self._ever_started:
                self.stop()
            raise RedisServerError(message)

    def stop(self) -> None:
        """Shut down (SHUTDOWN/SIGTERM, SIGKILL if stuck), reap, delete the temp dir."""
        self._shutdown()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def kill(self) -> None:
        """SIGKILL the server (simulated crash); keeps port and temp dir."""
        self._reap(signal.SIGKILL)

    def restart(self) -> Self:
        """Start again on the same port (terminates it first if running)."""
        if self.is_running:
            self._shutdown()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP the server: connections hang instead of failing."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def client(self, **kwargs: Any) -> redis.Redis:
        """A sync redis-py client for this server (kwargs passed through)."""
        return redis.Redis(host=HOST, port=self._port, **kwargs)

    def info(self, section: str = "server") -> dict[str, str]:
        """``INFO section`` as a flat dict of strings."""
        reply = _raw_command(self._port, "INFO", section)
        if reply.startswith(b"-"):
            raise RedisServerError(reply.decode(errors="replace"))
        return _parse_info(reply.decode(errors="replace"))

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Last lines of the server log and of its stdout/stderr."""
        if self._tmpdir is None:
            return "(no log: server not started)"
        parts = []
        for name in ("redis.log", "stdout.log"):
            path = self._tmpdir / name
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"[{name}]\n" + "\n".join(text))
        return "\n".join(parts) or "(empty log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self.is_paused else "running" if self.is_running else "stopped"
        return f"<RedisServer {HOST}:{self._port} {state} pid={self.pid}>"

    # -- internals --------------------------------------------------------

    def _command_str(self) -> str:
        with contextlib.suppress(RedisServerError):
            return " ".join(a if a else '""' for a in self.command_line())
        return "(unavailable)"

    def _launch(self) -> None:
        assert self._tmpdir is not None
        args = self.command_line()
        on_main_thread = threading.current_thread() is threading.main_thread()
        self._log_offsets = {}
        for name in ("redis.log", "stdout.log"):
            path = self._tmpdir / name
            self._log_offsets[name] = path.stat().st_size if path.exists() else 0
        pdeathsig = _die_with_parent if (_prctl and on_main_thread) else None
        with open(self._tmpdir / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._tmpdir,
                start_new_session=True,  # terminal Ctrl-C goes to pytest only
                # PDEATHSIG fires when the forking *thread* exits, so only
                # from the main thread; the hook is one pre-resolved prctl().
                preexec_fn=pdeathsig,
            )
        self._paused = False
        with _live_lock:
            _live.add(self)

    def _wait_ready(self, deadline: float) -> str | None:
        """Return None once our process answers PING, else a failure text."""
        proc = self._proc
        assert proc is not None
        delay = 0.005
        while True:
            code = proc.poll()
            if code is not None:
                log = self._new_log_text().strip()
                return f"process exited with code {code}: {log}"
            if self._answers_as(proc.pid):
                return None
            if time.monotonic() >= deadline:
                return f"no PONG within {self.startup_timeout:.1f}s"
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _answers_as(self, pid: int) -> bool:
        """True if PING works and the server answering is process ``pid``."""
        try:
            if _raw_command(self._port, "PING", timeout=0.5) != b"PONG":
                return False  # e.g. -LOADING
            return self.info("server").get("process_id") == str(pid)
        except OSError:
            return False

    def _new_log_text(self) -> str:
        """Log output written since the last launch."""
        assert self._tmpdir is not None
        chunks = []
        for name, offset in self._log_offsets.items():
            with contextlib.suppress(OSError), open(self._tmpdir / name, "rb") as fh:
                fh.seek(offset)
                chunks.append(fh.read().decode(errors="replace"))
        return "\n".join(chunks)

    def _wait_port_free(self, deadline: float) -> bool:
        """Wait until the port can be bound (SO_REUSEADDR, like redis)."""
        while not _can_bind(self._port, reuse_addr=True):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _shutdown(self) -> None:
        # SHUTDOWN is served at once; SIGTERM waits for the next cron tick
        # (~100 ms).  A paused server cannot answer, so it gets SIGTERM.
        if self.is_running and not self._paused:
            with contextlib.suppress(OSError):
                _raw_command(self._port, "SHUTDOWN", "NOSAVE", timeout=0.5)
        self._reap(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        if not self.is_running or self._proc is None:
            raise RedisServerError(f"redis-server on port {self._port} is not running")
        self._proc.send_signal(sig)

    def _reap(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        with _live_lock:
            _live.discard(self)
        was_paused, self._paused = self._paused, False
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
                if was_paused and sig != signal.SIGKILL:
                    proc.send_signal(signal.SIGCONT)
            try:
                proc.wait(timeout=self.stop_timeout if sig != signal.SIGKILL else 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:
            proc.wait()


class RedisCluster:
    """A local Redis Cluster of ``primaries`` primaries (+ replicas each).

    Built with ``redis-cli --cluster create``; ``start()`` returns once
    every node reports ``cluster_state:ok`` with all 16384 slots covered.
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 0,
        *,
        node_timeout_ms: int = 2000,
        config: Mapping[str, str | int] | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        if primaries < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 primaries")
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.startup_timeout = startup_timeout
        self._nodes = [
            RedisServer(
                config=config,
                extra_args=extra_args,
                cluster=True,
                cluster_node_timeout_ms=node_timeout_ms,
            )
            for _ in range(primaries * (1 + replicas))
        ]
        self._started = False

    @property
    def nodes(self) -> list[RedisServer]:
        """All nodes, in start order (see ``roles()`` for who is primary)."""
        return list(self._nodes)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node."""
        return [(HOST, node.port) for node in self._nodes]

    @property
    def url(self) -> str:
        """URL of the first node."""
        return self._nodes[0].url

    def start(self) -> Self:
        """Start all nodes, create the cluster, wait until it is ok."""
        if self._started:
            return self
        cli = redis_cli_binary()
        if cli is None:
            raise RedisServerError("redis-cli not found on PATH")
        deadline = time.monotonic() + self.startup_timeout
        try:
            for node in self._nodes:
                node.start()
            cmd = [cli, "--cluster", "create"]
            cmd += [f"{HOST}:{node.port}" for node in self._nodes]
            if self.replicas:
                cmd += ["--cluster-replicas", str(self.replicas)]
            cmd.append("--cluster-yes")
            try:
                done = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=max(deadline - time.monotonic(), 1.0),
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise RedisServerError(f"{' '.join(cmd)} timed out") from exc
            output = (done.stdout + done.stderr).decode(errors="replace")
            if done.returncode != 0 or "[ERR]" in output:
                raise RedisServerError(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{output}")
            self._started = True
            self.wait_until_ok(timeout=max(deadline - time.monotonic(), 1.0))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node and delete their temp dirs."""
        self._started = False
        for node in self._nodes:
            node.stop()

    def kill_node(self, index: int) -> RedisServer:
        """SIGKILL node ``index`` (keeps its port and nodes.conf)."""
        node = self._nodes[index]
        node.kill()
        return node

    def restart_node(self, index: int, *, wait: bool = True, timeout: float = 30.0) -> RedisServer:
        """Restart node ``index`` on its port; optionally wait for cluster ok."""
        node = self._nodes[index]
        node.restart()
        if wait:
            self.wait_until_ok(timeout=timeout)
        return node

    def roles(self) -> list[str | None]:
        """``"master"``/``"slave"`` per node (None if not running)."""
        return [n.info("replication").get("role") if n.is_running else None for n in self._nodes]

    def cluster_info(self, index: int) -> dict[str, str]:
        """``CLUSTER INFO`` of node ``index``."""
        reply = _raw_command(self._nodes[index].port, "CLUSTER", "INFO")
        if reply.startswith(b"-"):
            raise RedisServerError(reply.decode(errors="replace"))
        return _parse_info(reply.decode(errors="replace"))

    def wait_until_state(self, state: str, timeout: float = 30.0) -> None:
        """Wait until every running node reports ``cluster_state:<state>``."""
        self._wait(lambda: self._state_problems(state, full=False), timeout)

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Wait for state ok, full slot coverage, all nodes known, replicas synced."""
        self._wait(lambda: self._state_problems("ok", full=True), timeout)

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A sync ``redis.cluster.RedisCluster`` client (kwargs passed through)."""
        nodes = [
            redis.cluster.ClusterNode(h, p)  # type: ignore[no-untyped-call]
            for h, p in self.startup_nodes
        ]
        return redis.cluster.RedisCluster(startup_nodes=nodes, **kwargs)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        ports = ",".join(str(n.port) for n in self._nodes)
        return f"<RedisCluster primaries={self.primaries} replicas={self.replicas} ports={ports}>"

    # -- internals --------------------------------------------------------

    def _wait(self, problems: Callable[[], list[str]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            found = problems()
            if not found:
                return
            if time.monotonic() >= deadline:
                _raise_with(found, self._nodes)
            time.sleep(0.05)

    def _state_problems(self, state: str, *, full: bool) -> list[str]:
        problems: list[str] = []
        running = [(i, n) for i, n in enumerate(self._nodes) if n.is_running]
        if not running:
            return ["no node is running"]
        for i, node in running:
            try:
                info = self.cluster_info(i)
            except (OSError, RedisServerError) as exc:
                problems.append(f"node {i} ({node.port}): {exc!r}")
                continue
            if info.get("cluster_state") != state:
                problems.append(f"node {i} ({node.port}): cluster_state={info.get('cluster_state')}")
            if not full:
                continue
            for key in ("cluster_slots_assigned", "cluster_slots_ok"):
                if info.get(key) != str(CLUSTER_SLOTS):
                    problems.append(f"node {i} ({node.port}): {key}={info.get(key)}")
            if info.get("cluster_known_nodes") != str(len(self._nodes)):
                problems.append(f"node {i} ({node.port}): cluster_known_nodes={info.get('cluster_known_nodes')}")
            if self.replicas:
                try:
                    repl = node.info("replication")
                except (OSError, RedisServerError) as exc:
                    problems.append(f"node {i} ({node.port}): {exc!r}")
                    continue
                if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                    problems.append(f"node {i} ({node.port}): replica link down")
        return problems


def _raise_with(problems: Iterable[str], nodes: Sequence[RedisServer]) -> NoReturn:
    tails = "\n".join(f"--- node {i} port {n.port} ---\n{n.log_tail(10)}" for i, n in enumerate(nodes))
    raise RedisServerError("cluster not ready: " + "; ".join(problems) + "\n" + tails)
