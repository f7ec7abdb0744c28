"""Tests for the throwaway Redis server helpers in ``tests/redis_servers.py``."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

try:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    import redis_servers as rs
except ImportError:  # tests/ became a package
    from tests import redis_servers as rs  # type: ignore[no-redef,import-not-found,unused-ignore]

RedisServer = rs.RedisServer
RedisCluster = rs.RedisCluster
RedisServerError = rs.RedisServerError

MODULE_DIR = Path(rs.__file__).resolve().parent


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def no_retry_client(port: int, **kwargs: Any) -> redis.Redis:
    """A client that fails fast instead of using redis-py's default retries."""
    return redis.Redis(
        host=rs.HOST,
        port=port,
        retry=Retry(NoBackoff(), 0),
        socket_connect_timeout=1.0,
        **kwargs,
    )


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no procfs
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((rs.HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def run_script(body: str) -> subprocess.Popen[str]:
    """Run a Python snippet that can ``import redis_servers``."""
    env = dict(os.environ, PYTHONPATH=str(MODULE_DIR))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(body)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def cluster_client(cluster: rs.RedisCluster) -> redis.cluster.RedisCluster:
    nodes = [
        redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
        for host, port in cluster.startup_nodes
    ]
    return redis.cluster.RedisCluster(startup_nodes=nodes, decode_responses=True)


def set_get_many(client: redis.cluster.RedisCluster, count: int = 200) -> set[int]:
    """SET/GET ``count`` keys; return the slots they hashed to."""
    keys = [f"key:{i}" for i in range(count)]
    for key in keys:
        assert client.set(key, key.upper())
    for key in keys:
        assert client.get(key) == key.upper()
    return {int(client.keyslot(key)) for key in keys}  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------
# binary lookup / require_redis_server (no server needed)
# --------------------------------------------------------------------------


def test_redis_server_binary_matches_which() -> None:
    assert rs.redis_server_binary() == shutil.which("redis-server")


def test_require_skips_when_binary_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as info:
        rs.require_redis_server()
    assert "redis-server not found" in str(info.value)
    assert "\n" not in str(info.value)


def test_require_fails_on_ci_when_binary_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        rs.require_redis_server()


def test_require_cli_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    rs.require_redis_server()  # skips here if redis-server itself is absent
    monkeypatch.setattr(rs, "redis_cli_binary", lambda: None)
    monkeypatch.setenv("CI", "false")
    assert rs.require_redis_server() == rs.redis_server_binary()
    with pytest.raises(pytest.skip.Exception, match="redis-cli not found"):
        rs.require_redis_server(cli=True)


def test_cluster_needs_three_primaries() -> None:
    with pytest.raises(ValueError):
        RedisCluster(primaries=2)


# --------------------------------------------------------------------------
# single server
# --------------------------------------------------------------------------


@pytest.mark.redis
def test_start_set_get_stop() -> None:
    rs.require_redis_server()
    server = RedisServer()
    started = time.perf_counter()
    with server:
        elapsed = time.perf_counter() - started
        assert elapsed < 1.0, f"single server took {elapsed:.3f}s to start"
        assert server.is_running
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        pid = server.pid
        assert pid is not None and pid_alive(pid)
        tmpdir = server.tmpdir
        assert tmpdir is not None and tmpdir.is_dir()

        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert client.set("greeting", "hello")
        assert client.get("greeting") == "hello"
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert client.config_get("protected-mode") == {"protected-mode": "no"}
        assert client.config_get("dir")["dir"] == str(tmpdir)
        client.close()

    assert not server.is_running
    assert server.pid is None
    assert server.tmpdir is None and not tmpdir.exists()
    assert not pid_alive(pid)
    assert not port_accepts(server.port)
    server.stop()  # idempotent
    server.kill()  # no-op when not running


@pytest.mark.redis
def test_config_and_extra_args() -> None:
    rs.require_redis_server()
    with RedisServer(
        config={"maxmemory": "10mb", "maxmemory-policy": "allkeys-lru"},
        extra_args=["--databases", "4"],
    ) as server:
        client = server.client(decode_responses=True)
        assert client.config_get("maxmemory") == {"maxmemory": str(10 * 1024 * 1024)}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        assert client.config_get("databases") == {"databases": "4"}
        client.close()


@pytest.mark.redis
def test_kill_then_restart_on_same_port() -> None:
    rs.require_redis_server()
    with RedisServer() as server:
        port, old_pid = server.port, server.pid
        assert old_pid is not None
        client = redis.Redis.from_url(server.url, socket_timeout=2.0)
        assert client.set("k", "v")
        # An open client connection leaves the server side in TIME_WAIT.
        fast = no_retry_client(port)
        assert fast.ping()

        server.kill()
        assert not server.is_running and server.pid is None
        assert not pid_alive(old_pid)
        with pytest.raises(redis.ConnectionError):
            fast.ping()

        started = time.perf_counter()
        server.restart()
        elapsed = time.perf_counter() - started
        assert elapsed < 1.0, f"restart took {elapsed:.3f}s"
        assert server.port == port
        assert server.pid not in (None, old_pid)
        assert client.ping()  # the old client reconnects by itself
        assert client.get("k") is None  # no persistence
        assert fast.ping()
        client.close()
        fast.close()


@pytest.mark.redis
def test_restart_while_running_and_start_after_stop() -> None:
    rs.require_redis_server()
    server = RedisServer()
    try:
        server.start()
        port, pid = server.port, server.pid
        server.start()  # no-op while running
        assert server.pid == pid
        server.restart()
        assert server.port == port and server.pid != pid
        server.stop()
        server.start()  # fresh temp dir, same port
        assert server.port == port and server.tmpdir is not None
        assert no_retry_client(port).ping()
    finally:
        server.stop()


@pytest.mark.redis
def test_pause_times_out_and_resume_answers() -> None:
    rs.require_redis_server()
    with RedisServer() as server:
        client = no_retry_client(server.port, socket_timeout=0.5)
        assert client.ping()

        server.pause()
        assert server.is_paused and server.is_running
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        elapsed = time.monotonic() - started
        assert 0.4 <= elapsed < 2.0, elapsed

        server.resume()
        assert not server.is_paused
        assert client.ping()
        client.close()


@pytest.mark.redis
def test_stop_while_paused_is_quick() -> None:
    rs.require_redis_server()
    server = RedisServer().start()
    pid = server.pid
    assert pid is not None
    server.pause()
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.0
    assert not pid_alive(pid)


@pytest.mark.redis
def test_pause_requires_running_server() -> None:
    rs.require_redis_server()
    server = RedisServer()
    with pytest.raises(RedisServerError, match="not running"):
        server.pause()


@pytest.mark.redis
def test_bad_option_reports_log_tail() -> None:
    rs.require_redis_server()
    server = RedisServer(extra_args=["--definitely-not-an-option", "1"])
    with pytest.raises(RedisServerError) as info:
        server.start()
    message = str(info.value)
    assert "did not come up" in message
    assert "definitely-not-an-option" in message  # from redis-server's output
    assert not server.is_running
    assert server.tmpdir is None  # nothing leaked


@pytest.mark.redis
def test_fixed_port_in_use_fails_clearly() -> None:
    rs.require_redis_server()
    with RedisServer() as first:
        second = RedisServer(port=first.port, startup_timeout=1.0)
        with pytest.raises(RedisServerError, match="already in use"):
            second.start()
        assert not second.is_running
        assert no_retry_client(first.port).ping()


@pytest.mark.redis
def test_auto_port_taken_before_start_picks_another() -> None:
    rs.require_redis_server()
    server = RedisServer()
    taken = server.port
    with socket.socket() as squatter:
        squatter.bind((rs.HOST, taken))
        squatter.listen()
        try:
            server.start()
            assert server.port != taken
            assert no_retry_client(server.port).ping()
        finally:
            server.stop()


def test_free_ports_are_distinct() -> None:
    ports = [rs._free_port(with_bus_port=True) for _ in range(20)]
    assert len(set(ports)) == len(ports)
    assert all(p + 10000 <= 65535 for p in ports)


@pytest.mark.redis
def test_atexit_stops_forgotten_servers() -> None:
    rs.require_redis_server()
    proc = run_script(
        """
        import redis_servers
        s = redis_servers.RedisServer().start()
        print(s.pid, s.port, s.tmpdir, flush=True)
        """
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    pid, port, tmpdir = out.split()
    assert not pid_alive(int(pid))
    assert not Path(tmpdir).exists()
    assert not port_accepts(int(port))


@pytest.mark.redis
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_server_dies_with_sigkilled_parent() -> None:
    rs.require_redis_server()
    proc = run_script(
        """
        import sys, time, redis_servers
        s = redis_servers.RedisServer().start()
        print(s.pid, s.port, s.tmpdir, flush=True)
        time.sleep(60)
        """
    )
    assert proc.stdout is not None
    pid = 0
    tmpdir = ""
    try:
        pid_text, port_text, tmpdir = proc.stdout.readline().split()
        pid, port = int(pid_text), int(port_text)
        assert pid_alive(pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        wait_for(lambda: not pid_alive(pid), 5.0, "orphaned redis-server to exit")
        assert not port_accepts(port)
    finally:
        if pid and pid_alive(pid):  # only our own orphan, by pid
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if tmpdir:  # nobody was left to clean up after the SIGKILLed parent
            shutil.rmtree(tmpdir, ignore_errors=True)


# --------------------------------------------------------------------------
# cluster
# --------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.cluster
def test_cluster_set_get_across_slots() -> None:
    rs.require_redis_server(cli=True)
    cluster = RedisCluster()
    started = time.perf_counter()
    with cluster:
        elapsed = time.perf_counter() - started
        assert elapsed < 15.0, f"3-node cluster took {elapsed:.2f}s"
        assert len(cluster.nodes) == 3
        ports = [port for _, port in cluster.startup_nodes]
        assert len(set(ports)) == 3
        assert cluster.startup_nodes == [("127.0.0.1", n.port) for n in cluster.nodes]
        assert cluster.url == cluster.nodes[0].url

        for i in range(3):
            info = cluster.cluster_info(i)
            assert info["cluster_state"] == "ok"
            assert info["cluster_slots_assigned"] == "16384"
            assert info["cluster_slots_ok"] == "16384"
            assert info["cluster_known_nodes"] == "3"
            assert info["cluster_size"] == "3"

        client = cluster_client(cluster)
        slots = set_get_many(client)
        assert len(slots) > 150
        client.close()

        # Keys really landed on every primary.
        sizes = [int(no_retry_client(n.port).dbsize()) for n in cluster.nodes]
        assert all(size > 0 for size in sizes) and sum(sizes) == 200

        from_url = redis.cluster.RedisCluster.from_url(cluster.url)
        assert from_url.get("key:1") == b"KEY:1"
        from_url.close()
        tmpdirs = [n.tmpdir for n in cluster.nodes]

    assert not any(n.is_running for n in cluster.nodes)
    assert all(d is not None and not d.exists() for d in tmpdirs)


@pytest.mark.redis
@pytest.mark.cluster
def test_cluster_kill_node_and_restart() -> None:
    rs.require_redis_server(cli=True)
    with RedisCluster(node_timeout_ms=1000) as cluster:
        victim = cluster.nodes[0]
        port, pid = victim.port, victim.pid
        assert cluster.kill_node(0) is victim
        assert not victim.is_running and pid is not None and not pid_alive(pid)
        with pytest.raises(redis.ConnectionError):
            no_retry_client(port).ping()

        # The survivors notice: no replica can take the slots, cluster fails.
        cluster.wait_until_state("fail", timeout=15)
        for i in (1, 2):
            assert cluster.cluster_info(i)["cluster_state"] == "fail"

        assert cluster.restart_node(0, timeout=30) is victim
        assert victim.port == port and victim.pid != pid
        for i in range(3):
            assert cluster.cluster_info(i)["cluster_state"] == "ok"
        client = cluster_client(cluster)
        set_get_many(client, 100)
        client.close()


@pytest.mark.redis
@pytest.mark.cluster
@pytest.mark.slow
def test_cluster_with_replicas_fails_over() -> None:
    rs.require_redis_server(cli=True)
    with RedisCluster(replicas=1, node_timeout_ms=1000) as cluster:
        assert len(cluster.nodes) == 6

        def role(i: int) -> str:
            return cluster.nodes[i].info("replication")["role"]

        roles = cluster.roles()
        assert roles.count("master") == 3 and roles.count("slave") == 3
        victim_index = roles.index("master")
        victim = cluster.nodes[victim_index]
        replica_index = next(
            i
            for i in range(6)
            if roles[i] == "slave" and cluster.nodes[i].info("replication")["master_port"] == str(victim.port)
        )
        client = cluster_client(cluster)
        set_get_many(client, 50)

        cluster.kill_node(victim_index)
        wait_for(lambda: role(replica_index) == "master", 20.0, "replica promotion")
        cluster.wait_until_ok(timeout=20)
        set_get_many(client, 50)  # the client follows the new topology

        cluster.restart_node(victim_index, timeout=30)
        wait_for(lambda: role(victim_index) == "slave", 20.0, "old primary to rejoin")
        cluster.wait_until_ok(timeout=20)
        client.close()
